"""Device-resident data: the uint8 splits live on the accelerator, and training batches are augmented there.

The whole training set is copied to the device once. Every epoch is a device-side gather along a seeded
permutation followed by the batched augmentation of :mod:`seres.data.batch_augment`, so the per-batch loop has
no per-sample Python, no worker processes, no host-device copies and no host syncs.
"""

from __future__ import annotations

import hashlib
import math
from collections.abc import Iterator

import torch
from torch import Tensor

from seres.data.augmentation import Augmentation
from seres.data.batch_augment import (
    ChannelStats,
    alternating_flips,
    augment_batch,
    normalize,
)


class DeviceTrainLoader:
    """Device-resident, per-epoch shuffled and augmented training batches; usable as ``train_dataloader()``.

    Epoch ``e`` uses a permutation that depends only on ``(seed, e)``, drawn on the CPU with a seeded
    torch.Generator so that every rank draws the same one. It is truncated to a multiple of ``world_size`` and
    rank ``r`` takes every ``world_size``-th index starting at ``r``: ranks are disjoint, equally long, and
    together cover the set exactly once apart from the ``N % world_size`` indices the truncation dropped.
    Augmentation randomness depends on ``(seed, epoch, rank)``; with ``aug.flip_mode="alternate"`` each
    image's flip depends on ``(seed, epoch)`` and its index only, whichever rank draws the image. Every
    batch is full: the remainder of a rank's share that makes no whole batch is left out of the epoch, as
    the CPU training loader drops it.

    Without ``set_epoch``, each iteration uses the epoch after the previous one, starting at 0. The epoch is
    claimed on the first ``next()``, so an iterator created and never advanced (Lightning's iterability probe)
    consumes nothing, and ``set_epoch`` called after ``iter()`` but before the first batch still applies.
    """

    def __init__(
        self,
        images: Tensor,
        labels: Tensor,
        batch_size: int,
        aug: Augmentation,
        mean: ChannelStats,
        std: ChannelStats,
        device: torch.device | str,
        seed: int,
        rank: int = 0,
        world_size: int = 1,
        channels_last: bool = False,
        fixed_order: bool = False,
    ) -> None:
        """images: (N, 3, H, W) uint8; labels: (N,) integer; mean/std: per-channel, in [0, 1] units.

        fixed_order: every epoch in the images' own order (overfitting checks), instead of a new permutation.
        """
        _check_dataset(images, labels, rank, world_size)
        self.device = torch.device(device)
        self.images = images.to(self.device)  # the only host-to-device copy of pixels
        self.labels = labels.to(self.device, torch.int64)
        # Statistics live on the device so that per-batch normalisation copies nothing from the host.
        self.mean = torch.as_tensor(mean, dtype=torch.float32).to(self.device)
        self.std = torch.as_tensor(std, dtype=torch.float32).to(self.device)
        self.batch_size = batch_size
        self.aug = aug
        self.seed = seed
        self.rank = rank
        self.world_size = world_size
        self.channels_last = channels_last
        self.fixed_order = fixed_order
        self.samples_per_rank = len(images) // world_size
        self._next_epoch = 0
        self._aug_generator = torch.Generator(device=self.device)
        # Epoch 0's flip of every image: alternating flips start from it (alternating_flips).
        first_flips = torch.rand(len(images), generator=torch.Generator().manual_seed(_derive_seed(seed, -1)))
        self.first_flips = (first_flips < 0.5).to(self.device)
        if len(self) == 0:
            raise ValueError(f"{self.samples_per_rank} samples per rank give no batch of {batch_size}")

    def __len__(self) -> int:
        """Batches per epoch on this rank (the same on every rank)."""
        return self.samples_per_rank // self.batch_size

    def set_epoch(self, epoch: int) -> None:
        """Make the next iteration run epoch ``epoch``; later iterations continue from there."""
        self._next_epoch = epoch

    def rank_indices(self, epoch: int) -> Tensor:
        """(samples_per_rank,) int64 CPU indices of this rank's share of epoch ``epoch``, in batch order."""
        if self.fixed_order:
            permutation = torch.arange(len(self.images))
        else:
            generator = torch.Generator().manual_seed(_derive_seed(self.seed, epoch))
            permutation = torch.randperm(len(self.images), generator=generator)
        return permutation[self.rank : self.samples_per_rank * self.world_size : self.world_size]

    def __iter__(self) -> Iterator[tuple[Tensor, Tensor]]:
        """Yield (x, y): x (B, 3, H, W) float32 normalised, y (B,) int64, both on ``device``."""
        epoch = self._next_epoch
        self._next_epoch += 1
        indices = _copy_without_host_wait(self.rank_indices(epoch), self.device)
        self._aug_generator.manual_seed(_derive_seed(self.seed, epoch, self.rank))
        for start in range(0, len(self) * self.batch_size, self.batch_size):
            batch_indices = indices[start : start + self.batch_size]
            flips = self._flips(batch_indices, epoch)
            yield self._augmented(self.images[batch_indices], flips), self.labels[batch_indices]

    def _flips(self, batch_indices: Tensor, epoch: int) -> Tensor | None:
        """The batch's flips when they alternate; None lets augment_batch draw them."""
        if self.aug.flip and self.aug.flip_mode == "alternate":
            return alternating_flips(self.first_flips, batch_indices, epoch)
        return None

    def _augmented(self, images: Tensor, flips: Tensor | None) -> Tensor:
        x = augment_batch(images, self.aug, self._aug_generator, mean=self.mean, std=self.std, flips=flips)
        if self.channels_last:
            return x.contiguous(memory_format=torch.channels_last)
        return x


class DeviceEvalLoader:
    """Unaugmented batches of a whole split (validation, test), normalised once, on the device.

    Under DDP each rank takes every world_size-th image, so the ranks together see each image exactly once
    (as the CPU path's sampler does); batches come in a fixed order, the last one possibly smaller.
    """

    def __init__(
        self,
        images: Tensor,
        labels: Tensor,
        batch_size: int,
        mean: ChannelStats,
        std: ChannelStats,
        device: torch.device | str,
        rank: int = 0,
        world_size: int = 1,
        channels_last: bool = False,
    ) -> None:
        _check_dataset(images, labels, rank, world_size)
        device = torch.device(device)
        shard = slice(rank, None, world_size)
        # One copy of this rank's share to the device, normalised as the CPU eval transform does (bitwise).
        x = normalize(images[shard].to(device), torch.as_tensor(mean), torch.as_tensor(std))
        self.images = x.contiguous(memory_format=torch.channels_last) if channels_last else x
        self.labels = labels[shard].to(device, torch.int64)
        self.batch_size = batch_size

    def __len__(self) -> int:
        return math.ceil(len(self.labels) / self.batch_size)

    def __iter__(self) -> Iterator[tuple[Tensor, Tensor]]:
        for start in range(0, len(self.labels), self.batch_size):
            yield self.images[start : start + self.batch_size], self.labels[start : start + self.batch_size]


def _check_dataset(images: Tensor, labels: Tensor, rank: int, world_size: int) -> None:
    """What both loaders need: uint8 images with one label each, and a rank among the processes."""
    if not 0 <= rank < world_size:
        raise ValueError(f"rank {rank} is not in [0, {world_size})")
    if images.dtype != torch.uint8 or images.dim() != 4 or images.shape[1] != 3:
        raise ValueError(f"images must be (N, 3, H, W) uint8, got {tuple(images.shape)} {images.dtype}")
    if labels.shape != images.shape[:1]:
        raise ValueError(f"labels must be ({len(images)},), got {tuple(labels.shape)}")


def _copy_without_host_wait(tensor: Tensor, device: torch.device) -> Tensor:
    """Host -> device copy. On CUDA, a pageable source makes the host wait for the copy (a sync at every
    epoch start); a pinned source copies asynchronously and the caching host allocator keeps it alive."""
    if device.type != "cuda":
        return tensor.to(device)
    return tensor.pin_memory().to(device, non_blocking=True)


def _derive_seed(*parts: int) -> int:
    """A 63-bit seed from integers, hashed so that nearby inputs give unrelated random streams."""
    digest = hashlib.blake2b(repr(parts).encode(), digest_size=8).digest()
    return int.from_bytes(digest, "little") >> 1
