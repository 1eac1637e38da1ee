"""The run: every section in turn on one device, the numbers derived from them, and the targets."""

from __future__ import annotations

import logging
import os
import platform
import time
from dataclasses import asdict
from datetime import datetime
from pathlib import Path
from typing import Any

import lightning as L
import torch
from torch import nn

from seres.bench.flops import matmul_peak, measure_flops
from seres.bench.images import data_pipeline, device_loader, load_images
from seres.bench.lightning_loop import lightning_loop
from seres.bench.plain_loop import plain_loop
from seres.bench.report import SECTION_TITLES, describe_augmentation, header
from seres.bench.seed_loop import seed_loop
from seres.bench.settings import Settings
from seres.data import DeviceTrainLoader
from seres.data.augmentation import POLICIES
from seres.model import SEResNet, count_parameters
from seres.records.atomic import write_json

# The targets for the full-size run on an H100/H200 (layer4, batch 1024, bf16).
TARGET_LIGHTNING_OVER_PLAIN = 0.9
TARGET_IMAGES_PER_S = 50_000
TARGET_DATA_OVER_LIGHTNING = 5.0

TRAINING_SECTIONS = ("lightning", "plain", "seed", "lightning_eager", "plain_eager")
RATIOS = {  # name: (numerator section, denominator section), in images/s
    "lightning_over_plain": ("lightning", "plain"),
    "data_over_lightning": ("data", "lightning"),
    "lightning_over_seed": ("lightning", "seed"),
}
EAGER_RATE_GUESS = 0.5  # uncompiled runs are budgeted at this fraction of the compiled plain rate ...
EAGER_START_S = 15.0  # ... plus this start-up allowance

log = logging.getLogger("seres.bench")


def device_name(device: torch.device) -> str:
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    return f"CPU {platform.machine()} ({os.cpu_count()} cores visible)"


def make_network(settings: Settings) -> nn.Module:
    """The network as seres.run.training.build_network makes it: SEResNet(**model.*), NHWC when
    model.channels_last."""
    net = SEResNet(**settings.model).to(settings.torch_device)
    if settings.channels_last:
        net = net.to(memory_format=torch.channels_last)
    return net


def describe(settings: Settings, data_note: str) -> dict[str, Any]:
    """The results before any section has run: what runs, where, the FLOPs and the device's peak."""
    return {
        "config": {
            **asdict(settings),
            "date": datetime.now().astimezone().isoformat(timespec="seconds"),
            "device_name": device_name(settings.torch_device),
            "torch": torch.__version__,
            "lightning": L.__version__,
            "params": count_parameters(SEResNet(**settings.model)),
            "data": data_note,
            "augmentation": f"seed: {describe_augmentation(settings.seed.aug)}",
            "seed_batch_size": settings.seed.batch_size,
            "epoch_images": settings.project.epoch_images,
        },
        "flops": measure_flops(settings.model),
        "peak": matmul_peak(settings.torch_device),
        "sections": {},
    }


def add_derived(results: dict[str, Any]) -> None:
    """Epoch time, TFLOP/s and fraction of peak for each section; the ratios; nothing re-measured."""
    flops = results["flops"]["train_step_per_image"]
    peak = results["peak"]["tflops"]
    sections = results["sections"]
    for name, section in sections.items():
        section["epoch_s"] = results["config"]["epoch_images"] / section["images_per_s"]
        if name in TRAINING_SECTIONS:
            section["tflops"] = section["images_per_s"] * flops / 1e12
            section["of_peak"] = section["tflops"] / peak
    results["ratios"] = {
        key: sections[a]["images_per_s"] / sections[b]["images_per_s"]
        for key, (a, b) in RATIOS.items()
        if a in sections and b in sections
    }


def check_targets(results: dict[str, Any], settings: Settings) -> list[dict[str, Any]]:
    """PASS/FAIL against the targets; they are for an H100/H200, so a CPU run checks none."""
    if settings.torch_device.type != "cuda":
        return []
    ratios = results["ratios"]
    targets = [
        (
            f"Lightning loop >= {TARGET_LIGHTNING_OVER_PLAIN:g} x plain loop",
            ratios["lightning_over_plain"],
            TARGET_LIGHTNING_OVER_PLAIN,
        ),
        (
            f"data pipeline >= {TARGET_DATA_OVER_LIGHTNING:g} x Lightning loop",
            ratios["data_over_lightning"],
            TARGET_DATA_OVER_LIGHTNING,
        ),
    ]
    if settings.is_full_size:
        lightning = results["sections"]["lightning"]["images_per_s"]
        name = f"Lightning loop >= {TARGET_IMAGES_PER_S:,} images/s (layer4, batch 1024, bf16)"
        targets.insert(1, (name, lightning, TARGET_IMAGES_PER_S))
    return [{"target": name, "value": v, "minimum": m, "pass": v >= m} for name, v, m in targets]


def eager_budget(results: dict[str, Any], settings: Settings, elapsed_s: float) -> str | None:
    """None when the two uncompiled runs fit in --budget-s, else the reason they are skipped."""
    images_needed = 2 * (settings.warmup + settings.steps) * settings.batch_size
    eager_rate = EAGER_RATE_GUESS * results["sections"]["plain"]["images_per_s"]
    needed_s = images_needed / eager_rate + EAGER_START_S
    if elapsed_s + needed_s <= settings.budget_s:
        return None
    return (
        f"uncompiled runs: {elapsed_s:.0f} s spent, about {needed_s:.0f} s more needed, "
        f"budget {settings.budget_s:.0f} s"
    )


def run(settings: Settings, json_path: Path | None = None) -> dict[str, Any]:
    """Every measurement; returns (and, given `json_path`, writes after each section) the results."""
    wall_start = time.perf_counter()
    device = settings.torch_device
    torch.backends.cudnn.benchmark = settings.project.cudnn_benchmark  # as the Trainer below sets it
    images, labels, data_note = load_images(settings)
    results = describe(settings, data_note)
    log.info(header(results))

    def record(name: str, section: dict[str, Any]) -> None:
        results["sections"][name] = section
        log.info(f"{SECTION_TITLES[name]}: {section['images_per_s']:,.0f} images/s")
        results["wall_s"] = time.perf_counter() - wall_start
        if json_path is not None:
            write_json(results, json_path)

    device_images, device_labels = images.to(device), labels.to(device)

    def loader() -> DeviceTrainLoader:
        return device_loader(device_images, device_labels, settings)

    record("data", data_pipeline(loader(), settings))
    for policy in POLICIES[1:]:  # what each policy costs the pipeline, so that none makes the GPU wait
        policy_loader = device_loader(device_images, device_labels, settings, policy=policy)
        record(f"data_{policy}", data_pipeline(policy_loader, settings))
    net = make_network(settings)
    # One compiled network for (2) and (1): (2) pays the compilation, (1) should find it cached.
    model = torch.compile(net) if settings.compile else net
    record("plain", plain_loop(model, loader(), settings))
    record("lightning", lightning_loop(model, loader(), settings, sync_probe=True))
    record("seed", seed_loop(images, labels, settings))
    if settings.compile and settings.eager_too:
        skipped = eager_budget(results, settings, time.perf_counter() - wall_start)
        if skipped is None:
            record("plain_eager", plain_loop(net, loader(), settings))
            record("lightning_eager", lightning_loop(net, loader(), settings, sync_probe=False))
        else:
            results["skipped"] = skipped
    add_derived(results)
    results["targets"] = check_targets(results, settings)
    results["wall_s"] = time.perf_counter() - wall_start
    if json_path is not None:
        write_json(results, json_path)
    return results
