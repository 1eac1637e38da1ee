"""The `auto` settings: the fastest correct way to train on the machine a run is on, said in the log.

`trainer.precision=auto`: a GPU with bf16 gets bf16 autocast (`bf16-mixed`), an older one fp16 with loss
scaling (`16-mixed`); a CPU gets `bf16-mixed` where it has native bf16 instructions (AVX512-BF16 or AMX) and
fp32 (`32-true`) where it has not, since bf16 there runs on conversion paths.

`model.compile=auto`: a CPU run in bf16 compiles the network when it trains enough images to repay the
compilation; in fp32 compilation gains nothing measurable on a CPU, and a GPU run does not compile either
(its steps are so fast that a recipe's few minutes rarely repay it: the recipes that do say
`model.compile=true`).

Any other value is kept as given. Both are resolved before the network and the Trainer are built, and the
resolved values are what the checkpoint records.
"""

import torch
from omegaconf import DictConfig, open_dict

from seres.data.files import CIFAR10_TRAIN_IMAGES
from seres.run.config_checks import uses_gpu
from seres.run.cpu_features import has_native_bf16
from seres.run.lr_finder import LR_FIND_STEPS

AUTO = "auto"
# Measured on a 2-core AMD EPYC (Zen 4) CPU (docs/benchmarks.md): compiling the paper's network takes 65 s,
# after which a training step is 23% faster (180.9 -> 222.1 images/s, bf16, channels_last), so the training
# graph has paid for itself after about 63,000 images. A margin on top: evaluation compiles a graph of its
# own, and the gain varies between runs. In fp32 the compiled step was 1% faster on that CPU and 7% slower on
# one without native bf16.
CPU_COMPILE_REPAID_AFTER_IMAGES = 200_000


def choose_precision(accelerator: str) -> tuple[str, str]:
    """The precision `auto` stands for on this machine, and why."""
    if uses_gpu(accelerator):
        if torch.cuda.is_bf16_supported():
            return "bf16-mixed", "the GPU supports bf16"
        return "16-mixed", "the GPU has no bf16; fp16 with loss scaling"
    if has_native_bf16():
        return "bf16-mixed", "this CPU has native bf16 (AVX512-BF16 or AMX)"
    return "32-true", "this CPU has no native bf16 (AVX512-BF16 or AMX), where bf16 is slower than fp32"


def planned_train_images(cfg: DictConfig) -> int | None:
    """Training images of the planned run (all processes together), or None when it has no planned end."""
    if cfg.get("tune") == "lr":
        return LR_FIND_STEPS * cfg.data.batch_size
    epochs = cfg.trainer.get("max_epochs")
    if not isinstance(epochs, int) or epochs < 0:
        return None
    per_epoch = CIFAR10_TRAIN_IMAGES - cfg.data.val_size
    limit = cfg.trainer.get("limit_train_batches")
    if isinstance(limit, int) and not isinstance(limit, bool):
        per_epoch = min(per_epoch, limit * cfg.data.batch_size)
    elif isinstance(limit, float):
        per_epoch = int(per_epoch * limit)
    return epochs * per_epoch


def choose_compile(cfg: DictConfig) -> tuple[bool, str]:
    """Whether `auto` compiles the network of the run `cfg` on this machine, and why."""
    if uses_gpu(str(cfg.trainer.get("accelerator", "auto"))):
        return False, "on a GPU a run rarely trains long enough to repay it (recipes ask for it)"
    if not str(cfg.trainer.get("precision")).startswith("bf16"):
        return False, "in fp32 on a CPU compilation gains nothing measurable"
    images = planned_train_images(cfg)
    repaid = (
        f"{CPU_COMPILE_REPAID_AFTER_IMAGES:,} images, after which compilation has paid for itself on a CPU"
    )
    if images is None or images >= CPU_COMPILE_REPAID_AFTER_IMAGES:
        return True, f"the run trains at least {repaid}"
    return False, f"the run trains {images:,} images, fewer than the {repaid}"


def resolve_auto(cfg: DictConfig) -> list[str]:
    """Replace trainer.precision=auto, then model.compile=auto (it depends on the precision), by their
    choices in `cfg`; return why."""
    reasons = []
    with open_dict(cfg):
        if cfg.trainer.get("precision") == AUTO:
            precision, why = choose_precision(str(cfg.trainer.get("accelerator", "auto")))
            cfg.trainer.precision = precision
            reasons.append(f"trainer.precision=auto: {precision}, since {why}")
        if cfg.model.get("compile") == AUTO:
            compile_net, why = choose_compile(cfg)
            cfg.model.compile = compile_net
            reasons.append(f"model.compile=auto: {str(compile_net).lower()}, since {why}")
    return reasons
