"""`trainer.precision=auto`: the fastest precision that keeps training correct on the machine it runs on.

A GPU with bf16 gets bf16 autocast (`bf16-mixed`), an older one fp16 with loss scaling (`16-mixed`); a CPU
gets `bf16-mixed` where it has native bf16 instructions (AVX512-BF16 or AMX) and fp32 (`32-true`) where it
has not, since bf16 there runs on conversion paths. Any other value is Lightning's own and is kept.
"""

import torch
from omegaconf import DictConfig, open_dict

from seres.cpu_features import has_native_bf16

AUTO = "auto"


def uses_gpu(accelerator: str) -> bool:
    return accelerator in ("gpu", "cuda") or (accelerator == "auto" and torch.cuda.is_available())


def choose_precision(accelerator: str) -> tuple[str, str]:
    """The precision `auto` stands for on this machine, and why."""
    if uses_gpu(accelerator):
        if torch.cuda.is_bf16_supported():
            return "bf16-mixed", "the GPU supports bf16"
        return "16-mixed", "the GPU has no bf16; fp16 with loss scaling"
    if has_native_bf16():
        return "bf16-mixed", "this CPU has native bf16 (AVX512-BF16 or AMX)"
    return "32-true", "this CPU has no native bf16 (AVX512-BF16 or AMX), where bf16 is slower than fp32"


def resolve_precision(cfg: DictConfig) -> str | None:
    """Replace trainer.precision=auto in `cfg` by its choice for this machine; return why, or None."""
    if cfg.trainer.get("precision") != AUTO:
        return None
    precision, reason = choose_precision(str(cfg.trainer.get("accelerator", "auto")))
    with open_dict(cfg):
        cfg.trainer.precision = precision
    return f"trainer.precision=auto: {precision}, since {reason}"
