"""Tests for seres/data/datamodule.py: the split attributes, the loaders, seeding per epoch, argument checks,
and the memory layout of the batches a network receives."""

from __future__ import annotations

from functools import partial
from pathlib import Path

import lightning
import pytest
import torch
from data_helpers import normalise
from torch.utils.data import RandomSampler, SequentialSampler

from seres.data import datamodule
from seres.data.datamodule import CIFAR10DataModule
from seres.model import SEResNet
from seres.module import ClassifierModule


def make_module(root: Path, **overrides) -> CIFAR10DataModule:
    settings = dict(root=str(root), batch_size=32, num_workers=0, val_size=50, verify=False)
    settings.update(overrides)
    module = CIFAR10DataModule(**settings)
    module.setup("fit")
    return module


def test_datamodule_split_attributes(fake_cifar_bin: Path) -> None:
    module = make_module(fake_cifar_bin)
    assert (len(module.train_labels), len(module.val_labels), len(module.test_labels)) == (350, 50, 100)
    assert module.val_labels.bincount().tolist() == [5] * 10
    for images in (module.train_images, module.val_images, module.test_images):
        assert images.dtype == torch.uint8 and images.shape[1:] == (3, 32, 32)
    assert module.num_classes == 10 and module.classes[0] == "airplane" and module.classes[9] == "truck"


def test_eval_loaders_are_never_augmented(fake_cifar_bin: Path) -> None:
    module = make_module(fake_cifar_bin, aug=dict(crop_padding=4, flip=True, brightness=0.5, cutout=8))
    for loader, images in (
        (module.val_dataloader(), module.val_images),
        (module.test_dataloader(), module.test_images),
    ):
        assert isinstance(loader.sampler, SequentialSampler) and loader.drop_last is False
        first = torch.cat([batch for batch, _ in loader])
        second = torch.cat([batch for batch, _ in loader])
        assert torch.equal(first, second)
        torch.testing.assert_close(first, normalise(images))


def test_train_loader_shuffles_drops_last_and_augments(fake_cifar_bin: Path) -> None:
    module = make_module(fake_cifar_bin, aug=dict(crop_padding=4, flip=True))
    loader = module.train_dataloader()
    assert isinstance(loader.sampler, RandomSampler) and loader.drop_last is True
    batches = list(loader)
    assert len(batches) == 350 // 32
    assert all(images.shape == (32, 3, 32, 32) and images.dtype == torch.float32 for images, _ in batches)
    torch.manual_seed(0)
    draws = [loader.dataset[0][0] for _ in range(5)]
    assert any(not torch.equal(draws[0], draw) for draw in draws[1:])

    plain = make_module(fake_cifar_bin).train_dataloader().dataset
    torch.testing.assert_close(plain[0][0], normalise(plain.images[:1])[0])


def test_eval_batch_size_and_worker_settings(fake_cifar_bin: Path) -> None:
    module = make_module(fake_cifar_bin, num_workers=1, eval_batch_size=64)
    val_loader, train_loader = module.val_dataloader(), module.train_dataloader()
    assert val_loader.batch_size == 64 and train_loader.batch_size == 32
    # Workers restart every epoch so that their seeds follow set_epoch (exact resume).
    assert not val_loader.persistent_workers and not train_loader.persistent_workers
    assert val_loader.pin_memory == torch.cuda.is_available()


def test_set_epoch_makes_order_and_augmentation_a_function_of_seed_and_epoch(fake_cifar_bin: Path) -> None:
    def first_batch(epoch: int, rank: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
        module = make_module(fake_cifar_bin, aug={"crop_padding": 4, "flip": True}, num_workers=1)
        loader = module.train_dataloader()
        torch.manual_seed(epoch * 7 + 1)  # whatever happened before must not matter
        module.set_epoch(epoch, rank)
        return next(iter(loader))

    images, labels = first_batch(3)
    again_images, again_labels = first_batch(3)
    assert torch.equal(images, again_images) and torch.equal(labels, again_labels)
    assert not torch.equal(first_batch(4)[0], images)
    assert not torch.equal(first_batch(3, rank=1)[0], images)


def test_device_pipeline_replaces_only_the_train_loader(fake_cifar_bin: Path, monkeypatch) -> None:
    module = make_module(fake_cifar_bin, pipeline="device")
    monkeypatch.setattr(module, "_device_train_loader", lambda: "device loader")
    assert module.train_dataloader() == "device loader"
    cpu_module = make_module(fake_cifar_bin)
    assert torch.equal(next(iter(module.val_dataloader()))[0], next(iter(cpu_module.val_dataloader()))[0])


def test_overfit_batches_train_and_validate_on_the_same_first_batches_unaugmented(
    fake_cifar_bin: Path,
) -> None:
    module = make_module(fake_cifar_bin, overfit_batches=2, aug=dict(crop_padding=4, flip=True))
    assert module.aug.crop_padding == 0 and module.aug.flip is False
    assert len(module.train_images) == 64 and torch.equal(module.val_images, module.train_images)
    assert torch.equal(module.val_labels, module.train_labels)
    assert isinstance(module.train_dataloader().sampler, SequentialSampler)  # the same order every epoch
    with pytest.raises(ValueError, match="data.overfit_batches=20 batches of 32 need 640 training images"):
        make_module(fake_cifar_bin, overfit_batches=20)


def test_lightnings_overfit_batches_gets_a_fixed_order_on_the_device_pipeline_too(
    fake_cifar_bin: Path,
) -> None:
    module = make_module(fake_cifar_bin, pipeline="device")
    module.trainer = lightning.Trainer(accelerator="cpu", overfit_batches=2, logger=False)
    assert module.train_dataloader().fixed_order
    module = make_module(fake_cifar_bin, pipeline="device")
    module.trainer = lightning.Trainer(accelerator="cpu", logger=False)
    assert not module.train_dataloader().fixed_order


def test_setup_loads_once(fake_cifar_bin: Path, monkeypatch) -> None:
    calls = []
    real_load = datamodule.load_cifar10
    monkeypatch.setattr(datamodule, "load_cifar10", lambda *args: calls.append(args) or real_load(*args))
    module = make_module(fake_cifar_bin)
    module.setup("test")
    assert len(calls) == 1


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        (dict(batch_size=0), r"data\.batch_size"),
        (dict(batch_size=True), r"data\.batch_size"),
        (dict(num_workers=-1), r"data\.num_workers"),
        (dict(pipeline="tpu"), r"data\.pipeline must be one of device\|loader, got 'tpu'"),
        (dict(eval_batch_size=0), r"data\.eval_batch_size"),
        (dict(std=(0.2, 0.0, 0.2)), r"data\.std"),
        (dict(mean=(0.5, 0.5)), r"data\.mean"),
        (dict(aug={"flipp": True}), r"data\.aug\.flipp"),
        (dict(verify="yes"), r"data\.verify"),
    ],
)
def test_datamodule_rejects_bad_arguments(overrides, message) -> None:
    with pytest.raises(ValueError, match=message):
        CIFAR10DataModule(**overrides)


def test_batch_larger_than_train_split_is_refused(fake_cifar_bin: Path) -> None:
    with pytest.raises(ValueError, match=r"data\.batch_size=400"):
        make_module(fake_cifar_bin, batch_size=400)


def test_val_size_too_large_is_refused_at_setup(fake_cifar_bin: Path) -> None:
    with pytest.raises(ValueError, match=r"data\.val_size"):
        make_module(fake_cifar_bin, val_size=400)


class RecordLayouts(lightning.Callback):
    """Whether each batch the module received was NHWC, by stage."""

    def __init__(self) -> None:
        self.nhwc: dict[str, list[bool]] = {"train": [], "val": []}

    def _record(self, stage: str, batch) -> None:
        self.nhwc[stage].append(batch[0].is_contiguous(memory_format=torch.channels_last))

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx) -> None:
        self._record("train", batch)

    def on_validation_batch_start(self, trainer, pl_module, batch, batch_idx, dataloader_idx=0) -> None:
        self._record("val", batch)


@pytest.mark.parametrize("channels_last", [True, False])
def test_batches_reach_the_network_in_its_memory_layout(channels_last, fake_cifar_bin: Path) -> None:
    datamodule = CIFAR10DataModule(
        root=str(fake_cifar_bin),
        verify=False,
        val_size=100,
        batch_size=32,
        num_workers=0,
        channels_last=channels_last,
    )
    net = SEResNet(widths=[8, 16, 32, 64], blocks=[1, 1, 1, 1], stem_width=8)
    layouts = RecordLayouts()
    trainer = lightning.Trainer(
        accelerator="cpu",
        max_epochs=1,
        limit_train_batches=2,
        limit_val_batches=2,
        callbacks=[layouts],
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        num_sanity_val_steps=0,
    )
    trainer.fit(ClassifierModule(net, partial(torch.optim.SGD, lr=0.1)), datamodule=datamodule)
    assert layouts.nhwc == {"train": [channels_last] * 2, "val": [channels_last] * 2}
