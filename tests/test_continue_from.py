"""`continue_from=CHECKPOINT`: a new run trains on from another run's checkpoint, under its own settings."""

import csv
import json

import pytest
import torch
from conftest import TINY, as_if_older, fake_data
from entry_point import run_entry_point

pytestmark = pytest.mark.slow  # two short runs through the entry point


def run(arguments: list[str], run_dir, monkeypatch) -> int:
    return run_entry_point([*arguments, f"hydra.run.dir={run_dir}"], monkeypatch)


def test_a_run_continues_another_runs_schedule_with_changed_settings_and_refuses_another_network(
    fake_cifar_bin, tmp_path, monkeypatch, capsys
):
    settings = [*TINY, *fake_data(fake_cifar_bin), "trainer.accelerator=cpu", "progress=false", "test=false"]
    first, fork = tmp_path / "first", tmp_path / "fork"
    assert run([*settings, "trainer.max_epochs=2"], first, monkeypatch) == 0
    overrides = [f"continue_from={first / 'last.ckpt'}", "trainer.max_epochs=3", "label_smoothing=0.2"]
    assert run([*settings, *overrides], fork, monkeypatch) == 0
    before, after = (json.loads((d / "metrics.json").read_text()) for d in (first, fork))
    # One more epoch on top of the first run's two: its images are counted on, its schedule goes on.
    assert after["epochs"] == 3 and after["train_images"] == before["train_images"] * 3 // 2
    assert after["best_checkpoint"] == "best.ckpt" and (fork / "best.ckpt").is_file()  # its own best
    with open(fork / "epochs.csv", newline="") as handle:
        assert [row["epoch"] for row in csv.DictReader(handle)] == ["3"]
    config = torch.load(fork / "last.ckpt", weights_only=False)["hyper_parameters"]["config"]
    assert config["label_smoothing"] == 0.2
    # Another network cannot take these weights: one line, before anything is written.
    capsys.readouterr()
    other = tmp_path / "other"
    assert run([*settings, *overrides, "model.se_reduction=8"], other, monkeypatch) == 1
    error = capsys.readouterr().err.strip()
    assert error.startswith(f"Error: continue_from={first / 'last.ckpt'} holds another network")
    assert "model.se_reduction" in error and not other.exists()
    # A checkpoint from before a model setting existed holds the network that setting's default builds.
    as_if_older(first / "last.ckpt", "model.bn_scale_trainable")
    assert run([*settings, *overrides], tmp_path / "older", monkeypatch) == 0
    assert run([*settings, *overrides, "model.bn_scale_trainable=false"], other, monkeypatch) == 1
    assert "model.bn_scale_trainable: True -> False" in capsys.readouterr().err and not other.exists()
    # The BatchNorm momentum shapes no weight, only how the running statistics follow the batches from here.
    momentum = tmp_path / "momentum"
    assert run([*settings, *overrides, "model.bn_momentum=0.4"], momentum, monkeypatch) == 0
    continued = {
        name: torch.load(d / "last.ckpt", weights_only=False)
        for name, d in (("0.1", fork), ("0.4", momentum))
    }
    assert continued["0.4"]["hyper_parameters"]["config"]["model"]["bn_momentum"] == 0.4
    # The same steps trained the same weights; only the running statistics followed the batches faster.
    weights = {name: checkpoint["state_dict"] for name, checkpoint in continued.items()}
    statistics = [key for key in weights["0.1"] if key.endswith(("running_mean", "running_var"))]
    assert statistics
    for key, value in weights["0.1"].items():
        assert torch.equal(value, weights["0.4"][key]) == (key not in statistics), key
