"""A markdown table of finished runs, made from the runs' own files, so that no row can disagree with its run.

    python -m seres.results.runs_table docs/results/cpu-fast-screen/*/
    python -m seres.results.runs_table --eval RUN_DIR/eval_val*/   # eval.py's results: a row an evaluation
    python -m seres.results.runs_table --rate RUN_DIR...   # and each run's training images per second
    python -m seres.results.runs_table --against-first BASE_RUN RUN_DIR...   # and each run's difference

One row a run directory: its path as given, the overrides it was given (those common to every row are
printed once, above the table), the global batch size, peak learning rate and precision it recorded (runs
from before metrics.json held the precision leave it blank), optimizer steps, training images and compute,
best validation accuracy, the last epoch's validation loss, test accuracy where it was tested, and validation
accuracy by epoch; with --rate, training images per second (its training images over `train_seconds`, the
training time without validation or compilation that callbacks.time_to_accuracy records); with
--against-first, each run's best validation accuracy (in points) and final validation loss minus the first
run's, so that a paired comparison is read off the runs' files, not worked out by hand. Everything comes
from the run's metrics.json and epochs.csv (train.py writes both).
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from seres.records.report import HISTORY_FILE, ReportError, markdown_table, percent, read_history, read_json

HEADER = [
    "run",
    "overrides",
    "batch",
    "peak lr",
    "precision",
    "optimizer steps",
    "training images",
    "compute",
    "best val acc",
    "final val loss",
    "test acc",
    "val acc by epoch",
]
AGAINST_HEADER = ["best val acc - first run's (points)", "final val loss - first run's"]


def read_run(run_dir: Path) -> dict[str, Any]:
    """A run's metrics.json with its validation accuracy and loss by epoch (from epochs.csv) as `val_accs` and
    `val_losses`."""
    metrics_file = run_dir / "metrics.json"
    if not metrics_file.is_file():
        raise ReportError(f"{run_dir} has no metrics.json: give the directory of a finished run")
    metrics = read_json(metrics_file)
    history_file = run_dir / HISTORY_FILE
    history = read_history(history_file) if history_file.is_file() else []
    val_accs, val_losses = [row["val_acc"] for row in history], [row["val_loss"] for row in history]
    return {**metrics, "name": str(run_dir).rstrip("/"), "val_accs": val_accs, "val_losses": val_losses}


def common_overrides(runs: list[dict[str, Any]]) -> list[str]:
    """Overrides every run was given, in the first run's order."""
    shared = set.intersection(*(set(run.get("overrides", [])) for run in runs))
    return [item for item in runs[0].get("overrides", []) if item in shared]


def _count(value: float | None) -> str:
    return "" if value is None else f"{value:,.0f}"


def _pflop(value: float | None) -> str:
    return "" if value is None else f"{value / 1e15:.3f} PFLOP"


def _by_epoch(val_accs: list[float | None]) -> str:
    return " / ".join("-" if acc is None else f"{100 * acc:.1f}" for acc in val_accs)


def _final_loss(val_losses: list[float | None]) -> str:
    return "" if not val_losses or val_losses[-1] is None else f"{val_losses[-1]:.3f}"


def run_row(run: dict[str, Any], common: list[str]) -> list[str]:
    images, batch = run.get("train_images"), run.get("global_batch_size")
    steps = images / batch if images is not None and batch else None
    return [
        run["name"],
        " ".join(f"`{item}`" for item in run.get("overrides", []) if item not in common),
        _count(batch),
        "" if run.get("lr") is None else f"{run['lr']:g}",
        run.get("precision", ""),
        _count(steps),
        _count(images),
        _pflop(run.get("train_flops")),
        percent(run.get("best_val_acc")),
        _final_loss(run["val_losses"]),
        "" if run.get("test_acc") is None else percent(run["test_acc"]),
        _by_epoch(run["val_accs"]),
    ]


def training_rate(run: dict[str, Any]) -> str:
    """Training images per second of training time, where the run recorded that time."""
    images, seconds = run.get("train_images"), run.get("train_seconds")
    return f"{images / seconds:,.0f}" if images and seconds else ""


def against_first(run: dict[str, Any], first: dict[str, Any]) -> list[str]:
    """The run's best validation accuracy (points) and final validation loss minus the first run's."""
    if run is first:
        return ["", ""]
    acc, base_acc = run.get("best_val_acc"), first.get("best_val_acc")
    losses, base_losses = run["val_losses"], first["val_losses"]
    loss = losses[-1] if losses else None
    base_loss = base_losses[-1] if base_losses else None
    return [
        "" if acc is None or base_acc is None else f"{100 * (acc - base_acc):+.2f}",
        "" if loss is None or base_loss is None else f"{loss - base_loss:+.3f}",
    ]


def runs_table(run_dirs: Sequence[Path], rate: bool = False, against: bool = False) -> list[str]:
    """The markdown lines: the overrides common to every run, then one row a run (`rate`: with images/s;
    `against`: with the differences from the first run)."""
    runs = [read_run(run_dir) for run_dir in run_dirs]
    common = common_overrides(runs)
    shared = " ".join(f"`{item}`" for item in common) or "none"
    rows = [
        run_row(run, common)
        + ([training_rate(run)] if rate else [])
        + (against_first(run, runs[0]) if against else [])
        for run in runs
    ]
    header = HEADER + (["training images/s"] if rate else []) + (AGAINST_HEADER if against else [])
    return [f"Overrides of every run: {shared}", "", *markdown_table(header, rows)]


EVAL_HEADER = ["evaluation", "checkpoint", "split", "tta", "tta_translate", "images", "accuracy"]


def eval_row(eval_dir: Path) -> list[str]:
    """One eval.py result (its metrics.json) as a row: what was evaluated, how, and the accuracy."""
    metrics = read_run(eval_dir)
    split = metrics.get("split", "test")
    return [
        metrics["name"],
        metrics["checkpoint"],
        split,
        str(metrics["tta"]).lower(),
        str(metrics.get("tta_translate", 0)),
        _count(metrics[f"{split}_images"]),
        percent(metrics[f"{split}_acc"]),
    ]


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m seres.results.runs_table", description=__doc__.split("\n")[0]
    )
    parser.add_argument("run_dirs", type=Path, nargs="+", help="directories of finished runs")
    parser.add_argument("--eval", action="store_true", help="the directories are eval.py's output_dirs")
    parser.add_argument("--rate", action="store_true", help="add each run's training images per second")
    parser.add_argument(
        "--against-first",
        action="store_true",
        help="add each run's best val acc and final val loss minus the first run's",
    )
    args = parser.parse_args(argv)
    try:
        if args.eval:
            print("\n".join(markdown_table(EVAL_HEADER, [eval_row(path) for path in args.run_dirs])))
        else:
            print("\n".join(runs_table(args.run_dirs, rate=args.rate, against=args.against_first)))
    except ReportError as error:
        print(f"Error: {error}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
