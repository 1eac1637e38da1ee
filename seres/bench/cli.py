"""The command line: flags to Settings (sizes by device, recipes from conf/), then the run and its report."""

from __future__ import annotations

import argparse
import logging
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch

from seres.bench.recipe import SEED_OVERRIDES, compose_recipe
from seres.bench.report import report
from seres.bench.run import log, run
from seres.bench.settings import SIZES, Settings


def make_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m seres.bench",
        description="Training throughput: the Lightning loop, a plain PyTorch loop, the seed's pipeline and "
        "the GPU data pipeline alone, on one device. On a GPU: layer4, batch 1024, bf16, channels_last, "
        "compiled; on a CPU (or with --quick): a tiny network and a few steps.",
    )
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--quick", action="store_true", help="smoke sizes, as CI runs it (always on a CPU)")
    parser.add_argument("--batch-size", type=int, help="per step of (1), (2) and (4) (1024; quick 64)")
    parser.add_argument("--steps", type=int, help="timed steps of (1) and (2) (200; quick 6)")
    parser.add_argument("--warmup", type=int, help="steps before timing, compilation included (20; quick 2)")
    parser.add_argument(
        "--compile", action=argparse.BooleanOptionalAction, help="torch.compile (default: on a GPU)"
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


def parse_settings(argv: Sequence[str] | None = None) -> tuple[Settings, Path | None]:
    """Settings from the flags; the sizes a flag leaves unset follow the device (a CPU gets smoke sizes)."""
    parser = make_parser()
    args = parser.parse_args(argv)
    for name in ("batch_size", "steps", "warmup"):  # the sizes' own defaults are all >= 1
        value = getattr(args, name)
        if value is not None and value < 1:
            parser.error(f"--{name.replace('_', '-')} must be >= 1, got {value}")
    if args.seed_workers < 0:
        parser.error(f"--seed-workers must be >= 0, got {args.seed_workers}")
    device = torch.device(args.device)
    if device.type == "cuda" and not torch.cuda.is_available():
        parser.error("--device cuda, but torch sees no CUDA device; use --device cpu")
    gpu = device.type == "cuda"
    quick = args.quick or not gpu
    sizes = SIZES["quick" if quick else "full"]
    settings = Settings(
        device=str(device),
        quick=quick,
        model=sizes["model"],
        batch_size=sizes["batch_size"] if args.batch_size is None else args.batch_size,
        steps=sizes["steps"] if args.steps is None else args.steps,
        warmup=sizes["warmup"] if args.warmup is None else args.warmup,
        compile=gpu and not args.quick if args.compile is None else args.compile,
        precision=args.precision or ("bf16" if gpu else "fp32"),
        channels_last=gpu if args.channels_last is None else args.channels_last,
        images=sizes["images"],
        data_root=args.data_root,
        data_epochs=sizes["data_epochs"],
        seed_workers=args.seed_workers,
        seed_steps=sizes["seed_steps"],
        seed_warmup=sizes["seed_warmup"],
        eager_too=args.eager_too,
        budget_s=args.budget_s,
        project=compose_recipe(),
        seed=compose_recipe(SEED_OVERRIDES),
    )
    return settings, args.json


def main(argv: Sequence[str] | None = None) -> dict[str, Any]:
    settings, json_path = parse_settings(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    # Lightning's start-up lines (GPU available, ...) repeat for every trainer.fit; its warnings still show.
    logging.getLogger("lightning.pytorch").setLevel(logging.WARNING)
    results = run(settings, json_path)
    log.info("\n" + report(results))
    return results
