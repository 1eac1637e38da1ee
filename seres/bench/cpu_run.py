"""--cpu-full: real sizes on a CPU, in one run.

(A) the plain training step under each setting (cpu_grid.py); (B) the Lightning loop next to the plain loop
at the fastest setting; (C) the data paths alone (cpu_data.py).
"""

from __future__ import annotations

import dataclasses
import time
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from seres.bench.cpu_data import time_data_paths
from seres.bench.cpu_grid import (
    BASELINE,
    Variant,
    add_row_numbers,
    build_model,
    fastest,
    time_grid,
    variant_named,
)
from seres.bench.cpu_report import cpu_header
from seres.bench.flops import matmul_peak
from seres.bench.images import device_loader, load_images
from seres.bench.lightning_loop import lightning_loop
from seres.bench.plain_loop import plain_loop
from seres.bench.report import describe_augmentation
from seres.bench.run import describe, log
from seres.bench.settings import Settings
from seres.records.atomic import write_json
from seres.run.cpu_features import has_native_bf16

# On a CPU the step itself is slow, so the loop around it should cost next to nothing (GPU: 0.9, run.py).
TARGET_CPU_LIGHTNING_OVER_PLAIN = 0.95


def lightning_variant(fastest_name: str, pinned: dict[str, Any]) -> Variant:
    """The fastest row's setting, with what the flags pinned (precision, channels_last, compile) in place."""
    return dataclasses.replace(variant_named(fastest_name), **pinned)


def flag(name: str, value: Any) -> str:
    """A pinning flag as it is typed: --precision bf16, --channels-last, --no-compile."""
    if name == "precision":
        return f"--precision {value}"
    return f"--{'' if value else 'no-'}{name.replace('_', '-')}"


def chosen_by(pinned: dict[str, Any]) -> str:
    """How (B)'s setting was chosen: the fastest row, then the flags that pinned a part of it."""
    flags = " ".join(flag(name, value) for name, value in pinned.items())
    return "the fastest row of (A)" + (f", then {flags}" if flags else "")


def compare_loops(
    images: Tensor, labels: Tensor, settings: Settings, variant: Variant, model: nn.Module | None
) -> dict[str, Any]:
    """(B): the plain loop, then the Lightning loop, back to back on one network at one setting.

    The plain loop runs again rather than reusing its row of (A), so both are timed under the same load.
    `model` is (A)'s network for this setting, if (A) ran it: a compiled one is then compiled already.
    """
    loop_settings = variant.apply(settings)
    # `is None`, not truthiness: a compiled module refuses len(), which `or` would ask it for.
    model = model if model is not None else build_model(loop_settings)
    plain = plain_loop(model, device_loader(images, labels, loop_settings, settings.project), loop_settings)
    loader = device_loader(images, labels, loop_settings, settings.project)
    lightning = lightning_loop(model, loader, loop_settings, sync_probe=False)
    return {
        "setting": variant.name,
        **dataclasses.asdict(variant),
        "plain": plain,
        "lightning": lightning,
        "lightning_over_plain": lightning["images_per_s"] / plain["images_per_s"],
    }


def cpu_targets(lightning_over_plain: float) -> list[dict[str, Any]]:
    """PASS/FAIL of the Lightning loop against the plain loop at the same setting, as run.check_targets."""
    ratio, minimum = lightning_over_plain, TARGET_CPU_LIGHTNING_OVER_PLAIN
    target = f"Lightning loop >= {minimum:g} x plain loop (CPU, same setting)"
    return [{"target": target, "value": ratio, "minimum": minimum, "pass": ratio >= minimum}]


def add_data_numbers(results: dict[str, Any]) -> None:
    """Each data path's images/s over the fastest training row's, and the fastest data path."""
    paths, training = results["data_paths"], results["rows"][results["fastest"]]["images_per_s"]
    for path in paths.values():
        path["over_training"] = path["images_per_s"] / training
    results["fastest_data_path"] = max(paths, key=lambda key: paths[key]["images_per_s"])


def describe_cpu(settings: Settings, data_note: str) -> dict[str, Any]:
    """run.describe's results, with a peak per dtype, the native-bf16 flag and the project's augmentation."""
    results = describe(settings, data_note)
    cpu = settings.torch_device
    results["config"]["augmentation"] = f"project: {describe_augmentation(settings.project.aug)}"
    results["peaks"] = {"fp32": results.pop("peak"), "bf16": matmul_peak(cpu, torch.bfloat16)}
    del results["sections"]  # the four sections of run.py do not run
    results.update(
        mode="cpu_full", native_bf16=has_native_bf16(), baseline=BASELINE.name, rows={}, data_paths={}
    )
    return results


def run_cpu_full(settings: Settings, json_path: Path | None = None) -> dict[str, Any]:
    """(A), (B) and (C); returns (and, given `json_path`, rewrites after every row) the results."""
    wall_start = time.perf_counter()
    images, labels, data_note = load_images(settings)
    results = describe_cpu(settings, data_note)
    log.info(cpu_header(results))

    def save() -> None:
        results["wall_s"] = time.perf_counter() - wall_start
        if json_path is not None:
            write_json(results, json_path)

    def record(group: str, key: str, result: dict[str, Any]) -> None:
        results[group][key] = result
        label = {"rows": "(A)", "data_paths": "(C)"}[group]
        log.info(f"{label} {result.get('path', key)}: {result['images_per_s']:,.1f} images/s")
        save()

    models = time_grid(images, labels, settings, lambda name, row: record("rows", name, row))
    add_row_numbers(
        results["rows"], results["flops"]["train_step_per_image"], results["peaks"], results["native_bf16"]
    )
    results["fastest"] = fastest(results["rows"])
    variant = lightning_variant(results["fastest"], settings.pinned)
    results["lightning"] = compare_loops(images, labels, settings, variant, models.get(variant.name))
    results["lightning"]["chosen_by"] = chosen_by(settings.pinned)
    results["targets"] = cpu_targets(results["lightning"]["lightning_over_plain"])
    log.info(f"(B) at {variant.name}: (1)/(2) {results['lightning']['lightning_over_plain']:.2f}")
    save()
    time_data_paths(images, labels, settings, lambda key, path: record("data_paths", key, path))
    add_data_numbers(results)
    save()
    return results
