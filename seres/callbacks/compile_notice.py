"""CompileNotice: a compiled network says so, and how long its first steps waited for the compiler."""

import logging
import time
from typing import Any

import lightning as L
from torch._dynamo.eval_frame import OptimizedModule

log = logging.getLogger("seres")


class CompileNotice(L.Callback):
    """With `model.compile=true`: one line before the first step, which waits for the compiler with no other
    sign of life, and one after each of the first two compilations: the validation graph (in Lightning's
    sanity check) and the training step. Silent for a network that is not compiled."""

    def __init__(self) -> None:
        self._compiled = False
        self._first_training_step = False
        self._started = 0.0

    def on_fit_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._compiled = isinstance(getattr(pl_module, "net", None), OptimizedModule)
        self._first_training_step = self._compiled
        if self._compiled and trainer.is_global_zero:
            log.info(
                "model.compile=true: compiling the network; its first validation and training steps wait"
            )

    def on_sanity_check_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._started = time.perf_counter()

    def on_sanity_check_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if self._compiled:
            self._say("validation", trainer)

    def on_train_batch_start(
        self, trainer: L.Trainer, pl_module: L.LightningModule, batch: Any, batch_idx: int
    ) -> None:
        if self._first_training_step:
            self._started = time.perf_counter()

    def on_train_batch_end(
        self, trainer: L.Trainer, pl_module: L.LightningModule, outputs: Any, batch: Any, batch_idx: int
    ) -> None:
        if self._first_training_step:
            self._first_training_step = False
            self._say("training", trainer)

    def _say(self, step: str, trainer: L.Trainer) -> None:
        if trainer.is_global_zero:
            log.info(f"compiled the network's {step} step in {time.perf_counter() - self._started:.0f} s")
