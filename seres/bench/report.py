"""The printed report: a header saying what ran, then the table, ratios, host-sync checks and targets."""

from __future__ import annotations

from typing import Any

from seres.data import Augmentation

SECTION_TITLES = {
    "lightning": "(1) Lightning loop + device pipeline",
    "plain": "(2) plain PyTorch loop",
    "seed": "(3) seed pipeline",
    "data": "(4) data pipeline alone",
    "data_trivialaugment": "(4) + data.aug.policy=trivialaugment",
    "data_randaugment": "(4) + data.aug.policy=randaugment",
    "data_autoaugment": "(4) + data.aug.policy=autoaugment",
    "lightning_eager": "(1) Lightning loop, uncompiled",
    "plain_eager": "(2) plain loop, uncompiled",
}
RATIO_LABELS = {
    "lightning_over_plain": "(1)/(2)",
    "data_over_lightning": "(4)/(1)",
    "lightning_over_seed": "(1)/(3)",
}
TABLE_HEADER = (
    f"{'section':<36} {'images/s':>10} {'windows min-max':>17} {'step ms':>8} {'epoch s':>8} "
    f"{'TFLOP/s':>8} {'of peak':>8} {'warm-up s':>10} {'1st step s':>10}"
)


def describe_augmentation(aug: Augmentation) -> str:
    """The augmentations that are on, in a few words."""
    parts = []
    if aug.crop_padding:
        reflect = " reflect" if aug.crop_padding_mode == "reflect" else ""
        parts.append(f"crop 32 pad {aug.crop_padding}{reflect}")
    if aug.flip:
        parts.append("flip")
    if aug.rotation:
        parts.append(f"rotation {aug.rotation:g}")
    if aug.translate:
        parts.append(f"translate {aug.translate:g}")
    if aug.brightness or aug.contrast or aug.saturation:
        parts.append(f"jitter {aug.brightness:g}/{aug.contrast:g}/{aug.saturation:g}")
    if aug.cutout:
        parts.append(f"cutout {aug.cutout}")
    return ", ".join(parts) or "none"


def title_line(c: dict[str, Any]) -> str:
    return f"seres.bench {c['date']} | {c['device_name']} | torch {c['torch']} | lightning {c['lightning']}"


def model_line(config: dict[str, Any]) -> str:
    model = ", ".join(f"{k}={v}" for k, v in config["model"].items())
    return f"model SEResNet({model}), {config['params']:,} parameters"


def flops_line(flops: dict[str, Any]) -> str:
    return (
        f"FLOPs per image: forward {flops['forward_per_image'] / 1e9:.3f} G, training step "
        f"{flops['train_step_per_image'] / 1e9:.3f} G ({flops['method']})"
    )


def peak_text(peak: dict[str, Any]) -> str:
    return f"{peak['matmul']} matrix product {peak['tflops']:.4g} TFLOP/s"


def header(results: dict[str, Any]) -> str:
    c = results["config"]
    runs = [
        f"batch {c['batch_size']}",
        c["precision"],
        "channels_last" if c["channels_last"] else "NCHW",
        "compiled" if c["compile"] else "uncompiled",
        f"{c['warmup']} warm-up + {c['steps']} timed steps",
    ]
    lines = [
        title_line(c),
        f"{model_line(c)} | " + ", ".join(runs),
        f"data: {c['data']}; {c['augmentation']}",
        flops_line(results["flops"]),
        f"peak: {peak_text(results['peak'])}",
    ]
    if c["quick"]:
        lines.append("SMOKE SIZES (--quick or CPU): these numbers say nothing about GPU throughput")
    return "\n".join(lines)


def table_row(name: str, section: dict[str, Any]) -> str:
    title = SECTION_TITLES[name] + (f" ({section['workers']} workers)" if name == "seed" else "")
    windows = section["window_images_per_s"]
    spread = f"{min(windows):,.0f}-{max(windows):,.0f}" if windows else "-"
    tflops = f"{section['tflops']:.3g}" if "tflops" in section else "-"
    of_peak = f"{100 * section['of_peak']:.1f}%" if "of_peak" in section else "-"
    return (
        f"{title:<36} {section['images_per_s']:>10,.0f} {spread:>17} {section['step_ms']:>8.2f} "
        f"{section['epoch_s']:>8.2f} {tflops:>8} {of_peak:>8} {section['warmup_s']:>10.1f} "
        f"{section['first_step_s']:>10.1f}"
    )


def lightning_lines(results: dict[str, Any]) -> list[str]:
    """(1)'s set-up and, when compiled, where the compilation went."""
    sections = results["sections"]
    lightning = sections["lightning"]
    lines = [
        f"(1) Lightning: trainer.fit set-up {lightning['setup_s']:.2f} s before the first step, "
        f"fit {lightning['fit_s']:.1f} s in all"
    ]
    if results["config"]["compile"]:
        lines.append(
            f"compilation, in the first step: (2) {sections['plain']['first_step_s']:.1f} s, then (1) on the "
            f"same compiled network {lightning['first_step_s']:.1f} s"
        )
    return lines


def sync_lines(sections: dict[str, Any]) -> list[str]:
    lightning = sections["lightning"]
    lines = [
        f"host syncs in the timed steps: (2) {sections['plain']['host_syncs']}; "
        f"(4) {sections['data']['host_syncs']}",
        f"host syncs in the Lightning loop after its timed steps: (1) {lightning['host_syncs']}",
    ]
    return lines + [f"    {count:>5}  {site}" for site, count in lightning.get("host_sync_sites", {}).items()]


def target_lines(targets: list[dict[str, Any]]) -> list[str]:
    if not targets:
        return ["targets: not checked (they are for an H100/H200; this run is not on a GPU)"]
    return ["targets:"] + [
        f"  {'PASS' if t['pass'] else 'FAIL'}  {t['target']}: {t['value']:,.2f}" for t in targets
    ]


def report(results: dict[str, Any]) -> str:
    """The summary table, ratios, host-sync checks and targets."""
    sections = results["sections"]
    rows = [table_row(name, sections[name]) for name in SECTION_TITLES if name in sections]
    ratios = "  ".join(f"{RATIO_LABELS[key]} {value:.2f}" for key, value in results["ratios"].items())
    lines = [header(results), "", TABLE_HEADER, *rows, "", *lightning_lines(results), f"ratios: {ratios}"]
    lines += sync_lines(sections)
    if "skipped" in results:
        lines.append(f"skipped: {results['skipped']}")
    lines += target_lines(results["targets"])
    lines.append(f"wall time {results['wall_s']:.0f} s")
    return "\n".join(lines)
