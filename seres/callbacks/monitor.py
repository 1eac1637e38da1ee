"""TrainingMonitor: the gradient norm before clipping and the training throughput, at the log cadence."""

import time
from typing import Any

import lightning as L
import torch
from torch.nn.utils import get_total_norm

from seres.callbacks.log_steps import is_logging_step


class TrainingMonitor(L.Callback):
    """Every `log_every_n_steps` steps: the gradient norm before clipping and the training throughput.

    Logs `train/grad_norm` (computed only on those steps) and `train/images_per_sec` (all processes together,
    over the steps since the last value; it includes data loading, but never validation). The progress bar
    shows the same figure: the run has one measure of its speed.
    """

    def __init__(self) -> None:
        self._logging_step = False
        self._images = 0
        self._window_start = 0.0

    def on_train_epoch_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._images, self._window_start = 0, time.perf_counter()

    def on_train_batch_start(
        self, trainer: L.Trainer, pl_module: L.LightningModule, batch: Any, batch_idx: int
    ) -> None:
        self._logging_step = is_logging_step(trainer)

    def on_before_optimizer_step(
        self, trainer: L.Trainer, pl_module: L.LightningModule, optimizer: torch.optim.Optimizer
    ) -> None:
        # Lightning clips after this hook (and unscales mixed-precision gradients before it).
        if self._logging_step:
            gradients = [p.grad for p in pl_module.parameters() if p.grad is not None]
            # The norm clip_grad_norm_ clips by; it stays on the device until Lightning logs it.
            norm = get_total_norm(gradients)
            pl_module.log("train/grad_norm", norm, on_step=True, on_epoch=False)

    def on_train_batch_end(
        self, trainer: L.Trainer, pl_module: L.LightningModule, outputs: Any, batch: Any, batch_idx: int
    ) -> None:
        # Host timestamps, not Lightning's ThroughputMonitor: that one waits for the device every step.
        self._images += len(batch[0])
        if self._logging_step:
            now = time.perf_counter()
            rate = self._images * trainer.world_size / max(now - self._window_start, 1e-9)
            pl_module.log("train/images_per_sec", rate, on_step=True, on_epoch=False, prog_bar=True)
            self._images, self._window_start = 0, now
