"""The work a training step does (FLOPs per image) and the rate the device reaches on matrix products."""

from __future__ import annotations

import time
from typing import Any

import torch

from seres.bench.timing import synchronize
from seres.callbacks.flop_count import train_step_flops
from seres.model import SEResNet

CPU_PEAK_S = 1.0  # a CPU's peak: products are timed until this much time has passed (at most 10)


def measure_flops(model: dict[str, Any]) -> dict[str, Any]:
    """FLOPs per image of a forward pass and of a training step of the network `model` describes."""
    return train_step_flops(SEResNet(**model))


def matmul_peak(device: torch.device, dtype: torch.dtype | None = None) -> dict[str, Any]:
    """The measured matrix-product rate that achieved TFLOP/s are compared with.

    GPU: 50 8192-cube products, bf16 unless `dtype` says otherwise; CPU: 1024-cube ones (smaller, to stay
    quick), float32 unless `dtype` says otherwise, up to 10 of them or CPU_PEAK_S of products, whichever
    ends first (a CPU without native bf16 takes seconds per bf16 product).
    """
    gpu = device.type == "cuda"
    n, repeats = (8192, 50) if gpu else (1024, 10)
    dtype = dtype or (torch.bfloat16 if gpu else torch.float32)
    a = torch.randn(n, n, device=device).to(dtype)
    b = torch.randn(n, n, device=device).to(dtype)
    out = torch.empty_like(a)
    for _ in range(3 if gpu else 1):
        torch.mm(a, b, out=out)
    synchronize(device)
    started, done = time.perf_counter(), 0
    while done < repeats:
        torch.mm(a, b, out=out)
        done += 1
        # A GPU's products are queued, not done: its clock is read only after the synchronize below.
        if not gpu and time.perf_counter() - started >= CPU_PEAK_S:
            break
    synchronize(device)
    seconds = time.perf_counter() - started
    return {
        "tflops": 2 * n**3 * done / seconds / 1e12,
        "matmul": f"{n}x{n}x{n} {str(dtype).removeprefix('torch.')}",
    }
