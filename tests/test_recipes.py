"""Pieces the accuracy recipes are built from: seeds over a multirun, time to accuracy, EMA, Lookahead, the
recipes.
"""

import itertools
import json
import sys
from functools import partial
from pathlib import Path

import lightning as L
import pytest
import torch
import torch.nn.functional as F
from conftest import TINY, compose_train, fake_data, run_command, tiny_net
from hydra.core.override_parser.overrides_parser import OverridesParser
from hydra.utils import instantiate
from torch.utils.data import DataLoader, TensorDataset

from seres.callbacks import Lookahead
from seres.callbacks.flop_count import train_step_flops
from seres.data import CIFAR10DataModule
from seres.data.files import CIFAR10_TRAIN_IMAGES
from seres.launch.sweep import chosen_overrides, select_job
from seres.module import ClassifierModule
from seres.run.training import build_network

REPO = Path(__file__).resolve().parents[1]


def cpu_run(root: Path, *overrides: str) -> list[str]:
    return [*TINY, *fake_data(root), "trainer.accelerator=cpu", "progress=false", *overrides]


def grid_jobs(*overrides: str) -> list[list[str]]:
    """The override lists of a multirun's jobs, expanded from its sweeper's params by Hydra's own parser."""
    params = compose_train(*overrides, hydra_config=True).hydra.sweeper.params
    parsed = OverridesParser.create().parse_overrides([f"{key}={value}" for key, value in params.items()])
    sweeps = [[f"{o.get_key_element()}={value}" for value in o.sweep_string_iterator()] for o in parsed]
    return [[*overrides, *job] for job in itertools.product(*sweeps)]


def test_fast_recipe_composes_to_the_gpu_settings():
    cfg = compose_train("experiment=fast")
    assert cfg.model.layer4 and cfg.model.compile and cfg.model.channels_last
    assert cfg.data.pipeline == "device" and cfg.trainer.precision == "bf16-mixed" and cfg.tta
    assert cfg.callbacks.time_to_accuracy.target == 0.94


def test_fast_recipe_and_each_job_of_its_grid_train_within_its_compute_budget():
    # The budget of experiment=fast (conf/experiment/fast.yaml): 0.97 PFLOP of training steps, counted as
    # metrics.json's train_flops counts them, here for every training image of every epoch (an upper bound).
    # The grid's jobs too: `sweep chosen` knows no budget, and any job of the grid can become the recipe.
    for job in [["experiment=fast"], *grid_jobs("experiment=fast", "hparams_search=fast_grid")]:
        cfg = compose_train(*job)
        per_image = train_step_flops(build_network(cfg.model))["train_step_per_image"]
        train_images = CIFAR10_TRAIN_IMAGES - cfg.data.val_size
        assert per_image * train_images * cfg.trainer.max_epochs <= 0.97e15, job


def test_best_recipe_composes_to_the_seed_network_with_its_regularisers():
    cfg = compose_train("experiment=best")
    assert cfg.model.layer4 and cfg.model.se_reduction > 0 and cfg.trainer.max_epochs <= 200
    assert cfg.data.aug.cutout == 16 and cfg.data.aug.crop_padding == 4 and cfg.data.aug.flip
    assert cfg.data.aug.policy == "trivialaugment" and cfg.sam_rho == 0.05
    assert cfg.label_smoothing == 0.1 and cfg.tta
    assert cfg.callbacks.ema._target_ == "seres.callbacks.EMA"


class RecordFcWeight(L.Callback):
    """The classifier's weights after each optimizer step, and before the next one, by global step."""

    def __init__(self) -> None:
        self.after_step: dict[int, torch.Tensor] = {}
        self.before_next_step: dict[int, torch.Tensor] = {}

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx) -> None:
        self.before_next_step[trainer.global_step] = pl_module.net.fc.weight.detach().clone()

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        self.after_step[trainer.global_step] = pl_module.net.fc.weight.detach().clone()


def test_best_recipe_ema_averages_every_fourth_step_with_its_decay():
    cfg = compose_train("experiment=best")
    ema, record = instantiate(cfg.callbacks.ema), RecordFcWeight()
    net = tiny_net()
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


def test_lookahead_steps_the_network_back_to_its_slow_weights_every_k_steps():
    lookahead, record = Lookahead(decay=0.5, every_n_steps=2), RecordFcWeight()
    net = tiny_net()
    module = ClassifierModule(net, partial(torch.optim.SGD, lr=0.1, momentum=0.9))
    x, y = torch.randn(64, 3, 32, 32), torch.randint(0, 10, (64,))
    trainer = L.Trainer(
        accelerator="cpu",
        max_steps=8,
        callbacks=[record, lookahead],
        enable_checkpointing=False,
        logger=False,
    )
    trainer.fit(module, DataLoader(TensorDataset(x, y), batch_size=8))
    # Updates after steps 1 (a copy), 3, 5 and 7; the step after each starts from the slow weights.
    slow = record.after_step[1]
    for step in (3, 5, 7):
        slow = 0.5 * slow + 0.5 * record.after_step[step]
        torch.testing.assert_close(record.before_next_step[step], slow)
    assert not torch.allclose(record.before_next_step[3], record.after_step[3])
    torch.testing.assert_close(net.fc.weight.detach(), slow)  # training ends on the slow weights


@pytest.mark.slow
@pytest.mark.parametrize("recipe", ["best", "fast"])
def test_recipe_runs_end_to_end_on_the_cpu_at_tiny_size(recipe, fake_cifar_bin, tmp_path):
    # The recipe's own pipeline, augmentation, schedule and callbacks; only the size (the warm-up within the
    # two epochs) and the GPU-only switches (bf16, compilation) are changed.
    run_dir = tmp_path / recipe
    cpu_only = ["trainer=cpu", "model.compile=false", "data.eval_batch_size=64"]
    cpu_only += ["trainer.max_epochs=2", "scheduler.warmup_epochs=1"]
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


def test_fast_grid_composes_to_a_validation_only_sweep_around_the_fast_recipe():
    grid = ("experiment=fast", "hparams_search=fast_grid")
    cfg, recipe = compose_train(*grid, hydra_config=True), compose_train("experiment=fast")
    assert (
        cfg.test is False and cfg.data.pipeline == "device" and cfg.callbacks.time_to_accuracy.target == 0.94
    )
    assert cfg.hydra.launcher._target_.endswith("BasicLauncher")  # one job at a time: times compare
    jobs = [compose_train(*job) for job in grid_jobs(*grid)]
    settings = [(job.optimizer.lr, job.trainer.max_epochs) for job in jobs]
    assert len(settings) > 1 and (recipe.optimizer.lr, recipe.trainer.max_epochs) in settings


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


def test_the_chosen_job_is_carried_to_new_seeds_without_its_seed_search_or_test_setting(tmp_path):
    sweep = tmp_path / "sweep"
    chosen = ["experiment=fast", "hparams_search=fast_grid", "seed=7", "optimizer.lr=0.4", "test=false"]
    write_job(sweep, 0, chosen, best_val_acc=0.95, seconds_to_target=9.0, epoch_at_target=12)
    write_job(sweep, 1, ["optimizer.lr=0.8"], best_val_acc=0.96, seconds_to_target=None)
    overrides, reason = chosen_overrides(sweep)
    assert overrides == ["experiment=fast", "optimizer.lr=0.4", "test=true"] and "job 0" in reason


def test_choosing_from_an_unfinished_sweep_is_refused_naming_it(tmp_path):
    chosen = [sys.executable, "-m", "seres.launch.sweep", "chosen", str(tmp_path)]
    result = run_command(chosen, expect_ok=False)
    assert (
        f"sweep directory {tmp_path} has no jobs" in result.stderr and "multirun/DATE/TIME" in result.stderr
    )
    assert "Traceback" not in result.stderr and result.stdout == ""


@pytest.mark.slow
def test_reproducing_fast_tunes_on_validation_then_tests_seeds_of_the_chosen_job(fake_cifar_bin, tmp_path):
    # scripts/reproduce.sh fast at tiny size: a grid that never tests, the job chosen on validation, then
    # new seeds of it as a multirun, each tested once, summarised over the seeds.
    out = tmp_path / "fast"
    tiny = cpu_run(fake_cifar_bin, "trainer=cpu", "model.compile=false", "data.eval_batch_size=50")
    grid = ["optimizer.lr=0.01,0.2", "trainer.max_epochs=1", "scheduler.warmup_epochs=0.5"]
    grid.append("callbacks.time_to_accuracy.target=0.0")
    script = [str(REPO / "scripts" / "reproduce.sh"), "fast", "--out", str(out), "--seeds", "0,1"]
    run_command([*script, "--data", str(fake_cifar_bin), *grid, *tiny])
    jobs = [json.loads((out / "grid" / str(n) / "metrics.json").read_text()) for n in (0, 1)]
    assert all(job["status"] == "completed" and job["test_acc"] is None for job in jobs)
    # The rule of `seres.launch.sweep chosen`: the least time to the target, ties to the higher val acc.
    soonest = min(jobs, key=lambda job: (job["seconds_to_target"], -job["best_val_acc"]))["lr"]
    runs = [json.loads((out / "seeds" / str(n) / "metrics.json").read_text()) for n in (0, 1)]
    assert [r["seed"] for r in runs] == [0, 1] and all(r["status"] == "completed" for r in runs)
    assert all(r["lr"] == soonest and r["epochs"] == 1 and r["test_acc"] is not None for r in runs)
    (group,) = json.loads((out / "seeds" / "summary.json").read_text())["groups"]
    test_accs = [r["test_acc"] for r in runs]
    stats = group["stats"]["test_acc"]
    assert group["seeds"] == [0, 1] and stats["n"] == 2 and stats["mean"] == pytest.approx(sum(test_accs) / 2)
    assert stats["std"] == pytest.approx(abs(test_accs[0] - test_accs[1]) / 2**0.5)
    summary_md = (out / "seeds" / "summary.md").read_text()
    assert "## Over seeds" in summary_md and f"{stats['mean']:.4f} ± {stats['std']:.4f} (n=2)" in summary_md


@pytest.mark.slow
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
    # 300 training images in batches of 32, the last short one dropped: 288 an epoch, 2 epochs.
    assert metrics["train_images"] == 2 * 288
    assert metrics["flops_per_image"] == train_step_flops(tiny_net())["train_step_per_image"]
    assert metrics["train_flops"] == metrics["flops_per_image"] * 2 * 288
    if reached:
        assert (
            metrics["epoch_at_target"] == 1 and 0 < metrics["seconds_to_target"] <= metrics["train_seconds"]
        )
        assert metrics["flops_to_target"] == metrics["flops_per_image"] * 288
    else:
        assert metrics["epoch_at_target"] is None and metrics["seconds_to_target"] is None
        assert metrics["flops_to_target"] is None


@pytest.mark.slow
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
    net = tiny_net().eval()
    net.load_state_dict(state_dict)
    with torch.no_grad():
        losses = [F.cross_entropy(net(x), y, reduction="sum") for x, y in data.test_dataloader()]
    return float(sum(losses)) / len(data.test_labels)
