"""eval.py on the shift test sets, from small files written here in exactly the official formats."""

import json
from pathlib import Path

import conftest
import numpy as np
import pytest
import torch
from conftest import real_cifar_root, tiny_net
from PIL import Image
from real_run import short_real_run

from seres.data import CLASSES, CIFAR10Error, build_eval_transform, load_cifar10
from seres.data.shift_sets import ShiftSetError
from seres.results.evaluation import evaluate

CORRUPTIONS = {"brightness": lambda x, s: x + 20 * s, "gaussian_noise": lambda x, s: x + s * 8 * np.sin(x)}


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory) -> Path:
    return short_real_run(tmp_path_factory)


def nhwc(images: torch.Tensor) -> np.ndarray:
    """uint8 (N, 3, 32, 32) -> the files' uint8 (N, 32, 32, 3)."""
    return np.ascontiguousarray(images.permute(0, 2, 3, 1).numpy())


def write_cifar10_1(folder: Path, images: torch.Tensor, labels: torch.Tensor) -> None:
    folder.mkdir()
    np.save(folder / "cifar10.1_v6_data.npy", nhwc(images))
    np.save(folder / "cifar10.1_v6_labels.npy", labels.numpy())


def write_cifar10_c(
    folder: Path, images: torch.Tensor, labels: torch.Tensor
) -> dict[str, list[torch.Tensor]]:
    """Each corruption's file: severities 1 to 5 of `images`, one block after another; returns the blocks."""
    folder.mkdir()
    blocks = {}
    for name, corrupt in CORRUPTIONS.items():
        base = images.numpy().astype(np.float64)
        severities = [
            torch.from_numpy(np.clip(corrupt(base, s), 0, 255).astype(np.uint8)) for s in range(1, 6)
        ]
        np.save(folder / f"{name}.npy", nhwc(torch.cat(severities)))
        blocks[name] = severities
    np.save(folder / "labels.npy", np.tile(labels.numpy(), 5))
    return blocks


@torch.no_grad()
def accuracy(run_dir: Path, images: torch.Tensor, labels: torch.Tensor) -> float:
    """The trained network as README shows it, on uint8 images."""
    net = tiny_net().eval()
    net.load_state_dict(torch.load(run_dir / "best_model.pth", weights_only=True))
    x = build_eval_transform([0.4914, 0.4822, 0.4465], [0.2470, 0.2435, 0.2616])(images)
    return (net(x).argmax(dim=1) == labels).float().mean().item()


def compose_eval(*overrides: str):
    return conftest.compose_eval("num_workers=0", "progress=false", *overrides)


def test_eval_reports_cifar10_1_and_cifar10_c_per_class_corruption_and_severity(run_dir, tmp_path):
    images, labels = load_cifar10(real_cifar_root(), verify=False)["test"]
    write_cifar10_1(tmp_path / "cifar10.1", images[:60], labels[:60])
    blocks = write_cifar10_c(tmp_path / "cifar10-c", images[100:140], labels[100:140])
    out = tmp_path / "eval"
    shift_sets = [f"cifar10_1={tmp_path / 'cifar10.1'}", f"cifar10_c={tmp_path / 'cifar10-c'}"]
    metrics = evaluate(
        compose_eval(f"ckpt_path={run_dir}", "limit_batches=1", *shift_sets, f"output_dir={out}")
    )

    assert metrics == json.loads((out / "metrics.json").read_text())
    cifar10_1 = metrics["cifar10_1"]
    assert cifar10_1["images"] == 60 and set(cifar10_1["per_class_acc"]) == set(CLASSES)
    assert cifar10_1["acc"] == pytest.approx(accuracy(run_dir, images[:60], labels[:60]), abs=1e-6)
    assert (out / "cifar10_1" / "confusion.json").is_file()
    table = metrics["cifar10_c"]["acc"]
    assert list(table) == sorted(CORRUPTIONS) and metrics["cifar10_c"]["images_per_severity"] == 40
    for name, severities in blocks.items():
        expected = [accuracy(run_dir, block, labels[100:140]) for block in severities]
        assert table[name] == pytest.approx(expected, abs=1e-6)
    assert metrics["cifar10_c"]["mean_acc"] == pytest.approx(np.mean(list(table.values())))
    report = (out / "report.md").read_text()
    assert "## CIFAR-10.1 (v6)" in report and "| gaussian_noise |" in report and "severity 5" in report
    assert Image.open(out / "cifar10_c.png").size[0] > 300


def test_missing_or_foreign_shift_files_are_named_before_any_work(run_dir, tmp_path):
    empty, out = tmp_path / "empty", tmp_path / "eval"
    empty.mkdir()
    with pytest.raises(CIFAR10Error, match="not found in .*modestyachts/CIFAR-10.1"):  # eval.py's one line
        evaluate(compose_eval(f"ckpt_path={run_dir}", f"cifar10_1={empty}", f"output_dir={out}"))
    with pytest.raises(ShiftSetError, match="no CIFAR-10-C files .*zenodo.org/record/2535967"):
        evaluate(compose_eval(f"ckpt_path={run_dir}", f"cifar10_c={empty}", f"output_dir={out}"))
    assert not out.exists()
    np.save(empty / "cifar10.1_v6_data.npy", np.zeros((4, 3, 32, 32), dtype=np.float32))
    np.save(empty / "cifar10.1_v6_labels.npy", np.zeros(4, dtype=np.int64))
    with pytest.raises(ShiftSetError, match=r"float32 \(4, 3, 32, 32\), not uint8 images \(N, 32, 32, 3\)"):
        evaluate(compose_eval(f"ckpt_path={run_dir}", f"cifar10_1={empty}", f"output_dir={out}"))
