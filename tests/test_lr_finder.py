"""`python train.py tune=lr`: the learning-rate finder on the composed run, through the entry point."""

import json
import math

import pytest
from conftest import TINY, fake_data
from entry_point import run_entry_point

pytestmark = pytest.mark.slow  # a real range test: 100 training steps


def test_tune_lr_writes_the_curve_and_prints_the_lr_to_paste_and_trains_no_run(
    fake_cifar_bin, tmp_path, monkeypatch, capsys
):
    arguments = [*TINY, *fake_data(fake_cifar_bin), "trainer.accelerator=cpu", "progress=false", "tune=lr"]
    assert run_entry_point([*arguments, f"hydra.run.dir={tmp_path}"], monkeypatch) == 0
    found = json.loads((tmp_path / "lr_find.json").read_text())
    assert len(found["lr"]) == len(found["loss"]) == found["steps"] == 100
    assert found["lr"] == sorted(found["lr"]) and 1e-4 <= found["lr"][0] < found["lr"][-1] <= 10
    # One process: the rate the optimizer runs at is the value to give, printed ready to paste.
    assert found["optimizer.lr"] == found["suggested_lr"] and found["lr"][0] <= found["suggested_lr"]
    printed = capsys.readouterr().out
    assert f"Suggested learning rate: optimizer.lr={found['optimizer.lr']:.3g};" in printed
    assert (tmp_path / "lr_find.png").stat().st_size > 0
    # A search, not a run: no checkpoint, no metrics, nothing a sweep would take for a finished job.
    assert not list(tmp_path.glob("*.ckpt")) and not (tmp_path / "metrics.json").exists()
    assert math.isfinite(found["suggested_lr"])
