"""Runs that survive interruption, refuse bad input clearly, and are reproducible (real processes)."""

import json
import shlex
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from conftest import (
    TINY_MODEL,
    TRAIN,
    as_if_older,
    compose_train,
    fake_data,
    made_once,
    real_cifar_root,
    run_command,
    run_train,
    write_fake_cifar10,
)
from entry_point import run_entry_point
from interrupting import SLOW_STEPS, default_sigint, interrupt_in_epoch_2
from tensorboard.backend.event_processing.event_multiplexer import EventMultiplexer

from seres.run.start_checks import check_settings

pytestmark = pytest.mark.slow  # real runs in subprocesses

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def data_root(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("reliability_data")
    write_fake_cifar10(root, "bin", n_per_class_train=40, n_per_class_test=10)
    return root


def deterministic_run(root: Path) -> list[str]:
    """3 epochs of 10 steps with random augmentation, dropout and a worker process: every RNG in play."""
    data = fake_data(root, val_size=80)
    rest = [
        "data.pipeline=loader",
        "data.num_workers=1",
        "model.dropout=0.1",
        "trainer.accelerator=cpu",
        "trainer.deterministic=true",
        "trainer.precision=32-true",
    ]
    return [*TINY_MODEL, *data, *rest, "trainer.max_epochs=3", "test=false", "progress=false"]


def stopped_from_a_terminal(*overrides: str) -> subprocess.CompletedProcess:
    """train.py started as a terminal starts it (Ctrl-C's default handling); it must exit with an error."""
    return run_command([*TRAIN, *overrides], expect_ok=False, preexec_fn=default_sigint)


def weights(checkpoint: Path) -> dict[str, torch.Tensor]:
    return torch.load(checkpoint, map_location="cpu", weights_only=False)["state_dict"]


def assert_same_weights(a: Path, b: Path) -> None:
    first, second = weights(a), weights(b)
    assert first.keys() == second.keys()
    different = [name for name in first if not torch.equal(first[name], second[name])]
    assert not different, f"{len(different)} tensors differ, e.g. {different[:3]}"


@pytest.fixture(scope="module")
def uninterrupted(data_root, tmp_path_factory) -> Path:
    def train(base: Path) -> None:
        run_train(*deterministic_run(data_root), f"hydra.run.dir={base / 'run'}")

    return made_once(tmp_path_factory, "uninterrupted", train) / "run"


@pytest.mark.parametrize("signum", [signal.SIGKILL, signal.SIGINT, signal.SIGTERM], ids=lambda s: s.name)
def test_a_run_stopped_mid_epoch_then_resumed_equals_an_uninterrupted_run(
    signum, uninterrupted, data_root, tmp_path
):
    stopped = tmp_path / "stopped"
    overrides = [*deterministic_run(data_root), SLOW_STEPS]
    interrupted = interrupt_in_epoch_2([*overrides, f"hydra.run.dir={stopped}"], stopped, signum)
    assert interrupted.returncode != 0
    assert torch.load(stopped / "last.ckpt", weights_only=False)["epoch"] == 0, "not stopped during epoch 2"
    assert not (stopped / "metrics.json").exists()
    if signum == signal.SIGKILL:
        resumed = run_train(*overrides, f"hydra.run.dir={stopped}", "resume=true")
    else:
        # One message: what stopped it, what was kept, and the command that continues the run, run as printed.
        signal_name = "SIGTERM" if signum == signal.SIGTERM else "Ctrl-C (SIGINT)"
        assert f"stopped by {signal_name} during epoch 2 of 3; kept last.ckpt" in interrupted.stderr
        assert "Traceback" not in interrupted.stdout + interrupted.stderr
        command = interrupted.stderr.split("Continue the run with: python ")[1].strip()
        resumed = run_command([sys.executable, *shlex.split(command)])
    assert "resuming from" in resumed.stdout + resumed.stderr
    # Three processes, one result: the same config and seed give the same weights and metrics.
    assert_same_weights(uninterrupted / "last.ckpt", stopped / "last.ckpt")
    best = json.loads((uninterrupted / "metrics.json").read_text())["best_val_acc"]
    assert json.loads((stopped / "metrics.json").read_text())["best_val_acc"] == best
    # The epoch table has each epoch once: the row of the epoch that was cut short is not kept twice.
    epochs = [line.split(",")[0] for line in (stopped / "epochs.csv").read_text().splitlines()[1:]]
    assert epochs == ["1", "2", "3"]
    # TensorBoard's curves continue in the same directory: each epoch's validation accuracy once, in order.
    assert val_acc_steps(stopped) == val_acc_steps(uninterrupted)


def test_a_ctrl_c_that_python_ignores_still_stops_the_run(data_root, tmp_path):
    run_dir = tmp_path / "run"
    overrides = [*deterministic_run(data_root), "+callbacks.ctrl_c._target_=recording.CtrlCInAFinalizer"]
    stopped = stopped_from_a_terminal(*overrides, f"hydra.run.dir={run_dir}")
    assert "stopped by Ctrl-C (SIGINT) during epoch 2 of 3; kept last.ckpt" in stopped.stderr
    # One message: Python's "Exception ignored" traceback of the dropped KeyboardInterrupt is not shown.
    assert "Traceback" not in stopped.stdout + stopped.stderr and "Exception ignored" not in stopped.stderr
    assert torch.load(run_dir / "last.ckpt", weights_only=False)["epoch"] == 0
    assert not (run_dir / "metrics.json").exists()


def test_ctrl_c_in_the_final_test_says_so_and_its_command_tests_the_trained_run(data_root, tmp_path):
    run_dir = tmp_path / "run"
    overrides = [item for item in deterministic_run(data_root) if item != "test=false"]
    overrides += ["+callbacks.ctrl_c._target_=recording.CtrlCInTheTest"]
    overrides += [f"+callbacks.ctrl_c.dirpath={tmp_path}"]
    stopped = stopped_from_a_terminal(*overrides, f"hydra.run.dir={run_dir}")
    message = "stopped by Ctrl-C (SIGINT) while testing the best checkpoint (training had finished); kept"
    assert f"{message} last.ckpt" in stopped.stderr, stopped.stderr[-3000:]
    command = stopped.stderr.split("Continue the run with: python ")[1].strip()
    run_command([sys.executable, *shlex.split(command)])
    metrics = json.loads((run_dir / "metrics.json").read_text())
    assert metrics["epochs"] == 3 and metrics["test_acc"] is not None


def test_resuming_under_other_settings_is_refused_and_leaves_the_run_untouched(
    uninterrupted, data_root, tmp_path
):
    run_dir = tmp_path / "run"
    shutil.copytree(uninterrupted, run_dir)
    before = {path: path.read_bytes() for path in sorted(run_dir.rglob("*")) if path.is_file()}
    command = [*deterministic_run(data_root), f"hydra.run.dir={run_dir}", "resume=true", "optimizer.lr=0.5"]
    refused = run_train(*command, expect_ok=False)
    assert "was made with other settings (optimizer.lr: 0.1 -> 0.5)" in refused.stderr, refused.stderr
    assert "Traceback" not in refused.stdout + refused.stderr
    assert {path: path.read_bytes() for path in sorted(run_dir.rglob("*")) if path.is_file()} == before


def test_a_run_from_before_a_setting_existed_resumes_at_its_default_and_refuses_another_value(
    uninterrupted, data_root, tmp_path, monkeypatch, capsys
):
    # In this process (train.py's entry point): the refusal's command line path is the test above.
    run_dir = tmp_path / "run"
    shutil.copytree(uninterrupted, run_dir)
    as_if_older(run_dir / "last.ckpt", "model.bn_momentum")
    command = [*deterministic_run(data_root), f"hydra.run.dir={run_dir}", "resume=true"]
    # The run had what the new setting's default does; another value would change it.
    assert run_entry_point([*command, "model.bn_momentum=0.4"], monkeypatch) == 1
    assert "was made with other settings (model.bn_momentum: 0.1 -> 0.4)" in capsys.readouterr().err
    assert run_entry_point(command, monkeypatch) == 0
    assert "resuming from" in (run_dir / "train.log").read_text()


def val_acc_steps(run_dir: Path) -> list[int]:
    events = EventMultiplexer({"run": str(run_dir / "tensorboard")})
    events.Reload()
    return [event.step for event in events.Scalars("run", "val/acc")]


WRITER = """
import sys, torch
from seres.records.atomic import atomic_save
atomic_save({"weights": torch.ones(60_000_000)}, sys.argv[1])  # 240 MB: long enough to be caught mid-write
"""


def test_a_kill_during_checkpoint_writing_leaves_the_previous_file_intact(tmp_path):
    target = tmp_path / "last.ckpt"
    torch.save({"weights": torch.zeros(10)}, target)
    process = subprocess.Popen([sys.executable, "-c", WRITER, str(target)], cwd=REPO)
    deadline = time.monotonic() + 120
    partial = []
    while not partial and time.monotonic() < deadline:
        partial = [p for p in tmp_path.glob(".last.ckpt.*.tmp") if p.stat().st_size > 0]
        time.sleep(0.01)
    process.send_signal(signal.SIGKILL)
    process.wait()
    assert partial, "the writer never started writing"
    assert torch.equal(torch.load(target)["weights"], torch.zeros(10))


def test_an_absurd_learning_rate_stops_with_a_clear_message(data_root, tmp_path):
    run_dir = tmp_path / "diverged"
    failed = run_train(
        *deterministic_run(data_root),
        "optimizer.lr=1e6",
        "trainer.gradient_clip_val=null",
        f"hydra.run.dir={run_dir}",
        expect_ok=False,
    )
    message = failed.stderr
    assert "the training loss became non-finite at optimizer step" in message
    assert "Try a lower learning rate (optimizer.lr" in message
    assert not (run_dir / "metrics.json").exists()
    if (run_dir / "last.ckpt").exists():  # a checkpoint written before the loss diverged holds finite weights
        assert all(
            torch.isfinite(t).all() for t in weights(run_dir / "last.ckpt").values() if t.is_floating_point()
        )


@pytest.mark.parametrize(
    ("override", "message"),
    [
        ("optimizer.lr=0", "optimizer.lr=0.0 is not allowed: the learning rate must be > 0"),
        ("optimizer.lr=-0.1", "optimizer.lr=-0.1 is not allowed"),
        ("data.val_size=50000", "data.val_size=50000 is not allowed: an integer from 1 to 49999"),
        ("trainer.devices=64", "trainer.devices=64 is not allowed: this machine has"),
        pytest.param(
            "trainer.accelerator=gpu",
            "trainer.accelerator='gpu' is not allowed: this machine has no GPU that torch can use; run on "
            "the CPU with trainer=cpu",
            marks=pytest.mark.skipif(torch.cuda.is_available(), reason="this machine has a GPU"),
        ),
        ("scheduler=linear", "Could not find 'scheduler/linear'"),
        ("data/aug=fancy", "Could not find 'data/aug/fancy'"),
        ("+data.aug.blur=1", "unknown augmentation setting(s) data.aug.blur"),
        ("trainer.max_epochs=0", "trainer.max_epochs=0 is not allowed"),
        ("data.pipeline=gpu", "data.pipeline='gpu' is not allowed: one of device|loader"),
    ],
)
def test_bad_configs_are_refused_before_any_work(override, message, data_root, tmp_path):
    # The composition and the settings check as train.py runs them, in this process (the command line's
    # own path is the test above).
    run_dir = tmp_path / "refused"
    overrides = [*deterministic_run(data_root), override, f"paths.output_dir={run_dir}"]
    with pytest.raises(Exception) as refused:  # Hydra's errors and ours: the message is what counts
        check_settings(compose_train(*overrides))
    assert message in str(refused.value)
    assert not run_dir.exists()


def damaged_copy(tmp_path: Path, damage) -> Path:
    """A data root of links to the real files, with one of them replaced by a damaged copy."""
    source = real_cifar_root() / "cifar-10-batches-bin"
    target = tmp_path / "data" / "cifar-10-batches-bin"
    target.mkdir(parents=True)
    for path in source.iterdir():
        (target / path.name).symlink_to(path)
    (target / "data_batch_3.bin").unlink()
    damage(source / "data_batch_3.bin", target / "data_batch_3.bin")
    return tmp_path / "data"


def truncate(source: Path, target: Path) -> None:
    target.write_bytes(source.read_bytes()[:-3072])


def alter_one_byte(source: Path, target: Path) -> None:
    data = bytearray(source.read_bytes())
    data[12345] ^= 0xFF
    target.write_bytes(bytes(data))


def remove(source: Path, target: Path) -> None:
    pass


@pytest.mark.parametrize(
    ("damage", "message"),
    [
        (truncate, "data_batch_3.bin has 30,726,928 bytes, expected 30,730,000"),
        (alter_one_byte, "data_batch_3.bin has MD5"),
        (remove, "missing from"),
    ],
)
def test_damaged_data_files_are_named_and_nothing_is_trained(damage, message, tmp_path):
    root = damaged_copy(tmp_path, damage)
    run_dir = tmp_path / "run"
    failed = run_train(
        *TINY_MODEL,
        f"data.root={root}",
        "trainer.accelerator=cpu",
        f"hydra.run.dir={run_dir}",
        expect_ok=False,
    )
    assert message in failed.stderr and "data_batch_3" in failed.stderr
    assert "Traceback" not in failed.stdout + failed.stderr
    assert not run_dir.exists()
    shutil.rmtree(root)
