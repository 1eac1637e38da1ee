"""NetworkSummary: Lightning's rich model summary, with the network's real FLOPs."""

from typing import Any

import lightning as L
from lightning.pytorch.callbacks import RichModelSummary

from seres.callbacks.flop_count import train_step_flops


class NetworkSummary(RichModelSummary):
    """The summary Lightning prints at the start of a fit, whose "Total FLOPs" is a forward pass of one image
    (seres.callbacks.flop_count). Lightning's own count needs an example input and reads 0 without one,
    or for a compiled network."""

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self._forward_flops = 0

    def on_fit_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._forward_flops = int(train_step_flops(pl_module.net)["forward_per_image"])
        super().on_fit_start(trainer, pl_module)

    def summarize(self, *args: Any, **kwargs: Any) -> None:  # type: ignore[override]
        kwargs["total_flops"] = self._forward_flops
        super().summarize(*args, **kwargs)
