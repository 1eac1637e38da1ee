"""The command line: flags to Settings (sizes by device or --cpu-full, recipes from conf/), then the run and
its report."""

from __future__ import annotations

import argparse
import logging
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch

from seres.bench.cpu_report import cpu_report
from seres.bench.cpu_run import run_cpu_full
from seres.bench.recipe import SEED_OVERRIDES, Recipe, compose_recipe
from seres.bench.report import report
from seres.bench.run import log, run
from seres.bench.settings import MODELS, SIZES, Settings


def make_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m seres.bench",
        description="Training throughput: the Lightning loop, a plain PyTorch loop, the seed's pipeline and "
        "the GPU data pipeline alone, on one device. On a GPU: layer4, batch 1024, bf16, channels_last, "
        "compiled; on a CPU (or with --quick): a tiny network and a few steps. With --cpu-full, a CPU at "
        "real size: every precision, layout and compile setting side by side, and the CPU data paths.",
    )
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--quick", action="store_true", help="smoke sizes, as CI runs it (always on a CPU)")
    parser.add_argument(
        "--cpu-full",
        action="store_true",
        help="on a CPU: the paper's network at the recipe's data.batch_size, 3 + 20 steps per setting: the "
        "plain step as fp32/bf16 x NCHW/channels_last x eager/compiled in one table, the Lightning loop at "
        "the fastest (--precision, --channels-last, --compile pin it), and the data paths alone; "
        "--no-compile drops the compiled rows",
    )
    parser.add_argument(
        "--model",
        choices=tuple(MODELS),
        help="paper: layer4, 4,398,890 parameters; tiny: 20,130 (paper on a GPU and with --cpu-full)",
    )
    parser.add_argument(
        "--batch-size",
        type=int,
        help="per step of (1), (2) and (4) (1024; quick 64; --cpu-full data.batch_size)",
    )
    parser.add_argument("--steps", type=int, help="timed steps of (1) and (2) (200; quick 6; --cpu-full 20)")
    parser.add_argument(
        "--warmup", type=int, help="steps before timing, compilation included (20; quick 2; --cpu-full 3)"
    )
    parser.add_argument(
        "--images",
        type=int,
        help="random images when --data-root is unset (50,000; quick 2,048; --cpu-full 10,240)",
    )
    # With --cpu-full these three pin the Lightning comparison's setting; the fastest row gives the rest.
    parser.add_argument(
        "--compile",
        action=argparse.BooleanOptionalAction,
        help="torch.compile (default: on a GPU)",
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
    return parser


def check_flags(parser: argparse.ArgumentParser, args: argparse.Namespace) -> None:
    """Refuse sizes below 1 and combinations that cannot run, naming the flag."""
    for name in ("batch_size", "steps", "warmup", "images"):  # the sizes' own defaults are all >= 1
        value = getattr(args, name)
        if value is not None and value < 1:
            parser.error(f"--{name.replace('_', '-')} must be >= 1, got {value}")
    if args.seed_workers < 0:
        parser.error(f"--seed-workers must be >= 0, got {args.seed_workers}")
    device = torch.device(args.device)
    if device.type == "cuda" and not torch.cuda.is_available():
        parser.error("--device cuda, but torch sees no CUDA device; use --device cpu")
    if args.cpu_full and device.type != "cpu":
        parser.error(f"--cpu-full measures a CPU, not --device {args.device}")
    if args.cpu_full and args.quick:
        parser.error("--cpu-full is the real size; for a short run give it --model tiny and small sizes")


def pinned_flags(args: argparse.Namespace) -> dict[str, Any]:
    """The Lightning comparison's settings that --cpu-full's flags give; the fastest row gives the rest."""
    given = {"precision": args.precision, "channels_last": args.channels_last, "compile": args.compile}
    return {name: value for name, value in given.items() if value is not None}


def run_modes(args: argparse.Namespace, project: Recipe) -> tuple[dict[str, Any], dict[str, Any]]:
    """The sizes and the mode fields of Settings: --cpu-full's, or those the device gives."""
    if args.cpu_full:
        # precision and layout are the baseline row's; compile says whether the compiled rows run.
        sizes = {**SIZES["cpu_full"], "batch_size": project.batch_size}
        mode = {"quick": False, "compile": args.compile is not False, "precision": "fp32"}
        return sizes, {**mode, "channels_last": False, "cpu_full": True, "pinned": pinned_flags(args)}
    gpu = torch.device(args.device).type == "cuda"
    quick = args.quick or not gpu
    mode = {
        "quick": quick,
        "compile": gpu and not args.quick if args.compile is None else args.compile,
        "precision": args.precision or ("bf16" if gpu else "fp32"),
        "channels_last": gpu if args.channels_last is None else args.channels_last,
    }
    return SIZES["quick" if quick else "full"], mode


def parse_settings(argv: Sequence[str] | None = None) -> tuple[Settings, Path | None]:
    """Settings from the flags; sizes a flag leaves unset follow --cpu-full or the device (a CPU: smoke)."""
    parser = make_parser()
    args = parser.parse_args(argv)
    check_flags(parser, args)
    project = compose_recipe()
    sizes, mode = run_modes(args, project)

    def size(name: str) -> int:
        value = getattr(args, name)
        return sizes[name] if value is None else value

    settings = Settings(
        device=str(torch.device(args.device)),
        model=MODELS[args.model] if args.model else sizes["model"],
        batch_size=size("batch_size"),
        steps=size("steps"),
        warmup=size("warmup"),
        images=size("images"),
        data_root=args.data_root,
        data_epochs=sizes["data_epochs"],
        seed_workers=args.seed_workers,
        seed_steps=sizes["seed_steps"],
        seed_warmup=sizes["seed_warmup"],
        eager_too=args.eager_too,
        budget_s=args.budget_s,
        project=project,
        seed=compose_recipe(SEED_OVERRIDES),
        **mode,
    )
    if settings.cpu_full and settings.data_root is None and settings.images < 2 * settings.batch_size:
        parser.error(f"--cpu-full: --images {settings.images} gives the data paths less than 2 batches")
    return settings, args.json


def main(argv: Sequence[str] | None = None) -> dict[str, Any]:
    settings, json_path = parse_settings(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    # Lightning's start-up lines (GPU available, ...) repeat for every trainer.fit; its warnings still show.
    logging.getLogger("lightning.pytorch").setLevel(logging.WARNING)
    if settings.cpu_full:
        results = run_cpu_full(settings, json_path)
        log.info("\n" + cpu_report(results))
    else:
        results = run(settings, json_path)
        log.info("\n" + report(results))
    return results
