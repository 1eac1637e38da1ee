"""What the CPU offers for training, as torch detects it: one place for the benchmark and for training."""

from __future__ import annotations

import torch

# Either gives bf16 matrix instructions; without them bf16 runs on slower conversion paths.
NATIVE_BF16_FEATURES = ("avx512_bf16", "amx_bf16")


def has_native_bf16() -> bool:
    """True when torch detects avx512_bf16 or amx_bf16 on this CPU.

    Reads torch._C._cpu._get_cpu_capability(), a private API: a torch without it (or where it fails) gives
    False, so a caller falls back to fp32 rather than guessing.
    """
    try:
        capability = torch._C._cpu._get_cpu_capability()
    except (AttributeError, RuntimeError):
        return False
    return any(bool(capability.get(name)) for name in NATIVE_BF16_FEATURES)
