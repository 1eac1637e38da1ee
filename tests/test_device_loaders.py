"""Tests for seres/data/device_loaders.py on the CPU device: epoch order, coverage, sharding across ranks,
reproducible augmented batches, no host syncs, and evaluation batches equal to the CPU path's."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import lightning
import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp
from data_helpers import MEAN, STD, copies, one_intra_op_thread, structured_images, to_uint8
from torch import Tensor
from torch.utils._python_dispatch import TorchDispatchMode

from seres.data.augmentation import Augmentation
from seres.data.batch_augment import normalize
from seres.data.datamodule import CIFAR10DataModule
from seres.data.device_loaders import DeviceEvalLoader, DeviceTrainLoader
from seres.data.transforms import build_train_transform
from seres.model import SEResNet
from seres.module import ClassifierModule

IDENTITY_MEAN, IDENTITY_STD = (0.0, 0.0, 0.0), (1.0, 1.0, 1.0)
CPU = torch.device("cpu")


@pytest.fixture(autouse=True)
def single_intra_op_thread() -> Iterator[None]:
    with one_intra_op_thread():
        yield


# ---------------------------------------------------------------------------------------------------------
# DeviceTrainLoader: order, coverage, sharding
# ---------------------------------------------------------------------------------------------------------


def index_dataset(size: int) -> tuple[Tensor, Tensor]:
    """(size, 3, 4, 4) uint8 images whose channels 0/1 hold index % 256 / index // 256, and labels = index."""
    index = torch.arange(size)
    planes = torch.stack((index % 256, index // 256, torch.zeros_like(index)), dim=1)
    return planes.view(size, 3, 1, 1).expand(size, 3, 4, 4).to(torch.uint8).contiguous(), index


def index_loader(size: int, batch_size: int, seed: int = 0, **kwargs) -> DeviceTrainLoader:
    images, labels = index_dataset(size)
    return DeviceTrainLoader(
        images, labels, batch_size, Augmentation(), IDENTITY_MEAN, IDENTITY_STD, CPU, seed, **kwargs
    )


def epoch_order(loader: DeviceTrainLoader) -> list[int]:
    """The indices of one epoch, read from the pixels; checks that labels travel with their images."""
    order = []
    for x, y in loader:
        pixels = to_uint8(x[:, :2, 0, 0]).long()
        assert torch.equal(pixels[:, 0] + 256 * pixels[:, 1], y)
        order += y.tolist()
    return order


def test_one_epoch_visits_every_index_once_when_batches_divide_the_set() -> None:
    loader = index_loader(1024, 64)
    assert len(loader) == 16
    assert [len(y) for _, y in loader] == [64] * 16
    order = epoch_order(loader)
    assert sorted(order) == list(range(1024))
    assert order != list(range(1024))


def test_only_full_batches_are_yielded() -> None:
    loader = index_loader(1000, 64)
    assert len(loader) == 15
    assert [len(y) for _, y in loader] == [64] * 15
    order = epoch_order(loader)
    assert len(set(order)) == 960


def test_order_is_a_function_of_seed_and_epoch() -> None:
    loader = index_loader(500, 50)
    first, second = epoch_order(loader), epoch_order(loader)
    assert first != second  # epochs advance without set_epoch
    twin = index_loader(500, 50)
    assert epoch_order(twin) == first and epoch_order(twin) == second
    assert epoch_order(index_loader(500, 50, seed=1)) != first
    loader.set_epoch(0)
    assert epoch_order(loader) == first and epoch_order(loader) == second  # and continues from there


def flips_by_index(loader: DeviceTrainLoader, epoch: int) -> dict[int, bool]:
    """Which images epoch `epoch` mirrored, by index: channel 2 of index_dataset's images is set to a
    left-right ramp, so a mirrored image is one whose ramp falls."""
    loader.images[:, 2] = torch.arange(4, dtype=torch.uint8) * 50
    loader.set_epoch(epoch)
    flips = {}
    for x, y in loader:
        ramp = to_uint8(x[:, 2, 0])
        flips.update(zip(y.tolist(), (ramp[:, 0] > ramp[:, -1]).tolist(), strict=True))
    return flips


def alternating_loader(seed: int = 0, **kwargs) -> DeviceTrainLoader:
    loader = index_loader(1000, 50, seed, **kwargs)
    loader.aug = Augmentation(flip=True, flip_mode="alternate")
    return loader


def test_alternating_flips_mirror_every_image_on_every_other_epoch_from_a_random_start() -> None:
    loader = alternating_loader()
    epochs = [flips_by_index(loader, epoch) for epoch in range(4)]
    assert all(set(flips) == set(range(1000)) for flips in epochs)
    assert 400 < sum(epochs[0].values()) < 600  # a fair coin per image for its start
    for earlier, later in zip(epochs, epochs[1:], strict=False):
        assert all(earlier[i] != later[i] for i in range(1000))
    assert flips_by_index(alternating_loader(), 3) == epochs[3]  # a resumed run flips the same images
    assert flips_by_index(alternating_loader(seed=1), 0) != epochs[0]
    shards = [flips_by_index(alternating_loader(rank=rank, world_size=2), 2) for rank in (0, 1)]
    assert shards[0].keys().isdisjoint(shards[1]) and {**shards[0], **shards[1]} == epochs[2]


def test_alternating_flips_are_refused_by_the_per_image_pipeline() -> None:
    with pytest.raises(ValueError, match="data.aug.flip_mode=alternate needs data.pipeline=device"):
        build_train_transform(Augmentation(flip=True, flip_mode="alternate"), MEAN, STD)


def test_fixed_order_trains_every_epoch_in_the_images_own_order_on_every_rank() -> None:
    # The mode overfitting checks use (data.overfit_batches, Lightning's trainer.overfit_batches).
    single = index_loader(12, 4, fixed_order=True)
    assert epoch_order(single) == epoch_order(single) == list(range(12))
    ranks = [index_loader(12, 2, fixed_order=True, rank=r, world_size=2) for r in (0, 1)]
    assert [epoch_order(loader) for loader in ranks] == [[0, 2, 4, 6, 8, 10], [1, 3, 5, 7, 9, 11]]


def test_an_iterator_never_advanced_uses_no_epoch() -> None:
    loader = index_loader(500, 50)
    iter(loader)  # what Lightning's iterability check does
    assert epoch_order(loader) == epoch_order(index_loader(500, 50))
    pending = iter(loader)
    loader.set_epoch(0)  # after iter(), before the first batch: still applies
    assert [y for _, y in pending][0].tolist() == epoch_order(index_loader(500, 50))[:50]


def test_loader_batches_are_normalised_augmented_and_reproducible() -> None:
    images, labels = copies(structured_images(), 256), torch.arange(256)
    aug = Augmentation(crop_padding=4, flip=True, rotation=15.0, translate=0.1, brightness=0.2, contrast=0.2,
                       saturation=0.2, cutout=8)  # fmt: skip
    loader = DeviceTrainLoader(images, labels, 64, aug, MEAN, STD, CPU, seed=3, channels_last=True)
    batches = list(loader)
    assert len(batches) == 4
    for x, y in batches:
        assert x.shape == (64, 3, 32, 32) and x.dtype == torch.float32 and x.device == CPU
        assert x.is_contiguous(memory_format=torch.channels_last)
        assert y.dtype == torch.int64 and y.device == CPU
        assert not torch.equal(x, normalize(images[y], MEAN, STD))  # augmented
    loader.set_epoch(0)
    for (x, y), (x_again, y_again) in zip(batches, loader, strict=True):
        assert torch.equal(x, x_again) and torch.equal(y, y_again)
    plain = DeviceTrainLoader(images, labels, 64, Augmentation(), MEAN, STD, CPU, seed=3)
    for x, y in plain:
        assert torch.equal(x, normalize(images[y], MEAN, STD))


class _LabelRecorder(lightning.LightningModule):
    """Trains nothing; records the labels of every training batch, one list per epoch."""

    def __init__(self, loader: DeviceTrainLoader) -> None:
        super().__init__()
        self.loader = loader
        self.layer = torch.nn.Linear(3 * 4 * 4, 1)
        self.seen: list[list[int]] = []

    def train_dataloader(self) -> DeviceTrainLoader:
        return self.loader

    def on_train_epoch_start(self) -> None:
        self.seen.append([])

    def training_step(self, batch: tuple[Tensor, Tensor], batch_index: int) -> Tensor:
        x, y = batch
        self.seen[-1] += y.tolist()
        return self.layer(x.flatten(1)).sum()

    def configure_optimizers(self) -> torch.optim.Optimizer:
        return torch.optim.SGD(self.parameters(), lr=0.0)


def test_lightning_trains_on_the_loader_with_epoch_e_using_permutation_e() -> None:
    loader = index_loader(200, 50)
    recorder = _LabelRecorder(loader)
    trainer = lightning.Trainer(
        max_epochs=3,
        accelerator="cpu",
        devices=1,
        limit_val_batches=0,
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
    )
    trainer.fit(recorder)
    # Lightning's iter() probe before training must not have used up an epoch.
    assert recorder.seen == [loader.rank_indices(epoch).tolist() for epoch in range(3)]


# Ops after which a CUDA host waits for the device: reading a value (.item(), bool(), int() all dispatch to
# _local_scalar_dense) or computing an output shape from the data.
HOST_SYNC_OPS = {"_local_scalar_dense", "nonzero", "masked_select", "unique_dim", "unique_consecutive"}


class _HostSyncRecorder(TorchDispatchMode):
    """Records every dispatched op that would sync a CUDA host, including boolean-mask indexing.

    (A CPU run cannot see ``.cpu()`` or ``.tolist()``: on CPU tensors they dispatch no op.)
    """

    def __init__(self) -> None:
        super().__init__()
        self.syncs: list[str] = []

    def __torch_dispatch__(
        self, func: torch._ops.OpOverload, types: tuple, args: tuple = (), kwargs: dict | None = None
    ) -> object:
        name = func.overloadpacket.__name__
        indices = args[1] if name.startswith("index") and isinstance(args[1], list | tuple) else ()
        boolean_mask = any(isinstance(index, Tensor) and index.dtype == torch.bool for index in indices)
        if name in HOST_SYNC_OPS or name.startswith("_unique") or boolean_mask:
            self.syncs.append(name)
        return func(*args, **(kwargs or {}))


def test_host_sync_recorder_sees_syncs() -> None:
    values = torch.arange(5.0)
    with _HostSyncRecorder() as recorder:
        values[0].item()
        values[values > 2]
        values.nonzero()
        values.unique()
    assert len(recorder.syncs) == 4, recorder.syncs


def test_an_epoch_with_every_augmentation_dispatches_no_host_sync() -> None:
    aug = Augmentation(crop_padding=4, flip=True, rotation=15.0, translate=0.1, brightness=0.2, contrast=0.2,
                       saturation=0.2, cutout=8)  # fmt: skip
    images = copies(structured_images(), 256)
    loader = DeviceTrainLoader(images, torch.arange(256), 64, aug, MEAN, STD, CPU, seed=0)
    with _HostSyncRecorder() as recorder:
        batches = sum(1 for _ in loader)
    assert batches == 4 and recorder.syncs == []


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        (dict(images=torch.zeros(10, 3, 4, 4)), "uint8"),
        (dict(labels=torch.zeros(9, dtype=torch.int64)), "labels"),
        (dict(rank=2, world_size=2), "rank"),
        (dict(batch_size=6, world_size=2), "no batch"),
    ],
)
def test_loader_rejects_bad_arguments(kwargs: dict, message: str) -> None:
    images, labels = index_dataset(10)
    arguments = dict(images=images, labels=labels, batch_size=4, aug=Augmentation(), mean=MEAN, std=STD,
                     device=CPU, seed=0) | kwargs  # fmt: skip
    with pytest.raises(ValueError, match=message):
        DeviceTrainLoader(**arguments)


# (dataset size, batch size): divisible by 2 ranks; not divisible, with and without a partial last batch.
SHARDING_CASES = [(1000, 50), (1001, 50), (1001, 64)]


def _sharding_worker(rank: int, world_size: int, store: str, result: str) -> None:
    """One DDP rank: run 2 epochs per case, gather every rank's batches, rank 0 writes them as JSON."""
    torch.set_num_threads(1)
    dist.init_process_group("gloo", init_method=f"file://{store}", rank=rank, world_size=world_size)
    try:
        gathered = {}
        for size, batch_size in SHARDING_CASES:
            loader = index_loader(size, batch_size, seed=7, rank=rank, world_size=world_size)
            epochs = [[y.tolist() for _, y in loader] for _ in range(2)]
            everyone: list = [None] * world_size
            dist.all_gather_object(everyone, epochs)
            gathered[f"{size},{batch_size}"] = everyone
        if rank == 0:
            Path(result).write_text(json.dumps(gathered))
    finally:
        dist.destroy_process_group()


def test_ranks_of_a_real_process_group_share_the_epoch_disjointly(tmp_path: Path) -> None:
    world_size = 2
    result = tmp_path / "result.json"
    mp.spawn(_sharding_worker, args=(world_size, str(tmp_path / "store"), str(result)), nprocs=world_size)
    gathered = json.loads(result.read_text())
    for size, batch_size in SHARDING_CASES:
        per_rank = gathered[f"{size},{batch_size}"]
        share = size // world_size
        batches = share // batch_size
        for epoch in range(2):
            seen = [[index for batch in ranks_epochs[epoch] for index in batch] for ranks_epochs in per_rank]
            assert all(len(ranks_epochs[epoch]) == batches for ranks_epochs in per_rank)
            assert all(len(set(indices)) == len(indices) for indices in seen)
            assert not set(seen[0]) & set(seen[1])
            union = set(seen[0]) | set(seen[1])
            assert union <= set(range(size))
            assert len(union) == world_size * batches * batch_size
            if share % batch_size == 0:  # all but the at most world_size - 1 indices that equalise the shares
                assert len(union) == world_size * share >= size - (world_size - 1)
        assert per_rank[0][0] != per_rank[0][1]  # a new permutation each epoch


@pytest.mark.parametrize("stage", ["validate", "test"])
def test_evaluation_on_the_device_gives_the_cpu_paths_metrics(stage, fake_cifar_bin: Path) -> None:
    # 100 validation and 100 test images in batches of 48: the last batch is short.
    results = {}
    for pipeline in ("loader", "device"):
        torch.manual_seed(0)
        net = SEResNet(widths=[8, 16, 32, 64], blocks=[1, 1, 1, 1], stem_width=8)
        datamodule = CIFAR10DataModule(
            root=str(fake_cifar_bin),
            verify=False,
            val_size=100,
            eval_batch_size=48,
            num_workers=0,
            pipeline=pipeline,
        )
        trainer = lightning.Trainer(
            accelerator="cpu", logger=False, enable_progress_bar=False, enable_model_summary=False
        )
        (results[pipeline],) = getattr(trainer, stage)(ClassifierModule(net, tta=True), datamodule=datamodule)
        loader = getattr(datamodule, f"{'val' if stage == 'validate' else 'test'}_dataloader")()
        assert isinstance(loader, DeviceEvalLoader if pipeline == "device" else torch.utils.data.DataLoader)
    assert results["device"] == results["loader"]
