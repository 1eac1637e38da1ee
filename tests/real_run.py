"""One short training run on the real CIFAR-10, shared by the report, eval, predict and export tests.

Each test module asks for it with `short_real_run(tmp_path_factory)`; the first one trains (on whichever test
worker asks first), the others reuse it. Skips where the real data is missing (see conftest).
"""

import subprocess
import sys
from pathlib import Path

import pytest
from conftest import TINY, made_once, real_cifar_root

REPO = Path(__file__).resolve().parents[1]
# 20 steps of 64 images per epoch, 2 evaluation batches of 512 images for validation and for the test.
SHORT_RUN = [
    *TINY,
    "data.batch_size=64",
    "trainer.max_epochs=2",
    "trainer.log_every_n_steps=5",
    "++trainer.limit_train_batches=20",
    "++trainer.limit_val_batches=2",
    "++trainer.limit_test_batches=2",
    "progress=false",
]
CONSOLE_FILE = "short_real_run.console"


def run_cli(*command: str, timeout: int = 300, expect_success: bool = True) -> subprocess.CompletedProcess:
    """Run `python COMMAND...` in the repository root; with expect_success, fail the test on an error."""
    full = [sys.executable, *command]
    result = subprocess.run(full, cwd=REPO, capture_output=True, text=True, timeout=timeout)
    if expect_success:
        assert result.returncode == 0, f"{' '.join(full)}:\n{result.stdout[-3000:]}\n{result.stderr[-5000:]}"
    return result


def short_real_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The run directory; its console output (stdout, then stderr) is in the sibling file CONSOLE_FILE."""
    root = real_cifar_root()

    def train(base: Path) -> None:
        result = run_cli("train.py", *SHORT_RUN, f"data.root={root}", f"hydra.run.dir={base / 'run'}")
        (base / CONSOLE_FILE).write_text(result.stdout + result.stderr)

    return made_once(tmp_path_factory, "short_real_run", train) / "run"
