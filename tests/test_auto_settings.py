"""The auto settings: bf16 only where the CPU has it natively; compilation only for CPU runs long enough to
repay it; a user's explicit choice kept."""

import json

import pytest
import torch
from conftest import TINY_MODEL, compose_train, fake_data, run_train
from omegaconf import OmegaConf

from seres.run import auto_settings
from seres.run.cpu_features import has_native_bf16


def test_native_bf16_is_what_torch_detects_on_this_cpu():
    capability = torch._C._cpu._get_cpu_capability()
    assert has_native_bf16() == bool(capability.get("avx512_bf16") or capability.get("amx_bf16"))


@pytest.mark.parametrize(("native", "chosen"), [(True, "bf16-mixed"), (False, "32-true")])
def test_auto_picks_bf16_on_a_cpu_only_where_it_is_native(native, chosen, monkeypatch):
    # The other kind of CPU than this one is simulated: the detection is the only part that differs.
    monkeypatch.setattr(auto_settings, "has_native_bf16", lambda: native)
    cfg = compose_train("trainer=cpu", "model.compile=false")
    assert cfg.trainer.precision == "auto"
    (reason,) = auto_settings.resolve_auto(cfg)
    assert cfg.trainer.precision == chosen and reason.startswith(f"trainer.precision=auto: {chosen}, since")
    assert ("has native bf16" in reason) == native


@pytest.mark.parametrize("explicit", ["32-true", "bf16-mixed"])
def test_a_users_explicit_precision_wins(explicit, monkeypatch):
    # auto would choose the other one
    monkeypatch.setattr(auto_settings, "has_native_bf16", lambda: explicit == "32-true")
    cfg = compose_train("trainer=cpu", f"trainer.precision={explicit}", "model.compile=false")
    assert auto_settings.resolve_auto(cfg) == [] and cfg.trainer.precision == explicit


@pytest.mark.parametrize(
    ("overrides", "compiled", "images"),
    [
        ([], True, "at least 200,000"),  # the default run: 30 epochs of 45,000 images
        (["trainer.max_epochs=4"], False, "180,000"),
        (["trainer.max_epochs=5"], True, "at least 200,000"),
        (["trainer.max_epochs=100", "++trainer.limit_train_batches=10"], False, "128,000"),
        (["trainer.max_epochs=100", "++trainer.limit_train_batches=0.1"], True, "at least 200,000"),
        (["trainer.max_epochs=-1"], True, "at least 200,000"),  # no planned end
    ],
)
def test_auto_compiles_a_bf16_cpu_run_only_when_it_trains_enough_images_to_repay_it(
    overrides, compiled, images
):
    cfg = compose_train("trainer=cpu", "trainer.precision=bf16-mixed", *overrides)
    assert cfg.model.compile == "auto"
    (reason,) = auto_settings.resolve_auto(cfg)
    assert cfg.model.compile is compiled
    assert reason.startswith(f"model.compile=auto: {str(compiled).lower()}, since the run trains {images}")


@pytest.mark.parametrize(
    ("overrides", "reason"),
    [
        (
            ["trainer=cpu", "trainer.precision=32-true"],
            "in fp32 on a CPU compilation gains nothing measurable",
        ),
        (
            ["trainer.accelerator=gpu", "trainer.precision=bf16-mixed"],
            "on a GPU a run rarely trains long enough to repay it (recipes ask for it)",
        ),
    ],
)
def test_auto_does_not_compile_a_long_run_in_fp32_on_a_cpu_nor_on_a_gpu(overrides, reason):
    cfg = compose_train(*overrides, "trainer.max_epochs=200")
    assert auto_settings.resolve_auto(cfg) == [f"model.compile=auto: false, since {reason}"]


def test_an_explicit_compile_setting_wins():
    for explicit in ("true", "false"):
        cfg = compose_train("trainer=cpu", "trainer.precision=32-true", f"model.compile={explicit}")
        assert auto_settings.resolve_auto(cfg) == [] and cfg.model.compile is (explicit == "true")


@pytest.mark.slow
def test_a_run_says_what_auto_chose_and_records_it(fake_cifar_bin, tmp_path):
    run_dir = tmp_path / "run"
    overrides = [*TINY_MODEL, *fake_data(fake_cifar_bin), "trainer=cpu", "trainer.max_epochs=1", "test=false"]
    result = run_train(*overrides, "progress=false", f"hydra.run.dir={run_dir}")
    chosen, _ = auto_settings.choose_precision("cpu")
    assert f"trainer.precision=auto: {chosen}, since" in result.stdout
    # One epoch of the real data set's size is too short to repay a compilation; fp32 never repays it.
    why = "the run trains 49,900 images" if chosen == "bf16-mixed" else "in fp32 on a CPU compilation"
    assert f"model.compile=auto: false, since {why}" in result.stdout
    # A quiet console: none of Lightning's and torch's messages that concern no run of this project.
    for noise in (
        "srun",
        "💡 Tip",
        "LeafSpec",
        "Trainer already configured with model summary callbacks",
        "exists and is not empty",
        "not supported by the model summary",
    ):
        assert noise not in result.stdout + result.stderr, noise
    checkpoint = torch.load(run_dir / "last.ckpt", weights_only=False)
    assert checkpoint["hyper_parameters"]["config"]["trainer"]["precision"] == chosen
    assert checkpoint["hyper_parameters"]["config"]["model"]["compile"] is False
    # Chosen once, before Hydra writes the run's config: the composed config holds the same choice.
    composed = OmegaConf.load(run_dir / ".hydra" / "config.yaml")
    assert composed.trainer.precision == chosen and composed.model.compile is False
    metrics = json.loads((run_dir / "metrics.json").read_text())
    assert metrics["status"] == "completed" and metrics["precision"] == chosen
