"""The distribution-shift test sets, read from their official files: CIFAR-10.1 (v6) and CIFAR-10-C.

CIFAR-10.1 v6 (Recht et al. 2019): ``cifar10.1_v6_data.npy``, uint8 (2000, 32, 32, 3), and
``cifar10.1_v6_labels.npy``. CIFAR-10-C (Hendrycks and Dietterich 2019): one ``<corruption>.npy`` a
corruption, uint8 (50000, 32, 32, 3): severities 1 to 5 of the 10,000 test images, one after another; and
``labels.npy``. Both are returned as uint8 (N, 3, 32, 32) and int64 (N,) tensors, like CIFAR-10 itself.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from torch import Tensor

from seres.data.files import CIFAR10Error

CIFAR10_1_FILES = ("cifar10.1_v6_data.npy", "cifar10.1_v6_labels.npy")
CIFAR10_1_SOURCE = "https://github.com/modestyachts/CIFAR-10.1 (its datasets/ folder)"
CIFAR10_C_LABELS = "labels.npy"
CIFAR10_C_SOURCE = "https://zenodo.org/record/2535967 (CIFAR-10-C.tar, unpacked)"
SEVERITIES = 5


class ShiftSetError(CIFAR10Error):
    """A shift test set's files are missing or not in the official format; the message says what to do."""


def _images(path: Path) -> Tensor:
    array = np.load(path)
    if array.dtype != np.uint8 or array.ndim != 4 or array.shape[1:] != (32, 32, 3):
        raise ShiftSetError(
            f"{path} holds {array.dtype} {array.shape}, not uint8 images (N, 32, 32, 3) as the official files"
        )
    return torch.from_numpy(array).permute(0, 3, 1, 2).contiguous()


def _labels(path: Path, count: int) -> Tensor:
    labels = np.load(path)
    if labels.shape != (count,) or labels.min() < 0 or labels.max() > 9:
        raise ShiftSetError(f"{path} holds {labels.shape} labels, expected {count} class numbers from 0 to 9")
    return torch.from_numpy(labels.astype(np.int64))


def cifar10_1_files(folder: str | Path) -> tuple[Path, Path]:
    """The data and labels files of CIFAR-10.1 v6 in `folder`."""
    data, labels = (Path(folder) / name for name in CIFAR10_1_FILES)
    missing = [path.name for path in (data, labels) if not path.is_file()]
    if missing:
        raise ShiftSetError(
            f"{' and '.join(missing)} not found in {folder}: download the files from {CIFAR10_1_SOURCE} "
            "into that folder, or give the folder that holds them (cifar10_1=FOLDER)"
        )
    return data, labels


def load_cifar10_1(folder: str | Path) -> tuple[Tensor, Tensor]:
    """CIFAR-10.1 v6: (images, labels)."""
    data, labels = cifar10_1_files(folder)
    images = _images(data)
    return images, _labels(labels, len(images))


def cifar10_c_corruptions(folder: str | Path) -> list[str]:
    """The corruptions whose files are in `folder`, sorted by name."""
    folder = Path(folder)
    names = sorted(path.stem for path in folder.glob("*.npy") if path.name != CIFAR10_C_LABELS)
    if not names or not (folder / CIFAR10_C_LABELS).is_file():
        raise ShiftSetError(
            f"no CIFAR-10-C files (<corruption>.npy and {CIFAR10_C_LABELS}) in {folder}: download "
            f"{CIFAR10_C_SOURCE} into that folder, or give the folder that holds them (cifar10_c=FOLDER)"
        )
    return names


def load_cifar10_c(folder: str | Path, corruption: str) -> list[tuple[Tensor, Tensor]]:
    """One corruption of CIFAR-10-C: (images, labels) of severity 1 to 5, in that order."""
    folder = Path(folder)
    images = _images(folder / f"{corruption}.npy")
    if len(images) % SEVERITIES:
        raise ShiftSetError(
            f"{folder / corruption}.npy holds {len(images)} images, not {SEVERITIES} blocks of equal size"
        )
    labels = _labels(folder / CIFAR10_C_LABELS, len(images))
    size = len(images) // SEVERITIES
    return [(images[s * size : (s + 1) * size], labels[s * size : (s + 1) * size]) for s in range(SEVERITIES)]
