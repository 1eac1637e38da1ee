"""Start-up checks of a run's settings: a bad value stops the run before any work, naming key and fix.

Takes the resolved config as a plain dict (no Hydra needed). What these checks leave to Hydra: unknown
group options (e.g. scheduler=linear), values of the wrong type and unknown keys (seres/run/config_schema.py).
Here: ranges, choices among names, and rules between keys.
"""

import os
from typing import Any

import torch

from seres.data.augmentation import FLIP_MODES, PADDING_MODES, Augmentation, is_int
from seres.data.datamodule import PIPELINES
from seres.data.files import CIFAR10_TRAIN_IMAGES


class ConfigError(ValueError):
    """A setting that cannot work; the message names the key, the value and what is allowed."""


def _value(config: dict[str, Any], key: str) -> Any:
    node: Any = config
    for part in key.split("."):
        node = node.get(part) if isinstance(node, dict) else None
    return node


def _number(config: dict[str, Any], key: str) -> float:
    node = _value(config, key)
    if isinstance(node, bool) or not isinstance(node, int | float):
        raise ConfigError(f"{key}={node!r} must be a number")
    return float(node)


def _require(ok: bool, key: str, value: Any, allowed: str) -> None:
    if not ok:
        raise ConfigError(f"{key}={value!r} is not allowed: {allowed}")


def check_tta_translate(shift: Any) -> None:
    """The multi-crop shift of train.py's and eval.py's test-time augmentation."""
    _require(is_int(shift) and 0 <= shift <= 8, "tta_translate", shift, "an integer from 0 (none) to 8 px")


def check_optimization(config: dict[str, Any]) -> None:
    lr = _number(config, "optimizer.lr")
    _require(lr > 0, "optimizer.lr", lr, "the learning rate must be > 0, e.g. optimizer.lr=0.1")
    if "momentum" in config["optimizer"]:
        momentum = _number(config, "optimizer.momentum")
        _require(0 <= momentum < 1, "optimizer.momentum", momentum, "use a value in [0, 1), e.g. 0.9")
    decay = _number(config, "optimizer.weight_decay")
    _require(decay >= 0, "optimizer.weight_decay", decay, "use a value >= 0, e.g. 5e-4")
    scale = _number(config, "param_groups.norm_bias_lr_scale")
    _require(scale > 0, "param_groups.norm_bias_lr_scale", scale, "a multiplier > 0, e.g. 1.0 (none) or 64")
    check_tta_translate(config.get("tta_translate"))
    smoothing = _number(config, "label_smoothing")
    _require(0 <= smoothing < 1, "label_smoothing", smoothing, "use a value in [0, 1), e.g. 0.1")
    epochs = config["trainer"].get("max_epochs")
    _require(is_int(epochs) and epochs >= 1, "trainer.max_epochs", epochs, "an integer >= 1")
    clip = config["trainer"].get("gradient_clip_val")
    if clip is not None:
        clip = _number(config, "trainer.gradient_clip_val")
        _require(clip >= 0, "trainer.gradient_clip_val", clip, "use a norm >= 0 (e.g. 2.0), or null for none")
    warmup = (config.get("scheduler") or {}).get("warmup_epochs")
    if warmup is not None:
        warmup = _number(config, "scheduler.warmup_epochs")
        _require(
            0 <= warmup <= epochs,
            "scheduler.warmup_epochs",
            warmup,
            f"the warm-up cannot be longer than the run (trainer.max_epochs={epochs}), e.g. "
            f"scheduler.warmup_epochs={min(2, epochs)}",
        )


def check_data(config: dict[str, Any]) -> None:
    val_size = config["data"].get("val_size")
    _require(
        is_int(val_size) and 1 <= val_size < CIFAR10_TRAIN_IMAGES,
        "data.val_size",
        val_size,
        f"an integer from 1 to {CIFAR10_TRAIN_IMAGES - 1} (there are {CIFAR10_TRAIN_IMAGES} training images)",
    )
    batch = config["data"].get("batch_size")
    _require(is_int(batch) and batch >= 1, "data.batch_size", batch, "an integer >= 1, e.g. 128")
    overfit = config["data"].get("overfit_batches", 0)
    room = (CIFAR10_TRAIN_IMAGES - val_size) // batch  # both checked above
    _require(
        is_int(overfit) and 0 <= overfit <= room,
        "data.overfit_batches",
        overfit,
        f"an integer from 0 (off) to {room}, the training split's batches of data.batch_size, e.g. "
        "data.overfit_batches=4",
    )
    pipeline = config["data"].get("pipeline")
    _require(
        pipeline in PIPELINES,
        "data.pipeline",
        pipeline,
        "one of device|loader (device: the dataset on the training device, a GPU or the CPU; "
        "loader: a DataLoader with worker processes), e.g. data.pipeline=device",
    )
    aug = config["data"].get("aug") or {}
    try:  # keys added with `+data.aug.KEY=...` and ranges: Augmentation's own rules, checked before any work
        Augmentation.coerce(aug)
    except ValueError as error:
        raise ConfigError(str(error)) from None
    alternate = aug.get("flip") and aug.get("flip_mode") == "alternate"
    _require(
        not (alternate and pipeline == "loader"),
        "data.aug.flip_mode",
        aug.get("flip_mode"),
        "alternating flips need data.pipeline=device (the DataLoader pipeline flips at random); use "
        "data.pipeline=device, or data.aug.flip_mode=random",
    )


def uses_gpu(accelerator: str) -> bool:
    """Whether `trainer.accelerator` trains on a GPU on this machine."""
    return accelerator in ("gpu", "cuda") or (accelerator == "auto" and torch.cuda.is_available())


def check_devices(config: dict[str, Any]) -> None:
    """More devices than this machine has: Lightning would fail later, or start far too many processes."""
    trainer = config["trainer"]
    devices, accelerator = trainer.get("devices", 1), str(trainer.get("accelerator", "auto"))
    if not isinstance(devices, int) or devices < 1:
        return  # "auto", -1 and device lists are resolved by Lightning itself
    on_gpu = uses_gpu(accelerator)
    available = torch.cuda.device_count() if on_gpu else (os.cpu_count() or 1)
    if on_gpu and available == 0:
        # e.g. experiment=fast or trainer=gpu on a laptop
        raise ConfigError(
            f"trainer.accelerator={accelerator!r} is not allowed: this machine has no GPU that torch can "
            "use; run on the CPU with trainer=cpu"
        )
    kind = "GPUs" if on_gpu else "CPU cores"
    _require(
        devices <= available,
        "trainer.devices",
        devices,
        f"this machine has {available} {kind}; use trainer.devices={available} or fewer",
    )


# Keys whose values are names from a fixed list (their schema types them as strings).
CHOICES = {
    "data.aug.crop_padding_mode": tuple(PADDING_MODES),
    "data.aug.flip_mode": FLIP_MODES,
    "ddp.batch": ("per_device", "global"),
    "model.compile": ("auto", True, False),
}


def check_choices(config: dict[str, Any]) -> None:
    for key, allowed in CHOICES.items():
        value = _value(config, key)
        names = "|".join(str(choice).lower() for choice in allowed)
        _require(value in allowed, key, value, f"one of {names}, e.g. {key}={str(allowed[0]).lower()}")


def check_batch_norm(config: dict[str, Any]) -> None:
    momentum = _number(config, "model.bn_momentum")
    _require(
        0 < momentum <= 1, "model.bn_momentum", momentum, "a value in (0, 1] (torch's convention), e.g. 0.1"
    )
    model = config["model"]
    _require(
        model.get("bn_scale_trainable") or not model.get("zero_init_residual"),
        "model.bn_scale_trainable",
        model.get("bn_scale_trainable"),
        "frozen scales with model.zero_init_residual=true would keep every block's last scale at 0; set "
        "model.zero_init_residual=false",
    )


def check_patch_whitening(config: dict[str, Any]) -> None:
    whitening = (config.get("callbacks") or {}).get("patch_whitening") or {}
    if not whitening.get("enabled"):
        return
    width = config["model"].get("stem_width")
    # The stem is a 3x3 convolution of 3 channels: 27 patch dimensions, each whitened with both signs.
    _require(
        is_int(width) and width % 2 == 0 and width <= 54,
        "model.stem_width",
        width,
        "patch whitening (callbacks.patch_whitening.enabled=true) needs an even stem width of at most 54, "
        "e.g. model.stem_width=32",
    )


def check_mix(config: dict[str, Any]) -> None:
    for name in ("mixup_alpha", "cutmix_alpha"):
        alpha = _number(config, f"mix.{name}")
        _require(alpha >= 0, f"mix.{name}", alpha, f"a Beta alpha >= 0 (0 = off), e.g. mix.{name}=1.0")
    prob = _number(config, "mix.prob")
    _require(0 <= prob <= 1, "mix.prob", prob, "a probability in [0, 1], e.g. mix.prob=0.5")


def check_sam(config: dict[str, Any]) -> None:
    rho = _number(config, "sam_rho")
    _require(rho >= 0, "sam_rho", rho, "a distance >= 0 (0 = off), e.g. sam_rho=0.05")
    if rho == 0:
        return
    precision = str(config["trainer"].get("precision"))
    _require(
        not precision.startswith("16"),
        "trainer.precision",
        precision,
        "SAM takes two passes a step, which fp16 loss scaling does not allow: trainer.precision=bf16-mixed "
        "or 32-true",
    )
    accumulate = config["trainer"].get("accumulate_grad_batches", 1)
    _require(
        accumulate == 1,
        "trainer.accumulate_grad_batches",
        accumulate,
        "SAM climbs from one batch's gradient: trainer.accumulate_grad_batches=1 (or sam_rho=0)",
    )


def check_tune(config: dict[str, Any]) -> None:
    tune = config.get("tune")
    _require(
        tune in (None, "lr", "batch_size"),
        "tune",
        tune,
        "lr (the learning-rate finder), batch_size (the batch-size finder) or null (train), e.g. tune=lr",
    )


def check_seed(config: dict[str, Any]) -> None:
    seed = config.get("seed")
    _require(is_int(seed) and seed >= 0, "seed", seed, "an integer >= 0, e.g. seed=0")


def check_config(config: dict[str, Any]) -> None:
    """Raise ConfigError for the first setting that cannot work."""
    check_seed(config)
    check_tune(config)
    check_mix(config)
    check_sam(config)
    check_optimization(config)
    check_choices(config)
    check_batch_norm(config)
    check_patch_whitening(config)
    check_data(config)
    check_devices(config)
