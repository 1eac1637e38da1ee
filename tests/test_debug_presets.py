"""The debug presets (conf/debug/), each run through train.py's real entry point as a user types it."""

import csv
import json
import re
from pathlib import Path

import pytest
from conftest import TINY, fake_data, real_cifar_root
from entry_point import run_entry_point

pytestmark = pytest.mark.slow  # real training runs


def run_preset(preset: str, run_dir: Path, monkeypatch, *overrides: str) -> int:
    return run_entry_point(
        [f"debug={preset}", "progress=false", *overrides, f"hydra.run.dir={run_dir}"], monkeypatch
    )


def tiny_preset(preset: str, root: Path, run_dir: Path, monkeypatch, *overrides: str) -> dict:
    """The preset on the tiny network and fake data; returns its metrics.json."""
    code = run_preset(
        preset, run_dir, monkeypatch, *TINY, *fake_data(root), "trainer.accelerator=cpu", *overrides
    )
    assert code == 0
    return json.loads((run_dir / "metrics.json").read_text())


def epochs(run_dir: Path) -> list[dict[str, str]]:
    with open(run_dir / "epochs.csv", newline="") as rows:
        return list(csv.DictReader(rows))


def test_fdr_puts_one_batch_of_each_split_through_the_run_and_keeps_no_checkpoint(
    fake_cifar_bin, tmp_path, monkeypatch
):
    metrics = tiny_preset("fdr", fake_cifar_bin, tmp_path, monkeypatch)
    assert metrics["train_images"] == 32 and metrics["epochs"] == 1  # one batch of data.batch_size
    assert metrics["test_acc"] is not None
    assert not list(tmp_path.glob("*.ckpt"))


def test_limit_runs_three_short_epochs_with_everything_a_run_writes(fake_cifar_bin, tmp_path, monkeypatch):
    # The fake set has 300 training images: 8 batches of 16 fit where 8 of 32 would not.
    metrics = tiny_preset("limit", fake_cifar_bin, tmp_path, monkeypatch, "data.batch_size=16")
    assert metrics["epochs"] == 3 and metrics["train_images"] == 3 * 8 * 16
    assert len(epochs(tmp_path)) == 3
    for name in ("best.ckpt", "last.ckpt", "best_model.pth", "report.md"):
        assert (tmp_path / name).is_file(), name
    # The composed config, once, as a tree at the top of the log.
    log = (tmp_path / "train.log").read_text()
    assert log.count("├── model") == 1 and "│   tags: []" in log and "│       max_epochs: 3" in log


def test_profiler_leaves_its_report_in_the_run_directory(fake_cifar_bin, tmp_path, monkeypatch):
    tiny_preset("profiler", fake_cifar_bin, tmp_path, monkeypatch, "trainer.limit_train_batches=4")
    report = (tmp_path / "fit-profiler.txt").read_text()
    assert "run_training_batch" in report and "SingleDeviceStrategy.training_step" in report
    assert (tmp_path / "test-profiler.txt").is_file()


def test_anomaly_names_the_operation_whose_gradient_became_nan(fake_cifar_bin, tmp_path, monkeypatch, capsys):
    # An absurd learning rate without clipping: the weights blow up within a few steps.
    diverging = ["optimizer.lr=1e6", "trainer.gradient_clip_val=null"]
    arguments = [*TINY, *fake_data(fake_cifar_bin), "trainer.accelerator=cpu", *diverging]
    assert run_preset("anomaly", tmp_path, monkeypatch, *arguments) == 1
    # torch's own message, from the backward pass: where the NaN came from, before any loss check sees it.
    assert re.search(r"Function '\w+Backward\d*' returned nan values", capsys.readouterr().err)


def test_overfit_trains_the_papers_network_to_100_percent_on_its_fixed_batches(tmp_path, monkeypatch):
    assert run_preset("overfit", tmp_path, monkeypatch, f"data.root={real_cifar_root()}") == 0
    metrics = json.loads((tmp_path / "metrics.json").read_text())
    assert metrics["params"] == 1_092_650  # the paper's network (the default model)
    assert metrics["train_images"] == 20 * 4 * 32  # 4 batches of 32, every one of the 20 epochs
    assert float(epochs(tmp_path)[-1]["train_acc"]) == 1.0
    # Validated on the same 128 images, unaugmented: what was learnt shows there too.
    assert metrics["best_val_acc"] >= 0.95
