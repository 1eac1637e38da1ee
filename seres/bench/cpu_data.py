"""--cpu-full (C): the data path alone on a CPU: the batched tensor pipeline against DataLoader workers."""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Iterable
from typing import Any

from torch import Tensor
from torch.utils.data import DataLoader

from seres.bench.images import device_loader
from seres.bench.settings import Settings
from seres.bench.timing import time_steps
from seres.data import build_train_transform
from seres.data.transforms import TensorImageDataset

DATA_WORKERS = (0, 1, 2)  # the DataLoader's worker processes, one path each
WARMUP_BATCHES = 4  # untimed: the workers' start and the batches they prefetch (2 each) while starting

PathCallback = Callable[[str, dict[str, Any]], None]


def dataloader(images: Tensor, labels: Tensor, settings: Settings, workers: int) -> DataLoader:
    """The training loader as the DataModule's CPU pipeline builds it: per-image v2 transforms, shuffled."""
    recipe = settings.project
    transform = build_train_transform(recipe.aug, recipe.mean, recipe.std)
    return DataLoader(
        TensorImageDataset(images, labels, transform),
        batch_size=settings.batch_size,
        shuffle=True,
        drop_last=True,
        num_workers=workers,
    )


def time_data_path(loader: Iterable, batches_per_epoch: int, settings: Settings) -> dict[str, Any]:
    """`data_epochs` epochs of batches made and dropped, the first WARMUP_BATCHES of them untimed.

    A DataLoader starts its workers again at every epoch (the DataModule's are not persistent), so with
    more than one epoch those starts are timed too, as training pays them.
    """
    batches = settings.data_epochs * batches_per_epoch
    warmup = min(WARMUP_BATCHES, batches - 1)
    device, batch = settings.torch_device, settings.batch_size
    return time_steps(lambda x, y: None, loader, device, batch, warmup=warmup, steps=batches - warmup)


def time_data_paths(images: Tensor, labels: Tensor, settings: Settings, on_path: PathCallback) -> None:
    """The tensor pipeline (DeviceTrainLoader on the CPU) and a DataLoader with each of DATA_WORKERS workers.

    All use the project recipe's augmentation and batch, NCHW; `on_path(key, result)` as each one ends.
    """
    nchw = dataclasses.replace(settings, channels_last=False)  # what the DataLoader gives
    tensor = device_loader(images, labels, nchw, settings.project)
    on_path(
        "tensor",
        {
            "path": "tensor pipeline (DeviceTrainLoader), main process",
            **time_data_path(tensor, len(tensor), nchw),
        },
    )
    for workers in DATA_WORKERS:
        loader = dataloader(images, labels, settings, workers)
        result = time_data_path(loader, len(loader), settings)
        on_path(
            f"workers_{workers}",
            {
                "path": f"DataLoader, {workers} worker{'' if workers == 1 else 's'}",
                "workers": workers,
                **result,
            },
        )
