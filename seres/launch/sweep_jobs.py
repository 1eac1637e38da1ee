"""Hydra multirun jobs as complete, resumable runs.

Each job of a sweep runs `train.py` again as a single run in its own job directory, in a child process.
Inside that child, Lightning's DDP launcher works exactly as for a plain run (its re-launched ranks see no
`-m` and no sweep), a crash stays inside its job, and a rerun of the same sweep finds each job's files.
"""

import logging
import os
import signal
import subprocess
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig

from seres.launch.device_slots import job_devices
from seres.launch.sweep import read_metrics
from seres.records.atomic import write_json
from seres.run.console import quiet_console
from seres.run.run_names import command_overrides, run_overrides
from seres.run.slurm import is_first_slurm_task
from seres.run.start_checks import USER_ERRORS, exit_with

log = logging.getLogger("seres")

# How long a job's run gets to stop at the end of its step before its job ends anyway (SLURM waits 30 s
# by default between SIGTERM and SIGKILL).
CHILD_STOP_SECONDS = 60


def completed_metrics(job_dir: Path, overrides: Sequence[str]) -> dict[str, Any] | None:
    """The metrics of the completed run of `overrides` in `job_dir`, or None if it has yet to complete."""
    finished = read_metrics(job_dir)
    if finished is not None and finished.get("status") == "completed":
        return finished if finished.get("overrides") == run_overrides(overrides) else None
    return None


def run_child(command: list[str], env: dict[str, str], cpus: list[int] | None) -> int:
    """Run the job's train.py with `env` added, on `cpus` (None: all), and wait for it; whatever stops this
    process first stops the run cleanly.

    The child ignores SIGUSR2, the warning SLURM sends before a job's time limit: submitit, in this process,
    answers it by requeueing the job, and the requeue's SIGTERM then stops the child at the end of its step.
    If this process is made to exit, the child gets SIGTERM and time to stop at the end of its step, never a
    SIGKILL in the middle of writing last.ckpt.
    """

    def prepare() -> None:
        signal.signal(signal.SIGUSR2, signal.SIG_IGN)  # SLURM's warning
        # A SLURM sweep job's process ignores SIGTERM (hydra_plugins/seres_launchers); the run must not.
        signal.signal(signal.SIGTERM, signal.SIG_DFL)
        if cpus is not None:
            os.sched_setaffinity(0, cpus)

    child = subprocess.Popen(command, cwd=Path.cwd(), env={**os.environ, **env}, preexec_fn=prepare)
    try:
        return child.wait()
    except BaseException:
        child.terminate()
        try:
            child.wait(timeout=CHILD_STOP_SECONDS)
        except subprocess.TimeoutExpired:
            child.kill()
        raise


def run_job(
    script: Path,
    overrides: Sequence[str],
    job_dir: Path,
    env: dict[str, str] | None = None,
    cpus: list[int] | None = None,
) -> dict[str, Any]:
    """Run one sweep job as `python script overrides...` in `job_dir`, unless it already finished.

    The run gets `env` added to its environment and runs on `cpus` (None: all), its share of the machine
    when jobs run side by side (seres.launch.device_slots).

    A job whose metrics.json says "completed" with the same overrides is skipped; an interrupted one
    resumes from its last.ckpt (`resume=true`). A job that fails gets a metrics.json with status "failed"
    and its exit code.
    """
    wanted = run_overrides(overrides)
    finished = read_metrics(job_dir)
    if finished is not None and finished.get("overrides") != wanted:
        # Resuming another job's last.ckpt would pass its result off as this one's; its files stay.
        log.error(
            f"job {job_dir.name} of this sweep directory ran other settings "
            f"({' '.join(finished.get('overrides') or [])}); give this sweep a new hydra.sweep.dir"
        )
        return {"status": "other settings", "best_val_acc": None, "test_acc": None}
    if (completed := completed_metrics(job_dir, overrides)) is not None:
        log.info(f"job {job_dir.name} already completed, skipping it: {' '.join(overrides)}")
        return completed
    command = [
        sys.executable,
        str(script),
        *overrides,
        f"hydra.run.dir={job_dir}",
        # The sweep already wrote this job's .hydra/ directory.
        "hydra.output_subdir=null",
        "resume=true",
    ]
    returncode = run_child(command, env or {}, cpus)
    metrics = read_metrics(job_dir)
    if (returncode == 0 and metrics is not None) or not is_first_slurm_task():
        return metrics or {"status": "failed", "returncode": returncode, "best_val_acc": None}
    # Recorded with its overrides, so that a rerun of the sweep recognises (and retries) this job.
    failed = {"status": "failed", "returncode": returncode, "overrides": wanted, "best_val_acc": None}
    write_json(failed | {"test_acc": None}, job_dir / "metrics.json")
    log.error(f"job {job_dir.name} failed with exit code {returncode}: {' '.join(overrides)}")
    return failed


def parallel_jobs(hydra_cfg: DictConfig, cfg: DictConfig) -> dict[str, Any]:
    """How many sweep jobs run at once (hydra/launcher=parallel: n_jobs) and the devices each one takes."""
    devices = cfg.trainer.get("devices")
    return {
        "slots": hydra_cfg.launcher.get("n_jobs", 1),
        "per_job": devices if isinstance(devices, int) else 1,
        "on_gpu": cfg.trainer.get("accelerator") != "cpu",
    }


def run_sweep_job(cfg: DictConfig, script: Path) -> float | None:
    """What `python train.py -m` does with one job's composed `cfg`: the job as a complete single run of
    `script` in a child process, on its share of the devices. Returns its best validation accuracy, the
    value Hydra's sweepers (e.g. Optuna) optimise."""
    quiet_console()
    hydra_cfg = HydraConfig.get()
    job_dir = Path(hydra_cfg.runtime.output_dir)
    try:
        overrides = command_overrides(hydra_cfg.overrides.task)
        with job_devices(Path(hydra_cfg.sweep.dir), **parallel_jobs(hydra_cfg, cfg)) as (env, cpus):
            return run_job(script, overrides, job_dir, env, cpus)["best_val_acc"]
    except USER_ERRORS as error:
        exit_with(error)
