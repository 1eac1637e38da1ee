"""seres/bench.py: the CPU smoke run end to end in a subprocess (as `make bench` runs without a GPU), and its
FLOP count and command-line defaults in-process."""

from __future__ import annotations

import json
import math
import subprocess
import sys
from pathlib import Path

import pytest

from seres.bench import EPOCH_IMAGES, FULL_MODEL, SIZES, measure_flops, parse_settings

REPO = Path(__file__).resolve().parents[1]
SECTIONS = ("lightning", "plain", "seed", "data")
TRAINING = ("lightning", "plain", "seed")


@pytest.fixture(scope="module")
def quick_run(tmp_path_factory: pytest.TempPathFactory) -> tuple[dict, str]:
    destination = tmp_path_factory.mktemp("bench") / "bench.json"
    command = [sys.executable, "-m", "seres.bench", "--quick", "--device", "cpu", "--json", str(destination)]
    result = subprocess.run(command, cwd=REPO, capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr[-4000:]
    return json.loads(destination.read_text()), result.stdout + result.stderr


def test_every_section_reports_positive_numbers(quick_run):
    results, _ = quick_run
    assert set(SECTIONS) <= set(results["sections"])
    for name in SECTIONS:
        section = results["sections"][name]
        for key in ("images_per_s", "step_ms", "epoch_s", "timed_s", "warmup_s"):
            assert section[key] > 0, (name, key)
        assert section["timed_steps"] > 0
        assert section["window_images_per_s"] and min(section["window_images_per_s"]) > 0
        assert 0 <= section["first_step_s"] <= section["warmup_s"]
    for name in TRAINING:
        assert results["sections"][name]["tflops"] > 0
        assert results["sections"][name]["of_peak"] > 0
    for name in ("plain", "seed"):
        assert math.isfinite(results["sections"][name]["mean_loss"])
    assert results["flops"]["train_step_per_image"] > results["flops"]["forward_per_image"] > 0
    assert results["peak"]["tflops"] > 0
    assert results["sections"]["lightning"]["setup_s"] >= 0


def test_ratios_and_derived_numbers_follow_from_the_measurements(quick_run):
    results, _ = quick_run
    sections, ratios = results["sections"], results["ratios"]
    rate = {name: sections[name]["images_per_s"] for name in SECTIONS}
    assert ratios["lightning_over_plain"] == pytest.approx(rate["lightning"] / rate["plain"], rel=1e-12)
    assert ratios["data_over_lightning"] == pytest.approx(rate["data"] / rate["lightning"], rel=1e-12)
    assert ratios["lightning_over_seed"] == pytest.approx(rate["lightning"] / rate["seed"], rel=1e-12)
    flops, peak = results["flops"]["train_step_per_image"], results["peak"]["tflops"]
    for name in SECTIONS:
        section = sections[name]
        assert section["epoch_s"] == pytest.approx(EPOCH_IMAGES / section["images_per_s"], rel=1e-12)
        assert section["step_ms"] == pytest.approx(1000 * section["timed_s"] / section["timed_steps"])
    for name in TRAINING:
        assert sections[name]["tflops"] == pytest.approx(rate[name] * flops / 1e12, rel=1e-12)
        assert sections[name]["of_peak"] == pytest.approx(sections[name]["tflops"] / peak, rel=1e-12)


def test_each_section_times_the_steps_it_was_asked_for(quick_run):
    results, _ = quick_run
    config, sections = results["config"], results["sections"]
    assert sections["lightning"]["timed_steps"] == config["steps"]
    assert sections["plain"]["timed_steps"] == config["steps"]
    assert sections["seed"]["timed_steps"] == config["seed_steps"]
    batches_per_epoch = config["images"] // config["batch_size"]
    assert sections["data"]["timed_steps"] == config["data_epochs"] * batches_per_epoch


def test_the_output_says_smoke_sizes_random_data_and_no_targets(quick_run):
    results, output = quick_run
    assert results["config"]["quick"] is True
    assert results["config"]["data"].startswith("random uint8 images")
    assert results["targets"] == []
    for text in ("SMOKE SIZES", "random uint8 images", "ratios: (1)/(2)", "targets: not checked"):
        assert text in output


def test_flops_of_the_papers_model_match_the_issue():
    # Issue 3: about 1.29 GFLOP per image per training step for the 4.4M-parameter model.
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
