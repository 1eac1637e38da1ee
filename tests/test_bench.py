"""seres.bench: the CPU smoke run end to end (`python -m seres.bench`), then in-process: the derived numbers
and the report on known rates, the targets, the host-sync check, the recipes composed from conf/, the FLOP
count and the command line; then --cpu-full end to end at tiny size, its numbers on known rates, and the
native-bf16 detection."""

from __future__ import annotations

import dataclasses
import json
import math
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import torch
from conftest import made_once
from omegaconf import OmegaConf
from torch import nn

from seres.bench.cli import parse_settings
from seres.bench.cpu_data import DATA_WORKERS, WARMUP_BATCHES
from seres.bench.cpu_grid import BASELINE, GRID, add_row_numbers, fastest, grid_variants
from seres.bench.cpu_report import grid_lines
from seres.bench.cpu_run import TARGET_CPU_LIGHTNING_OVER_PLAIN, chosen_by, cpu_targets, lightning_variant
from seres.bench.flops import measure_flops
from seres.bench.recipe import SEED_OVERRIDES, compose_recipe
from seres.bench.report import SECTION_TITLES, report, target_lines
from seres.bench.run import TARGET_IMAGES_PER_S, add_derived, check_targets
from seres.bench.seed_loop import seed_transform
from seres.bench.settings import FULL_MODEL, SIZES, TINY_MODEL, Settings
from seres.bench.timing import describe_sync, time_steps
from seres.data import Augmentation
from seres.run.cpu_features import NATIVE_BF16_FEATURES, has_native_bf16

REPO = Path(__file__).resolve().parents[1]
CONF = REPO / "conf"
POLICY_SECTIONS = ("data_trivialaugment", "data_randaugment", "data_autoaugment")
SECTIONS = ("lightning", "plain", "seed", "data", *POLICY_SECTIONS)


@pytest.fixture(scope="module")
def smoke_run(tmp_path_factory: pytest.TempPathFactory) -> tuple[dict, str]:
    def bench(base: Path) -> None:
        quick = ["--quick", "--device", "cpu"]
        command = [sys.executable, "-m", "seres.bench", *quick, "--json", f"{base}/bench.json"]
        result = subprocess.run(command, cwd=REPO, capture_output=True, text=True, timeout=300)
        assert result.returncode == 0, result.stderr[-4000:]
        (base / "console.txt").write_text(result.stdout + result.stderr)

    return bench_files(made_once(tmp_path_factory, "bench_smoke", bench))


def bench_files(base: Path) -> tuple[dict, str]:
    """A bench run's JSON results and its console output."""
    return json.loads((base / "bench.json").read_text()), (base / "console.txt").read_text()


@pytest.fixture(scope="module")
def cpu_settings() -> Settings:
    return parse_settings(["--device", "cpu"])[0]


def table_row(output: str, name: str) -> list[str]:
    """The printed row of section `name`, split into its columns after the title."""
    (line,) = [line for line in output.splitlines() if line.startswith(SECTION_TITLES[name] + " ")]
    return line.removeprefix(SECTION_TITLES[name]).split()


def test_the_smoke_run_times_every_section_for_the_steps_asked(smoke_run):
    results, _ = smoke_run
    config, sections = results["config"], results["sections"]
    expected_steps = {
        "lightning": config["steps"],
        "plain": config["steps"],
        "seed": config["seed_steps"],
        "data": config["data_epochs"] * (config["images"] // config["batch_size"]),
    }
    expected_steps |= {name: expected_steps["data"] for name in POLICY_SECTIONS}
    for name, steps in expected_steps.items():
        assert sections[name]["timed_steps"] == steps, name
        assert sections[name]["images_per_s"] > 0 and min(sections[name]["window_images_per_s"]) > 0, name
    for name in ("plain", "seed"):
        assert math.isfinite(sections[name]["mean_loss"])


def test_the_printed_table_shows_each_sections_measured_rate(smoke_run):
    results, output = smoke_run
    for name in SECTIONS:
        columns = table_row(output, name)
        if name == "seed":
            columns = columns[2:]  # "(2 workers)"
        assert columns[0] == f"{results['sections'][name]['images_per_s']:,.0f}", name
    smoke_lines = ("SMOKE SIZES", "random uint8 images", "seed: crop 32 pad 4, flip, rotation 15")
    for text in (*smoke_lines, "targets: not checked"):
        assert text in output


def fake_results(rates: dict[str, float]) -> dict[str, Any]:
    """Results as a run leaves them before add_derived, with the given images/s per section."""
    timing = {"window_images_per_s": [1.0], "step_ms": 1.0, "warmup_s": 0.0, "first_step_s": 0.0}
    sections = {name: {**timing, "images_per_s": rate, "host_syncs": "-"} for name, rate in rates.items()}
    sections["seed"]["workers"] = 2
    sections["lightning"].update(setup_s=0.0, fit_s=1.0)
    config = {
        "date": "today", "device_name": "a device", "torch": "t", "lightning": "l", "model": {}, "params": 1,
        "data": "d", "augmentation": "a", "batch_size": 1, "precision": "fp32", "channels_last": False,
        "compile": False, "warmup": 1, "steps": 1, "quick": True, "epoch_images": 45_000,
    }  # fmt: skip
    return {
        "config": config,
        "flops": {"forward_per_image": 1e9, "train_step_per_image": 3e9, "method": "m"},
        "peak": {"matmul": "m", "tflops": 30.0},
        "sections": sections,
        "targets": [],
        "wall_s": 1.0,
    }


def test_epoch_time_tflops_and_ratios_follow_from_the_measured_rates():
    results = fake_results({"lightning": 1_000, "plain": 2_000, "seed": 250, "data": 8_000})
    add_derived(results)
    lightning = results["sections"]["lightning"]
    assert lightning["epoch_s"] == pytest.approx(45.0)  # 45,000 images at 1,000 images/s
    assert lightning["tflops"] == pytest.approx(3.0) and lightning["of_peak"] == pytest.approx(0.1)
    assert "tflops" not in results["sections"]["data"]  # the data pipeline trains nothing
    assert results["ratios"] == pytest.approx(
        {"lightning_over_plain": 0.5, "data_over_lightning": 8.0, "lightning_over_seed": 4.0}
    )
    printed = report(results)
    assert "ratios: (1)/(2) 0.50  (4)/(1) 8.00  (1)/(3) 4.00" in printed
    assert table_row(printed, "lightning")[:5] == ["1,000", "1-1", "1.00", "45.00", "3"]


def full_size_on_cuda(settings: Settings) -> Settings:
    full = SIZES["full"]
    return dataclasses.replace(
        settings, device="cuda", model=full["model"], batch_size=full["batch_size"], precision="bf16"
    )


@pytest.mark.parametrize(
    ("lightning", "plain", "data", "verdicts"),
    [
        (90_000, 100_000, 450_000, ["PASS", "PASS", "PASS"]),  # every minimum met exactly or above
        (49_999, 50_000, 250_000, ["PASS", "FAIL", "PASS"]),
        (60_000, 100_000, 299_999, ["FAIL", "PASS", "FAIL"]),
    ],
)
def test_targets_pass_or_fail_according_to_the_numbers(cpu_settings, lightning, plain, data, verdicts):
    results = fake_results({"lightning": lightning, "plain": plain, "seed": 1_000, "data": data})
    add_derived(results)
    results["targets"] = check_targets(results, full_size_on_cuda(cpu_settings))
    assert results["targets"][1]["target"].startswith(f"Lightning loop >= {TARGET_IMAGES_PER_S:,} images/s")
    assert ["PASS" if t["pass"] else "FAIL" for t in results["targets"]] == verdicts
    printed = [line.split()[0] for line in report(results).splitlines() if line.startswith("  ")]
    assert printed == verdicts


def test_only_a_full_size_gpu_run_has_the_images_per_s_target(cpu_settings):
    results = fake_results({"lightning": 10, "plain": 10, "seed": 10, "data": 100})
    add_derived(results)
    assert check_targets(results, cpu_settings) == []
    smaller = dataclasses.replace(full_size_on_cuda(cpu_settings), batch_size=512)
    assert len(check_targets(results, smaller)) == 2


def make_sync(x: torch.Tensor) -> None:
    x.sum().item()  # a deliberate host sync


@pytest.mark.skipif(not torch.cuda.is_available(), reason="the sync check needs CUDA")
def test_the_host_sync_check_catches_a_deliberate_sync_and_passes_a_clean_step():
    device = torch.device("cuda")
    loader = [(torch.ones(4, device=device), torch.zeros(4, device=device))]
    synced = time_steps(lambda x, y: make_sync(x), loader, device, 4, warmup=1, steps=3, check_syncs=True)
    assert synced["host_syncs"].startswith("host sync found") and "test_bench.py:" in synced["host_syncs"]
    assert synced["timed_steps"] == 3  # timed again without the check
    clean = time_steps(lambda x, y: x.mul_(1), loader, device, 4, warmup=1, steps=3, check_syncs=True)
    assert clean["host_syncs"] == "no host syncs: verified"


def test_a_sync_error_names_the_line_outside_the_benchmark_that_caused_it():
    loader = [(torch.ones(1), torch.zeros(1))]

    def step(x: torch.Tensor, y: torch.Tensor) -> None:
        raise RuntimeError("called a synchronizing CUDA operation\nmore detail")

    with pytest.raises(RuntimeError) as caught:
        time_steps(step, loader, torch.device("cpu"), 1, warmup=1, steps=1)
    line = step.__code__.co_firstlineno + 1
    described = describe_sync(caught.value)
    assert described.startswith("called a synchronizing CUDA operation at ")
    assert described.endswith(f"tests/test_bench.py:{line}")


def test_the_recipes_are_the_ones_in_conf():
    project, seed = compose_recipe(), compose_recipe(SEED_OVERRIDES)
    experiment = OmegaConf.load(CONF / "experiment" / "seed_paper.yaml")
    sgd = OmegaConf.to_container(OmegaConf.load(CONF / "optimizer" / "sgd.yaml"))
    seed_aug = OmegaConf.to_container(OmegaConf.load(CONF / "data" / "aug" / "seed.yaml"))
    assert seed.aug == Augmentation(**seed_aug)
    assert list(seed.mean) == list(experiment.data.mean) and list(seed.std) == list(experiment.data.std)
    assert seed.batch_size == experiment.data.batch_size
    assert seed.optimizer == {**sgd, **OmegaConf.to_container(experiment.optimizer)}
    assert project.optimizer == sgd
    assert project.gradient_clip_val == OmegaConf.load(CONF / "trainer" / "default.yaml").gradient_clip_val
    assert project.epoch_images == 50_000 - OmegaConf.load(CONF / "data" / "cifar10.yaml").val_size


def test_an_override_changes_the_benchmarks_setting():
    recipe = compose_recipe(["optimizer.lr=0.05", "data.val_size=10000", "data/aug=none"])
    assert recipe.epoch_images == 40_000
    optimizer = recipe.optimizer_factory()(nn.Linear(2, 2).parameters())
    assert isinstance(optimizer, torch.optim.SGD) and optimizer.param_groups[0]["lr"] == 0.05
    assert [type(t).__name__ for t in seed_transform(recipe).transforms] == ["ToTensor", "Normalize"]


def test_the_plain_loops_clip_the_gradient_norm_as_the_trainer_config_says():
    recipe = compose_recipe()
    layer = nn.Linear(4, 4)
    layer(torch.full((1, 4), 100.0)).sum().backward()
    recipe.clip_gradients(layer.parameters())
    norm = torch.cat([p.grad.flatten() for p in layer.parameters()]).norm()
    assert norm.item() == pytest.approx(recipe.gradient_clip_val, rel=1e-4)


def test_flops_of_the_papers_model():
    # The paper's final model (4.4M parameters): about 1.29 GFLOP per image per training step.
    flops = measure_flops(FULL_MODEL)
    assert flops["train_step_per_image"] / 1e9 == pytest.approx(1.29, abs=0.01)
    assert flops["forward_per_image"] / 1e9 == pytest.approx(0.43, abs=0.01)


def test_a_cpu_gets_smoke_sizes_and_fp32_without_compilation():
    settings, json_path = parse_settings(["--device", "cpu", "--steps", "3"])
    assert settings.quick and settings.model == SIZES["quick"]["model"]
    assert settings.steps == 3 and settings.precision == "fp32"
    assert not settings.compile and not settings.channels_last and json_path is None


@pytest.mark.parametrize("option", ["--steps", "--warmup", "--batch-size", "--images"])
def test_non_positive_sizes_are_refused_by_name(option, capsys):
    with pytest.raises(SystemExit):
        parse_settings(["--device", "cpu", option, "0"])
    assert f"{option} must be >= 1" in capsys.readouterr().err


# --cpu-full at tiny size: the tiny network, batch 8, 1 + 2 steps, eager rows only (compiling takes minutes).
CPU_FULL_IMAGES, CPU_FULL_BATCH = 256, 8
CPU_FULL_TINY = [
    *("--device", "cpu", "--cpu-full", "--model", "tiny", "--batch-size", str(CPU_FULL_BATCH)),
    *("--steps", "2", "--warmup", "1", "--no-compile", "--images", str(CPU_FULL_IMAGES)),
]


@pytest.fixture(scope="module")
def cpu_full_run(tmp_path_factory: pytest.TempPathFactory) -> tuple[dict, str]:
    def bench(base: Path) -> None:
        command = [sys.executable, "-m", "seres.bench", *CPU_FULL_TINY, "--json", f"{base}/bench.json"]
        # One thread: on a busy machine torch's threads wait on each other and the same steps take 2-10x
        # longer.
        environment = {**os.environ, "OMP_NUM_THREADS": "1"}
        result = subprocess.run(
            command, cwd=REPO, capture_output=True, text=True, timeout=300, env=environment
        )
        assert result.returncode == 0, result.stderr[-4000:]
        (base / "console.txt").write_text(result.stdout + result.stderr)

    return bench_files(made_once(tmp_path_factory, "bench_cpu_full", bench))


def columns_after(output: str, title: str) -> list[str]:
    """The columns of the one printed line that starts with `title` and a space, after the title."""
    (line,) = [line for line in output.splitlines() if line.startswith(title + " ")]
    return line.removeprefix(title).split()


def test_cpu_full_prints_one_row_per_eager_setting_with_ratios_of_the_measured_rates(cpu_full_run):
    results, output = cpu_full_run
    rows = results["rows"]
    eager = [variant.name for variant in GRID if not variant.compile]
    assert list(rows) == eager and len(eager) == 4
    baseline = rows[BASELINE.name]["images_per_s"]
    for name, row in rows.items():
        images_per_s, ratio, *_, native, _, _ = columns_after(output, name)
        assert images_per_s == f"{row['images_per_s']:,.1f}", name
        assert ratio == f"{row['images_per_s'] / baseline:.2f}", name
        assert row["ratio"] == pytest.approx(row["images_per_s"] / baseline)
        assert row["timed_steps"] == 2 and row["images_per_s"] > 0
        peak = results["peaks"][row["precision"]]["tflops"]
        assert row["of_peak"] == pytest.approx(
            row["images_per_s"] * results["flops"]["train_step_per_image"] / 1e12 / peak
        )
        assert native == ({"bf16": "yes" if has_native_bf16() else "no", "fp32": "-"}[row["precision"]])
    assert columns_after(output, BASELINE.name)[1] == "1.00"
    assert not any(" compiled " in line for line in output.splitlines() if line.startswith(("fp32", "bf16")))
    assert "compiled rows: not run (--no-compile)" in output
    best = max(rows, key=lambda name: rows[name]["images_per_s"])
    assert results["fastest"] == best and f"fastest: {best} (" in output
    assert results["native_bf16"] is has_native_bf16()
    assert results["config"]["batch_size"] == CPU_FULL_BATCH and results["config"]["model"] == TINY_MODEL
    assert "NOT THE REAL SIZE" in output


def test_cpu_full_compares_lightning_with_plain_at_the_fastest_setting_and_judges_the_ratio(cpu_full_run):
    results, output = cpu_full_run
    compared = results["lightning"]
    assert compared["setting"] == results["fastest"]  # --no-compile pins nothing the eager rows lack
    assert "(the fastest row of (A), then --no-compile)" in output
    ratio = compared["lightning"]["images_per_s"] / compared["plain"]["images_per_s"]
    assert compared["lightning_over_plain"] == pytest.approx(ratio)
    assert columns_after(output, "ratio (1)/(2):") == [f"{ratio:.2f}"]
    for title, loop in (("(1) Lightning loop", "lightning"), ("(2) plain PyTorch loop", "plain")):
        assert columns_after(output, title)[0] == f"{compared[loop]['images_per_s']:,.1f}"
        assert compared[loop]["timed_steps"] == 2
    verdict = "PASS" if ratio >= TARGET_CPU_LIGHTNING_OVER_PLAIN else "FAIL"
    assert results["targets"][0]["pass"] is (verdict == "PASS")
    assert f"  {verdict}  Lightning loop >= 0.95 x plain loop (CPU, same setting): {ratio:.2f}" in output


def test_cpu_full_times_the_tensor_pipeline_and_a_dataloader_with_each_worker_count(cpu_full_run):
    results, output = cpu_full_run
    paths = results["data_paths"]
    assert list(paths) == ["tensor", *(f"workers_{n}" for n in DATA_WORKERS)]
    assert [paths[f"workers_{n}"]["workers"] for n in DATA_WORKERS] == [0, 1, 2]
    training = results["rows"][results["fastest"]]["images_per_s"]
    for path in paths.values():
        assert path["timed_steps"] == CPU_FULL_IMAGES // CPU_FULL_BATCH - WARMUP_BATCHES  # one epoch
        images_per_s, over_training, _ = columns_after(output, path["path"])
        assert images_per_s == f"{path['images_per_s']:,.0f}"
        assert over_training == f"{path['images_per_s'] / training:.1f}"
    best = max(paths.values(), key=lambda path: path["images_per_s"])
    assert f"fastest data path: {best['path']}" in output
    assert paths["tensor"]["path"].startswith("tensor pipeline (DeviceTrainLoader)")
    assert "DataLoader, 1 worker " in output and "DataLoader, 2 workers " in output


def fake_rows(rates: dict[str, float]) -> dict[str, dict[str, Any]]:
    """Rows of (A) as time_grid leaves them, with the given images/s per setting name."""
    by_name = {variant.name: variant for variant in GRID}
    timing = {"step_ms": 1.0, "warmup_s": 0.0, "first_step_s": 7.0}
    return {
        name: {**dataclasses.asdict(by_name[name]), **timing, "images_per_s": r} for name, r in rates.items()
    }


def test_each_rows_share_of_peak_uses_the_peak_of_its_own_dtype():
    rows = fake_rows({"fp32 NCHW eager": 100, "bf16 NCHW eager": 200, "fp32 channels_last compiled": 150})
    peaks = {"fp32": {"tflops": 1.0}, "bf16": {"tflops": 0.5}}
    add_row_numbers(rows, flops_per_image=2e9, peaks=peaks, native_bf16=False)
    assert [rows[name]["ratio"] for name in rows] == pytest.approx([1.0, 2.0, 1.5])
    assert rows["bf16 NCHW eager"]["tflops"] == pytest.approx(0.4)
    assert rows["bf16 NCHW eager"]["of_peak"] == pytest.approx(0.8)  # 0.4 of bf16's 0.5, not of fp32's 1.0
    assert rows["fp32 channels_last compiled"]["of_peak"] == pytest.approx(0.3)
    assert rows["bf16 NCHW eager"]["native_bf16"] is False and rows["fp32 NCHW eager"]["native_bf16"] is None
    assert fastest(rows) == "bf16 NCHW eager"
    printed = grid_lines({"rows": rows, "fastest": fastest(rows)})
    bf16_columns = columns_after("\n".join(printed), "bf16 NCHW eager")[:5]
    assert bf16_columns == ["200.0", "2.00", "1.0", "0.4", "80.0%"]
    compilation = "compilation (each compiled row's first step, not timed): fp32 channels_last compiled 7.0 s"
    assert compilation in printed


def test_the_grid_drops_only_the_compiled_rows_without_compilation():
    assert ", ".join(v.name for v in grid_variants(with_compiled=True)) == (
        "fp32 NCHW eager, fp32 channels_last eager, bf16 NCHW eager, bf16 channels_last eager, "
        "bf16 channels_last compiled, fp32 channels_last compiled"
    )
    assert [v.compile for v in grid_variants(with_compiled=False)] == [False] * 4


def test_flags_pin_parts_of_the_lightning_comparisons_setting():
    pinned = lightning_variant("bf16 channels_last compiled", {"precision": "fp32", "compile": False})
    assert pinned.name == "fp32 channels_last eager"
    assert lightning_variant("bf16 NCHW eager", {}).name == "bf16 NCHW eager"
    chosen = chosen_by({"channels_last": True, "precision": "bf16"})
    assert chosen == "the fastest row of (A), then --channels-last --precision bf16"


@pytest.mark.parametrize(("ratio", "verdict"), [(0.95, "PASS"), (1.2, "PASS"), (0.9499, "FAIL")])
def test_the_cpu_lightning_target_passes_from_095(ratio, verdict):
    (line,) = target_lines(cpu_targets(ratio))[1:]
    assert line.split()[0] == verdict


def test_cpu_full_defaults_to_the_papers_network_at_the_recipes_batch():
    settings, _ = parse_settings(["--device", "cpu", "--cpu-full"])
    assert settings.cpu_full and not settings.quick and settings.model == FULL_MODEL
    assert settings.batch_size == compose_recipe().batch_size == 128
    assert (settings.warmup, settings.steps, settings.compile, settings.pinned) == (3, 20, True, {})
    flagged, _ = parse_settings(["--device", "cpu", "--cpu-full", "--precision", "bf16", "--no-compile"])
    assert flagged.pinned == {"precision": "bf16", "compile": False} and not flagged.compile


@pytest.mark.parametrize(
    ("flags", "message"),
    [(["--quick"], "--cpu-full is the real size"), (["--images", "100"], "less than 2 batches")],
)
def test_cpu_full_refuses_what_cannot_run(flags, message, capsys):
    with pytest.raises(SystemExit):
        parse_settings(["--device", "cpu", "--cpu-full", *flags])
    assert message in capsys.readouterr().err


def test_native_bf16_is_what_the_capability_dict_says(monkeypatch):
    capability = torch._C._cpu._get_cpu_capability()
    assert has_native_bf16() is any(capability[name] for name in NATIVE_BF16_FEATURES)
    for features, expected in (({"amx_bf16": True}, True), ({"avx512_bf16": False, "avx2": True}, False)):
        monkeypatch.setattr(torch._C._cpu, "_get_cpu_capability", lambda features=features: features)
        assert has_native_bf16() is expected
    monkeypatch.delattr(torch._C._cpu, "_get_cpu_capability")
    assert has_native_bf16() is False  # the private API is gone
