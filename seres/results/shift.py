"""Accuracy under distribution shift for eval.py: CIFAR-10.1 and CIFAR-10-C, their tables and heat map."""

from __future__ import annotations

import statistics
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import lightning as L
import numpy as np
from matplotlib.figure import Figure
from torch import Tensor
from torch.utils.data import DataLoader, TensorDataset

from seres.data import CLASSES
from seres.data.shift_sets import SEVERITIES, cifar10_c_corruptions, load_cifar10_1, load_cifar10_c
from seres.module import ClassifierModule
from seres.records.report import percent, save_figure

# The run's evaluation transform (uint8 images to normalised floats) and eval.py's batch size.
Inputs = tuple[Callable[[Tensor], Tensor], int]


def evaluate_images(
    trainer: L.Trainer, module: ClassifierModule, images: Tensor, labels: Tensor, inputs: Inputs
) -> dict[str, float]:
    """trainer.test on uint8 images, normalised as the run was."""
    transform, batch_size = inputs
    loader = DataLoader(TensorDataset(transform(images), labels), batch_size=batch_size)
    (results,) = trainer.test(module, dataloaders=loader, verbose=False)
    return results


def cifar10_1_accuracy(
    trainer: L.Trainer, module: ClassifierModule, folder: str, inputs: Inputs
) -> dict[str, Any]:
    """Overall and per-class accuracy on CIFAR-10.1 (the trainer's TestFigures logs the per-class ones)."""
    images, labels = load_cifar10_1(folder)
    results = evaluate_images(trainer, module, images, labels, inputs)
    per_class = {name: results[f"test/acc_{name}"] for name in CLASSES}
    return {"acc": results["test/acc"], "images": len(labels), "per_class_acc": per_class}


def cifar10_c_accuracy(
    trainer: L.Trainer, module: ClassifierModule, folder: str, inputs: Inputs
) -> dict[str, Any]:
    """Accuracy per corruption and severity (1 to 5), and their mean."""
    table = {}
    for corruption in cifar10_c_corruptions(folder):
        blocks = load_cifar10_c(folder, corruption)
        table[corruption] = [evaluate_images(trainer, module, *block, inputs)["test/acc"] for block in blocks]
    mean = statistics.fmean(value for row in table.values() for value in row)
    return {"mean_acc": mean, "images_per_severity": len(blocks[0][1]), "acc": table}


def shift_tables(metrics: dict[str, Any]) -> list[str]:
    """Markdown tables of the shift sets in `metrics` (eval.py's report.md)."""
    lines = []
    if "cifar10_1" in metrics:
        result = metrics["cifar10_1"]
        lines += ["", f"## CIFAR-10.1 (v6): {percent(result['acc'])} of {result['images']:,} images", ""]
        lines += ["| class | accuracy |", "|---|---|"]
        lines += [f"| {name} | {percent(value)} |" for name, value in result["per_class_acc"].items()]
    if "cifar10_c" in metrics:
        result = metrics["cifar10_c"]
        lines += ["", f"## CIFAR-10-C: mean accuracy {percent(result['mean_acc'])}", ""]
        lines += ["| corruption | " + " | ".join(f"severity {s}" for s in range(1, SEVERITIES + 1)) + " |"]
        lines += ["|---|" + "---|" * SEVERITIES]
        lines += [
            f"| {name} | " + " | ".join(map(percent, row)) + " |" for name, row in result["acc"].items()
        ]
    return lines


def corruption_figure(table: dict[str, Sequence[float]]) -> Figure:
    """Heat map of CIFAR-10-C accuracy: a row a corruption, a column a severity."""
    values = np.array(list(table.values()))
    figure = Figure(figsize=(6.5, 1.2 + 0.35 * len(table)), layout="constrained")
    axes = figure.subplots()
    image = axes.imshow(values, cmap="viridis", vmin=0.0, vmax=1.0, aspect="auto")
    figure.colorbar(image, ax=axes, label="accuracy")
    axes.set_xticks(range(SEVERITIES), [str(s) for s in range(1, SEVERITIES + 1)])
    axes.set_yticks(range(len(table)), list(table))
    axes.set_xlabel("severity")
    for row, column in np.ndindex(values.shape):
        colour = "black" if values[row, column] > 0.6 else "white"
        axes.text(
            column, row, percent(values[row, column]), ha="center", va="center", fontsize=7, color=colour
        )
    axes.set_title(f"CIFAR-10-C accuracy, mean {percent(values.mean())}")
    return figure


def write_shift_report(metrics: dict[str, Any], output_dir: Path) -> None:
    """report.md: the split's accuracy and the shift sets' tables; cifar10_c.png with CIFAR-10-C."""
    split = metrics.get("split", "test")
    accuracy = f"{split} accuracy {percent(metrics[f'{split}_acc'])}"
    lines = [f"# Evaluation of {metrics['checkpoint']}", "", accuracy]
    (output_dir / "report.md").write_text("\n".join(lines + shift_tables(metrics)) + "\n")
    if "cifar10_c" in metrics:
        save_figure(corruption_figure(metrics["cifar10_c"]["acc"]), output_dir / "cifar10_c.png")
