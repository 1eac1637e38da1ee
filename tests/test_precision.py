"""trainer.precision=auto: bf16 only where the CPU has it natively, fp32 elsewhere, a user's choice kept."""

import json

import pytest
import torch
from conftest import TINY_MODEL, fake_data, run_train
from hydra import compose, initialize_config_dir
from omegaconf import OmegaConf

from seres import precision
from seres.cpu_features import has_native_bf16
from train import CONF_DIR


def compose_train(*overrides: str):
    with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
        return compose(config_name="train", overrides=["paths.output_dir=/unused", *overrides])


def test_native_bf16_is_what_torch_detects_on_this_cpu():
    capability = torch._C._cpu._get_cpu_capability()
    assert has_native_bf16() == bool(capability.get("avx512_bf16") or capability.get("amx_bf16"))


@pytest.mark.parametrize(("native", "chosen"), [(True, "bf16-mixed"), (False, "32-true")])
def test_auto_picks_bf16_on_a_cpu_only_where_it_is_native(native, chosen, monkeypatch):
    # The other kind of CPU than this one is simulated: the detection is the only part that differs.
    monkeypatch.setattr(precision, "has_native_bf16", lambda: native)
    cfg = compose_train("trainer=cpu")
    assert cfg.trainer.precision == "auto"
    reason = precision.resolve_precision(cfg)
    assert cfg.trainer.precision == chosen and reason.startswith(f"trainer.precision=auto: {chosen}, since")
    assert ("has native bf16" in reason) == native


@pytest.mark.parametrize("explicit", ["32-true", "bf16-mixed"])
def test_a_users_explicit_precision_wins(explicit, monkeypatch):
    monkeypatch.setattr(precision, "has_native_bf16", lambda: explicit == "32-true")  # the opposite choice
    cfg = compose_train("trainer=cpu", f"trainer.precision={explicit}")
    assert precision.resolve_precision(cfg) is None and cfg.trainer.precision == explicit


@pytest.mark.slow
def test_a_run_says_what_auto_chose_and_records_it(fake_cifar_bin, tmp_path):
    run_dir = tmp_path / "run"
    overrides = [*TINY_MODEL, *fake_data(fake_cifar_bin), "trainer=cpu", "trainer.max_epochs=1", "test=false"]
    result = run_train(*overrides, "progress=false", f"hydra.run.dir={run_dir}")
    chosen, _ = precision.choose_precision("cpu")
    assert f"trainer.precision=auto: {chosen}, since" in result.stdout
    checkpoint = torch.load(run_dir / "last.ckpt", weights_only=False)
    assert checkpoint["hyper_parameters"]["config"]["trainer"]["precision"] == chosen
    assert OmegaConf.load(run_dir / ".hydra" / "config.yaml").trainer.precision == "auto"
    assert json.loads((run_dir / "metrics.json").read_text())["status"] == "completed"
