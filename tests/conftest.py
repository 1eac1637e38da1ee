"""Test helpers: small fake CIFAR-10 trees in the official file formats, and the real data if present."""

from __future__ import annotations

import functools
import os
import pickle
import shutil
import socket
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Literal

import numpy as np
import pytest
import torch
from filelock import FileLock
from hydra import compose, initialize_config_dir
from omegaconf import DictConfig

from seres.model import SEResNet

CLASS_COUNT = 10
TRAIN_FILES = 5
REPO = Path(__file__).resolve().parents[1]
TRAIN = [sys.executable, str(REPO / "train.py")]
# The tiny network every test trains: the SE-ResNet's four stacks, one block each, 8 to 64 channels.
TINY_NET = {"widths": [8, 16, 32, 64], "blocks": [1, 1, 1, 1], "stem_width": 8}
TINY_MODEL = [f"model.{key}={value}".replace(" ", "") for key, value in TINY_NET.items()]
# fp32 and NCHW whatever the CPU (trainer.precision=auto picks bf16 on some; channels_last is the default),
# so that results compare exactly with the tests' own fp32 NCHW computations; never compiled (seconds each).
TINY = [
    *TINY_MODEL,
    "model.channels_last=false",
    "model.compile=false",
    "data.num_workers=0",
    "trainer.precision=32-true",
]


def compose_conf(config_name: str, *overrides: str, hydra_config: bool = False) -> DictConfig:
    """conf/<config_name>.yaml composed with `overrides` by Hydra's compose API, as the script would be."""
    with initialize_config_dir(config_dir=str(REPO / "conf"), version_base="1.3"):
        return compose(config_name=config_name, overrides=list(overrides), return_hydra_config=hydra_config)


def compose_train(*overrides: str, hydra_config: bool = False) -> DictConfig:
    """train.py's config with `overrides`, as composed before its checks (no run directory unless
    `paths.output_dir` is among them)."""
    return compose_conf("train", "paths.output_dir=/unused", *overrides, hydra_config=hydra_config)


def compose_eval(*overrides: str) -> DictConfig:
    return compose_conf("eval", *overrides)


def tiny_net(**kwargs) -> SEResNet:
    return SEResNet(**TINY_NET, **kwargs)


def fake_data(root: Path, val_size: int = 100, batch_size: int = 32) -> list[str]:
    """Overrides for a fake CIFAR-10 tree written by write_fake_cifar10 (not the official files)."""
    return [
        f"data.root={root}",
        "data.verify=false",
        f"data.val_size={val_size}",
        f"data.batch_size={batch_size}",
    ]


# Fixtures that train a run in a subprocess: a test that uses one is an end-to-end test.
END_TO_END_FIXTURES = {"run_dir", "single_run", "finished_run", "uninterrupted", "smoke_run", "cpu_full_run"}


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Mark the end-to-end tests `slow`, so that `make test-fast` (pytest -m "not slow") leaves them out.

    They run first: the quick tests left for the end fill the parallel workers evenly, where one long
    test started last would keep one worker busy while the other waits."""
    for item in items:
        if END_TO_END_FIXTURES & set(getattr(item, "fixturenames", ())):
            item.add_marker(pytest.mark.slow)
    items.sort(key=lambda item: item.get_closest_marker("slow") is None)  # stable: file order kept


def made_once(tmp_path_factory: pytest.TempPathFactory, name: str, fill: Callable[[Path], None]) -> Path:
    """A directory of results shared by every test that asks for `name`: `fill` writes them once, by the
    first test to ask, while tests running beside it wait, so that an expensive end-to-end run is not
    repeated. Tests that share it only read it, or add files of their own names."""
    base = tmp_path_factory.getbasetemp()
    if os.environ.get("PYTEST_XDIST_WORKER"):
        base = base.parent  # the parallel test processes' temporary directories share this parent
    path, filled = base / name, base / f"{name}.filled"
    with FileLock(base / f"{name}.lock"):
        if not filled.exists():
            shutil.rmtree(path, ignore_errors=True)  # what a failed attempt left
            path.mkdir()
            fill(path)
            filled.touch()
    return path


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on now, for a server a test starts."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def run_command(
    command: list[str],
    expect_ok: bool = True,
    cwd: Path = REPO,
    env: dict[str, str] | None = None,
    preexec_fn: Callable[[], None] | None = None,
) -> subprocess.CompletedProcess:
    """Run a command as a user would, with tests/ importable (test callbacks); assert how it exits.

    `env` replaces this process's environment (tests/ stays importable); `preexec_fn` runs in the child."""
    env = {**(os.environ if env is None else env), "PYTHONPATH": str(REPO / "tests")}
    result = subprocess.run(
        command, cwd=cwd, capture_output=True, text=True, timeout=600, env=env, preexec_fn=preexec_fn
    )
    output = f"{result.stdout[-3000:]}\n{result.stderr[-6000:]}"
    assert (result.returncode == 0) == expect_ok, f"{' '.join(command)} exit {result.returncode}:\n{output}"
    return result


def run_train(*overrides: str, expect_ok: bool = True, cwd: Path = REPO) -> subprocess.CompletedProcess:
    return run_command([*TRAIN, *overrides], expect_ok=expect_ok, cwd=cwd)


def as_if_older(checkpoint: Path, key: str) -> None:
    """Rewrite train.py's `checkpoint` as a seres from before the setting `key` ("model.bn_momentum")
    existed would have written it: its saved config without that key."""
    state = torch.load(checkpoint, weights_only=False)
    *groups, name = key.split(".")
    settings = state["hyper_parameters"]["config"]
    for group in groups:
        settings = settings[group]
    del settings[name]
    torch.save(state, checkpoint)


def make_fake_images(labels: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Learnable (N, 3, 32, 32) uint8 images: a class colour, a class stripe pattern, and noise.

    Class c gets a base colour from a fixed palette plus horizontal stripes with period 2 + c % 5 (brighter
    for c >= 5), so a tiny network separates the classes quickly, while the noise keeps images distinct.
    """
    palette = np.random.default_rng(1234).integers(40, 216, size=(CLASS_COUNT, 3))
    rows = np.arange(32)
    images = np.empty((len(labels), 3, 32, 32), dtype=np.int64)
    for label in range(CLASS_COUNT):
        chosen = labels == label
        stripes = ((rows // (2 + label % 5)) % 2) * (30 if label >= 5 else -30)
        base = palette[label][:, None, None] + stripes[None, :, None]
        images[chosen] = base
    images += rng.integers(-20, 21, size=images.shape)
    return np.clip(images, 0, 255).astype(np.uint8)


def _fake_split(n_per_class: int, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    labels = rng.permutation(np.repeat(np.arange(CLASS_COUNT), n_per_class)).astype(np.int64)
    return make_fake_images(labels, rng), labels


def _write_bin(path: Path, images: np.ndarray, labels: np.ndarray) -> None:
    # Official record: 1 label byte, then 1024 R bytes, 1024 G bytes, 1024 B bytes (each plane row-major).
    with open(path, "wb") as handle:
        for image, label in zip(images, labels, strict=True):
            handle.write(bytes([int(label)]))
            for channel in image:
                handle.write(channel.tobytes())


def _write_pickle(path: Path, images: np.ndarray, labels: np.ndarray, batch_label: bytes) -> None:
    # Official python layout: a dict with bytes keys (as loaded with encoding="bytes"), data (N, 3072) uint8.
    batch = {
        b"batch_label": batch_label,
        b"labels": [int(label) for label in labels],
        b"data": images.reshape(len(images), -1),
        b"filenames": [f"fake_{index:05d}.png".encode() for index in range(len(images))],
    }
    with open(path, "wb") as handle:
        pickle.dump(batch, handle, protocol=2)


def write_fake_cifar10(
    root: Path,
    layout: Literal["bin", "py"],
    n_per_class_train: int,
    n_per_class_test: int,
    seed: int = 0,
) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """Write a small CIFAR-10 tree under ``root`` in the official ``bin`` or ``py`` layout.

    Train images (``10 * n_per_class_train``, shuffled) are spread over data_batch_1..5 as evenly as
    possible; the test file holds ``10 * n_per_class_test``. The same ``seed`` gives the same content in
    either layout. Returns ``{"train": (images, labels), "test": (images, labels)}`` as numpy arrays,
    images (N, 3, 32, 32) uint8 and labels (N,) int64.
    """
    rng = np.random.default_rng(seed)
    content = {"train": _fake_split(n_per_class_train, rng), "test": _fake_split(n_per_class_test, rng)}
    directory = Path(root) / ("cifar-10-batches-bin" if layout == "bin" else "cifar-10-batches-py")
    directory.mkdir(parents=True, exist_ok=True)
    train_images, train_labels = content["train"]
    parts = np.array_split(np.arange(len(train_labels)), TRAIN_FILES)
    files = [(f"data_batch_{k + 1}", train_images[part], train_labels[part]) for k, part in enumerate(parts)]
    files.append(("test_batch", *content["test"]))
    for name, images, labels in files:
        if layout == "bin":
            _write_bin(directory / f"{name}.bin", images, labels)
        else:
            _write_pickle(directory / name, images, labels, f"fake {name}".encode())
    return content


@pytest.fixture(scope="session")
def fake_cifar_bin(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Root dir with a fake binary layout: 40 train and 10 test images per class (seed 0)."""
    root = tmp_path_factory.mktemp("fake_cifar_bin")
    write_fake_cifar10(root, "bin", n_per_class_train=40, n_per_class_test=10)
    return root


@pytest.fixture(scope="session")
def fake_cifar_py(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Root dir with a fake python-pickle layout of the same content as ``fake_cifar_bin``."""
    root = tmp_path_factory.mktemp("fake_cifar_py")
    write_fake_cifar10(root, "py", n_per_class_train=40, n_per_class_test=10)
    return root


@functools.cache
def _verified_real_root() -> tuple[Path | None, str]:
    from seres.data import CIFAR10Error, find_cifar10

    root = Path(os.environ.get("SERES_DATA_DIR") or Path(__file__).resolve().parents[1] / "data")
    try:
        found = find_cifar10(root, verify=True)
    except CIFAR10Error as error:
        return None, f"real CIFAR-10 under {root} failed verification ({error})"
    if found is None:
        return None, f"no real CIFAR-10 under {root}; run `make data` (or set SERES_DATA_DIR)"
    return root, ""


def real_cifar_root() -> Path:
    """The repo's ``data/`` dir (or ``$SERES_DATA_DIR``) if it holds verified CIFAR-10, else skip the test."""
    root, reason = _verified_real_root()
    if root is None:
        pytest.skip(reason)
    return root
