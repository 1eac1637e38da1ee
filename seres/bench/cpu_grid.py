"""--cpu-full (A): the plain training step under each precision, memory layout and compile setting (CPU)."""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from typing import Any

import torch
from torch import Tensor, nn

from seres.bench.images import device_loader
from seres.bench.plain_loop import plain_loop
from seres.bench.run import make_network
from seres.bench.settings import Settings


@dataclasses.dataclass(frozen=True)
class Variant:
    """One way to run the same training step: its precision, memory layout and whether it is compiled."""

    precision: str  # "fp32" or "bf16" (autocast)
    channels_last: bool
    compile: bool

    @property
    def name(self) -> str:
        layout = "channels_last" if self.channels_last else "NCHW"
        return f"{self.precision} {layout} {'compiled' if self.compile else 'eager'}"

    def apply(self, settings: Settings) -> Settings:
        """`settings` running this variant."""
        return dataclasses.replace(
            settings, precision=self.precision, channels_last=self.channels_last, compile=self.compile
        )


BASELINE = Variant("fp32", channels_last=False, compile=False)  # every row's ratio is to this one
GRID: tuple[Variant, ...] = (
    BASELINE,
    Variant("fp32", channels_last=True, compile=False),
    Variant("bf16", channels_last=False, compile=False),
    Variant("bf16", channels_last=True, compile=False),
    Variant("bf16", channels_last=True, compile=True),
    Variant("fp32", channels_last=True, compile=True),
)

RowCallback = Callable[[str, dict[str, Any]], None]


def grid_variants(with_compiled: bool) -> list[Variant]:
    """The rows of the table, the compiled ones only `with_compiled` (--no-compile drops them)."""
    return [variant for variant in GRID if with_compiled or not variant.compile]


def build_model(settings: Settings) -> nn.Module:
    """A fresh network in the settings' layout, compiled if they say so (compiling waits for step one)."""
    net = make_network(settings)
    return torch.compile(net) if settings.compile else net


def time_grid(
    images: Tensor, labels: Tensor, settings: Settings, on_row: RowCallback
) -> dict[str, nn.Module]:
    """The plain loop of each variant on its own fresh network; `on_row(name, row)` as each one ends.

    Every variant gets its own network, so a compiled one is compiled for its own precision and layout
    only. The networks are returned so that a later run at the same setting finds its compiled code.
    """
    models: dict[str, nn.Module] = {}
    for variant in grid_variants(settings.compile):
        row_settings = variant.apply(settings)
        model = build_model(row_settings)
        loader = device_loader(images, labels, row_settings, settings.project)
        on_row(variant.name, {**dataclasses.asdict(variant), **plain_loop(model, loader, row_settings)})
        models[variant.name] = model
    return models


def add_row_numbers(
    rows: dict[str, dict[str, Any]],
    flops_per_image: float,
    peaks: dict[str, dict[str, Any]],
    native_bf16: bool,
) -> None:
    """Each row's ratio to fp32 NCHW eager, TFLOP/s, and share of the matrix-product peak in its own dtype."""
    baseline = rows[BASELINE.name]["images_per_s"]
    for row in rows.values():
        row["ratio"] = row["images_per_s"] / baseline
        row["tflops"] = row["images_per_s"] * flops_per_image / 1e12
        row["peak_tflops"] = peaks[row["precision"]]["tflops"]
        row["of_peak"] = row["tflops"] / row["peak_tflops"]
        row["native_bf16"] = native_bf16 if row["precision"] == "bf16" else None


def fastest(rows: dict[str, dict[str, Any]]) -> str:
    """The name of the row with the most images/s."""
    return max(rows, key=lambda name: rows[name]["images_per_s"])


def variant_named(name: str) -> Variant:
    (variant,) = [v for v in GRID if v.name == name]
    return variant
