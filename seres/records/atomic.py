"""Atomic file writes: a kill or a full disk mid-write never leaves a part-written file in place.

Every file a run keeps (checkpoints, best_model.pth, metrics.json, the rebuilt dataset files) is written to
a temporary file beside its destination, flushed to disk, then renamed over it. The rename is atomic on POSIX
file systems: readers see the old file or the new one, never a part.
"""

import errno
import io
import json
import os
import shutil
from pathlib import Path
from typing import Any

import torch
from lightning.fabric.utilities.types import _PATH
from lightning.pytorch.plugins.io import TorchCheckpointIO


class DiskFullError(OSError):
    """The disk is too full for a file; the previous version of the file is kept."""


def _disk_full(destination: Path, needed: int) -> DiskFullError:
    free = shutil.disk_usage(destination.parent).free
    return DiskFullError(
        errno.ENOSPC,
        f"the disk is full: {destination} needs {needed / 1e6:.2f} MB and {free / 1e6:.2f} MB are free, so "
        f"it was not written and the previous {destination.name} is kept. Free at least "
        f"{max(needed - free, 1) / 1e6:.2f} MB on that disk, or write the run elsewhere (hydra.run.dir=...)",
    )


def atomic_write(destination: str | Path, payload: bytes) -> None:
    """Write `payload` to a temporary file beside `destination`, flush it to disk, and rename it over.

    On a full disk, raise DiskFullError naming the file and the space needed, with the old file untouched.
    """
    destination = Path(destination)
    destination.parent.mkdir(parents=True, exist_ok=True)
    if shutil.disk_usage(destination.parent).free < len(payload):
        raise _disk_full(destination, len(payload))
    # An exclusive create (not mkstemp, which forces mode 0600) so the file gets the usual umask mode.
    temporary = destination.with_name(f".{destination.name}.{os.getpid()}.tmp")
    try:
        with open(temporary, "xb") as handle:
            handle.write(payload)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(temporary, destination)
    except OSError as error:
        if error.errno == errno.ENOSPC:  # the space went between the check and the write
            raise _disk_full(destination, len(payload)) from error
        raise
    finally:
        temporary.unlink(missing_ok=True)  # only still there if something failed


def atomic_save(obj: Any, destination: str | Path) -> None:
    """torch.save `obj` to `destination`, atomically (serialised in memory first, so its size is known)."""
    buffer = io.BytesIO()
    torch.save(obj, buffer)
    atomic_write(destination, buffer.getvalue())


def write_json(data: Any, destination: str | Path) -> None:
    """`data` as indented JSON in `destination`, atomically."""
    atomic_write(destination, (json.dumps(data, indent=2) + "\n").encode())


class AtomicCheckpointIO(TorchCheckpointIO):
    """Lightning's checkpoint IO, writing each checkpoint with `atomic_save` (trainer.plugins)."""

    def save_checkpoint(
        self, checkpoint: dict[str, Any], path: _PATH, storage_options: Any | None = None
    ) -> None:
        if storage_options is not None:
            raise TypeError(f"AtomicCheckpointIO takes no storage_options, got {storage_options!r}")
        atomic_save(checkpoint, path)
