"""The results table made from runs' own files (python -m seres.results.runs_table), over a short real-data
run."""

import csv
import json
import shutil
from pathlib import Path

import pytest
from real_run import run_cli, short_real_run


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory) -> Path:
    return short_real_run(tmp_path_factory)


def table_rows(output: str) -> list[list[str]]:
    """The data rows of the markdown table in `output`, as lists of cells."""
    lines = [line for line in output.splitlines() if line.startswith("| ")][1:]  # without the header
    return [[cell.strip() for cell in line.strip("|").split(" | ")] for line in lines]


def test_a_row_says_what_the_runs_files_say(run_dir):
    metrics = json.loads((run_dir / "metrics.json").read_text())
    with open(run_dir / "epochs.csv", newline="") as handle:
        history = list(csv.DictReader(handle))
    val_accs = [float(row["val_acc"]) for row in history]
    (row,) = table_rows(run_cli("-m", "seres.results.runs_table", str(run_dir)).stdout)
    name, _, batch, lr, precision, steps, images, compute, best, final_loss, test, by_epoch = row
    assert name == str(run_dir)
    assert (int(batch.replace(",", "")), float(lr)) == (metrics["global_batch_size"], metrics["lr"])
    assert precision == metrics["precision"] == "32-true"  # the short run's own setting
    assert int(images.replace(",", "")) == metrics["train_images"]
    assert int(steps.replace(",", "")) == metrics["train_images"] // metrics["global_batch_size"]
    assert compute == f"{metrics['train_flops'] / 1e15:.3f} PFLOP"
    assert final_loss == f"{float(history[-1]['val_loss']):.3f}"
    assert best == f"{100 * metrics['best_val_acc']:.2f}%" and test == f"{100 * metrics['test_acc']:.2f}%"
    assert by_epoch == " / ".join(f"{100 * acc:.1f}" for acc in val_accs)


def files_of_run(run_dir: Path, target: Path) -> Path:
    """A copy of the files the table reads (tests on other workers may write evaluations into the run)."""
    target.mkdir()
    for name in ("metrics.json", "epochs.csv"):
        shutil.copy(run_dir / name, target / name)
    return target


def test_overrides_shared_by_every_run_are_said_once_and_the_rest_per_row(run_dir, tmp_path):
    other = files_of_run(run_dir, tmp_path / "other_seed")
    metrics = json.loads((other / "metrics.json").read_text())
    metrics["overrides"] = [*metrics["overrides"], "seed=1"]
    (other / "metrics.json").write_text(json.dumps(metrics))
    output = run_cli("-m", "seres.results.runs_table", str(run_dir), str(other)).stdout
    shared = output.splitlines()[0]
    assert "`data.batch_size=64`" in shared and "seed=1" not in shared, shared
    assert [row[1] for row in table_rows(output)] == ["", "`seed=1`"]


def test_the_training_rate_is_the_runs_images_over_its_training_seconds(run_dir, tmp_path):
    timed = files_of_run(run_dir, tmp_path / "timed")
    metrics = json.loads((timed / "metrics.json").read_text())
    (timed / "metrics.json").write_text(json.dumps({**metrics, "train_seconds": 12.5}))
    output = run_cli("-m", "seres.results.runs_table", "--rate", str(run_dir), str(timed)).stdout
    assert "| training images/s |" in output
    untimed, rated = (row[-1] for row in table_rows(output))
    assert untimed == "" and rated == f"{metrics['train_images'] / 12.5:,.0f}"


def test_against_the_first_run_each_row_gives_its_accuracy_and_loss_difference(run_dir, tmp_path):
    base, better = (files_of_run(run_dir, tmp_path / name) for name in ("base", "better"))
    metrics = json.loads((better / "metrics.json").read_text())
    (better / "metrics.json").write_text(
        json.dumps({**metrics, "best_val_acc": metrics["best_val_acc"] + 0.0036})
    )
    with open(better / "epochs.csv", newline="") as handle:
        history = list(csv.DictReader(handle))
    history[-1]["val_loss"] = str(float(history[-1]["val_loss"]) - 0.004)
    with open(better / "epochs.csv", "w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=list(history[0]))
        writer.writeheader()
        writer.writerows(history)
    output = run_cli("-m", "seres.results.runs_table", "--against-first", str(base), str(better)).stdout
    assert "| best val acc - first run's (points) | final val loss - first run's |" in output
    assert [row[-2:] for row in table_rows(output)] == [["", ""], ["+0.36", "-0.004"]]


def test_a_directory_without_metrics_is_named_in_one_line(tmp_path):
    result = run_cli("-m", "seres.results.runs_table", str(tmp_path), expect_success=False)
    assert result.returncode == 2
    expected = f"Error: {tmp_path} has no metrics.json: give the directory of a finished run"
    assert result.stderr.strip() == expected


def test_an_evaluation_row_says_what_eval_py_wrote(run_dir, tmp_path):
    out = tmp_path / "eval_val_tta1"
    settings = [
        "split=val",
        "tta=true",
        "tta_translate=1",
        "limit_batches=1",
        "num_workers=0",
        "progress=false",
    ]
    run_cli("eval.py", f"ckpt_path={run_dir}/best.ckpt", *settings, f"output_dir={out}")
    metrics = json.loads((out / "metrics.json").read_text())
    (row,) = table_rows(run_cli("-m", "seres.results.runs_table", "--eval", str(out)).stdout)
    assert row == [
        str(out),
        f"{run_dir}/best.ckpt",
        "val",
        "true",
        "1",
        "512",
        f"{100 * metrics['val_acc']:.2f}%",
    ]
