"""No run destroys another run's results: distinct directories for simultaneous runs, used ones refused."""

import json
import re
import subprocess
from pathlib import Path

import pytest
from conftest import TINY, TRAIN, fake_data, run_train

pytestmark = pytest.mark.slow

SHORT = ["trainer.accelerator=cpu", "trainer.max_epochs=1", "progress=false"]


def files_of(run_dir: Path) -> dict[Path, bytes]:
    return {path: path.read_bytes() for path in sorted(run_dir.rglob("*")) if path.is_file()}


def test_two_runs_started_in_the_same_second_keep_their_own_complete_results(fake_cifar_bin, tmp_path):
    # The default directory name with its time fixed: what two runs started in the same second resolve to.
    same_second = "hydra.run.dir=outputs/2026-01-01/12-00-00-${run_suffix:}"
    command = [*TRAIN, *TINY, *fake_data(fake_cifar_bin), *SHORT, same_second]
    pipes = {"stdout": subprocess.PIPE, "stderr": subprocess.PIPE, "text": True}
    runs = [subprocess.Popen(command, cwd=tmp_path, **pipes) for _ in range(2)]
    outputs = [run.communicate(timeout=600) for run in runs]
    assert [run.returncode for run in runs] == [0, 0], outputs
    run_dirs = sorted((tmp_path / "outputs" / "2026-01-01").iterdir())
    assert len(run_dirs) == 2 and all(re.fullmatch(r"12-00-00-[0-9a-f]{6}", d.name) for d in run_dirs)
    for run_dir in run_dirs:
        assert json.loads((run_dir / "metrics.json").read_text())["status"] == "completed"
        assert (run_dir / "best.ckpt").is_file() and (run_dir / "last.ckpt").is_file()
        # One run's console log: its own single epoch line and one summary.
        log = (run_dir / "train.log").read_text()
        assert len(re.findall(r"epoch +1/1 \|", log)) == 1 and log.count("done: best val acc") == 1


def test_a_second_run_into_a_used_directory_is_refused_and_changes_nothing(fake_cifar_bin, tmp_path):
    run_dir = tmp_path / "run42"
    overrides = [*TINY, *fake_data(fake_cifar_bin), *SHORT, f"hydra.run.dir={run_dir}"]
    run_train(*overrides)
    before = files_of(run_dir)
    refused = run_train(*overrides, "optimizer.lr=0.05", expect_ok=False)
    assert f"{run_dir} already holds a run" in refused.stderr
    assert "resume=true" in refused.stderr and "hydra.run.dir=" in refused.stderr
    assert "Traceback" not in refused.stdout + refused.stderr
    assert files_of(run_dir) == before
