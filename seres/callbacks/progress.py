"""ProgressBar: Lightning's rich progress bar with training images/s and the latest loss."""

import logging
import sys
from typing import Any

import lightning as L
from lightning.pytorch.callbacks import RichProgressBar
from rich.file_proxy import FileProxy

from seres.callbacks.log_steps import AtLogSteps


class ProgressBar(AtLogSteps, RichProgressBar):
    """Lightning's rich progress bar, plus training images/s and the latest training loss.

    `enabled=False` (config `progress=false`) shows nothing, for logs; EpochSummary's line stays either way.
    The images/s are TrainingCompute's `train/images_per_sec`, shown as `img/s`. The loss is read at the
    `log_every_n_steps` cadence only, so the bar adds no per-step synchronisation.
    """

    def __init__(self, enabled: bool = True, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        if not enabled:
            self.disable()
        self._rerouted: dict[logging.StreamHandler, Any] = {}
        self._loss: float | None = None

    def _route_console_logs_through_rich(self) -> None:
        # In a terminal, rich's live display replaces sys.stdout/stderr with proxies that print above the
        # bar; logging handlers keep the real streams, so the line per epoch would garble the display.
        for handler in logging.getLogger().handlers:
            if type(handler) is not logging.StreamHandler or handler in self._rerouted:
                continue
            for proxy in (sys.stdout, sys.stderr):
                if isinstance(proxy, FileProxy) and handler.stream is proxy.rich_proxied_file:
                    self._rerouted[handler] = handler.setStream(proxy)

    def _restore_console_logs(self) -> None:
        for handler, stream in self._rerouted.items():
            handler.setStream(stream)
        self._rerouted.clear()

    def on_sanity_check_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        super().on_sanity_check_start(trainer, pl_module)
        self._route_console_logs_through_rich()

    def on_train_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        super().on_train_start(trainer, pl_module)
        self._route_console_logs_through_rich()

    def on_test_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        super().on_test_start(trainer, pl_module)
        self._route_console_logs_through_rich()

    def teardown(self, trainer: L.Trainer, pl_module: L.LightningModule, stage: str) -> None:
        super().teardown(trainer, pl_module, stage)
        self._restore_console_logs()

    def on_exception(
        self, trainer: L.Trainer, pl_module: L.LightningModule, exception: BaseException
    ) -> None:
        super().on_exception(trainer, pl_module, exception)
        self._restore_console_logs()

    def on_train_batch_end(
        self, trainer: L.Trainer, pl_module: L.LightningModule, outputs: Any, batch: Any, batch_idx: int
    ) -> None:
        if self.is_enabled and self.logging_step and isinstance(outputs, dict) and "loss" in outputs:
            self._loss = float(outputs["loss"])
        super().on_train_batch_end(trainer, pl_module, outputs, batch, batch_idx)

    def get_metrics(self, trainer: L.Trainer, pl_module: L.LightningModule) -> dict[str, Any]:
        items = super().get_metrics(trainer, pl_module)
        items.pop("v_num", None)  # the logger's version: always "" here
        if self._loss is not None:
            items["loss"] = self._loss
        rate = items.pop("train/images_per_sec", None)
        if rate is not None:
            items["img/s"] = f"{float(rate):.0f}"
        return items
