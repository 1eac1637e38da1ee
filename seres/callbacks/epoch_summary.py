"""EpochSummary: one log line per epoch, and the same numbers as a row of epochs.csv."""

import csv
import logging
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import lightning as L
from lightning.pytorch.utilities import rank_zero_only

from seres.records.report import HISTORY_COLUMNS, percent

log = logging.getLogger("seres")


def _value(metrics: Mapping[str, Any], key: str) -> float | None:
    value = metrics.get(key)
    return None if value is None else float(value)


def _loss_text(metrics: Mapping[str, Any], key: str) -> str:
    value = _value(metrics, key)
    return "  -   " if value is None else f"{value:.4f}"


def _accuracy_text(metrics: Mapping[str, Any], key: str) -> str:
    # Right-aligned to the width of "99.00%", so that the epochs' lines stay in columns.
    return f"{percent(_value(metrics, key)):>6}"


def _learning_rate(trainer: L.Trainer) -> float:
    return trainer.optimizers[0].param_groups[0]["lr"] if trainer.optimizers else float("nan")


class EpochSummary(L.Callback):
    """One line per epoch (train and val loss/accuracy, learning rate, epoch time) from rank 0.

    Also logs the epoch time as `train/epoch_seconds`, and with `history_csv` appends the line's numbers as a
    row of that file (columns in seres.records.report.HISTORY_COLUMNS; val cells empty in epochs without
    validation).
    """

    def __init__(self, history_csv: str | None = None) -> None:
        self.history_csv = Path(history_csv) if history_csv else None
        self._epoch_start = 0.0
        self._validated = False

    @rank_zero_only
    def on_train_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if self.history_csv is not None and self.history_csv.is_file():
            self._keep_completed_epochs(trainer.current_epoch)

    def _keep_completed_epochs(self, completed: int) -> None:
        # Keep only the rows of epochs the (restored) run has completed: a fresh run into an old directory
        # starts an empty file, a resumed one drops the row of an epoch that was cut short.
        with open(self.history_csv, newline="") as handle:
            rows = list(csv.reader(handle))
        kept = [row for row in rows[1:] if row and int(row[0]) <= completed]
        with open(self.history_csv, "w", newline="") as handle:
            csv.writer(handle).writerows(rows[:1] + kept if kept else [])

    def on_train_epoch_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._epoch_start = time.perf_counter()
        self._validated = False

    def on_validation_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._validated = self._validated or not trainer.sanity_checking

    def on_train_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        # Validation has already run for this epoch, so both stages' epoch metrics are available here.
        seconds = time.perf_counter() - self._epoch_start
        # The slowest process sets the pace, hence the maximum over processes.
        pl_module.log("train/epoch_seconds", seconds, sync_dist=True, reduce_fx="max")
        self._report(trainer, seconds)

    @rank_zero_only
    def _report(self, trainer: L.Trainer, seconds: float) -> None:
        metrics, lr = trainer.callback_metrics, _learning_rate(trainer)
        log.info(
            f"epoch {trainer.current_epoch + 1:>3}/{trainer.max_epochs} | "
            f"train loss {_loss_text(metrics, 'train/loss')} acc {_accuracy_text(metrics, 'train/acc')} | "
            f"val loss {_loss_text(metrics, 'val/loss')} acc {_accuracy_text(metrics, 'val/acc')} | "
            f"lr {lr:.5f} | {seconds:.1f}s"
        )
        if self.history_csv is not None:
            self._append_row(metrics, lr, seconds, trainer.current_epoch + 1)

    def _append_row(self, metrics: Mapping[str, Any], lr: float, seconds: float, epoch: int) -> None:
        def cell(key: str, stage: str) -> float | str:
            fresh = stage == "train" or self._validated
            return float(metrics[key]) if fresh and key in metrics else ""

        row = [epoch, cell("train/loss", "train"), cell("train/acc", "train")]
        row += [cell("val/loss", "val"), cell("val/acc", "val"), lr, round(seconds, 3)]
        new_file = not self.history_csv.is_file() or self.history_csv.stat().st_size == 0
        with open(self.history_csv, "a", newline="") as handle:
            writer = csv.writer(handle)
            if new_file:
                writer.writerow(HISTORY_COLUMNS)
            writer.writerow(row)
