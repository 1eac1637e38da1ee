"""A user's mistake on the command line gets one sentence naming the key, the value and the fix: no
traceback, a non-zero exit, and no run directory written.

train.py's real entry point runs in this process (Hydra's command line, composition and callbacks), which
saves a process start per case; tests/test_reliability.py has the same refusal from a subprocess.
"""

import sys

import pytest
from conftest import TINY, fake_data
from hydra.core.global_hydra import GlobalHydra

import train

REFUSED = [
    (["optimizer.lr=fast"], "optimizer.lr='fast' must be a number"),
    (["optimizer.lr=-0.1"], "optimizer.lr=-0.1 is not allowed: the learning rate must be > 0"),
    (["trainer.devices=99"], "trainer.devices=99 is not allowed: this machine has"),
    (["data.batch_size=0"], "data.batch_size=0 is not allowed: an integer >= 1"),
    (["seed=abc"], "seed='abc' is not allowed: an integer >= 0, e.g. seed=0"),
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
    (["trainer.gradient_clip_val=-1"], "trainer.gradient_clip_val=-1.0 is not allowed: use a norm >= 0"),
    (
        ["scheduler.warmup_epochs=5", "trainer.max_epochs=2"],
        "scheduler.warmup_epochs=5.0 is not allowed: the warm-up cannot be longer than the run",
    ),
]


def run_entry_point(arguments: list[str], monkeypatch) -> int:
    """`python train.py ARGUMENTS...` in this process; returns its exit code."""
    monkeypatch.setattr(sys, "argv", [train.__file__, *arguments])
    try:
        train.main()
    except SystemExit as stop:
        return stop.code
    finally:
        GlobalHydra.instance().clear()
    return 0


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
