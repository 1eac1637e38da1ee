"""StopOnNonFiniteLoss: stops training at a NaN or infinite loss, before a checkpoint stores it."""

from typing import Any

import lightning as L
import torch
from torch import Tensor

from seres.callbacks.log_steps import AtLogSteps


class NonFiniteLossError(RuntimeError):
    """The training loss became NaN or infinite."""


class StopOnNonFiniteLoss(AtLogSteps, L.Callback):
    """Stops training once the loss is NaN or infinite, before a checkpoint can store broken weights.

    The test runs on the device every step; the host reads its result only every `log_every_n_steps`
    steps and before each validation (where checkpoints are written), so it adds no per-step sync.
    """

    def __init__(self) -> None:
        self._first_bad_step: Tensor | None = None

    def on_train_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._first_bad_step = torch.full((), -1, dtype=torch.long, device=pl_module.device)

    def on_train_batch_end(
        self, trainer: L.Trainer, pl_module: L.LightningModule, outputs: Any, batch: Any, batch_idx: int
    ) -> None:
        loss = outputs["loss"] if isinstance(outputs, dict) else outputs
        if loss is None or self._first_bad_step is None:
            return
        newly_bad = ~torch.isfinite(loss.detach()) & (self._first_bad_step < 0)
        self._first_bad_step = torch.where(newly_bad, trainer.global_step, self._first_bad_step)
        if self.logging_step:
            self._check(trainer)

    def on_validation_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if not trainer.sanity_checking:
            self._check(trainer)

    def on_train_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._check(trainer)

    def _check(self, trainer: L.Trainer) -> None:
        step = int(self._first_bad_step) if self._first_bad_step is not None else -1
        if step >= 0:
            raise NonFiniteLossError(_stop_message(trainer, step))


def _stop_message(trainer: L.Trainer, step: int) -> str:
    lr = trainer.optimizers[0].param_groups[0]["lr"]
    last = trainer.checkpoint_callback.last_model_path if trainer.checkpoint_callback else ""
    kept = f"the last good checkpoint is {last}" if last else "no checkpoint had been written yet"
    return (
        f"the training loss became non-finite at optimizer step {step} "
        f"(epoch {trainer.current_epoch + 1}); training stopped and {kept}. Try a lower learning rate "
        f"(optimizer.lr, now {lr:g}), gradient clipping (trainer.gradient_clip_val=1.0) or full "
        f"precision (trainer.precision=32-true)."
    )
