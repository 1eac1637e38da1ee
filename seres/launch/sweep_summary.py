"""The summary a sweep writes at its root: one row a job, and mean ± std over seeds of the same settings.

    python train.py -m experiment=fast seed=0,1,2     # summary.md: each seed, then mean ± std (n)

summary.csv and summary.md list every job; jobs that differ only in `seed` form a group whose mean, standard
deviation and count of best validation accuracy, test accuracy and seconds to target are in summary.md and
summary.json. summary.png plots the best validation accuracy against each swept value.
"""

import csv
import logging
import statistics
from pathlib import Path
from typing import Any

from hydra.experimental.callback import Callback
from omegaconf import DictConfig

from seres.launch.sweep import collect_jobs
from seres.records.atomic import write_json
from seres.records.report import markdown_table

log = logging.getLogger("seres")

JOB_COLUMNS = ["status", "best_val_acc", "test_acc", "epochs", "fit_seconds"]
# Written by TimeToAccuracy; shown only when some job has them.
TARGET_COLUMNS = ["epoch_at_target", "seconds_to_target", "flops_to_target"]
# What a group of seeds reports as mean ± std.
SEED_STATISTICS = ["best_val_acc", "test_acc", "seconds_to_target", "flops_to_target"]


def swept_keys(rows: list[dict[str, Any]]) -> list[str]:
    """Override keys whose value differs between jobs, in the order they were first given."""
    keys: dict[str, set[str]] = {}
    for row in rows:
        for key, value in row["settings"].items():
            keys.setdefault(key, set()).add(value)
    return [key for key, values in keys.items() if len(values) > 1]


def number(value: float) -> str:
    """4 decimals; 4 significant digits for counts as large as FLOPs (7.214e+14)."""
    return f"{value:.4f}" if abs(value) < 1e6 else f"{value:.4g}"


def table_cell(value: Any) -> str:
    """A metric as a table cell: floats by `number`, None empty."""
    if value is None:
        return ""
    return number(value) if isinstance(value, float) else str(value)


def mean_std(values: list[float]) -> dict[str, float | int]:
    """Mean, sample standard deviation (0 for one value) and count."""
    spread = statistics.stdev(values) if len(values) > 1 else 0.0
    return {"mean": statistics.fmean(values), "std": spread, "n": len(values)}


def seed_groups(rows: list[dict[str, Any]], keys: list[str]) -> list[dict[str, Any]]:
    """Jobs with the same swept values apart from `seed`, with mean ± std of their completed runs."""
    groups: dict[tuple[str, ...], dict[str, Any]] = {}
    for row in rows:
        settings = {key: row["settings"].get(key, "") for key in keys if key != "seed"}
        group = groups.setdefault(tuple(settings.values()), {"settings": settings, "jobs": [], "stats": {}})
        group["jobs"].append(row)
    for group in groups.values():
        done = [row for row in group.pop("jobs") if row.get("status") == "completed"]
        group["seeds"] = [row.get("seed") for row in done]
        for name in SEED_STATISTICS:
            values = [row[name] for row in done if row.get(name) is not None]
            if values:
                group["stats"][name] = mean_std(values)
    return list(groups.values())


def statistic_cell(stats: dict[str, Any], name: str) -> str:
    if name not in stats:
        return ""
    value = stats[name]
    return f"{number(value['mean'])} ± {number(value['std'])} (n={value['n']})"


def seeds_section(groups: list[dict[str, Any]]) -> list[str]:
    keys = list(groups[0]["settings"])
    lines = [
        [*group["settings"].values(), *(statistic_cell(group["stats"], n) for n in SEED_STATISTICS)]
        for group in groups
    ]
    title = "## Over seeds (mean ± std of the completed jobs)"
    return ["", title, "", *markdown_table(keys + SEED_STATISTICS, lines)]


def label_lines(labels: dict[str, Any]) -> list[str]:
    """`task_name: X, tags: a, b` and a blank line; nothing without labels."""
    if not labels:
        return []
    shown = ", ".join(
        f"{key}: {', '.join(value) if isinstance(value, list) else value}" for key, value in labels.items()
    )
    return [shown, ""]


def write_summary(sweep_dir: Path, labels: dict[str, Any] | None = None) -> list[dict[str, Any]]:
    """Write summary.csv, summary.md, summary.json and summary.png at the sweep root; return the jobs.

    `labels`: the sweep's task_name and tags, written at the top of summary.md and summary.json."""
    labels = labels or {}
    rows = collect_jobs(sweep_dir)
    keys = swept_keys(rows)
    columns = JOB_COLUMNS + [c for c in TARGET_COLUMNS if any(row.get(c) is not None for row in rows)]
    header = ["job", *keys, *columns]
    table = [
        [row["job"], *(row["settings"].get(k, "") for k in keys), *(table_cell(row.get(c)) for c in columns)]
        for row in rows
    ]
    with open(sweep_dir / "summary.csv", "w", newline="") as handle:
        csv.writer(handle).writerows([header, *table])
    markdown = [f"# Sweep {sweep_dir}", "", *label_lines(labels), *markdown_table(header, table)]
    groups = seed_groups(rows, keys)
    if "seed" in keys:
        markdown += seeds_section(groups)
    (sweep_dir / "summary.md").write_text("\n".join(markdown) + "\n")
    write_json({**labels, "jobs": rows, "groups": groups}, sweep_dir / "summary.json")
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
        labels = {"task_name": config.task_name, "tags": list(config.tags)}
        rows = write_summary(sweep_dir, labels)
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
