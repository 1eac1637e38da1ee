"""TrainingCompute: the training FLOPs a run spent (FLOPs per image x images trained on), for metrics.json."""

from typing import Any

import lightning as L

from seres.callbacks.flop_count import train_step_flops
from seres.callbacks.run_measure import RunMeasure


class TrainingCompute(RunMeasure):
    """Counts the training images of all processes and multiplies them by the network's FLOPs per image.

    The FLOPs per image of a training step are counted once, on the network itself, at the start of the fit
    (seres.callbacks.flop_count). `run_metrics()` goes to metrics.json: `flops_per_image`, `train_images`,
    `train_flops`.
    """

    COUNTERS = ("flops_per_image", "train_images")

    def __init__(self) -> None:
        self.flops_per_image: float | None = None
        self.train_images = 0

    @property
    def train_flops(self) -> float | None:
        return None if self.flops_per_image is None else self.flops_per_image * self.train_images

    def on_fit_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if self.flops_per_image is None:
            self.flops_per_image = train_step_flops(pl_module.net)["train_step_per_image"]

    def on_train_batch_end(
        self, trainer: L.Trainer, pl_module: L.LightningModule, outputs: Any, batch: Any, batch_idx: int
    ) -> None:
        # A shape, not a value: no wait for the device. Every process trains on a batch of the same size.
        self.train_images += len(batch[0]) * trainer.world_size

    def run_metrics(self) -> dict[str, Any]:
        return {
            "flops_per_image": self.flops_per_image,
            "train_images": self.train_images,
            "train_flops": self.train_flops,
        }
