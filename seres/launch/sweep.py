"""Hydra multirun jobs as complete, resumable runs, and the choice of a sweep's job on validation.

Each job of a sweep runs `train.py` again as a single run in its own job directory, in a child process.
Inside that child, Lightning's DDP launcher works exactly as for a plain run (its re-launched ranks see no
`-m` and no sweep), a crash stays inside its job, and a rerun of the same sweep finds each job's files.

    python -m seres.launch.sweep chosen SWEEP_DIR   # the overrides of the job chosen on validation
    python train.py -m $(python -m seres.launch.sweep chosen runs/fast-grid) seed=0,1,2
"""

import argparse
import json
import logging
import math
import os
import shlex
import signal
import subprocess
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from omegaconf import OmegaConf

from seres.records.atomic import write_json
from seres.records.report import percent
from seres.run.resume import run_overrides
from seres.run.slurm import is_first_slurm_task

log = logging.getLogger("seres")

# How long a job's run gets to stop at the end of its step before its job ends anyway (SLURM waits 30 s
# by default between SIGTERM and SIGKILL).
CHILD_STOP_SECONDS = 60


def read_metrics(job_dir: Path) -> dict[str, Any] | None:
    path = job_dir / "metrics.json"
    return json.loads(path.read_text()) if path.is_file() else None


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


def collect_jobs(sweep_dir: Path) -> list[dict[str, Any]]:
    """One row per job directory of a sweep: its metrics, its `overrides`, and those as `settings` (dict)."""
    rows = []
    for overrides_file in sorted(sweep_dir.glob("*/.hydra/overrides.yaml")):
        job_dir = overrides_file.parent.parent
        overrides = list(OmegaConf.load(overrides_file))
        settings = dict(item.split("=", 1) for item in overrides if "=" in item)
        metrics = read_metrics(job_dir) or {"status": "missing"}
        if metrics.get("overrides") not in (None, overrides):
            metrics = {"status": "other settings"}  # the files are another sweep's job of the same number
        rows.append({**metrics, "job": job_dir.name, "overrides": overrides, "settings": settings})
    return sorted(rows, key=lambda row: int(row["job"]) if row["job"].isdigit() else math.inf)


def select_job(sweep_dir: Path) -> tuple[dict[str, Any], str]:
    """The sweep's job to carry forward and why, chosen on validation alone (test accuracy is never read).

    Among completed jobs that reached a target validation accuracy (TimeToAccuracy's `seconds_to_target`),
    the one that reached it in the least training time: a fair comparison only when the jobs ran one at a
    time. Otherwise the job with the highest best validation accuracy. Returns the job's row (collect_jobs).
    """
    rows = collect_jobs(sweep_dir)
    done = [row for row in rows if row.get("status") == "completed" and row.get("best_val_acc") is not None]
    if not done:
        found = f"{len(rows)} job(s), none completed" if rows else "no jobs (no */.hydra/overrides.yaml)"
        raise ValueError(
            f"sweep directory {sweep_dir} has {found}: nothing to select. Give the directory of a finished "
            "sweep, e.g. multirun/DATE/TIME, or rerun the sweep with hydra.sweep.dir=<it> to finish its jobs"
        )
    reached = [row for row in done if row.get("seconds_to_target") is not None]
    if reached:
        job = min(reached, key=lambda row: (row["seconds_to_target"], -row["best_val_acc"]))
        return job, (
            f"job {job['job']} reached {percent(job['target_val_acc'])} validation accuracy in the least "
            f"training time ({job['seconds_to_target']} s, epoch {job['epoch_at_target']})"
        )
    job = max(done, key=lambda row: row["best_val_acc"])
    missed = " (no job reached its target)" if any("target_val_acc" in row for row in done) else ""
    best = percent(job["best_val_acc"])
    return job, f"job {job['job']} has the highest best validation accuracy, {best}{missed}"


def override_key(override: str) -> str:
    """`+callbacks.ema.decay=0.99` -> `callbacks.ema.decay`: what an override sets, however it adds it."""
    return override.split("=", 1)[0].lstrip("+~")


def chosen_overrides(sweep_dir: Path) -> tuple[list[str], str]:
    """The chosen job's overrides for new seeds, each tested once: without its seed and search, test=true."""
    job, reason = select_job(sweep_dir)
    dropped = {"seed", "hparams_search", "test"}
    kept = [item for item in job["overrides"] if override_key(item) not in dropped]
    return [*kept, "test=true"], reason


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m seres.launch.sweep", description=__doc__.split("\n")[0])
    commands = parser.add_subparsers(dest="command", required=True)
    chosen = commands.add_parser("chosen", help="print the overrides of the job chosen on validation")
    chosen.add_argument("sweep_dir", type=Path)
    args = parser.parse_args(argv)
    try:
        overrides, reason = chosen_overrides(args.sweep_dir)
    except ValueError as error:
        print(f"Error: {error}", file=sys.stderr)
        return 2
    print(f"{args.sweep_dir}: {reason}", file=sys.stderr)
    print(shlex.join(overrides))
    return 0


if __name__ == "__main__":
    sys.exit(main())
