"""Ctrl-C while the network compiles: the same one-line stop as later in a run.

The compiler's first minute is when a user is most likely to give up on a run. Ctrl-C in a terminal reaches
the whole foreground process group: here the run and any compiler processes it started.
"""

import os
import signal
import subprocess
import time

import pytest
from conftest import TINY, TRAIN, fake_data
from interrupting import default_sigint

pytestmark = pytest.mark.slow  # a real compilation, stopped

# CompileNotice's line once the validation graph is compiled: the training step's compilation starts next.
COMPILING_TRAINING = "compiled the network's validation step"


def test_ctrl_c_while_the_network_compiles_stops_the_run_in_one_line(fake_cifar_bin, tmp_path):
    run_dir = tmp_path / "run"
    command = [*TRAIN, *TINY, *fake_data(fake_cifar_bin), "trainer.accelerator=cpu", "model.compile=true"]
    command += ["progress=false", f"hydra.run.dir={run_dir}"]
    run = subprocess.Popen(
        command,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,  # its own process group, as a terminal gives a command
        preexec_fn=default_sigint,
    )
    deadline = time.monotonic() + 120
    while COMPILING_TRAINING not in _text(run_dir / "train.log") and time.monotonic() < deadline:
        time.sleep(0.05)
    time.sleep(1.0)  # into the training step's compilation
    os.killpg(run.pid, signal.SIGINT)  # as a terminal's Ctrl-C: the run and the compiler's processes
    stdout, stderr = run.communicate(timeout=120)
    assert run.returncode == 1
    assert (
        "Error: stopped by Ctrl-C (SIGINT) during epoch 1 of 30; nothing kept: no epoch had finished"
        in stderr
    )
    assert "Traceback" not in stdout + stderr and "Error" not in stderr.replace("Error: stopped", "")
    assert "No CUDA runtime is found" not in stderr  # the compiler's note on a machine without a GPU


def _text(path) -> str:
    return path.read_text() if path.exists() else ""
