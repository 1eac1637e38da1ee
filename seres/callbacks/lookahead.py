"""Lookahead (Zhang et al. 2019): slow weights that the network steps back to every k optimizer steps."""

from typing import Any

import lightning as L

from seres.callbacks.ema import EMA


class Lookahead(EMA):
    """Every `every_n_steps` steps the slow weights move `1 - decay` of the way to the network's (an EMA
    update), and the network then continues from the slow weights; the optimizer's momentum is kept, as in
    airbench94. BatchNorm's running statistics take part like the weights.

    Validation, checkpoints, best_model.pth and the final test use the slow weights, as with `EMA`. The first
    update only copies the network (torch's AveragedModel starts from its first update), so the slow weights
    start `every_n_steps` steps into the run, or into the run that `continue_from` starts.
    """

    def __init__(self, decay: float = 0.5, every_n_steps: int = 5) -> None:
        super().__init__(decay=decay, every_n_steps=every_n_steps, use_buffers=True)

    def on_train_batch_end(
        self, trainer: L.Trainer, pl_module: L.LightningModule, outputs: Any, batch: Any, batch_idx: int
    ) -> None:
        last_update = self._latest_update_step
        super().on_train_batch_end(trainer, pl_module, outputs, batch, batch_idx)
        if self._latest_update_step != last_update:
            self._copy_average_to_current(pl_module)
