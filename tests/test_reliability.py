"""Runs that survive interruption, refuse bad input clearly, and are reproducible (real processes)."""

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from conftest import TRAIN, real_cifar_root, run_train, write_fake_cifar10
from hydra import compose, initialize_config_dir
from tensorboard.backend.event_processing.event_multiplexer import EventMultiplexer

from train import train

REPO = Path(__file__).resolve().parents[1]
TINY = ["model.widths=[8,16,32,64]", "model.blocks=[1,1,1,1]", "model.stem_width=8"]


@pytest.fixture(scope="module")
def data_root(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("reliability_data")
    write_fake_cifar10(root, "bin", n_per_class_train=40, n_per_class_test=10)
    return root


def deterministic_run(root: Path) -> list[str]:
    """3 epochs of 10 steps with random augmentation, dropout and a worker process: every RNG in play."""
    data = [f"data.root={root}", "data.verify=false", "data.val_size=80", "data.batch_size=32"]
    rest = [
        "data.num_workers=1",
        "model.dropout=0.1",
        "trainer.accelerator=cpu",
        "trainer.deterministic=true",
    ]
    return [*TINY, *data, *rest, "trainer.max_epochs=3", "test=false", "progress=false"]


def weights(checkpoint: Path) -> dict[str, torch.Tensor]:
    return torch.load(checkpoint, map_location="cpu", weights_only=False)["state_dict"]


def assert_same_weights(a: Path, b: Path) -> None:
    first, second = weights(a), weights(b)
    assert first.keys() == second.keys()
    different = [name for name in first if not torch.equal(first[name], second[name])]
    assert not different, f"{len(different)} tensors differ, e.g. {different[:3]}"


def test_sigkill_mid_epoch_then_resume_equals_an_uninterrupted_run(data_root, tmp_path):
    uninterrupted, again, killed = tmp_path / "uninterrupted", tmp_path / "again", tmp_path / "killed"
    run_train(*deterministic_run(data_root), f"hydra.run.dir={uninterrupted}")
    # Reproducibility: the same config and seed give the same weights and metrics.
    run_train(*deterministic_run(data_root), f"hydra.run.dir={again}")
    assert_same_weights(uninterrupted / "last.ckpt", again / "last.ckpt")
    first, second = (json.loads((d / "metrics.json").read_text()) for d in (uninterrupted, again))
    assert first["best_val_acc"] == second["best_val_acc"]

    # The same run, slowed to 0.1 s a step so it can be killed in the middle of its second epoch.
    slow = ["+callbacks.slow._target_=recording.SlowSteps", f"hydra.run.dir={killed}"]
    env = {**os.environ, "PYTHONPATH": str(REPO / "tests")}
    process = subprocess.Popen(
        [*TRAIN, *deterministic_run(data_root), *slow],
        cwd=REPO,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    deadline = time.monotonic() + 120
    while not (killed / "last.ckpt").exists() and time.monotonic() < deadline:
        time.sleep(0.05)
    time.sleep(0.4)  # about four steps into epoch 2
    process.send_signal(signal.SIGKILL)
    process.wait()
    assert torch.load(killed / "last.ckpt", weights_only=False)["epoch"] == 0, "not killed during epoch 2"
    assert not (killed / "metrics.json").exists()

    resumed = run_train(*deterministic_run(data_root), *slow, "resume=true")
    assert "resuming from" in resumed.stdout + resumed.stderr
    assert_same_weights(uninterrupted / "last.ckpt", killed / "last.ckpt")
    assert json.loads((killed / "metrics.json").read_text())["best_val_acc"] == first["best_val_acc"]
    # The epoch table has each epoch once: the row of the epoch that was cut short is not kept twice.
    epochs = [line.split(",")[0] for line in (killed / "epochs.csv").read_text().splitlines()[1:]]
    assert epochs == ["1", "2", "3"]
    # Resuming under other settings is refused, naming what changed, and leaves the run's files untouched.
    before = {path: path.read_bytes() for path in sorted(killed.rglob("*")) if path.is_file()}
    refused = run_train(
        *deterministic_run(data_root), *slow, "resume=true", "optimizer.lr=0.5", expect_ok=False
    )
    assert "was made with other settings (optimizer.lr: 0.1 -> 0.5)" in refused.stderr
    assert {path: path.read_bytes() for path in sorted(killed.rglob("*")) if path.is_file()} == before
    # TensorBoard's curves continue in the same directory: each epoch's validation accuracy once, in order.
    assert val_acc_steps(killed) == val_acc_steps(uninterrupted)


def val_acc_steps(run_dir: Path) -> list[int]:
    events = EventMultiplexer({"run": str(run_dir / "tensorboard")})
    events.Reload()
    return [event.step for event in events.Scalars("run", "val/acc")]


WRITER = """
import sys, torch
from seres.checkpoint_io import atomic_save
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


def test_a_bad_setting_on_the_command_line_is_refused_before_any_work(data_root, tmp_path):
    run_dir = tmp_path / "refused"
    command = [*deterministic_run(data_root), "optimizer.lr=fast", f"hydra.run.dir={run_dir}"]
    failed = run_train(*command, expect_ok=False)
    assert "optimizer.lr='fast' must be a number" in failed.stderr
    assert not (run_dir / "last.ckpt").exists() and not (run_dir / "tensorboard").exists()


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
    ],
)
def test_bad_configs_are_refused_before_any_work(override, message, data_root, tmp_path):
    # The composition and the start of train() as train.py runs them, in this process (the command line's
    # own path is the test above).
    run_dir = tmp_path / "refused"
    overrides = [*deterministic_run(data_root), override, f"paths.output_dir={run_dir}"]
    with pytest.raises(Exception) as refused:  # Hydra's errors and ours: the message is what counts
        with initialize_config_dir(config_dir=str(REPO / "conf"), version_base="1.3"):
            cfg = compose(config_name="train", overrides=overrides)
        train(cfg)
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
        *TINY, f"data.root={root}", "trainer.accelerator=cpu", f"hydra.run.dir={run_dir}", expect_ok=False
    )
    assert message in failed.stderr
    assert "data_batch_3" in failed.stderr
    assert not (run_dir / "last.ckpt").exists()
    shutil.rmtree(root)
