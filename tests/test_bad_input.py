"""A user's mistake on the command line gets one sentence naming the key, the value and the fix: no
traceback, a non-zero exit, and no run directory written.

train.py's real entry point runs in this process (Hydra's command line, composition and callbacks), which
saves a process start per case; tests/test_reliability.py has the same refusal from a subprocess.
"""

import pytest
from conftest import TINY, compose_train, fake_data
from entry_point import run_entry_point

from seres.model import count_parameters
from seres.run.training import build_network

REFUSED = [
    (["optimizer.lr=-0.1"], "optimizer.lr=-0.1 is not allowed: the learning rate must be > 0"),
    (["trainer.devices=99"], "trainer.devices=99 is not allowed: this machine has"),
    (["data.batch_size=0"], "data.batch_size=0 is not allowed: an integer >= 1"),
    (["seed=-1"], "seed=-1 is not allowed: an integer >= 0, e.g. seed=0"),
    (["label_smoothing=1.5"], "label_smoothing=1.5 is not allowed: use a value in [0, 1)"),
    (
        ["param_groups.norm_bias_lr_scale=0"],
        "param_groups.norm_bias_lr_scale=0.0 is not allowed: a multiplier > 0",
    ),
    (["model.bn_momentum=2"], "model.bn_momentum=2.0 is not allowed: a value in (0, 1]"),
    (
        ["model.bn_scale_trainable=false", "model.zero_init_residual=true"],
        "model.bn_scale_trainable=False is not allowed: frozen scales with model.zero_init_residual=true",
    ),
    (
        ["data.aug.flip=true", "data.aug.flip_mode=alternate", "data.pipeline=loader"],
        "data.aug.flip_mode='alternate' is not allowed: alternating flips need data.pipeline=device",
    ),
    (
        ["callbacks.patch_whitening.enabled=true", "model.stem_width=7"],
        "model.stem_width=7 is not allowed: patch whitening (callbacks.patch_whitening.enabled=true) needs",
    ),
    (
        ["data.root=/dev/null/cifar"],
        "data.root=/dev/null/cifar cannot hold CIFAR-10 (/dev/null is not a directory)",
    ),
    (
        ["data.aug.crop_padding_mode=edge"],
        "data.aug.crop_padding_mode='edge' is not allowed: one of zeros|reflect",
    ),
    (
        ["data.aug.flip_mode=sometimes"],
        "data.aug.flip_mode='sometimes' is not allowed: one of random|alternate",
    ),
    (["data.aug.rotation=-5"], "data.aug.rotation must be a number >= 0 (0 = off), got -5.0"),
    (["+data.aug.blur=1"], "unknown augmentation setting(s) data.aug.blur; allowed: crop_padding,"),
    (["mix.prob=2"], "mix.prob=2.0 is not allowed: a probability in [0, 1], e.g. mix.prob=0.5"),
    (
        ["tune=batch"],
        "tune='batch' is not allowed: lr (the learning-rate finder), batch_size (the batch-size finder) or "
        "null (train), e.g. tune=lr",
    ),
    (["sam_rho=-0.05"], "sam_rho=-0.05 is not allowed: a distance >= 0 (0 = off), e.g. sam_rho=0.05"),
    (
        ["sam_rho=0.05", "trainer.precision=16-mixed"],
        "trainer.precision='16-mixed' is not allowed: SAM takes two passes a step, which fp16 loss scaling",
    ),
    (
        ["sam_rho=0.05", "+trainer.accumulate_grad_batches=2"],
        "trainer.accumulate_grad_batches=2 is not allowed: SAM climbs from one batch's gradient",
    ),
    (["ddp.batch=local"], "ddp.batch='local' is not allowed: one of per_device|global"),
    (["model.compile=maybe"], "model.compile='maybe' is not allowed: one of auto|true|false"),
    (["trainer.gradient_clip_val=-1"], "trainer.gradient_clip_val=-1.0 is not allowed: use a norm >= 0"),
    (
        ["scheduler.warmup_epochs=5", "trainer.max_epochs=2"],
        "scheduler.warmup_epochs=5.0 is not allowed: the warm-up cannot be longer than the run",
    ),
]


# A value of the wrong type is refused by Hydra while it composes the config (seres/run/config_schema.py): its
# compact message names the override, the value and the type, with no traceback.
WRONG_TYPES = [
    ("optimizer.lr=fast", "Value 'fast' of type 'str' could not be converted to Float"),
    ("tta=maybe", "Value 'maybe' is not a valid bool"),
    ("model.layer4=perhaps", "Value 'perhaps' is not a valid bool"),
    ("model.widths=[32,abc]", "Value 'abc' of type 'str' could not be converted to Integer"),
    ("data.aug.cutout=1.5", "Value '1.5' of type 'float' could not be converted to Integer"),
    ("seed=abc", "Value 'abc' of type 'str' could not be converted to Integer"),
    ("model.lyer4=true", "Key 'lyer4' not in 'ModelSchema'"),
]


@pytest.mark.parametrize(("overrides", "message"), REFUSED, ids=[case[0][0] for case in REFUSED])
def test_a_bad_setting_is_one_sentence_and_writes_nothing(
    overrides, message, fake_cifar_bin, tmp_path, monkeypatch, capsys
):
    run_dir = tmp_path / "run"
    arguments = [*TINY, *fake_data(fake_cifar_bin), "trainer.accelerator=cpu", *overrides]
    code = run_entry_point([*arguments, f"hydra.run.dir={run_dir}"], monkeypatch)
    printed = capsys.readouterr()
    assert code != 0 and message in printed.err and "Traceback" not in printed.out + printed.err
    assert printed.err.strip().count("\n") == 0, printed.err  # one line
    assert not run_dir.exists()


@pytest.mark.parametrize(("override", "message"), WRONG_TYPES, ids=[case[0] for case in WRONG_TYPES])
def test_a_value_of_the_wrong_type_is_refused_where_the_config_is_composed(
    override, message, fake_cifar_bin, tmp_path, monkeypatch, capsys
):
    run_dir = tmp_path / "run"
    arguments = [*TINY, *fake_data(fake_cifar_bin), override, f"hydra.run.dir={run_dir}"]
    code = run_entry_point(arguments, monkeypatch)
    printed = capsys.readouterr()
    assert code != 0 and "Traceback" not in printed.out + printed.err
    key = override.split("=")[0]
    assert f"override {override}" in printed.err or f"full_key: {key}" in printed.err, printed.err
    assert message in printed.err and not run_dir.exists()


@pytest.mark.parametrize("spelling", ["no", "off", "false", "False"])
def test_a_boolean_written_as_a_word_means_what_it_says(spelling):
    cfg = compose_train(f"model.layer4={spelling}", f"tta={spelling}", "model.compile=false")
    assert cfg.model.layer4 is False and cfg.tta is False
    assert count_parameters(build_network(cfg.model)) == 1_092_650  # the paper's 3-stack baseline
