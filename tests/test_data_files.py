"""Tests for seres/data/files.py: reading both official layouts, and verifying existing files (sizes, MD5s),
on small fake CIFAR-10 trees (plus one check of the real data when present)."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from conftest import real_cifar_root, write_fake_cifar10
from data_helpers import BIN_NAMES, PY_NAMES, forbid_download_sources, md5_of

from seres.data import files
from seres.data.datamodule import CIFAR10DataModule
from seres.data.files import CIFAR10Error, load_cifar10
from seres.data.sources import ensure_cifar10


def snapshot(root: Path) -> dict[str, bytes]:
    return {
        str(path.relative_to(root)): path.read_bytes() for path in sorted(root.rglob("*")) if path.is_file()
    }


@pytest.fixture
def no_network_sources(monkeypatch: pytest.MonkeyPatch) -> None:
    forbid_download_sources(monkeypatch)


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
# Verification of existing files
# --------------------------------------------------------------------------------------------------------


@pytest.fixture
def checked_bin_root(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A fake binary layout whose sizes and MD5s stand in for the official ones."""
    # 5 images per class for train and 1 for test give 10 records in every file, so one size fits all.
    write_fake_cifar10(tmp_path, "bin", n_per_class_train=5, n_per_class_test=1)
    directory = tmp_path / "cifar-10-batches-bin"
    monkeypatch.setattr(files, "OFFICIAL_BIN_MD5", {name: md5_of(directory / name) for name in BIN_NAMES})
    monkeypatch.setattr(files, "BIN_FILE_SIZE", 10 * files.RECORD_BYTES)
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


def test_each_file_is_read_for_its_md5_once_until_it_changes(
    checked_bin_root: Path, monkeypatch: pytest.MonkeyPatch, no_network_sources
) -> None:
    read = []
    monkeypatch.setattr(files, "file_digest", lambda path: read.append(Path(path).name) or md5_of(Path(path)))
    for _ in range(3):  # as a run's start checks, prepare_data and setup do
        load_cifar10(checked_bin_root)
    assert sorted(read) == sorted(BIN_NAMES)
    path = checked_bin_root / "cifar-10-batches-bin" / "data_batch_3.bin"
    payload = bytearray(path.read_bytes())
    payload[1234] ^= 0xFF
    path.write_bytes(payload)  # same size, a new modification time: read again, and refused
    with pytest.raises(CIFAR10Error, match=r"data_batch_3\.bin has MD5"):
        load_cifar10(checked_bin_root)


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
    monkeypatch.setattr(files, "python_layout_md5", lambda: original_md5)
    assert ensure_cifar10(tmp_path) == directory
    (directory / "test_batch").write_bytes((directory / "test_batch").read_bytes() + b"\0")
    with pytest.raises(CIFAR10Error, match=r"test_batch has MD5"):
        ensure_cifar10(tmp_path)


def test_python_layout_md5s_come_from_torchvision() -> None:
    expected = files.python_layout_md5()
    assert sorted(expected) == sorted(PY_NAMES)
    assert expected["test_batch"] == "40351d587109b95175f43aff81a1287e"
