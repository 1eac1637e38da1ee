"""Sweep jobs that run side by side on one machine (hydra/launcher=parallel) each get devices of their own.

The machine's devices are cut into as many equal slots as jobs run at once (`hydra.launcher.n_jobs`): with
GPUs, `trainer.devices` GPUs per slot (a 4-GPU machine runs 4 one-GPU jobs or 2 two-GPU jobs); without,
an equal share of the CPU cores. A job holds its slot's lock file (flock, in the sweep directory) from start
to end, so the next job takes a slot that is free, whichever job finished first; the operating system
releases the lock when a job's process ends, however it ends.
"""

import contextlib
import fcntl
import os
import time
from collections.abc import Iterator
from pathlib import Path

import torch

from seres.run.config_checks import ConfigError

LOCK_DIR = ".device_slots"


@contextlib.contextmanager
def hold_slot(sweep_dir: Path, slots: int) -> Iterator[int]:
    """Take the first free one of `slots` slots and hold it for the `with` block; yields its number."""
    (sweep_dir / LOCK_DIR).mkdir(parents=True, exist_ok=True)
    while True:
        for slot in range(slots):
            with open(sweep_dir / LOCK_DIR / f"{slot}.lock", "w") as lock:
                try:
                    fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
                except BlockingIOError:
                    continue
                yield slot
                return
        # Only when more jobs run than slots, e.g. a second sweep started on the same directory.
        time.sleep(0.5)


def visible_gpus() -> list[str]:
    """The GPUs this process may use, as CUDA names them in CUDA_VISIBLE_DEVICES."""
    listed = os.environ.get("CUDA_VISIBLE_DEVICES")
    if listed is not None:
        return [name for name in listed.split(",") if name.strip()]
    return [str(index) for index in range(torch.cuda.device_count())]


def gpu_slot(slot: int, slots: int, per_job: int, gpus: list[str]) -> str:
    """CUDA_VISIBLE_DEVICES of `slot`: its own `per_job` GPUs, shared with no other slot."""
    if slots * per_job > len(gpus):
        raise ConfigError(
            f"hydra.launcher.n_jobs={slots} jobs of trainer.devices={per_job} GPUs need {slots * per_job} "
            f"GPUs, but {len(gpus)} are visible ({','.join(gpus) or 'none'}); run fewer jobs at once, e.g. "
            f"hydra.launcher.n_jobs={max(1, len(gpus) // per_job)}"
        )
    return ",".join(gpus[slot * per_job : (slot + 1) * per_job])


def cpu_slot(slot: int, slots: int, cpus: list[int]) -> list[int]:
    """The CPU cores of `slot`: an equal share, shared with no other slot."""
    if slots > len(cpus):
        raise ConfigError(
            f"hydra.launcher.n_jobs={slots} jobs at once need a CPU core each, but this process may use "
            f"{len(cpus)}; run fewer jobs at once, e.g. hydra.launcher.n_jobs={len(cpus)}"
        )
    share = len(cpus) // slots
    return cpus[slot * share : (slot + 1) * share]


def slot_devices(slot: int, slots: int, per_job: int, on_gpu: bool) -> tuple[dict[str, str], list[int]]:
    """The environment and CPU cores a job in `slot` runs with: its GPUs, or its cores without GPUs."""
    gpus = visible_gpus() if on_gpu else []
    if gpus:
        return {"CUDA_VISIBLE_DEVICES": gpu_slot(slot, slots, per_job, gpus)}, sorted(os.sched_getaffinity(0))
    return {}, cpu_slot(slot, slots, sorted(os.sched_getaffinity(0)))


@contextlib.contextmanager
def job_devices(
    sweep_dir: Path, slots: int, per_job: int, on_gpu: bool
) -> Iterator[tuple[dict[str, str], list[int] | None]]:
    """For the `with` block, the environment and CPU cores (None: all) of a job among `slots` at once."""
    if slots < 1:
        raise ConfigError(
            f"hydra.launcher.n_jobs={slots}: give the number of sweep jobs to run at once, e.g. "
            "hydra.launcher.n_jobs=2"
        )
    if slots == 1:
        yield {}, None
        return
    with hold_slot(sweep_dir, slots) as slot:
        yield slot_devices(slot, slots, per_job, on_gpu)
