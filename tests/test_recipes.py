"""Pieces the accuracy recipes are built from: parallel seeds, time to accuracy, EMA, the fast recipe."""

import json
import sys
from functools import partial
from pathlib import Path

import lightning as L
import pytest
import torch
import torch.nn.functional as F
from conftest import run_command
from hydra import compose, initialize_config_dir
from hydra.utils import instantiate
from torch.utils.data import DataLoader, TensorDataset

from seres.data import CIFAR10DataModule
from seres.model import SEResNet
from seres.module import ClassifierModule

REPO = Path(__file__).resolve().parents[1]
TINY = ["model.widths=[8,16,32,64]", "model.blocks=[1,1,1,1]", "model.stem_width=8", "data.num_workers=0"]


def fake_data(root: Path) -> list[str]:
    return [f"data.root={root}", "data.verify=false", "data.val_size=100", "data.batch_size=32"]


def cpu_run(root: Path, *overrides: str) -> list[str]:
    return [*TINY, *fake_data(root), "trainer.accelerator=cpu", "progress=false", *overrides]


def test_fast_recipe_composes_to_the_gpu_settings():
    with initialize_config_dir(config_dir=str(REPO / "conf"), version_base="1.3"):
        cfg = compose(config_name="train", overrides=["experiment=fast", "paths.output_dir=/unused"])
    assert cfg.model.layer4 and cfg.model.compile and cfg.model.channels_last
    assert cfg.data.pipeline == "gpu" and cfg.trainer.precision == "bf16-mixed" and cfg.tta
    assert cfg.callbacks.time_to_accuracy.target == 0.94
    # Its length fits the budget it is made for: 15 s at the speed target of 50,000 training images/s.
    assert cfg.trainer.max_epochs * (50_000 - cfg.data.val_size) <= 15 * 50_000


def test_best_recipe_composes_to_the_seed_network_with_its_regularisers():
    with initialize_config_dir(config_dir=str(REPO / "conf"), version_base="1.3"):
        cfg = compose(config_name="train", overrides=["experiment=best", "paths.output_dir=/unused"])
    assert cfg.model.layer4 and cfg.model.se_reduction > 0 and cfg.trainer.max_epochs <= 200
    assert cfg.data.aug.cutout == 16 and cfg.data.aug.crop_padding == 4 and cfg.data.aug.flip
    assert cfg.label_smoothing == 0.1 and cfg.tta
    assert cfg.callbacks.ema._target_ == "seres.callbacks.EMA"


class RecordFcWeight(L.Callback):
    """The classifier's weights after each optimizer step, by global step."""

    def __init__(self) -> None:
        self.after_step: dict[int, torch.Tensor] = {}

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        self.after_step[trainer.global_step] = pl_module.net.fc.weight.detach().clone()


def test_best_recipe_ema_averages_every_fourth_step_with_its_decay():
    with initialize_config_dir(config_dir=str(REPO / "conf"), version_base="1.3"):
        cfg = compose(config_name="train", overrides=["experiment=best", "paths.output_dir=/unused"])
    ema, record = instantiate(cfg.callbacks.ema), RecordFcWeight()
    net = SEResNet(widths=[8, 16, 32, 64], blocks=[1, 1, 1, 1], stem_width=8)
    module = ClassifierModule(net, partial(torch.optim.SGD, lr=0.1))
    x, y = torch.randn(64, 3, 32, 32), torch.randint(0, 10, (64,))
    trainer = L.Trainer(
        accelerator="cpu", max_steps=8, callbacks=[record, ema], logger=False, enable_checkpointing=False
    )
    trainer.fit(module, DataLoader(TensorDataset(x, y), batch_size=8))
    # Updates after steps 1 (a copy) and 5; training's end puts the average into the module.
    decay = cfg.callbacks.ema.decay
    assert cfg.callbacks.ema.every_n_steps == 4
    expected = decay * record.after_step[1] + (1 - decay) * record.after_step[5]
    torch.testing.assert_close(net.fc.weight.detach(), expected)


@pytest.mark.parametrize("recipe", ["best", "fast"])
def test_recipe_runs_end_to_end_on_the_cpu_at_tiny_size(recipe, fake_cifar_bin, tmp_path):
    # The recipe's own pipeline, augmentation, schedule and callbacks; only the size and the GPU-only
    # switches (bf16, compilation) are changed.
    run_dir = tmp_path / recipe
    cpu_only = ["trainer=cpu", "model.compile=false", "data.eval_batch_size=64", "trainer.max_epochs=2"]
    run_command(
        [
            sys.executable,
            "train.py",
            f"experiment={recipe}",
            *cpu_run(fake_cifar_bin, *cpu_only),
            f"hydra.run.dir={run_dir}",
        ]
    )
    metrics = json.loads((run_dir / "metrics.json").read_text())
    assert metrics["status"] == "completed" and metrics["epochs"] == 2 and metrics["test_acc"] is not None


def test_seeds_run_in_parallel_and_report_mean_and_spread(fake_cifar_bin, tmp_path):
    out = tmp_path / "seeds"
    overrides = cpu_run(fake_cifar_bin, "trainer.max_epochs=1")
    run_command(
        [sys.executable, "-m", "seres.seeds", "--out", str(out), "--seeds", "0", "1", "--", *overrides]
    )
    summary = json.loads((out / "seeds.json").read_text())
    runs = [summary["runs"][str(seed)] for seed in (0, 1)]
    assert [r["seed"] for r in runs] == [0, 1] and all(r["status"] == "completed" for r in runs)
    test_accs = [r["test_acc"] for r in runs]
    stats = summary["stats"]["test_acc"]
    assert stats["n"] == 2 and stats["mean"] == pytest.approx(sum(test_accs) / 2)
    assert stats["std"] == pytest.approx(abs(test_accs[0] - test_accs[1]) / 2**0.5)
    assert "test_acc:" in (out / "seeds.md").read_text()


@pytest.mark.parametrize(("target", "reached"), [(0.0, True), (1.01, False)])
def test_time_to_accuracy_is_recorded_in_metrics(target, reached, fake_cifar_bin, tmp_path):
    run_dir = tmp_path / "run"
    callback = [
        "+callbacks.tta_time._target_=seres.callbacks.TimeToAccuracy",
        f"+callbacks.tta_time.target={target}",
    ]
    run_command(
        [
            sys.executable,
            "train.py",
            *cpu_run(fake_cifar_bin, "trainer.max_epochs=2"),
            *callback,
            f"hydra.run.dir={run_dir}",
        ]
    )
    metrics = json.loads((run_dir / "metrics.json").read_text())
    assert metrics["train_seconds"] > 0
    if reached:
        assert (
            metrics["epoch_at_target"] == 1 and 0 < metrics["seconds_to_target"] <= metrics["train_seconds"]
        )
    else:
        assert metrics["epoch_at_target"] is None and metrics["seconds_to_target"] is None


def test_ema_weights_are_validated_checkpointed_and_exported(fake_cifar_bin, tmp_path):
    run_dir = tmp_path / "ema"
    ema = [
        "+callbacks.ema._target_=seres.callbacks.EMA",
        "+callbacks.ema.decay=0.9",
    ]
    run_command(
        [
            sys.executable,
            "train.py",
            *cpu_run(fake_cifar_bin, "trainer.max_epochs=2"),
            *ema,
            f"hydra.run.dir={run_dir}",
        ]
    )
    checkpoint = torch.load(run_dir / "best.ckpt", weights_only=False)
    averaged, current = checkpoint["state_dict"], checkpoint["current_model_state"]
    assert not torch.equal(averaged["net.fc.weight"], current["net.fc.weight"])
    exported = torch.load(run_dir / "best_model.pth", weights_only=True)
    assert torch.equal(exported["fc.weight"], averaged["net.fc.weight"])
    # The test after fitting used the averaged weights too: its loss is theirs, not the raw weights'.
    test_loss = json.loads((run_dir / "metrics.json").read_text())["test_loss"]
    assert test_loss == pytest.approx(loss_on_test_split(exported, fake_cifar_bin), abs=1e-5)


def loss_on_test_split(state_dict: dict, root: Path) -> float:
    """Mean cross-entropy of the tiny network with `state_dict` over the test split, in this process."""
    data = CIFAR10DataModule(root=str(root), verify=False, val_size=100, num_workers=0)
    data.setup()
    net = SEResNet(widths=[8, 16, 32, 64], blocks=[1, 1, 1, 1], stem_width=8).eval()
    net.load_state_dict(state_dict)
    with torch.no_grad():
        losses = [F.cross_entropy(net(x), y, reduction="sum") for x, y in data.test_dataloader()]
    return float(sum(losses)) / len(data.test_labels)
