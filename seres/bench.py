"""Training throughput, measured four ways in one process on one device and one network.

1. the project's Lightning loop: a real Trainer with ClassifierModule and the GPU pipeline (GPUTrainLoader),
   gradient clipping as conf/trainer/default.yaml sets it, no validation, checkpoint, logger or progress bar;
2. a plain PyTorch loop over the same network, precision, memory layout, compile setting and loader: the
   reference that (1) is held to;
3. the seed's pipeline: a DataLoader over PIL images with torchvision's five augmentations, fp32, batch 128;
4. the data pipeline alone: GPUTrainLoader epochs with the seed augmentations, nothing trained.

    python -m seres.bench                        # a GPU: layer4, batch 1024, bf16, channels_last, compiled
    python -m seres.bench --quick --device cpu   # smoke sizes (tiny network, a few steps), as CI runs it

Images are random uint8 of CIFAR shape unless --data-root points at CIFAR-10, so no dataset is needed. Only
steady-state steps are timed; set-up, compilation and warm-up are reported apart. docs/benchmarks.md says
what every number means.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import logging
import os
import platform
import tempfile
import time
import traceback
import warnings
from collections import Counter
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import asdict, dataclass
from datetime import datetime
from functools import partial
from pathlib import Path
from typing import Any

import lightning as L
import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image
from torch import Tensor, nn
from torch.utils.data import DataLoader, Dataset
from torch.utils.flop_counter import FlopCounterMode
from torchvision import transforms

from seres.data import Augmentation, load_cifar10, stratified_split
from seres.gpu_pipeline import GPUTrainLoader
from seres.model import SEResNet, count_parameters
from seres.module import ClassifierModule, cosine_schedule

# The seed augmentations (conf/data/aug/seed.yaml) and the seed paper's normalisation (experiment=seed_paper).
SEED_AUG = Augmentation(
    crop_padding=4, flip=True, rotation=15.0, translate=0.1, brightness=0.2, contrast=0.2, saturation=0.2
)
SEED_MEAN = (0.4914, 0.4822, 0.4465)
SEED_STD = (0.2023, 0.1994, 0.2010)
GRADIENT_CLIP = 2.0  # conf/trainer/default.yaml: gradient_clip_val, by norm
PROJECT_SGD = {"lr": 0.1, "momentum": 0.9, "weight_decay": 5e-4, "nesterov": True}  # conf/optimizer/sgd.yaml
SEED_SGD = {"lr": 0.008, "momentum": 0.9, "weight_decay": 1e-4}  # conf/experiment/seed_paper.yaml
EPOCH_IMAGES = 45_000  # one training epoch: 50,000 images less the 5,000 held out for validation
WINDOWS = 5  # the steady state is cut into this many windows to show its spread
SYNC_WARNING = "synchronizing CUDA operation"  # what torch.cuda.set_sync_debug_mode("warn") says

FULL_MODEL: dict[str, Any] = {"layer4": True}  # the paper's final model, 4,398,890 parameters
TINY_MODEL: dict[str, Any] = {"widths": [8, 16, 32, 64], "blocks": [1, 1, 1, 1], "stem_width": 8}
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
}
SEED_BATCH_SIZE = 128
TARGET_LIGHTNING_OVER_PLAIN = 0.9
TARGET_IMAGES_PER_S = 50_000  # layer4, batch 1024, bf16, on an H100/H200
TARGET_DATA_OVER_LIGHTNING = 5.0

log = logging.getLogger("seres.bench")


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

    @property
    def torch_device(self) -> torch.device:
        return torch.device(self.device)

    @property
    def is_full_size(self) -> bool:
        return self.model == FULL_MODEL and self.batch_size == 1024 and self.precision == "bf16"


# ---------------------------------------------------------------------------------------------------------
# Timing
# ---------------------------------------------------------------------------------------------------------


def synchronize(device: torch.device) -> None:
    """Wait for the device, also while a host-sync check is on (this wait is the benchmark's own)."""
    if device.type == "cuda":
        mode = torch.cuda.get_sync_debug_mode()
        torch.cuda.set_sync_debug_mode(0)
        torch.cuda.synchronize(device)
        torch.cuda.set_sync_debug_mode(mode)


@contextlib.contextmanager
def sync_debug_mode(mode: str) -> Iterator[None]:
    """torch.cuda.set_sync_debug_mode for the block: "error" raises, "warn" warns at every host sync."""
    previous = torch.cuda.get_sync_debug_mode()
    torch.cuda.set_sync_debug_mode(mode)
    try:
        yield
    finally:
        torch.cuda.set_sync_debug_mode(previous)


class Stopwatch:
    """Wall time of a steady-state region; the host waits for the device only at start() and stop().

    tick() after every step; every `steps // WINDOWS` steps it marks a window boundary without waiting (a CUDA
    event on GPUs, the host clock on CPUs), so the spread across windows comes for free.
    """

    def __init__(self, device: torch.device, steps: int) -> None:
        self.device = device
        self.per_window = max(1, steps // WINDOWS)
        self.steps = 0
        self.seconds = 0.0
        self._marks: list[tuple[Any, int]] = []
        self.started_at = 0.0

    def _mark(self) -> None:
        if self.device.type == "cuda":
            event = torch.cuda.Event(enable_timing=True)
            event.record()
            self._marks.append((event, self.steps))
        else:
            self._marks.append((time.perf_counter(), self.steps))

    def start(self) -> None:
        synchronize(self.device)
        self.started_at = time.perf_counter()
        self._mark()

    def tick(self) -> None:
        self.steps += 1
        if self.steps % self.per_window == 0:
            self._mark()

    def stop(self) -> None:
        if self._marks[-1][1] != self.steps:
            self._mark()
        synchronize(self.device)
        self.seconds = time.perf_counter() - self.started_at

    def result(self, batch_size: int) -> dict[str, Any]:
        """images_per_s and step_ms over the whole region, and images/s of each window."""
        window_rates = []
        for (begin, first), (end, last) in zip(self._marks[:-1], self._marks[1:], strict=True):
            seconds = begin.elapsed_time(end) / 1000 if self.device.type == "cuda" else end - begin
            window_rates.append((last - first) * batch_size / seconds)
        return {
            "timed_steps": self.steps,
            "timed_s": self.seconds,
            "images_per_s": self.steps * batch_size / self.seconds,
            "step_ms": 1000 * self.seconds / self.steps,
            "window_images_per_s": window_rates,
        }


def forever(loader: Iterable) -> Iterator:
    """Batches from `loader`, epoch after epoch."""
    while True:
        yield from loader


def describe_sync(error: BaseException) -> str:
    """The first line of a sync-check error and the innermost Python line outside this file that caused it."""
    frames = [f for f in traceback.extract_tb(error.__traceback__) if not f.filename.endswith("bench.py")]
    where = f" at {_short(frames[-1].filename)}:{frames[-1].lineno}" if frames else ""
    return f"{str(error).splitlines()[0]}{where}"


def _short(path: str) -> str:
    """The last three components of a path: enough to find a line in torch, lightning or torchmetrics."""
    return "/".join(Path(path).parts[-3:])


def time_steps(
    step: Callable[[Tensor, Tensor], None],
    loader: Iterable,
    device: torch.device,
    batch_size: int,
    warmup: int,
    steps: int,
    check_syncs: bool = False,
) -> dict[str, Any]:
    """Run `warmup` steps, then time `steps` more over `loader`'s batches; `step(x, y)` enqueues one step.

    first_step_s holds compilation, if any; warmup_s all warm-up steps, the first included. With
    `check_syncs` on CUDA the timed steps run under set_sync_debug_mode("error"); a host sync there is
    reported and the steps are timed again without the check.
    """
    batches = forever(loader)
    try:
        started = time.perf_counter()
        step(*next(batches))
        synchronize(device)
        first = time.perf_counter() - started
        for _ in range(warmup - 1):
            step(*next(batches))
        synchronize(device)
        result: dict[str, Any] = {"first_step_s": first, "warmup_s": time.perf_counter() - started}

        def timed() -> Stopwatch:
            clock = Stopwatch(device, steps)
            clock.start()
            for _ in range(steps):
                step(*next(batches))
                clock.tick()
            clock.stop()
            return clock

        if check_syncs and device.type == "cuda":
            try:
                with sync_debug_mode("error"):
                    clock = timed()
                result["host_syncs"] = "no host syncs: verified"
            except RuntimeError as error:
                result["host_syncs"] = f"host sync found: {describe_sync(error)}"
                # An error raised inside the batch generator has ended it: time again on a fresh one.
                batches.close()
                batches = forever(loader)
                clock = timed()
        else:
            result["host_syncs"] = "not checked" + (" (CPU)" if device.type != "cuda" else "")
            clock = timed()
    finally:
        batches.close()  # a DataLoader's worker processes stop with it
    return {**result, **clock.result(batch_size)}


def autocast(settings: Settings) -> contextlib.AbstractContextManager:
    if settings.precision == "bf16":
        return torch.autocast(device_type=settings.torch_device.type, dtype=torch.bfloat16)
    return contextlib.nullcontext()


# ---------------------------------------------------------------------------------------------------------
# What is measured
# ---------------------------------------------------------------------------------------------------------


def measure_flops(model: dict[str, Any]) -> dict[str, Any]:
    """FLOPs per image of a forward pass and of a training step (forward + backward).

    Counted by torch.utils.flop_counter.FlopCounterMode on a batch of 2 on the CPU in fp32: convolutions and
    matrix products only (BatchNorm, activations and pooling are not counted); the count does not depend on
    the device or the precision.
    """
    net = SEResNet(**model)
    x, y = torch.randn(2, 3, 32, 32), torch.tensor([0, 1])
    with FlopCounterMode(display=False) as forward:
        loss = F.cross_entropy(net(x), y)
    with FlopCounterMode(display=False) as backward:
        loss.backward()
    forward_flops, backward_flops = forward.get_total_flops() / 2, backward.get_total_flops() / 2
    return {
        "forward_per_image": forward_flops,
        "train_step_per_image": forward_flops + backward_flops,
        "method": "FlopCounterMode, batch 2, fp32 on the CPU: convolutions and matrix products",
    }


def matmul_peak(device: torch.device) -> dict[str, Any]:
    """The measured matrix-product rate that achieved TFLOP/s are compared with.

    GPU: an 8192-cube bf16 product; CPU: a 1024-cube float32 one (smaller, to stay quick).
    """
    n, dtype, repeats = (8192, torch.bfloat16, 50) if device.type == "cuda" else (1024, torch.float32, 10)
    a = torch.randn(n, n, device=device).to(dtype)
    b = torch.randn(n, n, device=device).to(dtype)
    out = torch.empty_like(a)
    for _ in range(3):
        torch.mm(a, b, out=out)
    synchronize(device)
    started = time.perf_counter()
    for _ in range(repeats):
        torch.mm(a, b, out=out)
    synchronize(device)
    seconds = time.perf_counter() - started
    return {
        "tflops": 2 * n**3 * repeats / seconds / 1e12,
        "matmul": f"{n}x{n}x{n} {str(dtype).removeprefix('torch.')}",
    }


def load_images(settings: Settings) -> tuple[Tensor, Tensor, str]:
    """(N, 3, 32, 32) uint8 images and (N,) int64 labels on the CPU, and a line saying what they are."""
    if settings.data_root is not None:
        images, labels = load_cifar10(settings.data_root)["train"]
        train_idx, _ = stratified_split(labels, 5000, seed=0)
        note = f"CIFAR-10 from {settings.data_root}: the {len(train_idx):,} training images (5,000 held out)"
        return images[train_idx], labels[train_idx], note
    generator = torch.Generator().manual_seed(0)
    n = settings.images
    images = torch.randint(0, 256, (n, 3, 32, 32), dtype=torch.uint8, generator=generator)
    labels = torch.randint(0, 10, (n,), generator=generator)
    return images, labels, f"random uint8 images ({n:,} x 3 x 32 x 32), no dataset needed"


def gpu_loader(images: Tensor, labels: Tensor, settings: Settings) -> GPUTrainLoader:
    return GPUTrainLoader(
        images,
        labels,
        batch_size=settings.batch_size,
        aug=SEED_AUG,
        mean=SEED_MEAN,
        std=SEED_STD,
        device=settings.torch_device,
        seed=0,
        channels_last=settings.channels_last,
    )


def make_network(settings: Settings) -> nn.Module:
    """The network as train.build_network makes it: SEResNet(**model.*), NHWC when model.channels_last."""
    net = SEResNet(**settings.model).to(settings.torch_device)
    if settings.channels_last:
        net = net.to(memory_format=torch.channels_last)
    return net


def data_pipeline(loader: GPUTrainLoader, settings: Settings) -> dict[str, Any]:
    """(4): one warm-up epoch, then `data_epochs` timed epochs; each batch is made and dropped."""
    epoch = len(loader)
    return time_steps(
        lambda x, y: None,
        loader,
        settings.torch_device,
        settings.batch_size,
        warmup=epoch,
        steps=settings.data_epochs * epoch,
        check_syncs=True,
    )


def plain_loop(net: nn.Module, loader: GPUTrainLoader, settings: Settings) -> dict[str, Any]:
    """(2): what the Lightning loop does, in plain PyTorch: the same optimizer, schedule and clipping."""
    device = settings.torch_device
    net.to(device)
    optimizer = torch.optim.SGD(net.parameters(), **PROJECT_SGD)
    scheduler = cosine_schedule(optimizer, steps_per_epoch=settings.warmup + settings.steps, max_epochs=1)
    criterion = nn.CrossEntropyLoss()
    loss_sum = torch.zeros((), device=device)
    correct = torch.zeros((), dtype=torch.int64, device=device)

    def step(x: Tensor, y: Tensor) -> None:
        with autocast(settings):
            logits = net(x)
            loss = criterion(logits, y)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        nn.utils.clip_grad_norm_(net.parameters(), GRADIENT_CLIP)
        optimizer.step()
        scheduler.step()
        # Statistics stay on the device, like the module's metrics: reading them would stall the host.
        loss_sum.add_(loss.detach())
        correct.add_((logits.argmax(dim=1) == y).sum())

    net.train()
    result = time_steps(
        step,
        loader,
        device,
        settings.batch_size,
        settings.warmup,
        settings.steps,
        check_syncs=True,
    )
    result["mean_loss"] = loss_sum.item() / (settings.warmup + settings.steps)
    return result


class SteadyStateTimer(L.Callback):
    """Times Lightning's steps `warmup` .. `warmup + steps` (optimizer steps, counted from 0).

    The host waits for the device only around the first step and at the two ends of the timed region. With
    `probe_steps`, the steps after the timed ones run under set_sync_debug_mode("warn") and every host sync is
    counted by where it happened.
    """

    def __init__(self, device: torch.device, warmup: int, steps: int, probe_steps: int = 0) -> None:
        self.device = device
        self.warmup, self.steps, self.probe_steps = warmup, steps, probe_steps
        self.clock = Stopwatch(device, steps)
        self.first_start = self.first_end = self.warm_end = 0.0
        self.syncs: Counter[str] = Counter()
        self._catcher: warnings.catch_warnings | None = None
        self._records: list[warnings.WarningMessage] = []

    def on_train_batch_start(
        self, trainer: L.Trainer, pl_module: L.LightningModule, batch: Any, batch_idx: int
    ):
        step = trainer.global_step
        if step == 0:
            synchronize(self.device)
            self.first_start = time.perf_counter()
        elif step == self.warmup:
            self.clock.start()
            self.warm_end = self.clock.started_at
        elif step == self.warmup + self.steps and self.probe_steps:
            self._catcher = warnings.catch_warnings(record=True)
            self._records = self._catcher.__enter__()
            warnings.simplefilter("always")
            torch.cuda.set_sync_debug_mode("warn")

    def on_train_batch_end(
        self, trainer: L.Trainer, pl_module: L.LightningModule, outputs: Any, batch: Any, batch_idx: int
    ):
        step = trainer.global_step  # optimizer steps done, this one included
        if step == 1:
            synchronize(self.device)
            self.first_end = time.perf_counter()
        if self.warmup < step <= self.warmup + self.steps:
            self.clock.tick()
        if step == self.warmup + self.steps:
            self.clock.stop()
        if step == self.warmup + self.steps + self.probe_steps:
            self._end_probe()

    def on_train_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._end_probe()

    def _end_probe(self) -> None:
        if self._catcher is None:
            return
        torch.cuda.set_sync_debug_mode(0)
        self._catcher.__exit__(None, None, None)
        self._catcher = None
        for record in self._records:
            if SYNC_WARNING in str(record.message):
                self.syncs[f"{_short(record.filename)}:{record.lineno}"] += 1


def lightning_loop(
    net: nn.Module, loader: GPUTrainLoader, settings: Settings, sync_probe: bool
) -> dict[str, Any]:
    """(1): trainer.fit on ClassifierModule(net) with the GPU loader, for warmup + steps (+ probe) steps."""
    device = settings.torch_device
    probe_steps = len(loader) if sync_probe and device.type == "cuda" else 0
    timer = SteadyStateTimer(device, settings.warmup, settings.steps, probe_steps)
    module = ClassifierModule(
        net, optimizer=partial(torch.optim.SGD, **PROJECT_SGD), scheduler=cosine_schedule
    )
    with tempfile.TemporaryDirectory() as root:
        trainer = L.Trainer(
            accelerator="gpu" if device.type == "cuda" else "cpu",
            devices=[device.index or 0] if device.type == "cuda" else 1,
            precision="bf16-mixed" if settings.precision == "bf16" else "32-true",
            max_steps=settings.warmup + settings.steps + probe_steps,
            max_epochs=-1,
            gradient_clip_val=GRADIENT_CLIP,
            gradient_clip_algorithm="norm",
            benchmark=True,
            logger=False,
            enable_checkpointing=False,
            enable_progress_bar=False,
            enable_model_summary=False,
            num_sanity_val_steps=0,
            limit_val_batches=0,
            callbacks=[timer],
            default_root_dir=root,
        )
        started = time.perf_counter()
        trainer.fit(module, train_dataloaders=loader)
        fit_s = time.perf_counter() - started
    result: dict[str, Any] = {
        "setup_s": timer.first_start - started,
        "first_step_s": timer.first_end - timer.first_start,
        "warmup_s": timer.warm_end - timer.first_start,
        "fit_s": fit_s,
        **timer.clock.result(settings.batch_size),
    }
    if probe_steps:
        total = sum(timer.syncs.values())
        result["host_syncs"] = f"{total / probe_steps:g} per step ({total} in {probe_steps} steps, one epoch)"
        result["host_sync_sites"] = dict(timer.syncs.most_common())
    else:
        result["host_syncs"] = "not checked" + (" (CPU)" if device.type != "cuda" else "")
    return result


class PILImages(Dataset):
    """(N, 32, 32, 3) uint8 images handed out as PIL images, as torchvision's CIFAR10 dataset does."""

    def __init__(self, images_hwc: np.ndarray, labels: np.ndarray, transform: Callable) -> None:
        self.images, self.labels, self.transform = images_hwc, labels, transform

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, index: int) -> tuple[Tensor, int]:
        return self.transform(Image.fromarray(self.images[index])), int(self.labels[index])


def seed_transform() -> transforms.Compose:
    """The seed's per-image training transform, in torchvision's classic (PIL) API."""
    return transforms.Compose(
        [
            transforms.RandomCrop(32, padding=4),
            transforms.RandomHorizontalFlip(),
            transforms.RandomRotation(15),
            transforms.RandomAffine(0, translate=(0.1, 0.1)),
            transforms.ColorJitter(0.2, 0.2, 0.2),
            transforms.ToTensor(),
            transforms.Normalize(SEED_MEAN, SEED_STD),
        ]
    )


def seed_loop(images: Tensor, labels: Tensor, settings: Settings) -> dict[str, Any]:
    """(3): the same architecture, fresh, as the seed ran it: fp32, NCHW, eager, batch 128, CPU workers."""
    device = settings.torch_device
    net = SEResNet(**settings.model).to(device)
    optimizer = torch.optim.SGD(net.parameters(), **SEED_SGD)
    criterion = nn.CrossEntropyLoss()
    dataset = PILImages(images.permute(0, 2, 3, 1).contiguous().numpy(), labels.numpy(), seed_transform())
    loader = DataLoader(
        dataset,
        batch_size=SEED_BATCH_SIZE,
        shuffle=True,
        drop_last=True,
        num_workers=settings.seed_workers,
        pin_memory=device.type == "cuda",
    )
    report = {"loss": 0.0, "correct": 0}

    def step(x: Tensor, y: Tensor) -> None:
        x, y = x.to(device, non_blocking=True), y.to(device, non_blocking=True)
        logits = net(x)
        loss = criterion(logits, y)
        optimizer.zero_grad()
        loss.backward()
        nn.utils.clip_grad_norm_(net.parameters(), GRADIENT_CLIP)
        optimizer.step()
        # A per-epoch report kept the common way: running loss and accuracy read back every step.
        report["loss"] += loss.item()
        report["correct"] += int((logits.argmax(dim=1) == y).sum().item())

    net.train()
    result = time_steps(step, loader, device, SEED_BATCH_SIZE, settings.seed_warmup, settings.seed_steps)
    result["mean_loss"] = report["loss"] / (settings.seed_warmup + settings.seed_steps)
    result["workers"] = settings.seed_workers
    return result


# ---------------------------------------------------------------------------------------------------------
# The run
# ---------------------------------------------------------------------------------------------------------

SECTION_TITLES = {
    "lightning": "(1) Lightning loop + GPU pipeline",
    "plain": "(2) plain PyTorch loop",
    "seed": "(3) seed pipeline",
    "data": "(4) data pipeline alone",
    "lightning_eager": "(1) Lightning loop, uncompiled",
    "plain_eager": "(2) plain loop, uncompiled",
}
TRAINING_SECTIONS = ("lightning", "plain", "seed", "lightning_eager", "plain_eager")


def device_name(device: torch.device) -> str:
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    return f"CPU {platform.machine()} ({os.cpu_count()} cores visible)"


def add_derived(results: dict[str, Any]) -> None:
    """Epoch time, TFLOP/s and fraction of peak for each section; the ratios; nothing re-measured."""
    flops = results["flops"]["train_step_per_image"]
    peak = results["peak"]["tflops"]
    sections = results["sections"]
    for name, section in sections.items():
        section["epoch_s"] = EPOCH_IMAGES / section["images_per_s"]
        if name in TRAINING_SECTIONS:
            section["tflops"] = section["images_per_s"] * flops / 1e12
            section["of_peak"] = section["tflops"] / peak
    pairs = {
        "lightning_over_plain": ("lightning", "plain"),
        "data_over_lightning": ("data", "lightning"),
        "lightning_over_seed": ("lightning", "seed"),
    }
    results["ratios"] = {
        key: sections[a]["images_per_s"] / sections[b]["images_per_s"]
        for key, (a, b) in pairs.items()
        if a in sections and b in sections
    }


def check_targets(results: dict[str, Any], settings: Settings) -> list[dict[str, Any]]:
    """PASS/FAIL against issue 3's targets; meaningful on an H100/H200 only, so not checked on a CPU."""
    if settings.torch_device.type != "cuda":
        return []
    ratios, lightning = results["ratios"], results["sections"]["lightning"]["images_per_s"]
    targets = [
        ("Lightning loop >= 0.9 x plain loop", ratios["lightning_over_plain"], TARGET_LIGHTNING_OVER_PLAIN),
        ("data pipeline >= 5 x Lightning loop", ratios["data_over_lightning"], TARGET_DATA_OVER_LIGHTNING),
    ]
    if settings.is_full_size:
        targets.insert(1, ("Lightning loop >= 50,000 images/s (layer4, batch 1024, bf16)", lightning, 50_000))
    return [{"target": name, "value": v, "minimum": m, "pass": v >= m} for name, v, m in targets]


def run(settings: Settings, json_path: Path | None = None) -> dict[str, Any]:
    """Every measurement; returns (and, given `json_path`, writes after each section) the results."""
    wall_start = time.perf_counter()
    device = settings.torch_device
    # conf/trainer/default.yaml has benchmark: true; the Lightning Trainer below sets the same.
    torch.backends.cudnn.benchmark = True
    images, labels, data_note = load_images(settings)
    results: dict[str, Any] = {
        "config": {
            **asdict(settings),
            "date": datetime.now().astimezone().isoformat(timespec="seconds"),
            "device_name": device_name(device),
            "torch": torch.__version__,
            "lightning": L.__version__,
            "params": count_parameters(SEResNet(**settings.model)),
            "data": data_note,
            "augmentation": "seed: crop 32 pad 4, flip, rotation 15, translate 0.1, jitter 0.2/0.2/0.2",
            "seed_batch_size": SEED_BATCH_SIZE,
            "epoch_images": EPOCH_IMAGES,
        },
        "flops": measure_flops(settings.model),
        "peak": matmul_peak(device),
        "sections": {},
    }
    log.info(header(results))

    def record(name: str, section: dict[str, Any]) -> None:
        results["sections"][name] = section
        log.info(f"{SECTION_TITLES[name]}: {section['images_per_s']:,.0f} images/s")
        results["wall_s"] = time.perf_counter() - wall_start
        if json_path is not None:
            write_json(results, json_path)

    device_images, device_labels = images.to(device), labels.to(device)

    def loader() -> GPUTrainLoader:
        return gpu_loader(device_images, device_labels, settings)

    record("data", data_pipeline(loader(), settings))
    net = make_network(settings)
    # One compiled network for (2) and (1): (2) pays the compilation, (1) should find it cached.
    model = torch.compile(net) if settings.compile else net
    record("plain", plain_loop(model, loader(), settings))
    record("lightning", lightning_loop(model, loader(), settings, sync_probe=True))
    record("seed", seed_loop(images, labels, settings))
    if settings.compile and settings.eager_too:
        # Budget the two uncompiled runs at half the compiled plain rate, plus a fixed start-up allowance.
        images_needed = 2 * (settings.warmup + settings.steps) * settings.batch_size
        needed_s = images_needed / (0.5 * results["sections"]["plain"]["images_per_s"]) + 15
        elapsed = time.perf_counter() - wall_start
        if elapsed + needed_s <= settings.budget_s:
            record("plain_eager", plain_loop(net, loader(), settings))
            record("lightning_eager", lightning_loop(net, loader(), settings, sync_probe=False))
        else:
            results["skipped"] = (
                f"uncompiled runs: {elapsed:.0f} s spent, about {needed_s:.0f} s more needed, "
                f"budget {settings.budget_s:.0f} s"
            )
    add_derived(results)
    results["targets"] = check_targets(results, settings)
    results["wall_s"] = time.perf_counter() - wall_start
    if json_path is not None:
        write_json(results, json_path)
    return results


def write_json(results: dict[str, Any], path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    temporary = path.with_suffix(".tmp")
    temporary.write_text(json.dumps(results, indent=2) + "\n")
    os.replace(temporary, path)


# ---------------------------------------------------------------------------------------------------------
# Report
# ---------------------------------------------------------------------------------------------------------


def header(results: dict[str, Any]) -> str:
    c, flops, peak = results["config"], results["flops"], results["peak"]
    model = ", ".join(f"{k}={v}" for k, v in c["model"].items())
    runs = [
        f"batch {c['batch_size']}",
        c["precision"],
        "channels_last" if c["channels_last"] else "NCHW",
        "compiled" if c["compile"] else "uncompiled",
        f"{c['warmup']} warm-up + {c['steps']} timed steps",
    ]
    lines = [
        f"seres.bench {c['date']} | {c['device_name']} | torch {c['torch']} | lightning {c['lightning']}",
        f"model SEResNet({model}), {c['params']:,} parameters | " + ", ".join(runs),
        f"data: {c['data']}; {c['augmentation']}",
        f"FLOPs per image: forward {flops['forward_per_image'] / 1e9:.3f} G, training step "
        f"{flops['train_step_per_image'] / 1e9:.3f} G ({flops['method']})",
        f"peak: {peak['matmul']} matrix product {peak['tflops']:.4g} TFLOP/s",
    ]
    if c["quick"]:
        lines.append("SMOKE SIZES (--quick or CPU): these numbers say nothing about GPU throughput")
    return "\n".join(lines)


def report(results: dict[str, Any]) -> str:
    """The summary table, ratios, host-sync checks and targets."""
    sections = results["sections"]
    lines = [
        header(results),
        "",
        f"{'section':<36} {'images/s':>10} {'windows min-max':>17} {'step ms':>8} {'epoch s':>8} "
        f"{'TFLOP/s':>8} {'of peak':>8} {'warm-up s':>10} {'1st step s':>10}",
    ]
    for name in ("lightning", "plain", "seed", "data", "lightning_eager", "plain_eager"):
        if name not in sections:
            continue
        s = sections[name]
        title = SECTION_TITLES[name]
        if name == "seed":
            title += f" ({s['workers']} workers)"
        windows = s["window_images_per_s"]
        spread = f"{min(windows):,.0f}-{max(windows):,.0f}" if windows else "-"
        tflops = f"{s['tflops']:.3g}" if "tflops" in s else "-"
        of_peak = f"{100 * s['of_peak']:.1f}%" if "of_peak" in s else "-"
        lines.append(
            f"{title:<36} {s['images_per_s']:>10,.0f} {spread:>17} {s['step_ms']:>8.2f} {s['epoch_s']:>8.2f} "
            f"{tflops:>8} {of_peak:>8} {s['warmup_s']:>10.1f} {s['first_step_s']:>10.1f}"
        )
    lightning = sections["lightning"]
    lines += [
        "",
        f"(1) Lightning: trainer.fit set-up {lightning['setup_s']:.2f} s before the first step, "
        f"fit {lightning['fit_s']:.1f} s in all",
    ]
    if results["config"]["compile"]:
        lines.append(
            f"compilation, in the first step: (2) {sections['plain']['first_step_s']:.1f} s, then (1) on the "
            f"same compiled network {lightning['first_step_s']:.1f} s"
        )
    lines += [
        "ratios: "
        + "  ".join(
            f"{label} {results['ratios'][key]:.2f}"
            for label, key in (
                ("(1)/(2)", "lightning_over_plain"),
                ("(4)/(1)", "data_over_lightning"),
                ("(1)/(3)", "lightning_over_seed"),
            )
        ),
        f"host syncs in the timed steps: (2) {sections['plain']['host_syncs']}; "
        f"(4) {sections['data']['host_syncs']}",
        f"host syncs in the Lightning loop after its timed steps: (1) {lightning['host_syncs']}",
    ]
    for site, count in lightning.get("host_sync_sites", {}).items():
        lines.append(f"    {count:>5}  {site}")
    if "skipped" in results:
        lines.append(f"skipped: {results['skipped']}")
    if results["targets"]:
        lines.append("targets:")
        for t in results["targets"]:
            lines.append(f"  {'PASS' if t['pass'] else 'FAIL'}  {t['target']}: {t['value']:,.2f}")
    else:
        lines.append("targets: not checked (they are for an H100/H200; this run is not on a GPU)")
    lines.append(f"wall time {results['wall_s']:.0f} s")
    return "\n".join(lines)


# ---------------------------------------------------------------------------------------------------------
# Command line
# ---------------------------------------------------------------------------------------------------------


def parse_settings(argv: Sequence[str] | None = None) -> tuple[Settings, Path | None]:
    parser = argparse.ArgumentParser(
        prog="python -m seres.bench",
        description="Training throughput: the Lightning loop, a plain PyTorch loop, the seed's pipeline and "
        "the GPU data pipeline alone, on one device. On a GPU: layer4, batch 1024, bf16, channels_last, "
        "compiled; on a CPU (or with --quick): a tiny network and a few steps.",
    )
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--quick", action="store_true", help="smoke sizes, as CI runs it (always on a CPU)")
    parser.add_argument("--batch-size", type=int, help="per step of (1), (2) and (4) (1024; quick 64)")
    parser.add_argument("--steps", type=int, help="timed steps of (1) and (2) (200; quick 6)")
    parser.add_argument("--warmup", type=int, help="steps before timing, compilation included (20; quick 2)")
    parser.add_argument(
        "--compile", action=argparse.BooleanOptionalAction, help="torch.compile (default: on a GPU)"
    )
    parser.add_argument("--precision", choices=("bf16", "fp32"), help="default: bf16 on a GPU, else fp32")
    parser.add_argument(
        "--channels-last", action=argparse.BooleanOptionalAction, help="NHWC (default: on a GPU)"
    )
    parser.add_argument("--seed-workers", type=int, default=2, help="DataLoader workers of (3) (2)")
    parser.add_argument(
        "--eager-too",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="with --compile, also time (1) and (2) uncompiled, within --budget-s (on)",
    )
    parser.add_argument("--budget-s", type=float, default=240.0, help="see --eager-too (240)")
    parser.add_argument("--data-root", help="use CIFAR-10 from this directory instead of random images")
    parser.add_argument("--json", type=Path, help="write every result to this JSON file")
    args = parser.parse_args(argv)

    device = torch.device(args.device)
    if device.type == "cuda" and not torch.cuda.is_available():
        parser.error("--device cuda, but torch sees no CUDA device; use --device cpu")
    gpu = device.type == "cuda"
    sizes = SIZES["quick" if args.quick or not gpu else "full"]
    settings = Settings(
        device=str(device),
        quick=args.quick or not gpu,
        model=sizes["model"],
        batch_size=sizes["batch_size"] if args.batch_size is None else args.batch_size,
        steps=sizes["steps"] if args.steps is None else args.steps,
        warmup=sizes["warmup"] if args.warmup is None else args.warmup,
        compile=gpu and not args.quick if args.compile is None else args.compile,
        precision=args.precision or ("bf16" if gpu else "fp32"),
        channels_last=gpu if args.channels_last is None else args.channels_last,
        images=sizes["images"],
        data_root=args.data_root,
        data_epochs=sizes["data_epochs"],
        seed_workers=args.seed_workers,
        seed_steps=sizes["seed_steps"],
        seed_warmup=sizes["seed_warmup"],
        eager_too=args.eager_too,
        budget_s=args.budget_s,
    )
    for name in ("batch_size", "steps", "warmup"):
        if getattr(settings, name) < 1:
            parser.error(f"--{name.replace('_', '-')} must be >= 1, got {getattr(settings, name)}")
    if settings.seed_workers < 0:
        parser.error(f"--seed-workers must be >= 0, got {settings.seed_workers}")
    return settings, args.json


def main(argv: Sequence[str] | None = None) -> dict[str, Any]:
    settings, json_path = parse_settings(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    # Lightning's start-up lines (GPU available, ...) repeat for every trainer.fit; its warnings still show.
    logging.getLogger("lightning.pytorch").setLevel(logging.WARNING)
    results = run(settings, json_path)
    log.info("\n" + report(results))
    return results


if __name__ == "__main__":
    main()
