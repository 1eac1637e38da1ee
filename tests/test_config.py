"""The real config tree, composed with Hydra's compose API: every option of every group builds."""

from pathlib import Path

import conftest
import pytest
import torch
from hydra.utils import instantiate

from seres.model import count_parameters
from seres.run.auto_settings import resolve_auto
from seres.run.training import build_module, build_network, build_trainer

CONF = Path(__file__).resolve().parents[1] / "conf"


def compose_train(*overrides: str, output_dir: Path | None = None):
    """The config train.py's task function gets: composed, its `auto` settings resolved (StartChecks)."""
    extra = [f"paths.output_dir={output_dir}"] if output_dir else []
    cfg = conftest.compose_train(*extra, *overrides)
    resolve_auto(cfg)
    return cfg


def group_options(group: str) -> list[str]:
    return sorted(p.stem for p in (CONF / group).glob("*.yaml"))


def test_default_config_is_the_documented_baseline():
    cfg = compose_train()
    assert cfg.model.layer4 is False
    assert cfg.data.val_size == 5000
    assert cfg.trainer.gradient_clip_val == 2.0
    assert cfg.data.aug.crop_padding == 4 and cfg.data.aug.flip is True and cfg.data.aug.rotation == 0


def test_seed_paper_experiment_composes_to_the_papers_values():
    cfg = compose_train("experiment=seed_paper")
    assert cfg.model.layer4 is True
    assert (cfg.optimizer.lr, cfg.optimizer.momentum, cfg.optimizer.weight_decay) == (0.008, 0.9, 1e-4)
    assert cfg.optimizer.nesterov is False
    assert cfg.data.batch_size == 128
    assert cfg.trainer.max_epochs == 200
    assert cfg.trainer.gradient_clip_val == 2.0
    assert cfg.scheduler._target_.endswith("cosine_schedule")
    aug = cfg.data.aug
    assert (aug.crop_padding, aug.flip, aug.rotation, aug.translate) == (4, True, 15.0, 0.1)
    assert (aug.brightness, aug.contrast, aug.saturation) == (0.2, 0.2, 0.2)
    assert list(cfg.data.mean) == [0.4914, 0.4822, 0.4465]
    assert list(cfg.data.std) == [0.2023, 0.1994, 0.2010]
    # Clean protocol: selection on the held-out validation split, the test set only at the end.
    assert cfg.data.val_size == 5000
    assert cfg.callbacks.best_checkpoint.monitor == "val/acc"
    assert count_parameters(build_network(cfg.model)) == 4_398_890


@pytest.mark.parametrize("option", group_options("model"))
def test_model_options_build(option):
    # Uncompiled: model.compile=auto compiles the paper's network on a bf16 CPU, which takes tens of seconds
    # where torch's compile cache is empty (a fresh machine) and tells nothing of the option (test_module
    # compiles).
    cfg = compose_train(f"model={option}", "model.compile=false")
    assert build_network(cfg.model)(torch.randn(2, 3, 32, 32)).shape == (2, 10)


@pytest.mark.parametrize("option", group_options("data/aug"))
def test_aug_options_build_a_datamodule(option, tmp_path):
    cfg = compose_train(f"data/aug={option}", f"data.root={tmp_path}")
    datamodule = instantiate(cfg.data, _convert_="all")
    assert datamodule.aug.flip == (option != "none")


@pytest.mark.parametrize("option", group_options("optimizer"))
@pytest.mark.parametrize("scheduler", group_options("scheduler"))
def test_optimizer_and_scheduler_options_build(option, scheduler):
    cfg = compose_train(f"optimizer={option}", f"scheduler={scheduler}", "optimizer.lr=0.05")
    module = build_module(cfg)
    optimizer = module.optimizer_factory(module.parameters())
    assert optimizer.param_groups[0]["lr"] == 0.05
    schedule = module.scheduler_factory(optimizer, steps_per_epoch=10, max_epochs=4)
    assert schedule.get_last_lr()[0] == pytest.approx(0.05)


@pytest.mark.parametrize("option", group_options("trainer"))
def test_trainer_options_build(option, tmp_path):
    cfg = compose_train(f"trainer={option}", "trainer.accelerator=cpu", output_dir=tmp_path)
    if option == "gpu":
        cfg.trainer.precision = "32-true"  # bf16 autocast needs no GPU, but keep the CPU test plain
    trainer = build_trainer(cfg)
    assert trainer.max_epochs == cfg.trainer.max_epochs
    assert trainer.gradient_clip_val == 2.0


@pytest.mark.parametrize("option", group_options("callbacks"))
def test_callback_options_build(option, tmp_path):
    cfg = compose_train(f"callbacks={option}", "trainer.accelerator=cpu", output_dir=tmp_path)
    names = {type(c).__name__ for c in build_trainer(cfg).callbacks}
    assert {"ModelCheckpoint", "LearningRateMonitor", "EpochSummary"} <= names
    assert ("EarlyStopping" in names) == (option == "early_stopping")


@pytest.mark.parametrize("option", group_options("logger"))
def test_logger_options_build(option, tmp_path, monkeypatch):
    for setting in ("MLFLOW_TRACKING_URI", "WANDB_MODE"):  # the defaults, not this machine's settings
        monkeypatch.delenv(setting, raising=False)
    monkeypatch.chdir(tmp_path)  # where train.py starts: not the repository, which the store must not litter
    cfg = compose_train(f"logger={option}", "trainer.accelerator=cpu", output_dir=tmp_path / "run")
    (logger,) = build_trainer(cfg).loggers
    if option == "mlflow":  # its own store: a local SQLite file where train.py starts, no server
        assert cfg.logger.mlflow.tracking_uri == "sqlite:///mlflow.db"
        assert (tmp_path / "mlflow.db").is_file()
    else:  # files in the run directory
        assert Path(logger.save_dir).is_relative_to(tmp_path)
    if option == "wandb":
        assert cfg.logger.wandb.mode == "offline"


@pytest.mark.parametrize(
    ("group", "option"),
    [("experiment", name) for name in group_options("experiment")]
    + [("debug", n) for n in group_options("debug")],
)
def test_named_recipes_and_debug_presets_compose(group, option):
    cfg = compose_train(f"{group}={option}", "model.compile=false")  # composition, not compilation
    assert build_network(cfg.model)(torch.randn(2, 3, 32, 32)).shape == (2, 10)


def test_unknown_option_names_the_choices():
    with pytest.raises(Exception, match="Could not find 'scheduler/linear'"):
        compose_train("scheduler=linear")
