"""The official CIFAR-10 files: their layouts, sizes and checksums, finding and verifying them, reading them.

Two layouts are accepted under a root directory, as the dataset's page distributes them: the binary one
(``cifar-10-batches-bin``, preferred) and torchvision's python pickles (``cifar-10-batches-py``). Everything
is read into uint8 tensors of shape (N, 3, 32, 32) so both input pipelines share one source.
"""

from __future__ import annotations

import functools
import hashlib
import os
import pickle
from collections.abc import Callable, Iterable, Mapping
from pathlib import Path

import numpy as np
import torch
import torchvision
from torch import Tensor

BIN_DIR = "cifar-10-batches-bin"
BIN_TRAIN_FILES = tuple(f"data_batch_{k}.bin" for k in range(1, 6))
BIN_TEST_FILE = "test_batch.bin"
OFFICIAL_BIN_MD5: dict[str, str] = {
    "data_batch_1.bin": "5dd7e06a14cb22eb9f671a540d1b7c25",
    "data_batch_2.bin": "5ea93a67294ea407fff1d09f752e9692",
    "data_batch_3.bin": "942cd6a4bcdd0dd3c604fbe906cb4421",
    "data_batch_4.bin": "ae636b3ba5c66a11e91e8cb52e771fcb",
    "data_batch_5.bin": "53f37980c15c3d472c316c40844f3f0d",
    "test_batch.bin": "803d5f7f4d78ea53de84dbe85f74fb6d",
}
IMAGE_SHAPE = (3, 32, 32)
IMAGE_BYTES = 3 * 32 * 32
RECORD_BYTES = 1 + IMAGE_BYTES  # one label byte, then the R, G and B planes (each 32x32, row-major)
RECORDS_PER_FILE = 10_000
CIFAR10_TRAIN_IMAGES = RECORDS_PER_FILE * len(BIN_TRAIN_FILES)  # 50,000, before data.val_size is held out
BIN_FILE_SIZE = RECORDS_PER_FILE * RECORD_BYTES  # 30,730,000 bytes, every one of the six files

# The python layout's MD5s are torchvision's own list (see python_layout_md5).
PY_DIR = "cifar-10-batches-py"
PY_TRAIN_FILES = tuple(f"data_batch_{k}" for k in range(1, 6))
PY_TEST_FILE = "test_batch"

CLASSES: tuple[str, ...] = (
    "airplane",
    "automobile",
    "bird",
    "cat",
    "deer",
    "dog",
    "frog",
    "horse",
    "ship",
    "truck",
)


class CIFAR10Error(RuntimeError):
    """CIFAR-10 files are missing, corrupt, or could not be obtained from any source."""


def fix_hint(root: Path) -> str:
    """How to get the files into ``root``, for the end of an error message."""
    return f"rerun `make data` or `python -m seres.data --root {root}`"


# ---------------------------------------------------------------------------------------------------------
# Verification
# ---------------------------------------------------------------------------------------------------------


def file_digest(path: str | Path, algorithm: str = "md5", chunk_bytes: int = 1 << 20) -> str:
    """Hex digest (`algorithm`: md5 or sha1) of a file, read in ``chunk_bytes`` chunks (default 1 MiB)."""
    digest = hashlib.new(algorithm, usedforsecurity=False)
    with open(path, "rb") as handle:
        while chunk := handle.read(chunk_bytes):
            digest.update(chunk)
    return digest.hexdigest()


@functools.cache
def md5_of_unchanged_file(path: str, size: int, mtime_ns: int) -> str:
    """The MD5 of `path`, computed once per process for a file of this size and modification time: a run's
    start checks, the DataModule's prepare_data and its setup each verify the files without reading them
    three times."""
    return file_digest(path)


def python_layout_md5() -> dict[str, str]:
    """MD5 of each file of the python-pickle layout, as torchvision lists them (filename -> hex md5)."""
    listed = torchvision.datasets.CIFAR10.train_list + torchvision.datasets.CIFAR10.test_list
    return {name: md5 for name, md5 in listed}


def check_files(
    directory: str | Path,
    expected_md5: Mapping[str, str] | None,
    expected_sizes: Mapping[str, int] | None = None,
    names: Iterable[str] | None = None,
) -> None:
    """Check that each named file exists in ``directory`` with the expected size and MD5.

    ``names`` defaults to the keys of ``expected_md5``. With ``expected_md5=None`` only presence (and size,
    if ``expected_sizes`` is given) is checked. Raises :class:`CIFAR10Error` naming the first bad file,
    what was expected and how to fix it. Never modifies or deletes anything.
    """
    directory = Path(directory)
    names = list(names if names is not None else (expected_md5 or {}))
    missing = [name for name in names if not (directory / name).is_file()]
    if missing:
        raise CIFAR10Error(
            f"CIFAR-10 file(s) missing from {directory}: {', '.join(missing)} "
            f"(expected all of: {', '.join(names)}). Put the missing files there, or move the directory "
            f"away and {fix_hint(directory.parent)}."
        )
    for name in names:
        path = directory / name
        if expected_sizes is not None and name in expected_sizes:
            size = path.stat().st_size
            if size != expected_sizes[name]:
                raise CIFAR10Error(
                    f"CIFAR-10 file {path} has {size:,} bytes, expected {expected_sizes[name]:,} "
                    f"(truncated or wrong file). Delete it and {fix_hint(directory.parent)}."
                )
        if expected_md5 is not None:
            stat = path.stat()
            actual = md5_of_unchanged_file(str(path.resolve()), stat.st_size, stat.st_mtime_ns)
            if actual != expected_md5[name]:
                raise CIFAR10Error(
                    f"CIFAR-10 file {path} has MD5 {actual}, expected {expected_md5[name]} (corrupt or "
                    f"modified). Delete it and {fix_hint(directory.parent)}, or pass verify=False "
                    f"(--no-verify) if you changed it on purpose."
                )


def _check_bin_layout(directory: Path, verify: bool) -> None:
    names = [*BIN_TRAIN_FILES, BIN_TEST_FILE]
    if verify:
        sizes = dict.fromkeys(names, BIN_FILE_SIZE)
        check_files(directory, OFFICIAL_BIN_MD5, sizes, names)
    else:
        check_files(directory, None, None, names)


def _check_py_layout(directory: Path, verify: bool) -> None:
    names = [*PY_TRAIN_FILES, PY_TEST_FILE]
    check_files(directory, python_layout_md5() if verify else None, None, names)


def find_cifar10(root: str | Path, verify: bool = True) -> Path | None:
    """Return the layout directory under ``root`` holding CIFAR-10, or None if neither layout is present.

    Looks for ``root/cifar-10-batches-bin`` (preferred) then ``root/cifar-10-batches-py``. A layout
    directory that exists but is incomplete, or (with ``verify``) has a wrong size or MD5, raises
    :class:`CIFAR10Error` instead of being skipped, so broken user files are never silently replaced.
    """
    root = Path(root)
    for name, check in ((BIN_DIR, _check_bin_layout), (PY_DIR, _check_py_layout)):
        directory = root / name
        if directory.is_dir():
            check(directory, verify)
            return directory
    return None


def require_room_for_cifar10(root: str | Path) -> None:
    """Raise CIFAR10Error when ``root`` could not hold CIFAR-10 fetched there: a file is in its path, or its
    nearest existing directory cannot be written. Where the data is already present, nothing is written."""
    existing = Path(root).absolute()
    while not existing.exists():
        existing = existing.parent
    if not existing.is_dir():
        problem = f"{existing} is not a directory"
    elif not os.access(existing, os.W_OK):
        problem = f"{existing} cannot be written"
    else:
        return
    raise CIFAR10Error(
        f"data.root={root} cannot hold CIFAR-10 ({problem}); give a directory that holds it or can be "
        "created, e.g. data.root=data"
    )


# ---------------------------------------------------------------------------------------------------------
# Loading
# ---------------------------------------------------------------------------------------------------------


def _read_bin(path: Path) -> tuple[np.ndarray, np.ndarray]:
    raw = np.fromfile(path, dtype=np.uint8)
    if raw.size % RECORD_BYTES:
        raise CIFAR10Error(f"{path} has {raw.size:,} bytes, not a multiple of the {RECORD_BYTES}-byte record")
    records = raw.reshape(-1, RECORD_BYTES)
    return records[:, 1:].reshape(-1, *IMAGE_SHAPE), records[:, 0]


def _read_pickle(path: Path) -> tuple[np.ndarray, np.ndarray]:
    # The official files are Python 2 pickles; encoding="bytes" keeps their str keys as bytes.
    # Only load files you trust (verify=True checks them against torchvision's MD5s first).
    with open(path, "rb") as handle:
        batch = pickle.load(handle, encoding="bytes")
    images = np.asarray(batch[b"data"], dtype=np.uint8).reshape(-1, *IMAGE_SHAPE)
    return images, np.asarray(batch[b"labels"])


def _to_tensors(parts: list[tuple[np.ndarray, np.ndarray]], source: Path) -> tuple[Tensor, Tensor]:
    images = np.ascontiguousarray(np.concatenate([images for images, _ in parts]))
    labels = np.concatenate([labels for _, labels in parts]).astype(np.int64)
    if labels.size and (labels.min() < 0 or labels.max() >= len(CLASSES)):
        raise CIFAR10Error(f"{source}: labels outside 0..{len(CLASSES) - 1}; the files are not CIFAR-10")
    return torch.from_numpy(images), torch.from_numpy(labels)


def load_cifar10(root: str | Path, verify: bool = True) -> dict[str, tuple[Tensor, Tensor]]:
    """Load CIFAR-10 from ``root`` (binary layout preferred over python pickles; nothing is downloaded).

    Returns ``{"train": (images, labels), "test": (images, labels)}`` with images a contiguous uint8
    tensor of shape (N, 3, 32, 32) (RGB, 0..255) and labels an int64 tensor of shape (N,). The official
    files give N = 50,000 train and 10,000 test images.
    """
    directory = find_cifar10(root, verify)
    if directory is None:
        raise CIFAR10Error(
            f"no CIFAR-10 under {Path(root)} (looked for {BIN_DIR}/ and {PY_DIR}/); run `make data` or "
            f"`python -m seres.data --root {root}` first."
        )
    if directory.name == BIN_DIR:
        read: Callable[[Path], tuple[np.ndarray, np.ndarray]] = _read_bin
        train_files, test_file = BIN_TRAIN_FILES, BIN_TEST_FILE
    else:
        read, train_files, test_file = _read_pickle, PY_TRAIN_FILES, PY_TEST_FILE
    return {
        "train": _to_tensors([read(directory / name) for name in train_files], directory),
        "test": _to_tensors([read(directory / test_file)], directory),
    }
