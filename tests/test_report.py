"""Dashboards and the run report, from a short real-data run of train.py: what a person opens afterwards."""

import csv
import io
import json
import shutil
from pathlib import Path

import pytest
from PIL import Image
from real_run import CONSOLE_FILE, run_cli, short_real_run
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from seres.data import CLASSES
from seres.records.report import write_report

REPORT_FIGURES = ["curves.png", "confusion.png", "mistakes.png"]


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory) -> Path:
    return short_real_run(tmp_path_factory)


def read_events(run_dir: Path) -> EventAccumulator:
    (event_dir,) = {p.parent for p in run_dir.glob("tensorboard/**/events.out.tfevents.*")}
    events = EventAccumulator(str(event_dir), size_guidance={"scalars": 0, "images": 0, "tensors": 0})
    events.Reload()
    return events


def assert_picture(data: bytes | Path, min_side: int = 300) -> None:
    image = Image.open(io.BytesIO(data) if isinstance(data, bytes) else data)
    image.verify()  # a complete, decodable PNG
    assert image.format == "PNG" and min(image.size) >= min_side, (image.format, image.size)


def test_event_files_hold_every_scalar_the_hparams_entry_and_the_test_figures(run_dir):
    events = read_events(run_dir)
    scalars = set(events.Tags()["scalars"])
    expected = {f"{stage}/{metric}" for stage in ("train", "val", "test") for metric in ("loss", "acc")}
    expected |= {"lr-SGD", "train/grad_norm", "train/images_per_sec", "train/epoch_seconds"}
    expected |= {f"test/acc_{name}" for name in CLASSES}
    assert expected <= scalars, expected - scalars
    # 2 epochs of 20 steps, logged every 5 steps (Lightning counts steps from 0): 8 values each.
    grad_norms = events.Scalars("train/grad_norm")
    assert [e.step for e in grad_norms] == [4, 9, 14, 19, 24, 29, 34, 39]
    assert all(e.value > 0 for e in grad_norms)
    assert len(events.Scalars("train/images_per_sec")) == 8
    assert all(e.value > 0 for e in events.Scalars("train/images_per_sec"))
    assert len(events.Scalars("train/epoch_seconds")) == 2
    hparams = events.PluginTagToContent("hparams")
    assert b"hparams/best_val_acc" in hparams["_hparams_/experiment"]
    assert set(events.Tags()["images"]) == {"test/confusion_matrix", "test/most_confident_mistakes"}
    for tag in events.Tags()["images"]:
        assert_picture(events.Images(tag)[-1].encoded_image_string)


def test_per_class_test_accuracies_agree_with_the_confusion_matrix_and_the_overall_accuracy(run_dir):
    confusion = json.loads((run_dir / "confusion.json").read_text())
    matrix = confusion["matrix"]
    assert confusion["classes"] == list(CLASSES)
    # limit_test_batches=2 of 512 images each
    assert sum(map(sum, matrix)) == 1024
    metrics = json.loads((run_dir / "metrics.json").read_text())
    assert sum(matrix[i][i] for i in range(10)) / 1024 == pytest.approx(metrics["test_acc"])
    events = read_events(run_dir)
    for index, name in enumerate(CLASSES):
        logged = events.Scalars(f"test/acc_{name}")[-1].value
        assert logged == pytest.approx(matrix[index][index] / sum(matrix[index]), abs=1e-6)


def test_run_directory_holds_the_report_with_its_figures_and_numbers(run_dir):
    for name in REPORT_FIGURES:
        assert_picture(run_dir / name)
    with open(run_dir / "epochs.csv", newline="") as handle:
        rows = list(csv.DictReader(handle))
    metrics = json.loads((run_dir / "metrics.json").read_text())
    assert [row["epoch"] for row in rows] == ["1", "2"]
    assert max(float(row["val_acc"]) for row in rows) == pytest.approx(metrics["best_val_acc"])
    report = (run_dir / "report.md").read_text()
    assert f"| test accuracy (best checkpoint) | {100 * metrics['test_acc']:.2f}% |" in report
    assert f"| best validation accuracy | {100 * metrics['best_val_acc']:.2f}% |" in report
    for name in REPORT_FIGURES:
        assert f"]({name})" in report
    assert "model.widths=[8,16,32,64]" in report  # the command line, from .hydra/overrides.yaml
    assert "_target_: seres.model.SEResNet" in report  # the composed config


def test_quiet_mode_keeps_the_line_per_epoch_and_draws_no_bar(run_dir):
    console = (run_dir.parent / CONSOLE_FILE).read_text()
    assert "epoch   1/2 | train loss" in console and "epoch   2/2 | train loss" in console
    # The bar's speed columns (batches/s from Lightning's bar, images/s from ours) never appear.
    assert "it/s" not in console and "img/s" not in console


def test_report_is_regenerated_from_the_run_directory_alone(run_dir, tmp_path):
    copy = tmp_path / "run"
    # Without what the eval and export tests (maybe on another worker, meanwhile) write into the run.
    shutil.copytree(run_dir, copy, ignore=shutil.ignore_patterns("eval", "model.*", ".*.tmp"))
    for name in ["curves.png", "confusion.png", "report.md"]:
        (copy / name).unlink()
    result = run_cli("-m", "seres.records.report", str(copy))
    assert result.stdout.strip() == str(copy / "report.md")
    assert_picture(copy / "curves.png")
    assert_picture(copy / "confusion.png")
    assert (copy / "report.md").read_text() == (run_dir / "report.md").read_text().replace(
        f"# Run report: {run_dir.name}", "# Run report: run"
    )


def test_report_of_a_directory_that_is_no_run_says_what_to_give(tmp_path):
    for bad in [tmp_path / "missing", tmp_path]:
        result = run_cli("-m", "seres.records.report", str(bad), expect_success=False)
        assert result.returncode != 0
        assert str(bad) in result.stderr and "run directory" in result.stderr, result.stderr


def test_an_untested_run_with_a_validation_gap_still_gets_curves_and_a_report(tmp_path):
    (tmp_path / "epochs.csv").write_text(
        "epoch,train_loss,train_acc,val_loss,val_acc,lr,seconds\n"
        "1,2.1,0.2,,,0.1,3.0\n"
        "2,1.9,0.3,1.8,0.35,0.05,3.1\n"
    )
    (tmp_path / "metrics.json").write_text(json.dumps({"best_val_acc": 0.35, "test_acc": None}))
    report = write_report(tmp_path).read_text()
    assert_picture(tmp_path / "curves.png")
    assert not (tmp_path / "confusion.png").exists()
    assert "Not tested" in report and "| best validation accuracy | 35.00% |" in report
