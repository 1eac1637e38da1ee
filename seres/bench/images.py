"""The images every section trains on, the device pipeline that serves them, and (4): that pipeline alone,
also with each automatic augmentation policy (data.aug.policy) added to it."""

from __future__ import annotations

import dataclasses
from typing import Any

import torch
from torch import Tensor

from seres.bench.recipe import Recipe
from seres.bench.settings import Settings
from seres.bench.timing import time_steps
from seres.data import DeviceTrainLoader, load_cifar10, stratified_split


def load_images(settings: Settings) -> tuple[Tensor, Tensor, str]:
    """(N, 3, 32, 32) uint8 images and (N,) int64 labels on the CPU, and a line saying what they are."""
    if settings.data_root is not None:
        recipe = settings.project
        images, labels = load_cifar10(settings.data_root)["train"]
        train_idx, _ = stratified_split(labels, recipe.val_size, seed=recipe.split_seed)
        note = (
            f"CIFAR-10 from {settings.data_root}: the {len(train_idx):,} training images "
            f"({recipe.val_size:,} held out)"
        )
        return images[train_idx], labels[train_idx], note
    generator = torch.Generator().manual_seed(0)
    n = settings.images
    images = torch.randint(0, 256, (n, 3, 32, 32), dtype=torch.uint8, generator=generator)
    labels = torch.randint(0, 10, (n,), generator=generator)
    return images, labels, f"random uint8 images ({n:,} x 3 x 32 x 32), no dataset needed"


def device_loader(
    images: Tensor,
    labels: Tensor,
    settings: Settings,
    recipe: Recipe | None = None,
    policy: str | None = None,
) -> DeviceTrainLoader:
    """The device pipeline over `images` with `recipe`'s augmentations and normalisation (default: seed's),
    with `policy` (data.aug.policy) in place of the recipe's when given.

    It runs on the settings' device, a CPU included: there it is the batched tensor pipeline in the main
    process.
    """
    recipe = recipe or settings.seed
    aug = recipe.aug if policy is None else dataclasses.replace(recipe.aug, policy=policy)
    return DeviceTrainLoader(
        images,
        labels,
        batch_size=settings.batch_size,
        aug=aug,
        mean=recipe.mean,
        std=recipe.std,
        device=settings.torch_device,
        seed=0,
        channels_last=settings.channels_last,
    )


def data_pipeline(loader: DeviceTrainLoader, settings: Settings) -> dict[str, Any]:
    """(4): one warm-up epoch, then `data_epochs` timed epochs; each batch is made and dropped."""
    epoch = len(loader)
    return time_steps(
        lambda x, y: None,
        loader,
        settings.torch_device,
        settings.batch_size,
        warmup=epoch,
        steps=settings.data_epochs * epoch,
        check_syncs=True,
    )
