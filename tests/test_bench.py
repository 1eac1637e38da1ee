"""seres.bench: the CPU smoke run end to end (`python -m seres.bench`), then in-process: the derived numbers
and the report on known rates, the targets, the host-sync check, the recipes composed from conf/, the FLOP
count and the command line."""

from __future__ import annotations

import dataclasses
import json
import math
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import torch
from omegaconf import OmegaConf
from torch import nn

from seres.bench.cli import parse_settings
from seres.bench.flops import measure_flops
from seres.bench.recipe import SEED_OVERRIDES, compose_recipe
from seres.bench.report import SECTION_TITLES, report
from seres.bench.run import TARGET_IMAGES_PER_S, add_derived, check_targets
from seres.bench.seed_loop import seed_transform
from seres.bench.settings import FULL_MODEL, SIZES, Settings
from seres.bench.timing import describe_sync, time_steps
from seres.data import Augmentation

REPO = Path(__file__).resolve().parents[1]
CONF = REPO / "conf"
SECTIONS = ("lightning", "plain", "seed", "data")


@pytest.fixture(scope="module")
def smoke_run(tmp_path_factory: pytest.TempPathFactory) -> tuple[dict, str]:
    destination = tmp_path_factory.mktemp("bench") / "bench.json"
    command = [sys.executable, "-m", "seres.bench", "--quick", "--device", "cpu", "--json", str(destination)]
    result = subprocess.run(command, cwd=REPO, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-4000:]
    return json.loads(destination.read_text()), result.stdout + result.stderr


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


@pytest.mark.parametrize("option", ["--steps", "--warmup", "--batch-size"])
def test_non_positive_sizes_are_refused_by_name(option, capsys):
    with pytest.raises(SystemExit):
        parse_settings(["--device", "cpu", option, "0"])
    assert f"{option} must be >= 1" in capsys.readouterr().err
