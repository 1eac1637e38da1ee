"""Damaged state gets a clear answer: truncated or foreign checkpoints, and a disk that fills up."""

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from conftest import TINY, fake_data, made_once, run_command, run_train

from seres.records.atomic import DiskFullError, atomic_save, write_json

SHORT = ["trainer.accelerator=cpu", "trainer.max_epochs=1", "progress=false"]
# python -m, for the commands that are modules of seres
MODULE = [sys.executable, "-m"]


@pytest.fixture(scope="module")
def finished_run(fake_cifar_bin, tmp_path_factory) -> Path:
    def train(base: Path) -> None:
        run_train(*TINY, *fake_data(fake_cifar_bin), *SHORT, f"hydra.run.dir={base / 'run'}")

    return made_once(tmp_path_factory, "finished_run", train) / "run"


def files_of(run_dir: Path) -> dict[Path, bytes]:
    return {path: path.read_bytes() for path in sorted(run_dir.rglob("*")) if path.is_file()}


def truncated(path: Path) -> None:
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])


def foreign(path: Path) -> None:
    torch.save({"weights": torch.zeros(3)}, path)


def damaged_copy(finished_run: Path, tmp_path: Path, name: str, damage) -> Path:
    run_dir = tmp_path / "run"
    shutil.copytree(finished_run, run_dir)
    damage(run_dir / name)
    return run_dir


def commands(run_dir: Path, name: str, root: Path) -> dict[str, list[str]]:
    image = run_dir / "confusion.png"
    return {
        "resume": [
            sys.executable,
            "train.py",
            *TINY,
            *fake_data(root),
            *SHORT,
            f"hydra.run.dir={run_dir}",
            "resume=true",
        ],
        "eval": [sys.executable, "eval.py", f"ckpt_path={run_dir / name}", "accelerator=cpu"],
        "predict": [*MODULE, "seres.results.predict", str(image), "--model", str(run_dir / name)],
        "export": [*MODULE, "seres.results.export", str(run_dir / name), "--format", "torchscript"],
    }


@pytest.mark.slow
@pytest.mark.parametrize(
    ("tool", "name", "damage", "message"),
    [
        ("resume", "last.ckpt", truncated, "is not a readable PyTorch file"),
        ("resume", "last.ckpt", foreign, "is not a checkpoint written by train.py"),
        ("eval", "best.ckpt", truncated, "is not a readable PyTorch file"),
        ("predict", "best.ckpt", foreign, "is not a checkpoint written by train.py"),
        ("export", "best_model.pth", truncated, "is not a readable PyTorch file"),
    ],
)
def test_a_damaged_checkpoint_is_named_with_what_to_use_instead(
    tool, name, damage, message, finished_run, fake_cifar_bin, tmp_path
):
    run_dir = damaged_copy(finished_run, tmp_path, name, damage)
    before = files_of(run_dir)
    failed = run_command(commands(run_dir, name, fake_cifar_bin)[tool], expect_ok=False)
    assert f"{run_dir / name} {message}" in failed.stderr
    assert "instead" in failed.stderr and "Traceback" not in failed.stdout + failed.stderr
    assert files_of(run_dir) == before


@pytest.fixture
def small_disk(tmp_path) -> Path:
    """A 256 KiB tmpfs, unmounted afterwards; skips where mounting is not allowed (not root)."""
    mount_point = tmp_path / "small_disk"
    mount_point.mkdir()
    mounted = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", "size=256k", "tmpfs", str(mount_point)], capture_output=True
    )
    if mounted.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {mounted.stderr.decode().strip()}")
    yield mount_point
    subprocess.run(["umount", str(mount_point)], check=True)


def test_a_full_disk_keeps_the_previous_file_and_names_the_space_needed(small_disk):
    checkpoint, metrics = small_disk / "last.ckpt", small_disk / "metrics.json"
    atomic_save({"weights": torch.zeros(10)}, checkpoint)
    write_json({"best_val_acc": 0.5}, metrics)
    with pytest.raises(DiskFullError, match=r"the disk is full: .*last\.ckpt needs 0\.40 MB") as error:
        atomic_save({"weights": torch.zeros(100_000)}, checkpoint)
    assert "the previous last.ckpt is kept" in str(error.value)
    with pytest.raises(DiskFullError, match="metrics.json needs"):
        write_json({"values": list(range(100_000))}, metrics)
    assert torch.equal(torch.load(checkpoint)["weights"], torch.zeros(10))
    assert json.loads(metrics.read_text()) == {"best_val_acc": 0.5}
    assert sorted(p.name for p in small_disk.iterdir()) == ["last.ckpt", "metrics.json"]  # no temporary files


@pytest.mark.slow
def test_a_run_that_fills_the_disk_stops_with_one_message(fake_cifar_bin, small_disk):
    run_dir = small_disk / "run"
    failed = run_train(*TINY, *fake_data(fake_cifar_bin), *SHORT, f"hydra.run.dir={run_dir}", expect_ok=False)
    assert "the disk is full: " in failed.stderr and f"{run_dir}/" in failed.stderr
    assert "Traceback" not in failed.stdout + failed.stderr
