"""(2): the reference loop, in plain PyTorch: what the Lightning loop does, with nothing around it."""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor, nn

from seres.bench.settings import Settings
from seres.bench.timing import time_steps
from seres.data import DeviceTrainLoader
from seres.module import cosine_schedule


def plain_loop(net: nn.Module, loader: DeviceTrainLoader, settings: Settings) -> dict[str, Any]:
    """The project recipe's optimizer and clipping, and the module's per-step cosine schedule."""
    device, recipe = settings.torch_device, settings.project
    net.to(device)
    optimizer = recipe.optimizer_factory()(net.parameters())
    scheduler = cosine_schedule(optimizer, steps_per_epoch=settings.warmup + settings.steps, max_epochs=1)
    criterion = nn.CrossEntropyLoss()
    loss_sum = torch.zeros((), device=device)
    correct = torch.zeros((), dtype=torch.int64, device=device)

    def step(x: Tensor, y: Tensor) -> None:
        with settings.autocast():
            logits = net(x)
            loss = criterion(logits, y)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        recipe.clip_gradients(net.parameters())
        optimizer.step()
        scheduler.step()
        # Statistics stay on the device, like the module's metrics: reading them would stall the host.
        loss_sum.add_(loss.detach())
        correct.add_((logits.argmax(dim=1) == y).sum())

    net.train()
    result = time_steps(
        step, loader, device, settings.batch_size, settings.warmup, settings.steps, check_syncs=True
    )
    result["mean_loss"] = loss_sum.item() / (settings.warmup + settings.steps)
    return result
