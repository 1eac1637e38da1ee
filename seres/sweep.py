"""Hydra multirun jobs as complete, resumable runs, and the summary written at the end of a sweep.

Each job of a sweep runs `train.py` again as a single run in its own job directory, in a child process.
Inside that child, Lightning's DDP launcher works exactly as for a plain run (its re-launched ranks see no
`-m` and no sweep), a crash stays inside its job, and a rerun of the same sweep finds each job's files.
"""

import csv
import json
import logging
import math
import subprocess
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from hydra.experimental.callback import Callback
from omegaconf import DictConfig, OmegaConf

from seres.report import percent

log = logging.getLogger("seres")

SUMMARY_COLUMNS = ["job", "status", "best_val_acc", "test_acc", "epochs", "fit_seconds"]
# Written by TimeToAccuracy; shown in the summary only when some job has them.
TARGET_COLUMNS = ["epoch_at_target", "seconds_to_target"]


def read_metrics(job_dir: Path) -> dict[str, Any] | None:
    path = job_dir / "metrics.json"
    return json.loads(path.read_text()) if path.is_file() else None


def run_job(script: Path, overrides: Sequence[str], job_dir: Path) -> dict[str, Any]:
    """Run one sweep job as `python script overrides...` in `job_dir`, unless it already finished.

    A job whose metrics.json says "completed" with the same overrides is skipped; an interrupted one
    resumes from its last.ckpt (`resume=true`). A job that fails gets a metrics.json with status "failed"
    and its exit code.
    """
    wanted = [item for item in overrides if not item.startswith("resume=")]
    finished = read_metrics(job_dir)
    if finished is not None and finished.get("overrides") != wanted:
        # Resuming another job's last.ckpt would pass its result off as this one's; its files stay.
        log.error(
            f"job {job_dir.name} of this sweep directory ran other settings "
            f"({' '.join(finished.get('overrides') or [])}); give this sweep a new hydra.sweep.dir"
        )
        return {"status": "other settings", "best_val_acc": None, "test_acc": None}
    if finished is not None and finished.get("status") == "completed":
        log.info(f"job {job_dir.name} already completed, skipping it: {' '.join(overrides)}")
        return finished
    command = [
        sys.executable,
        str(script),
        *overrides,
        f"hydra.run.dir={job_dir}",
        # The sweep already wrote this job's .hydra/ directory.
        "hydra.output_subdir=null",
        "resume=true",
    ]
    returncode = subprocess.run(command, cwd=Path.cwd()).returncode
    metrics = read_metrics(job_dir)
    if returncode == 0 and metrics is not None:
        return metrics
    # Recorded with its overrides, so that a rerun of the sweep recognises (and retries) this job.
    failed = {"status": "failed", "returncode": returncode, "overrides": wanted, "best_val_acc": None}
    (job_dir / "metrics.json").write_text(json.dumps(failed | {"test_acc": None}, indent=2) + "\n")
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


def swept_keys(rows: list[dict[str, Any]]) -> list[str]:
    """Override keys whose value differs between jobs, in the order they were first given."""
    keys: dict[str, set[str]] = {}
    for row in rows:
        for key, value in row["settings"].items():
            keys.setdefault(key, set()).add(value)
    return [key for key, values in keys.items() if len(values) > 1]


def table_cell(value: Any) -> str:
    """A metric as a table cell: floats to 4 decimals, None empty."""
    if value is None:
        return ""
    return f"{value:.4f}" if isinstance(value, float) else str(value)


def write_summary(sweep_dir: Path) -> list[dict[str, Any]]:
    """Write summary.csv, summary.md and summary.png (swept values vs accuracy) at the sweep root."""
    rows = collect_jobs(sweep_dir)
    keys = swept_keys(rows)
    columns = SUMMARY_COLUMNS[1:] + [c for c in TARGET_COLUMNS if any(row.get(c) is not None for row in rows)]
    table = [[row["job"], *(row["settings"].get(k, "") for k in keys)] for row in rows]
    table = [line + [table_cell(row.get(c)) for c in columns] for line, row in zip(table, rows, strict=True)]
    header = ["job", *keys, *columns]
    with open(sweep_dir / "summary.csv", "w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(header)
        writer.writerows(table)
    markdown = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    markdown += ["| " + " | ".join(line) + " |" for line in table]
    (sweep_dir / "summary.md").write_text(f"# Sweep {sweep_dir}\n\n" + "\n".join(markdown) + "\n")
    if keys:
        plot_summary(rows, keys, sweep_dir / "summary.png")
    return rows


def _as_number(value: str) -> float | None:
    try:
        return float(value)
    except ValueError:
        return None


def plot_summary(rows: list[dict[str, Any]], keys: list[str], destination: Path) -> None:
    """One panel per swept key: best validation accuracy of each completed job against that key's value."""
    import matplotlib

    matplotlib.use("Agg")  # files only; no display needed
    import matplotlib.pyplot as plt

    done = [row for row in rows if row.get("status") == "completed" and row.get("best_val_acc") is not None]
    figure, axes = plt.subplots(1, len(keys), figsize=(4 * len(keys), 3.5), squeeze=False)
    for axis, key in zip(axes[0], keys, strict=True):
        values = [row["settings"].get(key, "") for row in done]
        numeric = all(_as_number(v) is not None for v in values)
        positions = [_as_number(v) for v in values] if numeric else values
        axis.scatter(positions, [100 * row["best_val_acc"] for row in done])
        axis.set_xlabel(key)
        axis.set_ylabel("best val acc (%)")
        axis.grid(alpha=0.3)
    figure.tight_layout()
    figure.savefig(destination, dpi=100)
    plt.close(figure)


class SweepSummary(Callback):
    """Hydra callback: after a multirun, summarise its jobs at the sweep root; exit 1 if any job failed."""

    def on_multirun_end(self, config: DictConfig, **kwargs: Any) -> None:
        sweep_dir = Path(config.hydra.sweep.dir)
        rows = write_summary(sweep_dir)
        failed = [row["job"] for row in rows if row.get("status") != "completed"]
        log.info(
            f"sweep summary: {sweep_dir / 'summary.md'} ({len(rows) - len(failed)}/{len(rows)} completed)"
        )
        if failed:
            log.error(
                f"{len(failed)} of {len(rows)} jobs did not complete (jobs {', '.join(failed)}); see "
                f"{sweep_dir / 'summary.md'}. Rerun the same command with hydra.sweep.dir={sweep_dir} to "
                f"retry them: finished jobs are skipped."
            )
            # Hydra turns exceptions raised in callbacks into warnings; a failed sweep must exit non-zero.
            raise SystemExit(1)
