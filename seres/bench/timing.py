"""Timing primitives: steady-state wall time without host waits inside it, and host-sync checks."""

from __future__ import annotations

import contextlib
import time
import traceback
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

WINDOWS = 5  # the steady state is cut into this many windows to show its spread
SYNC_WARNING = "synchronizing CUDA operation"  # what torch.cuda.set_sync_debug_mode("warn") says
BENCH_DIR = str(Path(__file__).resolve().parent)

Step = Callable[[Tensor, Tensor], None]  # enqueues one step on a batch (x, y)


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


def short_path(path: str) -> str:
    """The last three components of a path: enough to find a line in torch, lightning or torchmetrics."""
    return "/".join(Path(path).parts[-3:])


def describe_sync(error: BaseException) -> str:
    """The first line of a sync-check error and the innermost Python line outside seres/bench/ causing it."""
    frames = [f for f in traceback.extract_tb(error.__traceback__) if not f.filename.startswith(BENCH_DIR)]
    where = f" at {short_path(frames[-1].filename)}:{frames[-1].lineno}" if frames else ""
    return f"{str(error).splitlines()[0]}{where}"


def not_checked(device: torch.device) -> str:
    """What a section says when its host syncs were not checked (the checks need CUDA)."""
    return "not checked" + (" (CPU)" if device.type != "cuda" else "")


def warm_up(step: Step, batches: Iterator, device: torch.device, warmup: int) -> dict[str, Any]:
    """`warmup` steps, the first timed alone: {"first_step_s", "warmup_s"}."""
    started = time.perf_counter()
    step(*next(batches))
    synchronize(device)
    first = time.perf_counter() - started
    for _ in range(warmup - 1):
        step(*next(batches))
    synchronize(device)
    return {"first_step_s": first, "warmup_s": time.perf_counter() - started}


def timed_region(step: Step, batches: Iterator, device: torch.device, steps: int) -> Stopwatch:
    """`steps` steps between a Stopwatch's start() and stop()."""
    clock = Stopwatch(device, steps)
    clock.start()
    for _ in range(steps):
        step(*next(batches))
        clock.tick()
    clock.stop()
    return clock


def time_steps(
    step: Step,
    loader: Iterable,
    device: torch.device,
    batch_size: int,
    warmup: int,
    steps: int,
    check_syncs: bool = False,
) -> dict[str, Any]:
    """Run `warmup` steps, then time `steps` more over `loader`'s batches.

    first_step_s holds compilation, if any; warmup_s all warm-up steps, the first included. With
    `check_syncs` on CUDA the timed steps run under set_sync_debug_mode("error"); a host sync there is
    reported and the steps are timed again without the check.
    """
    batches = forever(loader)
    try:
        result = warm_up(step, batches, device, warmup)
        if check_syncs and device.type == "cuda":
            try:
                with sync_debug_mode("error"):
                    clock = timed_region(step, batches, device, steps)
                result["host_syncs"] = "no host syncs: verified"
            except RuntimeError as error:
                result["host_syncs"] = f"host sync found: {describe_sync(error)}"
                # An error raised inside the batch generator has ended it: time again on a fresh one.
                batches.close()
                batches = forever(loader)
                clock = timed_region(step, batches, device, steps)
        else:
            result["host_syncs"] = not_checked(device)
            clock = timed_region(step, batches, device, steps)
    finally:
        batches.close()  # a DataLoader's worker processes stop with it
    return {**result, **clock.result(batch_size)}
