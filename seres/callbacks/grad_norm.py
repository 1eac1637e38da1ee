"""GradientNorm: the gradient norm before clipping, at the log cadence."""

import lightning as L
import torch
from torch.nn.utils import get_total_norm

from seres.callbacks.log_steps import AtLogSteps


class GradientNorm(AtLogSteps, L.Callback):
    """Every `log_every_n_steps` steps, `train/grad_norm`: the norm gradient clipping compares with its
    threshold, computed only on those steps."""

    def on_before_optimizer_step(
        self, trainer: L.Trainer, pl_module: L.LightningModule, optimizer: torch.optim.Optimizer
    ) -> None:
        # Lightning clips after this hook (and unscales mixed-precision gradients before it).
        if self.logging_step:
            gradients = [p.grad for p in pl_module.parameters() if p.grad is not None]
            # The norm clip_grad_norm_ clips by; it stays on the device until Lightning logs it.
            pl_module.log("train/grad_norm", get_total_norm(gradients), on_step=True, on_epoch=False)
