"""Stopping a real training run in the middle of an epoch, as a signal from a user or a cluster would."""

import os
import signal
import subprocess
import time
from pathlib import Path

from conftest import REPO, TRAIN

# With this callback (tests/recording.py) each step takes 0.1 s longer: time to send a signal mid-epoch.
SLOW_STEPS = "+callbacks.slow._target_=recording.SlowSteps"


def default_sigint() -> None:
    # A suite started in the background (`make test &`, nohup) passes on an ignored SIGINT; a terminal's
    # Ctrl-C reaches a run that has the default handler, as here.
    signal.signal(signal.SIGINT, signal.SIG_DFL)


def interrupt_in_epoch_2(
    overrides: list[str], run_dir: Path, signum: int, cwd: Path = REPO, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess:
    """Start the run (with SLOW_STEPS among `overrides`), send `signum` about four steps into its second
    epoch. `env` replaces this process's environment (tests/ stays importable)."""
    env = {**(os.environ if env is None else env), "PYTHONPATH": str(REPO / "tests")}
    process = subprocess.Popen(
        [*TRAIN, *overrides],
        cwd=cwd,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        preexec_fn=default_sigint,
    )
    deadline = time.monotonic() + 120
    while not (run_dir / "last.ckpt").exists() and time.monotonic() < deadline:
        time.sleep(0.05)
    time.sleep(0.4)
    process.send_signal(signum)
    stdout, stderr = process.communicate(timeout=120)
    return subprocess.CompletedProcess(process.args, process.returncode, stdout, stderr)
