"""When Lightning writes step metrics: the steps on which callbacks may read device values."""

from typing import Any

import lightning as L


def is_logging_step(trainer: L.Trainer) -> bool:
    """Whether Lightning writes step metrics after the batch about to run (call from on_train_batch_start)."""
    every = trainer.log_every_n_steps
    return every > 0 and (trainer.global_step + 1) % every == 0


class AtLogSteps:
    """A callback's base (first among its bases) that reads device values only where Lightning waits for the
    device anyway: during a training batch, `self.logging_step` says whether Lightning writes step metrics
    after it."""

    logging_step = False

    def on_train_batch_start(
        self, trainer: L.Trainer, pl_module: L.LightningModule, batch: Any, batch_idx: int
    ) -> None:
        self.logging_step = is_logging_step(trainer)
        super().on_train_batch_start(trainer, pl_module, batch, batch_idx)  # type: ignore[misc]
