"""Pieces the accuracy recipes are built from: parallel seeds, time to accuracy, EMA, the fast recipe."""

import json
import os
import signal
import subprocess
import sys
import time
from functools import partial
from pathlib import Path

import lightning as L
import pytest
import torch
import torch.nn.functional as F
from conftest import run_command
from hydra import compose, initialize_config_dir
from hydra.utils import instantiate
from torch.utils.data import DataLoader, TensorDataset

from seres.data import CIFAR10DataModule
from seres.model import SEResNet
from seres.module import ClassifierModule
from seres.seeds import overrides_from_sweep
from seres.sweep import select_job

REPO = Path(__file__).resolve().parents[1]
TINY = ["model.widths=[8,16,32,64]", "model.blocks=[1,1,1,1]", "model.stem_width=8", "data.num_workers=0"]


def fake_data(root: Path) -> list[str]:
    return [f"data.root={root}", "data.verify=false", "data.val_size=100", "data.batch_size=32"]


def cpu_run(root: Path, *overrides: str) -> list[str]:
    return [*TINY, *fake_data(root), "trainer.accelerator=cpu", "progress=false", *overrides]


def test_fast_recipe_composes_to_the_gpu_settings():
    with initialize_config_dir(config_dir=str(REPO / "conf"), version_base="1.3"):
        cfg = compose(config_name="train", overrides=["experiment=fast", "paths.output_dir=/unused"])
    assert cfg.model.layer4 and cfg.model.compile and cfg.model.channels_last
    assert cfg.data.pipeline == "gpu" and cfg.trainer.precision == "bf16-mixed" and cfg.tta
    assert cfg.callbacks.time_to_accuracy.target == 0.94
    # Its length fits the budget it is made for: 15 s at the speed target of 50,000 training images/s.
    assert cfg.trainer.max_epochs * (50_000 - cfg.data.val_size) <= 15 * 50_000


def test_best_recipe_composes_to_the_seed_network_with_its_regularisers():
    with initialize_config_dir(config_dir=str(REPO / "conf"), version_base="1.3"):
        cfg = compose(config_name="train", overrides=["experiment=best", "paths.output_dir=/unused"])
    assert cfg.model.layer4 and cfg.model.se_reduction > 0 and cfg.trainer.max_epochs <= 200
    assert cfg.data.aug.cutout == 16 and cfg.data.aug.crop_padding == 4 and cfg.data.aug.flip
    assert cfg.label_smoothing == 0.1 and cfg.tta
    assert cfg.callbacks.ema._target_ == "seres.callbacks.EMA"


class RecordFcWeight(L.Callback):
    """The classifier's weights after each optimizer step, by global step."""

    def __init__(self) -> None:
        self.after_step: dict[int, torch.Tensor] = {}

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        self.after_step[trainer.global_step] = pl_module.net.fc.weight.detach().clone()


def test_best_recipe_ema_averages_every_fourth_step_with_its_decay():
    with initialize_config_dir(config_dir=str(REPO / "conf"), version_base="1.3"):
        cfg = compose(config_name="train", overrides=["experiment=best", "paths.output_dir=/unused"])
    ema, record = instantiate(cfg.callbacks.ema), RecordFcWeight()
    net = SEResNet(widths=[8, 16, 32, 64], blocks=[1, 1, 1, 1], stem_width=8)
    module = ClassifierModule(net, partial(torch.optim.SGD, lr=0.1))
    x, y = torch.randn(64, 3, 32, 32), torch.randint(0, 10, (64,))
    trainer = L.Trainer(
        accelerator="cpu", max_steps=8, callbacks=[record, ema], logger=False, enable_checkpointing=False
    )
    trainer.fit(module, DataLoader(TensorDataset(x, y), batch_size=8))
    # Updates after steps 1 (a copy) and 5; training's end puts the average into the module.
    decay = cfg.callbacks.ema.decay
    assert cfg.callbacks.ema.every_n_steps == 4
    expected = decay * record.after_step[1] + (1 - decay) * record.after_step[5]
    torch.testing.assert_close(net.fc.weight.detach(), expected)


@pytest.mark.parametrize("recipe", ["best", "fast"])
def test_recipe_runs_end_to_end_on_the_cpu_at_tiny_size(recipe, fake_cifar_bin, tmp_path):
    # The recipe's own pipeline, augmentation, schedule and callbacks; only the size and the GPU-only
    # switches (bf16, compilation) are changed.
    run_dir = tmp_path / recipe
    cpu_only = ["trainer=cpu", "model.compile=false", "data.eval_batch_size=64", "trainer.max_epochs=2"]
    run_command(
        [
            sys.executable,
            "train.py",
            f"experiment={recipe}",
            *cpu_run(fake_cifar_bin, *cpu_only),
            f"hydra.run.dir={run_dir}",
        ]
    )
    metrics = json.loads((run_dir / "metrics.json").read_text())
    assert metrics["status"] == "completed" and metrics["epochs"] == 2 and metrics["test_acc"] is not None


def test_fast_grid_composes_to_a_validation_only_sweep_of_the_fast_recipe():
    overrides = ["experiment=fast", "hparams_search=fast_grid", "paths.output_dir=/unused"]
    with initialize_config_dir(config_dir=str(REPO / "conf"), version_base="1.3"):
        cfg = compose(config_name="train", overrides=overrides, return_hydra_config=True)
    assert cfg.test is False and cfg.data.pipeline == "gpu" and cfg.callbacks.time_to_accuracy.target == 0.94
    assert dict(cfg.hydra.sweeper.params) == {"optimizer.lr": "0.4,0.8", "trainer.max_epochs": "16,20"}
    assert cfg.hydra.launcher._target_.endswith("BasicLauncher")  # one job at a time: times compare


def write_job(sweep: Path, job: int, overrides: list[str], **metrics) -> None:
    """A finished sweep job's files as train.py and Hydra leave them."""
    (sweep / str(job) / ".hydra").mkdir(parents=True)
    (sweep / str(job) / ".hydra" / "overrides.yaml").write_text("".join(f"- {o}\n" for o in overrides))
    record = {"status": "completed", "overrides": overrides, "target_val_acc": 0.94} | metrics
    (sweep / str(job) / "metrics.json").write_text(json.dumps(record))


def test_selection_takes_the_soonest_to_target_and_never_reads_the_test_set(tmp_path):
    sweep = tmp_path / "sweep"
    # Job 0 reached the target first; job 1 has the best validation and test accuracy but reached it later;
    # job 2 never reached it; job 3 failed.
    write_job(
        sweep, 0, ["lr=0.4"], best_val_acc=0.945, test_acc=0.90, seconds_to_target=11.0, epoch_at_target=11
    )
    write_job(
        sweep, 1, ["lr=0.8"], best_val_acc=0.950, test_acc=0.99, seconds_to_target=14.0, epoch_at_target=14
    )
    write_job(sweep, 2, ["lr=0.2"], best_val_acc=0.930, test_acc=0.99, seconds_to_target=None)
    write_job(sweep, 3, ["lr=9.9"], status="failed", best_val_acc=None, seconds_to_target=1.0)
    job, reason = select_job(sweep)
    assert job["job"] == "0" and "11.0 s" in reason
    (sweep / "0" / "metrics.json").unlink()
    (sweep / "1" / "metrics.json").write_text(json.dumps({"status": "completed", "overrides": ["lr=0.8"]}))
    job, reason = select_job(sweep)  # no job reached its target: the best validation accuracy
    assert job["job"] == "2" and "no job reached its target" in reason


def test_seeds_from_a_sweep_take_the_chosen_job_without_its_seed_and_test_every_seed(tmp_path):
    sweep = tmp_path / "sweep"
    chosen = [
        "experiment=fast",
        "hparams_search=fast_grid",
        "seed=7",
        "optimizer.lr=0.4",
        "trainer.max_epochs=12",
    ]
    write_job(sweep, 0, chosen, best_val_acc=0.95, seconds_to_target=9.0, epoch_at_target=12)
    overrides, selection = overrides_from_sweep(sweep, ["trainer.max_epochs=2", "+callbacks.x.y=1"])
    assert overrides == [
        "experiment=fast",
        "optimizer.lr=0.4",
        "test=true",
        "trainer.max_epochs=2",
        "+callbacks.x.y=1",
    ]
    assert selection["job"] == "0" and selection["sweep"] == str(sweep)


def test_seeds_stopped_half_way_keep_the_summary_of_the_finished_ones(fake_cifar_bin, tmp_path):
    # As a time limit stops a GPU session's step: the seeds that finished are summarised, the others are
    # "missing", and an earlier run's metrics.json is never counted as this run's.
    out = tmp_path / "seeds"
    (out / "seed1").mkdir(parents=True)
    (out / "seed1" / "metrics.json").write_text(json.dumps({"status": "completed", "test_acc": 0.99}))
    command = [sys.executable, "-m", "seres.seeds", "--out", str(out), "--seeds", "0", "1", "--parallel", "1"]
    overrides = cpu_run(fake_cifar_bin, "trainer.max_epochs=1")
    process = subprocess.Popen([*command, "--", *overrides], cwd=REPO, start_new_session=True)
    try:
        deadline = time.monotonic() + 300
        while not (out / "seeds.json").is_file() and process.poll() is None and time.monotonic() < deadline:
            time.sleep(0.5)
    finally:
        os.killpg(process.pid, signal.SIGKILL)  # the runner and the second seed's run with it
        process.wait()
    summary = json.loads((out / "seeds.json").read_text())
    assert summary["runs"]["0"]["status"] == "completed" and summary["runs"]["1"] == {"status": "missing"}
    assert summary["stats"]["test_acc"] == {"mean": summary["runs"]["0"]["test_acc"], "std": 0.0, "n": 1}


def test_seeds_from_an_unfinished_sweep_are_refused_naming_it(tmp_path):
    result = run_command(
        [sys.executable, "-m", "seres.seeds", "--out", str(tmp_path / "out"), "--from-sweep", str(tmp_path)],
        expect_ok=False,
    )
    assert (
        f"sweep directory {tmp_path} has no jobs" in result.stderr and "multirun/DATE/TIME" in result.stderr
    )
    assert not (tmp_path / "out").exists()


def test_grid_on_validation_then_seeds_in_parallel_report_mean_and_spread(fake_cifar_bin, tmp_path):
    # The fast recipe's protocol at tiny size: a sweep that never tests, the job chosen on validation,
    # then new seeds of it, side by side, each tested once.
    sweep, out = tmp_path / "grid", tmp_path / "seeds"
    tiny = cpu_run(fake_cifar_bin, "trainer=cpu", "model.compile=false", "data.eval_batch_size=50")
    grid = ["experiment=fast", "hparams_search=fast_grid", "optimizer.lr=0.01,0.2", "trainer.max_epochs=1"]
    run_command([sys.executable, "train.py", "-m", *grid, *tiny, f"hydra.sweep.dir={sweep}"])
    jobs = [json.loads((sweep / str(n) / "metrics.json").read_text()) for n in (0, 1)]
    assert all(job["status"] == "completed" and job["test_acc"] is None for job in jobs)
    best_lr = max(jobs, key=lambda job: job["best_val_acc"])["lr"]

    run_command(
        [
            sys.executable,
            "-m",
            "seres.seeds",
            "--out",
            str(out),
            "--seeds",
            "0",
            "1",
            "--from-sweep",
            str(sweep),
            "--",
            "callbacks.time_to_accuracy.target=0.0",
        ]
    )
    summary = json.loads((out / "seeds.json").read_text())
    runs = [summary["runs"][str(seed)] for seed in (0, 1)]
    assert [r["seed"] for r in runs] == [0, 1] and all(r["status"] == "completed" for r in runs)
    assert all(r["lr"] == best_lr and r["epochs"] == 1 and r["seconds_to_target"] > 0 for r in runs)
    test_accs = [r["test_acc"] for r in runs]
    stats = summary["stats"]["test_acc"]
    assert stats["n"] == 2 and stats["mean"] == pytest.approx(sum(test_accs) / 2)
    assert stats["std"] == pytest.approx(abs(test_accs[0] - test_accs[1]) / 2**0.5)
    seeds_md = (out / "seeds.md").read_text()
    assert "test_acc:" in seeds_md and f"Selected from the sweep {sweep}" in seeds_md


@pytest.mark.parametrize(("target", "reached"), [(0.0, True), (1.01, False)])
def test_time_to_accuracy_is_recorded_in_metrics(target, reached, fake_cifar_bin, tmp_path):
    run_dir = tmp_path / "run"
    callback = [
        "+callbacks.tta_time._target_=seres.callbacks.TimeToAccuracy",
        f"+callbacks.tta_time.target={target}",
    ]
    run_command(
        [
            sys.executable,
            "train.py",
            *cpu_run(fake_cifar_bin, "trainer.max_epochs=2"),
            *callback,
            f"hydra.run.dir={run_dir}",
        ]
    )
    metrics = json.loads((run_dir / "metrics.json").read_text())
    assert metrics["train_seconds"] > 0
    if reached:
        assert (
            metrics["epoch_at_target"] == 1 and 0 < metrics["seconds_to_target"] <= metrics["train_seconds"]
        )
    else:
        assert metrics["epoch_at_target"] is None and metrics["seconds_to_target"] is None


def test_ema_weights_are_validated_checkpointed_and_exported(fake_cifar_bin, tmp_path):
    run_dir = tmp_path / "ema"
    ema = [
        "+callbacks.ema._target_=seres.callbacks.EMA",
        "+callbacks.ema.decay=0.9",
    ]
    run_command(
        [
            sys.executable,
            "train.py",
            *cpu_run(fake_cifar_bin, "trainer.max_epochs=2"),
            *ema,
            f"hydra.run.dir={run_dir}",
        ]
    )
    checkpoint = torch.load(run_dir / "best.ckpt", weights_only=False)
    averaged, current = checkpoint["state_dict"], checkpoint["current_model_state"]
    assert not torch.equal(averaged["net.fc.weight"], current["net.fc.weight"])
    exported = torch.load(run_dir / "best_model.pth", weights_only=True)
    assert torch.equal(exported["fc.weight"], averaged["net.fc.weight"])
    # The test after fitting used the averaged weights too: its loss is theirs, not the raw weights'.
    test_loss = json.loads((run_dir / "metrics.json").read_text())["test_loss"]
    assert test_loss == pytest.approx(loss_on_test_split(exported, fake_cifar_bin), abs=1e-5)


def loss_on_test_split(state_dict: dict, root: Path) -> float:
    """Mean cross-entropy of the tiny network with `state_dict` over the test split, in this process."""
    data = CIFAR10DataModule(root=str(root), verify=False, val_size=100, num_workers=0)
    data.setup()
    net = SEResNet(widths=[8, 16, 32, 64], blocks=[1, 1, 1, 1], stem_width=8).eval()
    net.load_state_dict(state_dict)
    with torch.no_grad():
        losses = [F.cross_entropy(net(x), y, reduction="sum") for x, y in data.test_dataloader()]
    return float(sum(losses)) / len(data.test_labels)
