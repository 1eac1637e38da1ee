"""What one benchmark run measures: the sizes (GPU, smoke run, CPU at real size) and the recipes it trains."""

from __future__ import annotations

import contextlib
from dataclasses import dataclass, field
from typing import Any

import torch

from seres.bench.recipe import Recipe

FULL_MODEL: dict[str, Any] = {"layer4": True}  # the paper's final model, 4,398,890 parameters
TINY_MODEL: dict[str, Any] = {"widths": [8, 16, 32, 64], "blocks": [1, 1, 1, 1], "stem_width": 8}
MODELS: dict[str, dict[str, Any]] = {"paper": FULL_MODEL, "tiny": TINY_MODEL}  # --model
SIZES: dict[str, dict[str, Any]] = {
    "full": {
        "model": FULL_MODEL,
        "batch_size": 1024,
        "steps": 200,
        "warmup": 20,
        "images": 50_000,
        "data_epochs": 10,
        "seed_steps": 100,
        "seed_warmup": 10,
    },
    "quick": {
        "model": TINY_MODEL,
        "batch_size": 64,
        "steps": 6,
        "warmup": 2,
        "images": 2_048,
        "data_epochs": 2,
        "seed_steps": 3,
        "seed_warmup": 1,
    },
    # --cpu-full: the batch is the project recipe's data.batch_size (cli.py); (3) and (4) do not run, the
    # data paths time one epoch each over these images (cpu_data.py).
    "cpu_full": {
        "model": FULL_MODEL,
        "steps": 20,
        "warmup": 3,
        "images": 10_240,
        "data_epochs": 1,
        "seed_steps": 0,
        "seed_warmup": 0,
    },
}


@dataclass
class Settings:
    """One benchmark run. `steps` are timed, `warmup` steps (compilation included) run before them."""

    device: str
    quick: bool
    model: dict[str, Any]
    batch_size: int
    steps: int
    warmup: int
    compile: bool
    precision: str  # "bf16" (autocast / Lightning's bf16-mixed) or "fp32"
    channels_last: bool
    images: int  # random images, when data_root is None
    data_root: str | None
    data_epochs: int  # timed epochs of the data pipeline alone
    seed_workers: int
    seed_steps: int
    seed_warmup: int
    eager_too: bool  # also time (1) and (2) uncompiled when compile is on
    budget_s: float  # the uncompiled runs are skipped when they would end after this
    project: Recipe  # optimizer and clipping of (1) and (2)
    seed: Recipe  # augmentation and normalisation of every section; optimizer, clipping and batch of (3)
    # --cpu-full: the CPU grid of settings (cpu_run.py) instead of the four sections; `compile` then says
    # whether the grid has its compiled rows, and `pinned` holds the Lightning comparison's settings that
    # flags gave (precision, channels_last, compile), the others coming from the fastest row.
    cpu_full: bool = False
    pinned: dict[str, Any] = field(default_factory=dict)

    @property
    def torch_device(self) -> torch.device:
        return torch.device(self.device)

    @property
    def is_full_size(self) -> bool:
        full = SIZES["full"]
        same_work = self.model == full["model"] and self.batch_size == full["batch_size"]
        return same_work and self.precision == "bf16"

    def autocast(self) -> contextlib.AbstractContextManager:
        """bf16 autocast for the forward pass, or nothing for fp32."""
        if self.precision == "bf16":
            return torch.autocast(device_type=self.torch_device.type, dtype=torch.bfloat16)
        return contextlib.nullcontext()
