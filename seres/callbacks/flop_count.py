"""Training compute: the FLOPs of one training step per image, counted on the network itself.

Accuracy per unit of compute does not depend on the hardware, so recipes compare on any machine by
`train_flops` and `flops_to_target` (metrics.json) as well as by seconds.
"""

from __future__ import annotations

import copy

import torch
import torch.nn.functional as F
from torch.utils.flop_counter import FlopCounterMode

METHOD = "FlopCounterMode, batch 2, fp32 on the CPU: convolutions and matrix products"


# Counts made in this process, by the network's repr: its architecture, which alone sets the count.
_COUNTED: dict[str, dict[str, float | str]] = {}


def train_step_flops(net: torch.nn.Module) -> dict[str, float | str]:
    """FLOPs per image of a forward pass and of a training step (forward + backward) of `net`.

    Counted by torch.utils.flop_counter.FlopCounterMode on a copy of the network (uncompiled, fp32, on the
    CPU) with a batch of 2: convolutions and matrix products only (BatchNorm, activations and pooling are
    not counted). The count depends on the architecture alone, not on the device, precision or layout, so
    it is made once per architecture and process (the model summary and TrainingCompute both ask).
    """
    plain = getattr(net, "_orig_mod", net)
    architecture = repr(plain)
    if architecture not in _COUNTED:
        _COUNTED[architecture] = _count(plain)
    return dict(_COUNTED[architecture])


def _count(net: torch.nn.Module) -> dict[str, float | str]:
    counted = copy.deepcopy(net).float().cpu().train()
    x, y = torch.randn(2, 3, 32, 32), torch.tensor([0, 1])
    with FlopCounterMode(display=False) as forward:
        loss = F.cross_entropy(counted(x), y)
    with FlopCounterMode(display=False) as backward:
        loss.backward()
    forward_flops, backward_flops = forward.get_total_flops() / 2, backward.get_total_flops() / 2
    return {
        "forward_per_image": forward_flops,
        "train_step_per_image": forward_flops + backward_flops,
        "method": METHOD,
    }
