"""A sweep directory read back: its jobs' results, and the job chosen on validation.

    python -m seres.launch.sweep chosen SWEEP_DIR   # the overrides of the job chosen on validation
    python train.py -m $(python -m seres.launch.sweep chosen runs/fast-grid) seed=0,1,2

Loads no torch, which would add seconds to every call of the command above. The jobs themselves are run
by seres.launch.sweep_jobs.
"""

import argparse
import json
import math
import shlex
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from omegaconf import OmegaConf

from seres.records.report import percent


def read_metrics(job_dir: Path) -> dict[str, Any] | None:
    path = job_dir / "metrics.json"
    return json.loads(path.read_text()) if path.is_file() else None


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
