"""The printed --cpu-full report: what ran, then (A) the table of settings, (B) Lightning against plain, (C)
the data paths."""

from __future__ import annotations

from typing import Any

from seres.bench.report import flops_line, model_line, peak_text, target_lines, title_line
from seres.bench.settings import FULL_MODEL
from seres.run.cpu_features import NATIVE_BF16_FEATURES

GRID_HEADER = (
    f"{'setting':<28} {'images/s':>10} {'ratio':>6} {'step ms':>9} {'TFLOP/s':>8} {'of peak':>8} "
    f"{'native bf16':>12} {'warm-up s':>10} {'1st step s':>10}"
)
LOOP_HEADER = f"{'loop':<28} {'images/s':>10} {'step ms':>9} {'warm-up s':>10} {'1st step s':>10}"
DATA_HEADER = f"{'data path':<44} {'images/s':>10} {'x training':>11} {'1st batch s':>12}"


def yes_no(flag: bool) -> str:
    return "yes" if flag else "no"


def cpu_header(results: dict[str, Any]) -> str:
    """What runs: the network, batch and steps, the data, the FLOPs, both peaks and the native-bf16 flag."""
    c, peaks = results["config"], results["peaks"]
    project = c["project"]
    steps = f"{c['warmup']} warm-up + {c['steps']} timed steps per setting"
    lines = [
        title_line(c),
        f"{model_line(c)} | batch {c['batch_size']} (data.batch_size {project['batch_size']}), {steps}",
        f"data: {c['data']}; {c['augmentation']}",
        flops_line(results["flops"]),
        f"peaks: {peak_text(peaks['fp32'])}; {peak_text(peaks['bf16'])}",
        f"native bf16 ({' or '.join(NATIVE_BF16_FEATURES)}): {yes_no(results['native_bf16'])}",
    ]
    if c["model"] != FULL_MODEL or c["batch_size"] != project["batch_size"]:
        lines.append("NOT THE REAL SIZE (--model or --batch-size): these numbers exercise the code only")
    return "\n".join(lines)


def grid_row(name: str, row: dict[str, Any]) -> str:
    native = "-" if row["native_bf16"] is None else yes_no(row["native_bf16"])
    return (
        f"{name:<28} {row['images_per_s']:>10,.1f} {row['ratio']:>6.2f} {row['step_ms']:>9.1f} "
        f"{row['tflops']:>8.3g} {100 * row['of_peak']:>7.1f}% {native:>12} {row['warmup_s']:>10.1f} "
        f"{row['first_step_s']:>10.1f}"
    )


def grid_lines(results: dict[str, Any]) -> list[str]:
    """(A): one row per setting, the compilation times apart, the fastest."""
    rows = results["rows"]
    lines = [
        "(A) plain PyTorch training step by setting; ratio: images/s over fp32 NCHW eager's; of peak: "
        "TFLOP/s over the matrix-product peak in the row's dtype",
        GRID_HEADER,
        *(grid_row(name, row) for name, row in rows.items()),
    ]
    compiled = [f"{name} {row['first_step_s']:.1f} s" for name, row in rows.items() if row["compile"]]
    if compiled:
        lines.append("compilation (each compiled row's first step, not timed): " + "; ".join(compiled))
    else:
        lines.append("compiled rows: not run (--no-compile)")
    over = sorted({row["precision"] for row in rows.values() if row["of_peak"] > 1})
    if over:
        lines.append(
            f"of peak over 100% ({', '.join(over)}): the 1024-cube torch.mm in that dtype is slower on this "
            "CPU than the network's own kernels, so it is no ceiling here"
        )
    best = rows[results["fastest"]]
    lines.append(f"fastest: {results['fastest']} ({best['ratio']:.2f} x fp32 NCHW eager)")
    return lines


def loop_row(title: str, section: dict[str, Any]) -> str:
    return (
        f"{title:<28} {section['images_per_s']:>10,.1f} {section['step_ms']:>9.1f} "
        f"{section['warmup_s']:>10.1f} {section['first_step_s']:>10.1f}"
    )


def loop_lines(results: dict[str, Any]) -> list[str]:
    """(B): the two loops at one setting, their ratio and its target."""
    compared = results["lightning"]
    return [
        f"(B) Lightning loop against the plain loop at {compared['setting']} ({compared['chosen_by']})",
        LOOP_HEADER,
        loop_row("(1) Lightning loop", compared["lightning"]),
        loop_row("(2) plain PyTorch loop", compared["plain"]),
        f"ratio (1)/(2): {compared['lightning_over_plain']:.2f}",
        *target_lines(results["targets"]),
    ]


def data_lines(results: dict[str, Any]) -> list[str]:
    """(C): each data path's images/s and its rate over the fastest training row's."""
    c, paths = results["config"], results["data_paths"]
    lines = [
        f"(C) data path alone, batch {c['batch_size']}, the project's augmentation, NCHW; x training: "
        "images/s over the fastest row of (A)",
        DATA_HEADER,
    ]
    for path in paths.values():
        lines.append(
            f"{path['path']:<44} {path['images_per_s']:>10,.0f} {path['over_training']:>11.1f} "
            f"{path['first_step_s']:>12.2f}"
        )
    lines.append(f"fastest data path: {paths[results['fastest_data_path']]['path']}")
    return lines


def cpu_report(results: dict[str, Any]) -> str:
    """The header, (A), (B), (C) and the wall time."""
    parts = [
        cpu_header(results),
        "",
        *grid_lines(results),
        "",
        *loop_lines(results),
        "",
        *data_lines(results),
    ]
    return "\n".join([*parts, f"wall time {results['wall_s']:.0f} s"])
