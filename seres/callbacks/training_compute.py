"""TrainingCompute: the training images of a run, their rate (images/s) and the FLOPs they cost."""

import time
from typing import Any

import lightning as L

from seres.callbacks.flop_count import train_step_flops
from seres.callbacks.log_steps import AtLogSteps
from seres.callbacks.run_measure import RunMeasure


class TrainingCompute(AtLogSteps, RunMeasure):
    """The one count of training images (all processes), and what is derived from it.

    - Every `log_every_n_steps` steps, `train/images_per_sec` over the steps since the last value (it includes
      data loading, never validation); the progress bar shows the same figure.
    - `run_metrics()` for metrics.json: `train_images`, `flops_per_image` (a training step's FLOPs per image,
      counted once on the network at the start of the fit, seres.callbacks.flop_count, times the module's
      `passes_per_step`: SAM's two) and their product `train_flops`. The count is kept in checkpoints, so a
      resumed run goes on counting.
    """

    COUNTERS = ("flops_per_image", "train_images")

    def __init__(self) -> None:
        self.flops_per_image: float | None = None
        self.train_images = 0
        self._window_images, self._window_start = 0, 0.0

    @property
    def train_flops(self) -> float | None:
        return None if self.flops_per_image is None else self.flops_per_image * self.train_images

    def on_fit_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if self.flops_per_image is None:
            passes = getattr(pl_module, "passes_per_step", 1)
            self.flops_per_image = train_step_flops(pl_module.net)["train_step_per_image"] * passes

    def on_train_epoch_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._window_images, self._window_start = self.train_images, time.perf_counter()

    def on_train_batch_end(
        self, trainer: L.Trainer, pl_module: L.LightningModule, outputs: Any, batch: Any, batch_idx: int
    ) -> None:
        # A shape, not a value: no wait for the device. Every process trains on a batch of the same size.
        self.train_images += len(batch[0]) * trainer.world_size
        if self.logging_step:
            self._log_rate(pl_module)

    def _log_rate(self, pl_module: L.LightningModule) -> None:
        # Host timestamps, not Lightning's ThroughputMonitor: that one waits for the device every step.
        now = time.perf_counter()
        rate = (self.train_images - self._window_images) / max(now - self._window_start, 1e-9)
        pl_module.log("train/images_per_sec", rate, on_step=True, on_epoch=False, prog_bar=True)
        self._window_images, self._window_start = self.train_images, now

    def run_metrics(self) -> dict[str, Any]:
        return {
            "flops_per_image": self.flops_per_image,
            "train_images": self.train_images,
            "train_flops": self.train_flops,
        }
