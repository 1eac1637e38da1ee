"""Train one recipe with several seeds at once (parallel processes on one machine) and report mean and spread.

    python -m seres.seeds --out runs/fast --seeds 0 1 2 -- experiment=fast
    python -m seres.seeds --out runs/fast --from-sweep multirun/DATE/TIME --parallel 1

With --from-sweep, the recipe is the sweep job chosen on validation (seres.sweep.select_job) without its seed
and its search settings (hparams_search), and every seed is tested; overrides after -- replace that job's.

Each seed is a complete `train.py` run in OUT/seed<N>/, `--parallel` of them at a time (default: all). Side
by side they share the machine, so their times are not those of a run alone: for timings (e.g. the `fast`
recipe's seconds to 94%) use `--parallel 1`. OUT/seeds.md and OUT/seeds.json hold every run's numbers and
their mean and standard deviation.
"""

import argparse
import json
import statistics
import subprocess
import sys
from pathlib import Path
from typing import Any

from seres.sweep import select_job, table_cell

REPO = Path(__file__).resolve().parents[1]
REPORTED = ["best_val_acc", "test_acc", "epochs", "fit_seconds", "seconds_to_target", "train_seconds"]


def run_seeds(out: Path, seeds: list[int], overrides: list[str]) -> list[int]:
    """Train the seeds side by side, each in OUT/seed<N>/; return their exit codes."""
    running = []
    for seed in seeds:
        run_dir = out / f"seed{seed}"
        run_dir.mkdir(parents=True, exist_ok=True)
        command = [
            sys.executable,
            str(REPO / "train.py"),
            *overrides,
            f"seed={seed}",
            f"hydra.run.dir={run_dir}",
        ]
        log = open(run_dir / "console.log", "w")  # noqa: SIM115 - closed once the run ends
        running.append((subprocess.Popen(command, stdout=log, stderr=log), log))
    codes = []
    for process, log in running:
        codes.append(process.wait())
        log.close()
    return codes


def override_key(override: str) -> str:
    """`+callbacks.ema.decay=0.99` -> `callbacks.ema.decay`: what an override sets, however it adds it."""
    return override.split("=", 1)[0].lstrip("+~")


def merge_overrides(base: list[str], replacements: list[str], dropped: tuple[str, ...] = ()) -> list[str]:
    """`base` without the keys in `dropped` or `replacements`, then `replacements`."""
    replaced = {override_key(item) for item in replacements} | set(dropped)
    return [item for item in base if override_key(item) not in replaced] + replacements


def overrides_from_sweep(sweep_dir: Path, extra: list[str]) -> tuple[list[str], dict[str, Any]]:
    """The overrides of the sweep job chosen on validation, for new seeds and a final test; and the choice."""
    job, reason = select_job(sweep_dir)
    overrides = merge_overrides(job["overrides"], ["test=true", *extra], dropped=("seed", "hparams_search"))
    return overrides, {"sweep": str(sweep_dir), "job": job["job"], "reason": reason}


def mean_and_spread(values: list[float]) -> tuple[float, float]:
    return statistics.fmean(values), statistics.stdev(values) if len(values) > 1 else 0.0


def summarise(
    out: Path, seeds: list[int], overrides: list[str], selection: dict[str, Any] | None = None
) -> dict[str, Any]:
    runs = {}
    for seed in seeds:
        path = out / f"seed{seed}" / "metrics.json"
        runs[seed] = json.loads(path.read_text()) if path.is_file() else {"status": "missing"}
    done = [m for m in runs.values() if m.get("status") == "completed"]
    stats = {}
    for key in REPORTED:
        values = [m[key] for m in done if m.get(key) is not None]
        if values:
            stats[key] = dict(zip(("mean", "std"), mean_and_spread(values), strict=True)) | {"n": len(values)}
    summary = {"overrides": overrides, "seeds": seeds, "runs": runs, "stats": stats}
    if selection:
        summary["selected_from"] = selection
    (out / "seeds.json").write_text(json.dumps(summary, indent=2) + "\n")
    lines = [f"# {' '.join(overrides)}", ""]
    if selection:
        lines += [f"Selected from the sweep {selection['sweep']}: {selection['reason']}.", ""]
    lines += ["| seed | " + " | ".join(REPORTED) + " |"]
    lines.append("|---" * (len(REPORTED) + 1) + "|")
    for seed, m in runs.items():
        lines.append(f"| {seed} | " + " | ".join(table_cell(m.get(k)) for k in REPORTED) + " |")
    for key, s in stats.items():
        lines.append(f"\n{key}: {s['mean']:.4f} ± {s['std']:.4f} (n={s['n']})")
    (out / "seeds.md").write_text("\n".join(lines) + "\n")
    return summary


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m seres.seeds", description=__doc__.split("\n")[0])
    parser.add_argument("--out", type=Path, required=True, help="directory for the runs and the summary")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--parallel", type=int, default=0, help="runs at a time (default 0: all seeds)")
    parser.add_argument(
        "--from-sweep", type=Path, metavar="SWEEP_DIR", help="train this sweep's job chosen on validation"
    )
    parser.add_argument("overrides", nargs="*", help="train.py overrides, after --")
    args = parser.parse_args(argv)
    overrides, selection = args.overrides, None
    if args.from_sweep:
        try:
            overrides, selection = overrides_from_sweep(args.from_sweep, args.overrides)
        except ValueError as error:
            print(f"error: {error}", file=sys.stderr)
            return 2
        print(f"selected from {args.from_sweep}: {selection['reason']}\n  {' '.join(overrides)}")
    for seed in args.seeds:  # never count an earlier run's result
        (args.out / f"seed{seed}" / "metrics.json").unlink(missing_ok=True)
    codes, parallel = [], args.parallel or len(args.seeds)
    for start in range(0, len(args.seeds), parallel):
        codes += run_seeds(args.out, args.seeds[start : start + parallel], overrides)
        # Brought up to date after every group, so a run stopped half-way keeps its finished seeds' summary.
        summary = summarise(args.out, args.seeds, overrides, selection)
    print((args.out / "seeds.md").read_text())
    failed = [seed for seed, code in zip(args.seeds, codes, strict=True) if code != 0]
    if failed:
        print(f"seeds {failed} failed; see {args.out}/seed<N>/console.log", file=sys.stderr)
    return 1 if failed or not summary["stats"] else 0


if __name__ == "__main__":
    sys.exit(main())
