"""`python train.py tune=batch_size`: the batch-size finder, on the composed run."""

import json

import torch
from conftest import TINY, fake_data
from entry_point import run_entry_point
from test_config import compose_train

from seres.run.batch_size_finder import find_batch_size
from seres.run.training import build_run


def test_on_a_cpu_the_finder_says_why_it_has_nothing_to_find_and_trains_nothing(
    fake_cifar_bin, tmp_path, monkeypatch, capsys
):
    arguments = [*TINY, *fake_data(fake_cifar_bin), "trainer.accelerator=cpu", "tune=batch_size"]
    assert run_entry_point([*arguments, f"hydra.run.dir={tmp_path}"], monkeypatch) == 0
    assert "nothing to find" in capsys.readouterr().out
    assert not list(tmp_path.glob("*.ckpt")) and not list(tmp_path.glob("*.json"))


def test_the_search_doubles_the_batch_through_the_device_loader_and_leaves_the_run_as_it_was(
    fake_cifar_bin, tmp_path
):
    # Lightning's real trials, on the CPU: nothing runs out of memory there, so the search ends at the limit.
    cfg = compose_train(
        *TINY,
        *fake_data(fake_cifar_bin, batch_size=16),
        "trainer.accelerator=cpu",
        "progress=false",
        output_dir=tmp_path,
    )
    trainer, datamodule, module, _, _ = build_run(cfg)
    before = {name: value.clone() for name, value in module.state_dict().items()}
    assert find_batch_size(trainer, module, datamodule, tmp_path, max_batch=128) == 64  # 16, 32, 64 tried
    found = json.loads((tmp_path / "batch_size_find.json").read_text())
    assert found == {"batch_size": 64, "configured": 16, "max_batch": 128, "steps": 3}
    # The trials trained, then Lightning restored the initial weights; the data module keeps its batch.
    assert all(torch.equal(value, module.state_dict()[name]) for name, value in before.items())
    assert datamodule.batch_size == 16
