"""The Lightning DataModule: CIFAR-10's train/val/test loaders on the CPU pipeline or on the device."""

from __future__ import annotations

import random
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import lightning
import numpy as np
import torch
from lightning.pytorch.overrides.distributed import UnrepeatedDistributedSampler
from torch import Tensor
from torch.utils.data import DataLoader, Dataset, RandomSampler, Sampler, SequentialSampler

from seres.data.device_loaders import DeviceEvalLoader, DeviceTrainLoader
from seres.data.files import CLASSES, load_cifar10
from seres.data.sources import ensure_cifar10
from seres.data.split import stratified_split
from seres.data.transforms import (
    Augmentation,
    TensorImageDataset,
    build_eval_transform,
    build_train_transform,
)

# loader: a DataLoader of per-image transforms in worker processes; device: the dataset as one uint8 tensor on
# the training device (a GPU or the CPU) with batched augmentation, no worker processes.
PIPELINES = ("device", "loader")


class CIFAR10DataModule(lightning.LightningDataModule):
    """CIFAR-10 train/val/test loaders; val is a stratified hold-out of the official training set.

    After :meth:`setup`, ``train_images``/``val_images``/``test_images`` are uint8 (N, 3, 32, 32) tensors
    and ``*_labels`` int64 (N,) tensors. ``pipeline="device"`` (the config's default) keeps every split on
    the training device, which it takes from the Trainer; ``"loader"`` works without a Trainer too.

    ``overfit_batches=N`` (a debugging check, 0 = off) trains on the first N training batches only, in the
    same order every epoch and without augmentation, and validates on those same images: a network that
    works reaches 100% training accuracy, and its validation accuracy follows. Lightning's own
    ``trainer.overfit_batches`` also gets a fixed training order on the device pipeline, as Lightning gives a
    DataLoader; it validates on validation batches.
    """

    num_classes = len(CLASSES)
    classes = CLASSES

    def __init__(
        self,
        root: str = "data",
        batch_size: int = 128,
        num_workers: int = 2,
        val_size: int = 5000,
        split_seed: int = 0,
        aug: dict | Augmentation | None = None,
        mean: Sequence[float] = (0.4914, 0.4822, 0.4465),
        std: Sequence[float] = (0.2470, 0.2435, 0.2616),
        verify: bool = True,
        pipeline: str = "loader",
        eval_batch_size: int | None = None,
        seed: int = 0,
        channels_last: bool = False,
        overfit_batches: int = 0,
    ) -> None:
        super().__init__()
        self.root = Path(root)
        self.batch_size = _require_int("batch_size", batch_size, 1)
        self.num_workers = _require_int("num_workers", num_workers, 0)
        self.val_size = _require_int("val_size", val_size, 1)
        self.split_seed = _require_int("split_seed", split_seed, 0)
        self.aug = Augmentation.coerce(aug)
        self.mean = _require_channels("mean", mean, positive=False)
        self.std = _require_channels("std", std, positive=True)
        if not isinstance(verify, bool):
            raise ValueError(f"data.verify must be true or false, got {verify!r}")
        self.verify = verify
        if pipeline not in PIPELINES:
            raise ValueError(f"data.pipeline must be one of {'|'.join(PIPELINES)}, got {pipeline!r}")
        self.pipeline = pipeline
        self.eval_batch_size = (
            batch_size if eval_batch_size is None else _require_int("eval_batch_size", eval_batch_size, 1)
        )
        # Seeds the device pipeline's epoch permutations (the DataLoader draws from the global RNG).
        self.seed = seed
        self.channels_last = channels_last
        self.overfit_batches = _require_int("overfit_batches", overfit_batches, 0)
        if self.overfit_batches:
            self.aug = Augmentation()
        self._order_generator, self._worker_generator = torch.Generator(), torch.Generator()
        self._device_loader: DeviceTrainLoader | None = None
        self._device_eval_loaders: dict[str, DeviceEvalLoader] = {}
        self._loaded = False

    def prepare_data(self) -> None:
        ensure_cifar10(self.root, self.verify)

    def setup(self, stage: str | None = None) -> None:
        if self._loaded:
            return
        data = load_cifar10(self.root, self.verify)
        images, labels = data["train"]
        train_idx, val_idx = stratified_split(labels, self.val_size, self.split_seed)
        if len(train_idx) < self.batch_size:
            raise ValueError(
                f"data.batch_size={self.batch_size} exceeds the {len(train_idx)} training images left after "
                f"data.val_size={self.val_size}; lower one of them."
            )
        self.train_images, self.train_labels = images[train_idx], labels[train_idx]
        self.val_images, self.val_labels = images[val_idx], labels[val_idx]
        self.test_images, self.test_labels = data["test"]
        if self.overfit_batches:
            self._keep_overfit_batches()
        self._loaded = True

    def _keep_overfit_batches(self) -> None:
        """Train and validate on the first `overfit_batches` training batches (see the class docstring)."""
        kept = self.overfit_batches * self.batch_size
        if kept > len(self.train_images):
            raise ValueError(
                f"data.overfit_batches={self.overfit_batches} batches of {self.batch_size} need {kept} "
                f"training images, more than the {len(self.train_images)} there are; lower it."
            )
        self.train_images, self.train_labels = self.train_images[:kept], self.train_labels[:kept]
        self.val_images, self.val_labels = self.train_images, self.train_labels

    @property
    def fixed_order(self) -> bool:
        """Whether every epoch trains in the same order: an overfitting check, ours or Lightning's."""
        lightning_overfit = self.trainer is not None and self.trainer.overfit_batches > 0
        return bool(self.overfit_batches) or lightning_overfit

    def train_dataloader(self) -> DataLoader | DeviceTrainLoader:
        if self.pipeline == "device":
            loader: DataLoader | DeviceTrainLoader = self._device_train_loader()
        else:
            transform = build_train_transform(self.aug, self.mean, self.std)
            dataset = TensorImageDataset(self.train_images, self.train_labels, transform)
            loader = self._loader(dataset, self.batch_size, train=True)
        if self.trainer is not None:
            # Lightning makes an epoch's iterator (the first after a resume too) before the epoch's
            # on_train_epoch_start hook, so the seeds must be in place here already. With
            # trainer.reload_dataloaders_every_n_epochs=1 this runs at every epoch, after a resume with the
            # restored epoch count: the epoch about to run is the number processed so far.
            epoch = self.trainer.fit_loop.epoch_progress.current.processed
            self.set_epoch(epoch, self.trainer.global_rank)
        return loader

    def val_dataloader(self) -> DataLoader | DeviceEvalLoader:
        return self._eval_loader("val", self.val_images, self.val_labels)

    def test_dataloader(self) -> DataLoader | DeviceEvalLoader:
        return self._eval_loader("test", self.test_images, self.test_labels)

    def on_after_batch_transfer(self, batch: Any, dataloader_idx: int) -> Any:
        # The DataLoader's batches are NCHW; a channels_last network (and its compiled graph) wants NHWC.
        # The device pipeline's batches already are, and converting them again costs nothing.
        if not self.channels_last:
            return batch
        images, labels = batch
        return images.contiguous(memory_format=torch.channels_last), labels

    def set_epoch(self, epoch: int, rank: int = 0) -> None:
        """Make an epoch's randomness a function of (seed, epoch, rank) alone.

        Reseeds the training order, the seeds of the loader's workers (their augmentation), this process's
        torch/numpy/random generators (augmentation without workers, dropout) and the device pipeline. A run
        resumed from an epoch-end checkpoint then continues exactly as an uninterrupted one. Called before
        the epoch's loader iterator exists and again at the epoch's start; both orders give the same draws
        because the order and the worker seeds come from separate generators.
        """
        epoch_seed = int(np.random.SeedSequence([self.seed, epoch, rank]).generate_state(1)[0])
        self._order_generator.manual_seed(epoch_seed)
        self._worker_generator.manual_seed(epoch_seed + 1)
        torch.manual_seed(epoch_seed)
        np.random.seed(epoch_seed)
        random.seed(epoch_seed)
        if self._device_loader is not None:
            self._device_loader.set_epoch(epoch)

    def _device_train_loader(self) -> DeviceTrainLoader:
        # Reads self.trainer for the device and this process's rank, so it is called only within a Trainer.
        if self._device_loader is not None:  # the data is on the device already; keep it there
            return self._device_loader
        self._device_loader = DeviceTrainLoader(
            images=self.train_images,
            labels=self.train_labels,
            batch_size=self.batch_size,
            aug=self.aug,
            mean=self.mean,
            std=self.std,
            device=self.trainer.strategy.root_device,
            seed=self.seed,
            rank=self.trainer.global_rank,
            world_size=self.trainer.world_size,
            channels_last=self.channels_last,
            fixed_order=self.fixed_order,
        )
        return self._device_loader

    def _eval_loader(self, split: str, images: Tensor, labels: Tensor) -> DataLoader | DeviceEvalLoader:
        if self.pipeline == "device" and self.trainer is not None:
            # With the training set on the device, the evaluation splits go there too: no worker processes
            # to start at every validation, no copies. Made once; Lightning asks again every epoch.
            if split not in self._device_eval_loaders:
                self._device_eval_loaders[split] = DeviceEvalLoader(
                    images,
                    labels,
                    self.eval_batch_size,
                    self.mean,
                    self.std,
                    device=self.trainer.strategy.root_device,
                    rank=self.trainer.global_rank,
                    world_size=self.trainer.world_size,
                    channels_last=self.channels_last,
                )
            return self._device_eval_loaders[split]
        transform = build_eval_transform(self.mean, self.std)
        dataset = TensorImageDataset(images, labels, transform)
        return self._loader(dataset, self.eval_batch_size, train=False)

    def _loader(self, dataset: Dataset, batch_size: int, train: bool) -> DataLoader:
        # Workers are started anew every epoch (not persistent) so that their seeds follow set_epoch.
        # Lightning swaps the random sampler for a DistributedSampler under DDP, which is seeded per epoch.
        if not train:
            sampler = self._eval_sampler(dataset)
        elif self.fixed_order:
            sampler = SequentialSampler(dataset)
        else:
            sampler = RandomSampler(dataset, generator=self._order_generator)
        return DataLoader(
            dataset,
            batch_size=batch_size,
            sampler=sampler,
            drop_last=train,
            num_workers=self.num_workers,
            pin_memory=torch.cuda.is_available(),
            generator=self._worker_generator if train else None,
        )

    def _eval_sampler(self, dataset: Dataset) -> Sampler | None:
        """Under DDP, each process evaluates every world_size-th image, and no image twice.

        Lightning's default DistributedSampler would pad a split that does not divide by the number of
        processes with repeated images, which then count twice in the accuracy. Uneven shards are safe here:
        evaluation runs no collective per batch (the metrics are reduced once, at the epoch's end).
        """
        trainer = self.trainer
        if trainer is None or trainer.world_size == 1:
            return None
        return UnrepeatedDistributedSampler(
            dataset, num_replicas=trainer.world_size, rank=trainer.global_rank, shuffle=False
        )


def _require_int(name: str, value: Any, minimum: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise ValueError(f"data.{name} must be an int >= {minimum}, got {value!r}")
    return value


def _require_channels(name: str, values: Sequence[float], positive: bool) -> tuple[float, ...]:
    try:
        channels = tuple(float(value) for value in values)
    except (TypeError, ValueError):
        channels = ()
    if len(channels) != 3 or (positive and min(channels) <= 0):
        rule = "3 numbers > 0" if positive else "3 numbers"
        raise ValueError(f"data.{name} must be {rule} (one per RGB channel), got {values!r}")
    return channels
