"""(1): the project's Lightning loop: a real Trainer fits ClassifierModule on device pipeline batches."""

from __future__ import annotations

import tempfile
import time
import warnings
from collections import Counter
from typing import Any

import lightning as L
import torch
from torch import nn

from seres.bench.settings import Settings
from seres.bench.timing import SYNC_WARNING, Stopwatch, not_checked, short_path, synchronize
from seres.data import DeviceTrainLoader
from seres.module import ClassifierModule, cosine_schedule


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
    ) -> None:
        step = trainer.global_step
        if step == 0:
            synchronize(self.device)
            self.first_start = time.perf_counter()
        elif step == self.warmup:
            self.clock.start()
            self.warm_end = self.clock.started_at
        elif step == self.warmup + self.steps and self.probe_steps:
            self._start_probe()

    def on_train_batch_end(
        self, trainer: L.Trainer, pl_module: L.LightningModule, outputs: Any, batch: Any, batch_idx: int
    ) -> None:
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

    def _start_probe(self) -> None:
        self._catcher = warnings.catch_warnings(record=True)
        self._records = self._catcher.__enter__()
        warnings.simplefilter("always")
        torch.cuda.set_sync_debug_mode("warn")

    def _end_probe(self) -> None:
        if self._catcher is None:
            return
        torch.cuda.set_sync_debug_mode(0)
        self._catcher.__exit__(None, None, None)
        self._catcher = None
        for record in self._records:
            if SYNC_WARNING in str(record.message):
                self.syncs[f"{short_path(record.filename)}:{record.lineno}"] += 1


def make_trainer(settings: Settings, max_steps: int, timer: SteadyStateTimer, root: str) -> L.Trainer:
    """A Trainer with the project recipe's clipping and nothing the timed steps do not need."""
    device, recipe = settings.torch_device, settings.project
    return L.Trainer(
        accelerator="gpu" if device.type == "cuda" else "cpu",
        devices=[device.index or 0] if device.type == "cuda" else 1,
        precision="bf16-mixed" if settings.precision == "bf16" else "32-true",
        max_steps=max_steps,
        max_epochs=-1,
        gradient_clip_val=recipe.gradient_clip_val,
        gradient_clip_algorithm=recipe.gradient_clip_algorithm,
        benchmark=recipe.cudnn_benchmark,
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        num_sanity_val_steps=0,
        limit_val_batches=0,
        callbacks=[timer],
        default_root_dir=root,
    )


def lightning_loop(
    net: nn.Module, loader: DeviceTrainLoader, settings: Settings, sync_probe: bool
) -> dict[str, Any]:
    """trainer.fit on ClassifierModule(net) with the GPU loader, for warmup + steps (+ probe) steps."""
    device = settings.torch_device
    probe_steps = len(loader) if sync_probe and device.type == "cuda" else 0
    timer = SteadyStateTimer(device, settings.warmup, settings.steps, probe_steps)
    module = ClassifierModule(net, optimizer=settings.project.optimizer_factory(), scheduler=cosine_schedule)
    with tempfile.TemporaryDirectory() as root:
        trainer = make_trainer(settings, settings.warmup + settings.steps + probe_steps, timer, root)
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
        result["host_syncs"] = not_checked(device)
    return result
