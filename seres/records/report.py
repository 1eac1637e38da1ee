"""A run's report: training curves, the test confusion matrix, and report.md tying them to config and metrics.

train.py writes it at the end of every run; regenerate it (e.g. after editing this file) with

    python -m seres.records.report RUN_DIR

It reads only files the run left behind: epochs.csv (one row per epoch, from seres.callbacks.EpochSummary),
confusion.json and mistakes.png (from seres.callbacks.TestFigures), metrics.json and .hydra/. The figure
builders here are also what the callbacks send to TensorBoard.
"""

from __future__ import annotations

import argparse
import csv
import json
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
from matplotlib.figure import Figure
from matplotlib.ticker import MaxNLocator

HISTORY_FILE = "epochs.csv"
HISTORY_COLUMNS = ("epoch", "train_loss", "train_acc", "val_loss", "val_acc", "lr", "seconds")
CONFUSION_FILE = "confusion.json"
MISTAKES_FILE = "mistakes.png"


class ReportError(ValueError):
    """The directory is not a run directory, or one of its files cannot be read."""


# ---------------------------------------------------------------------------------------------------------
# Figures (matplotlib's object API: no pyplot, so no display or global state is needed)
# ---------------------------------------------------------------------------------------------------------


def curves_figure(history: Sequence[dict[str, float | None]]) -> Figure:
    """Loss and accuracy per epoch for training and validation, and the learning rate (three panels)."""
    figure = Figure(figsize=(13, 3.6), layout="constrained")
    loss_axes, acc_axes, lr_axes = figure.subplots(1, 3)
    for stage, label in (("train", "training"), ("val", "validation")):
        for axes, metric, scale in ((loss_axes, "loss", 1.0), (acc_axes, "acc", 100.0)):
            points = [(row["epoch"], row[f"{stage}_{metric}"]) for row in history]
            points = [(epoch, value * scale) for epoch, value in points if value is not None]
            if points:
                axes.plot(*zip(*points, strict=True), marker="." if len(points) < 30 else None, label=label)
    lr_points = [(row["epoch"], row["lr"]) for row in history if row["lr"] is not None]
    if lr_points:
        lr_axes.plot(*zip(*lr_points, strict=True), color="tab:green")
    for axes, title in (
        (loss_axes, "loss"),
        (acc_axes, "accuracy (%)"),
        (lr_axes, "learning rate (epoch end)"),
    ):
        axes.set_title(title)
        axes.set_xlabel("epoch")
        axes.xaxis.set_major_locator(MaxNLocator(integer=True))
        axes.grid(alpha=0.3)
    loss_axes.legend()
    acc_axes.legend()
    return figure


def confusion_figure(matrix: np.ndarray, classes: Sequence[str]) -> Figure:
    """Rows are true classes, columns predictions; colour is the row's share, the text the image count."""
    counts = np.asarray(matrix, dtype=np.int64)
    shares = counts / np.maximum(counts.sum(axis=1, keepdims=True), 1)
    figure = Figure(figsize=(7.5, 6.5), layout="constrained")
    axes = figure.subplots()
    image = axes.imshow(shares, cmap="Blues", vmin=0.0, vmax=1.0)
    figure.colorbar(image, ax=axes, label="share of the true class")
    ticks = range(len(classes))
    axes.set_xticks(ticks, classes, rotation=45, ha="right")
    axes.set_yticks(ticks, classes)
    axes.set_xlabel("predicted class")
    axes.set_ylabel("true class")
    for row, column in np.ndindex(counts.shape):
        colour = "white" if shares[row, column] > 0.5 else "black"
        axes.text(column, row, str(counts[row, column]), ha="center", va="center", fontsize=8, color=colour)
    accuracy = np.trace(counts) / max(counts.sum(), 1)
    axes.set_title(f"test confusion matrix: {counts.sum():,} images, accuracy {100 * accuracy:.2f}%")
    return figure


def mistakes_figure(
    images: np.ndarray,
    true_labels: Sequence[int],
    predicted: Sequence[int],
    confidence: Sequence[float],
    classes: Sequence[str],
) -> Figure:
    """A grid of (N, 3, H, W) images in [0, 1], each titled with its true and predicted class."""
    columns = min(8, max(1, len(images)))
    rows = max(1, -(-len(images) // columns))
    figure = Figure(figsize=(1.6 * columns, 1.9 * rows), layout="constrained")
    figure.suptitle("most confidently wrong test images")
    for index, axes in enumerate(np.atleast_1d(figure.subplots(rows, columns, squeeze=False)).flat):
        axes.set_axis_off()
        if index >= len(images):
            continue
        axes.imshow(np.clip(np.transpose(images[index], (1, 2, 0)), 0.0, 1.0), interpolation="nearest")
        axes.set_title(
            f"true: {classes[true_labels[index]]}\npred: {classes[predicted[index]]} "
            f"{100 * confidence[index]:.0f}%",
            fontsize=8,
        )
    return figure


def save_figure(figure: Figure, destination: Path) -> None:
    figure.savefig(destination, dpi=110)


# ---------------------------------------------------------------------------------------------------------
# Reading a run directory
# ---------------------------------------------------------------------------------------------------------


def read_history(path: Path) -> list[dict[str, float | None]]:
    """epochs.csv as one dict per epoch; empty cells (e.g. epochs without validation) become None.

    A resumed run may repeat an epoch it had started before; the last row for each epoch wins.
    """
    with open(path, newline="") as handle:
        reader = csv.DictReader(handle)
        missing = set(HISTORY_COLUMNS) - set(reader.fieldnames or ())
        if missing:
            raise ReportError(f"{path} lacks the column(s) {', '.join(sorted(missing))}")
        try:
            rows = [{key: float(row[key]) if row[key] else None for key in HISTORY_COLUMNS} for row in reader]
        except (TypeError, ValueError) as error:
            raise ReportError(f"{path} holds a value that is not a number ({error})") from error
    by_epoch = {row["epoch"]: row for row in rows}
    return [by_epoch[epoch] for epoch in sorted(by_epoch)]


def read_json(path: Path) -> Any:
    try:
        return json.loads(path.read_text())
    except json.JSONDecodeError as error:
        raise ReportError(f"{path} is not valid JSON ({error})") from error


def read_confusion(path: Path) -> tuple[np.ndarray, list[str]]:
    """confusion.json as (matrix, class names); matrix[true, predicted] counts test images."""
    data = read_json(path)
    try:
        matrix = np.asarray(data["matrix"], dtype=np.int64)
        classes = [str(name) for name in data["classes"]]
    except (KeyError, TypeError, ValueError) as error:
        raise ReportError(f"{path} does not hold a 'matrix' of counts and its 'classes' ({error})") from error
    if matrix.shape != (len(classes), len(classes)):
        raise ReportError(f"{path}: a {matrix.shape} matrix does not fit {len(classes)} classes")
    return matrix, classes


def write_confusion(matrix: np.ndarray, classes: Sequence[str], destination: Path) -> None:
    data = {"rows": "true class", "columns": "predicted class", "classes": list(classes)}
    data["matrix"] = np.asarray(matrix).tolist()
    destination.write_text(json.dumps(data, indent=1) + "\n")


def percent(value: float | None) -> str:
    """0.9127 -> "91.27%", None -> "-"."""
    return "-" if value is None else f"{100 * value:.2f}%"


def markdown_table(header: list[str], lines: list[list[str]]) -> list[str]:
    """A Markdown table: the header row, the rule, one row per line of cells."""
    rows = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    return rows + ["| " + " | ".join(line) + " |" for line in lines]


def _metrics_table(metrics: dict[str, Any]) -> list[str]:
    rows = [
        ("best validation accuracy", percent(metrics.get("best_val_acc"))),
        ("test accuracy (best checkpoint)", percent(metrics.get("test_acc"))),
        ("test loss", "-" if metrics.get("test_loss") is None else f"{metrics['test_loss']:.4f}"),
        ("parameters", f"{metrics['params']:,}" if "params" in metrics else "-"),
        ("epochs", str(metrics.get("epochs", "-"))),
        ("fit time", f"{metrics['fit_seconds']:.0f} s" if "fit_seconds" in metrics else "-"),
        ("seed", str(metrics.get("seed", "-"))),
    ]
    return markdown_table(["metric", "value"], [list(row) for row in rows])


def _class_table(matrix: np.ndarray, classes: Sequence[str]) -> list[str]:
    lines = []
    for index, name in enumerate(classes):
        row = matrix[index]
        wrong = row.copy()
        wrong[index] = -1
        confused = int(wrong.argmax())
        mistaken = f"{classes[confused]} ({row[confused]} images)" if row[confused] else "-"
        lines.append([name, percent(row[index] / max(row.sum(), 1)), mistaken])
    return markdown_table(["class", "test accuracy", "most often mistaken for"], lines)


def _command(run_dir: Path) -> str:
    overrides_file = run_dir / ".hydra" / "overrides.yaml"
    if not overrides_file.is_file():
        return "python train.py (overrides unknown: no .hydra/overrides.yaml)"
    # Hydra writes the overrides as a YAML list of strings, one `- key=value` line each.
    overrides = [
        line[2:].strip() for line in overrides_file.read_text().splitlines() if line.startswith("- ")
    ]
    return " ".join(["python train.py", *overrides])


def write_report(run_dir: str | Path) -> Path:
    """Write curves.png, confusion.png (if tested) and report.md into `run_dir`; return report.md."""
    run_dir = Path(run_dir)
    history_file, metrics_file = run_dir / HISTORY_FILE, run_dir / "metrics.json"
    if not run_dir.is_dir():
        raise ReportError(f"{run_dir} is not a directory; give a run directory, e.g. outputs/DATE/TIME")
    if not history_file.is_file() and not metrics_file.is_file():
        raise ReportError(
            f"{run_dir} is not a run directory: it has neither {HISTORY_FILE} nor metrics.json. Give the "
            "directory train.py printed at the end (outputs/DATE/TIME, or multirun/DATE/TIME/N)."
        )
    metrics = read_json(metrics_file) if metrics_file.is_file() else {}
    lines = [f"# Run report: {run_dir.name}", "", f"`{_command(run_dir)}`", "", *_metrics_table(metrics), ""]

    history = read_history(history_file) if history_file.is_file() else []
    lines += ["## Training curves", ""]
    if history:
        save_figure(curves_figure(history), run_dir / "curves.png")
        lines += [
            "![training curves](curves.png)",
            "",
            "Training loss and accuracy are means over each epoch's (augmented) batches; validation is "
            f"measured on the held-out split after each epoch. Per-epoch numbers: `{HISTORY_FILE}`.",
        ]
    else:
        lines.append(f"No completed epoch ({HISTORY_FILE} is missing or empty).")

    lines += ["", "## Test set", ""]
    confusion_file = run_dir / CONFUSION_FILE
    if confusion_file.is_file():
        matrix, classes = read_confusion(confusion_file)
        save_figure(confusion_figure(matrix, classes), run_dir / "confusion.png")
        lines += ["![confusion matrix](confusion.png)", "", *_class_table(matrix, classes)]
        if (run_dir / MISTAKES_FILE).is_file():
            lines += ["", f"![most confidently wrong test images]({MISTAKES_FILE})"]
    else:
        lines.append(f"Not tested (no {CONFUSION_FILE}; the run had `test=false` or stopped before testing).")

    config_file = run_dir / ".hydra" / "config.yaml"
    if config_file.is_file():
        lines += ["", "## Config", "", "```yaml", config_file.read_text().rstrip(), "```"]
    report = run_dir / "report.md"
    report.write_text("\n".join(lines) + "\n")
    return report


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        prog="python -m seres.records.report",
        description="(Re)write curves.png, confusion.png and report.md in a run directory.",
    )
    parser.add_argument("run_dir", type=Path, metavar="RUN_DIR", help="e.g. outputs/2025-01-31/12-00-00")
    args = parser.parse_args(argv)
    try:
        report = write_report(args.run_dir)
    except (ReportError, OSError) as error:
        sys.exit(f"python -m seres.records.report: {error}")
    print(report)


if __name__ == "__main__":
    main()
