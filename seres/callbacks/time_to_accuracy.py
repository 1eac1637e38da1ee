"""TimeToAccuracy: the training wall time until validation accuracy first reaches a target."""

import time
from typing import Any

import lightning as L
import torch

from seres.callbacks.run_measure import RunMeasure
from seres.callbacks.training_compute import TrainingCompute


class TimeToAccuracy(RunMeasure):
    """Training wall time until validation accuracy first reaches `target`, for time-to-accuracy recipes.

    Counts only training (validation is excluded) and starts after the first training step, so one-time
    costs (torch.compile, cuDNN autotuning, the first CUDA allocations) are left out; the device is
    synchronised at the two ends of each epoch's training, never per step. With TrainingCompute among the
    callbacks (the default), also the training FLOPs spent by then. `run_metrics()` goes to metrics.json.
    """

    COUNTERS = ("train_seconds", "seconds_to_target", "epoch_at_target", "flops_to_target")

    def __init__(self, target: float = 0.94) -> None:
        self.target = target
        self.train_seconds = 0.0
        self.seconds_to_target: float | None = None
        self.epoch_at_target: int | None = None
        self.flops_to_target: float | None = None
        self._started: float | None = None

    @staticmethod
    def _now(pl_module: L.LightningModule) -> float:
        # The device runs ahead of the host: wait for it, so the clock covers the work actually done.
        if pl_module.device.type == "cuda":
            torch.cuda.synchronize(pl_module.device)
        return time.perf_counter()

    def on_train_batch_end(self, trainer: L.Trainer, pl_module: L.LightningModule, *args: Any) -> None:
        if self._started is None and trainer.current_epoch == 0 and trainer.global_step >= 1:
            self._started = self._now(pl_module)

    def _stop_clock(self, pl_module: L.LightningModule) -> None:
        if self._started is not None:
            self.train_seconds += self._now(pl_module) - self._started
            self._started = None

    def on_validation_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if not trainer.sanity_checking:
            self._stop_clock(pl_module)

    def on_train_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._stop_clock(pl_module)  # epochs without validation

    def on_train_epoch_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if trainer.current_epoch > 0:
            self._started = self._now(pl_module)

    def on_validation_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        accuracy = trainer.callback_metrics.get("val/acc")
        reached = accuracy is not None and float(accuracy) >= self.target
        if reached and self.seconds_to_target is None and not trainer.sanity_checking:
            self.seconds_to_target = round(self.train_seconds, 2)
            self.epoch_at_target = trainer.current_epoch + 1
            compute = [c for c in trainer.callbacks if isinstance(c, TrainingCompute)]
            self.flops_to_target = compute[0].train_flops if compute else None

    def run_metrics(self) -> dict[str, Any]:
        return {
            "target_val_acc": self.target,
            "seconds_to_target": self.seconds_to_target,
            "epoch_at_target": self.epoch_at_target,
            "flops_to_target": self.flops_to_target,
            "train_seconds": round(self.train_seconds, 2),
        }
