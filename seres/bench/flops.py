"""The work a training step does (FLOPs per image) and the rate the device reaches on matrix products."""

from __future__ import annotations

import time
from typing import Any

import torch
import torch.nn.functional as F
from torch.utils.flop_counter import FlopCounterMode

from seres.bench.timing import synchronize
from seres.model import SEResNet


def measure_flops(model: dict[str, Any]) -> dict[str, Any]:
    """FLOPs per image of a forward pass and of a training step (forward + backward).

    Counted by torch.utils.flop_counter.FlopCounterMode on a batch of 2 on the CPU in fp32: convolutions and
    matrix products only (BatchNorm, activations and pooling are not counted); the count does not depend on
    the device or the precision.
    """
    net = SEResNet(**model)
    x, y = torch.randn(2, 3, 32, 32), torch.tensor([0, 1])
    with FlopCounterMode(display=False) as forward:
        loss = F.cross_entropy(net(x), y)
    with FlopCounterMode(display=False) as backward:
        loss.backward()
    forward_flops, backward_flops = forward.get_total_flops() / 2, backward.get_total_flops() / 2
    return {
        "forward_per_image": forward_flops,
        "train_step_per_image": forward_flops + backward_flops,
        "method": "FlopCounterMode, batch 2, fp32 on the CPU: convolutions and matrix products",
    }


def matmul_peak(device: torch.device) -> dict[str, Any]:
    """The measured matrix-product rate that achieved TFLOP/s are compared with.

    GPU: an 8192-cube bf16 product; CPU: a 1024-cube float32 one (smaller, to stay quick).
    """
    n, dtype, repeats = (8192, torch.bfloat16, 50) if device.type == "cuda" else (1024, torch.float32, 10)
    a = torch.randn(n, n, device=device).to(dtype)
    b = torch.randn(n, n, device=device).to(dtype)
    out = torch.empty_like(a)
    for _ in range(3):
        torch.mm(a, b, out=out)
    synchronize(device)
    started = time.perf_counter()
    for _ in range(repeats):
        torch.mm(a, b, out=out)
    synchronize(device)
    seconds = time.perf_counter() - started
    return {
        "tflops": 2 * n**3 * repeats / seconds / 1e12,
        "matmul": f"{n}x{n}x{n} {str(dtype).removeprefix('torch.')}",
    }
