"""The real entry point end to end, in subprocesses: one process, DDP on 2 CPUs, real data."""

import json
from pathlib import Path

import pytest
import torch
from conftest import TINY, fake_data, made_once, real_cifar_root, run_train, tiny_net
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from seres.data import build_eval_transform, load_cifar10

pytestmark = pytest.mark.slow  # real runs in subprocesses

RUN_FILES = ["best.ckpt", "last.ckpt", "best_model.pth", "metrics.json", ".hydra/config.yaml"]


def read_events(run_dir: Path) -> EventAccumulator:
    (event_dir,) = {p.parent for p in run_dir.glob("tensorboard/**/events.out.tfevents.*")}
    events = EventAccumulator(str(event_dir), size_guidance={"tensors": 0, "scalars": 0})
    events.Reload()
    return events


@pytest.fixture(scope="module")
def single_run(fake_cifar_bin, tmp_path_factory) -> Path:
    def train(base: Path) -> None:
        three_epochs = ["trainer.max_epochs=3", INTERPOLATED, f"hydra.run.dir={base / 'run'}"]
        run_train(*TINY, *fake_data(fake_cifar_bin), *three_epochs)

    return made_once(tmp_path_factory, "single_run", train) / "run"


# An override whose value refers to another setting (here: the default value, written out).
INTERPOLATED = "callbacks.epoch_summary.history_csv=${paths.output_dir}/epochs.csv"


def test_metrics_json_records_the_overrides_as_typed_not_resolved(single_run):
    overrides = json.loads((single_run / "metrics.json").read_text())["overrides"]
    assert INTERPOLATED in overrides and str(single_run) not in " ".join(overrides)


def test_single_run_leaves_every_artefact(single_run):
    for name in RUN_FILES:
        assert (single_run / name).is_file(), name
    metrics = json.loads((single_run / "metrics.json").read_text())
    assert metrics["epochs"] == 3
    # The best validation accuracy is the best epoch's; the test counted each of the 100 test images once.
    val_accs = [float(row.split(",")[4]) for row in (single_run / "epochs.csv").read_text().splitlines()[1:]]
    assert metrics["best_val_acc"] == pytest.approx(max(val_accs))
    assert 100 * metrics["test_acc"] == pytest.approx(round(100 * metrics["test_acc"]), abs=1e-4)
    learnable = {name for name, _ in tiny_net().named_parameters()}
    weights = torch.load(single_run / "best_model.pth", weights_only=True)
    assert metrics["params"] == sum(weights[name].numel() for name in learnable)
    assert metrics["fit_seconds"] > 0


def test_last_ckpt_holds_the_last_epoch_also_when_it_did_not_improve_the_best(fake_cifar_bin, tmp_path):
    # A learning rate and a BatchNorm momentum of 1e-12: every epoch validates exactly as the first,
    # so only the first one is the best.
    frozen = ["optimizer.lr=1e-12", "model.bn_momentum=1e-12", "trainer.max_epochs=3", "test=false"]
    run_train(*TINY, *fake_data(fake_cifar_bin), *frozen, f"hydra.run.dir={tmp_path}")
    val_accs = {row.split(",")[4] for row in (tmp_path / "epochs.csv").read_text().splitlines()[1:]}
    assert len(val_accs) == 1, val_accs
    names = ("best.ckpt", "last.ckpt")
    epoch = {name: torch.load(tmp_path / name, weights_only=False)["epoch"] for name in names}
    assert epoch == {"best.ckpt": 0, "last.ckpt": 2}  # what resume=true continues is the third epoch's end


def test_event_files_hold_scalars_and_the_hparams_entry(single_run):
    events = read_events(single_run)
    scalars = set(events.Tags()["scalars"])
    for tag in ["train/loss", "train/acc", "val/loss", "val/acc", "val/acc_best", "test/loss", "test/acc"]:
        assert tag in scalars, tag
    assert any(tag.startswith("lr") for tag in scalars), scalars
    assert len(events.Scalars("val/acc")) == 3
    # The hparams tab: an experiment summary naming the final metrics.
    hparams = events.PluginTagToContent("hparams")
    assert b"hparams/test_acc" in hparams["_hparams_/experiment"]
    assert b"optimizer/lr" in hparams["_hparams_/session_start_info"]
    assert events.Scalars("hparams/test_acc")[0].value == pytest.approx(
        json.loads((single_run / "metrics.json").read_text())["test_acc"]
    )


def test_best_model_pth_reloads_without_lightning_and_gives_the_logged_test_accuracy(
    single_run, fake_cifar_bin
):
    net = tiny_net()
    net.load_state_dict(torch.load(single_run / "best_model.pth", weights_only=True))
    images, labels = load_cifar10(fake_cifar_bin, verify=False)["test"]
    mean, std = [0.4914, 0.4822, 0.4465], [0.2470, 0.2435, 0.2616]
    with torch.no_grad():
        predictions = net.eval()(build_eval_transform(mean, std)(images)).argmax(dim=1)
    accuracy = (predictions == labels).float().mean().item()
    assert accuracy == pytest.approx(
        json.loads((single_run / "metrics.json").read_text())["test_acc"], abs=1e-6
    )


def test_a_small_se_resnet_learns_real_cifar10(tmp_path):
    run_dir = tmp_path / "real"
    run_train(
        f"data.root={real_cifar_root()}",
        "model.widths=[16,32,64,128]",
        "model.blocks=[1,1,1,1]",
        "model.stem_width=16",
        "data.batch_size=128",
        "trainer.max_epochs=1",
        "++trainer.limit_train_batches=120",
        "optimizer.lr=0.05",
        "test=false",
        f"hydra.run.dir={run_dir}",
    )
    metrics = json.loads((run_dir / "metrics.json").read_text())
    # Chance is 10%; 120 steps of an 80k-parameter SE-ResNet reach about 30% on the real validation split.
    assert metrics["best_val_acc"] > 0.25, metrics


def test_the_csv_logger_works_end_to_end(fake_cifar_bin, tmp_path):
    run_dir = tmp_path / "csv"
    run_train(
        *TINY, *fake_data(fake_cifar_bin), "logger=csv", "trainer.max_epochs=1", f"hydra.run.dir={run_dir}"
    )
    header = (run_dir / "csv" / "metrics.csv").read_text().splitlines()[0].split(",")
    assert {"train/loss", "val/acc", "test/acc"} <= set(header)
    assert json.loads((run_dir / "metrics.json").read_text())["status"] == "completed"
