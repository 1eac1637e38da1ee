"""Lightning callbacks that the configs in conf/callbacks/ switch on."""

import logging
import time

import lightning as L
from lightning.pytorch.utilities import rank_zero_only

log = logging.getLogger("seres")


def _percent(metrics: dict, key: str) -> str:
    value = metrics.get(key)
    return "   -  " if value is None else f"{100 * float(value):5.2f}%"


def _number(metrics: dict, key: str) -> str:
    value = metrics.get(key)
    return "  -   " if value is None else f"{float(value):.4f}"


class EpochSummary(L.Callback):
    """Logs one line per epoch (train and val loss/accuracy, learning rate, epoch time) from rank 0."""

    def __init__(self) -> None:
        self._epoch_start = 0.0

    def on_train_epoch_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._epoch_start = time.perf_counter()

    def on_train_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        # Validation has already run for this epoch, so both stages' epoch metrics are available here.
        self._print_line(trainer, time.perf_counter() - self._epoch_start)

    @rank_zero_only
    def _print_line(self, trainer: L.Trainer, seconds: float) -> None:
        metrics = trainer.callback_metrics
        lr = trainer.optimizers[0].param_groups[0]["lr"] if trainer.optimizers else float("nan")
        log.info(
            f"epoch {trainer.current_epoch + 1:>3}/{trainer.max_epochs} | "
            f"train loss {_number(metrics, 'train/loss')} acc {_percent(metrics, 'train/acc')} | "
            f"val loss {_number(metrics, 'val/loss')} acc {_percent(metrics, 'val/acc')} | "
            f"lr {lr:.5f} | {seconds:.1f}s"
        )
