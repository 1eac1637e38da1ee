"""The callbacks under a real Trainer on tiny tensors: what they log, write and show."""

import csv
import json
import logging
import re
from functools import partial

import lightning as L
import pytest
import torch
from lightning.pytorch.loggers import TensorBoardLogger
from lightning.pytorch.overrides.distributed import UnrepeatedDistributedSampler
from lightning.pytorch.utilities.model_summary.model_summary import get_human_readable_count
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
from torch.nn import functional as F
from torch.utils.data import DataLoader, TensorDataset

from seres import callbacks
from seres.callbacks import EpochSummary, GradientNorm, ProgressBar, TrainingCompute
from seres.callbacks.flop_count import train_step_flops
from seres.data import CLASSES
from seres.model import SEResNet
from seres.module import ClassifierModule


def tiny_module() -> ClassifierModule:
    net = SEResNet(widths=[8, 16, 32, 64], blocks=[1, 1, 1, 1], stem_width=8)
    return ClassifierModule(net, partial(torch.optim.SGD, lr=0.05, momentum=0.9))


def batches(n: int = 64, batch_size: int = 8, seed: int = 0) -> DataLoader:
    generator = torch.Generator().manual_seed(seed)
    x = torch.randn(n, 3, 32, 32, generator=generator)
    y = torch.randint(0, 10, (n,), generator=generator)
    return DataLoader(TensorDataset(x, y), batch_size=batch_size)


def trainer(callback_list: list, **kwargs) -> L.Trainer:
    settings = dict(accelerator="cpu", enable_checkpointing=False, enable_model_summary=False, logger=False)
    settings["enable_progress_bar"] = any(isinstance(c, ProgressBar) for c in callback_list)
    return L.Trainer(callbacks=callback_list, **{**settings, **kwargs})


def scalars(log_dir) -> dict[str, list[tuple[int, float]]]:
    events = EventAccumulator(str(log_dir), size_guidance={"scalars": 0, "images": 0})
    events.Reload()
    return {tag: [(e.step, e.value) for e in events.Scalars(tag)] for tag in events.Tags()["scalars"]}


class ClipReference(L.Callback):
    """Runs after GradientNorm, before Lightning clips: torch's own measure of the gradient norm."""

    def __init__(self) -> None:
        self.norms: list[float] = []

    def on_before_optimizer_step(self, trainer, pl_module, optimizer) -> None:
        grads = [p.grad for p in pl_module.parameters() if p.grad is not None]
        self.norms.append(torch.nn.utils.get_total_norm(grads).item())


def test_gradient_norm_and_throughput_are_logged_at_the_log_cadence_before_clipping(tmp_path):
    reference = ClipReference()
    fit = trainer(
        [GradientNorm(), TrainingCompute(), reference],
        logger=TensorBoardLogger(tmp_path, name="", version=""),
        max_epochs=1,
        log_every_n_steps=2,
        gradient_clip_val=1e-3,
    )
    fit.fit(tiny_module(), batches())
    logged = scalars(tmp_path)
    # 8 steps, every 2nd one written (Lightning counts from 0); the norm is the unclipped one.
    assert [step for step, _ in logged["train/grad_norm"]] == [1, 3, 5, 7]
    expected = [reference.norms[step] for step in (1, 3, 5, 7)]
    assert [value for _, value in logged["train/grad_norm"]] == pytest.approx(expected, rel=1e-5)
    assert min(expected) > 100 * 1e-3
    assert [step for step, _ in logged["train/images_per_sec"]] == [1, 3, 5, 7]
    assert all(value > 0 for _, value in logged["train/images_per_sec"])


def test_the_model_summary_shows_the_networks_forward_flops_compiled_or_not(capsys):
    module = tiny_module()
    forward = train_step_flops(module.net)["forward_per_image"]
    assert train_step_flops(torch.compile(module.net, backend="eager")) == train_step_flops(module.net)
    module = ClassifierModule(torch.compile(module.net, backend="eager"), module.optimizer_factory)
    fit = trainer([callbacks.NetworkSummary()], max_steps=1, limit_val_batches=0, enable_model_summary=True)
    fit.fit(module, batches())
    printed = capsys.readouterr().out
    assert f"Total FLOPs: {get_human_readable_count(int(forward))}" in printed and forward > 0


def test_a_compiled_network_says_it_is_compiling_and_how_long_each_first_step_waited(caplog):
    # torch.compile's "eager" backend: a compiled module in seconds, without inductor's code generation.
    eager = tiny_module()
    compiled = ClassifierModule(torch.compile(tiny_module().net, backend="eager"), eager.optimizer_factory)
    lines = {}
    for name, module in (("eager", eager), ("compiled", compiled)):
        caplog.clear()
        with caplog.at_level(logging.INFO, logger="seres"):
            fit = trainer([callbacks.CompileNotice()], max_epochs=2, num_sanity_val_steps=1)
            fit.fit(module, batches(), batches(n=16))
        lines[name] = [r.getMessage() for r in caplog.records if "compil" in r.getMessage()]
    assert lines["eager"] == []
    said = lines["compiled"]
    assert said[0].startswith("model.compile=true: compiling the network")
    assert re.fullmatch(r"compiled the network's validation step in \d+ s", said[1])
    assert re.fullmatch(r"compiled the network's training step in \d+ s", said[2])
    assert len(said) == 3  # once per fit, not once per epoch


def test_epoch_summary_writes_one_row_per_epoch_and_leaves_val_empty_where_none_ran(tmp_path, caplog):
    history = tmp_path / "epochs.csv"
    fit = trainer(
        [EpochSummary(history_csv=str(history))],
        logger=TensorBoardLogger(tmp_path, name="tb", version=""),
        max_epochs=3,
        check_val_every_n_epoch=2,
        num_sanity_val_steps=0,
    )
    with caplog.at_level("INFO", logger="seres"):
        fit.fit(tiny_module(), batches(), batches(seed=1))
    with open(history, newline="") as handle:
        rows = list(csv.DictReader(handle))
    assert [row["epoch"] for row in rows] == ["1", "2", "3"]
    assert [row["val_acc"] == "" for row in rows] == [True, False, True]
    assert float(rows[1]["val_acc"]) == pytest.approx(scalars(tmp_path / "tb")["val/acc"][0][1])
    assert float(rows[2]["train_loss"]) == pytest.approx(fit.callback_metrics["train/loss"].item())
    assert all(float(row["seconds"]) > 0 and row["lr"] == "0.05" for row in rows)
    assert len(scalars(tmp_path / "tb")["train/epoch_seconds"]) == 3
    assert sum("train loss" in message for message in caplog.messages) == 3


def test_test_figures_count_the_confusion_matrix_and_keep_the_most_confident_mistakes(tmp_path):
    torch.manual_seed(0)
    module, loader = tiny_module().eval(), batches(n=40, batch_size=8)
    x, y = loader.dataset.tensors
    with torch.no_grad():
        confidence, predicted = module.net(x).softmax(1).max(1)
    # Imported as callbacks.TestFigures: a class named Test* at module level would look like tests to pytest.
    figures = callbacks.TestFigures(output_dir=str(tmp_path / "out"), mistakes=4)
    test = trainer([figures], logger=TensorBoardLogger(tmp_path, name="tb", version=""))
    (results,) = test.test(module, loader, verbose=False)

    expected = torch.zeros(10, 10, dtype=torch.long)
    for true, guess in zip(y.tolist(), predicted.tolist(), strict=True):
        expected[true, guess] += 1
    saved = json.loads((tmp_path / "out" / "confusion.json").read_text())
    assert saved["matrix"] == expected.tolist() and saved["classes"] == list(CLASSES)
    for index, name in enumerate(CLASSES):
        share = expected[index, index].item() / max(expected[index].sum().item(), 1)
        assert results[f"test/acc_{name}"] == pytest.approx(share)
    wrong = confidence[predicted != y].sort(descending=True).values[:4]
    assert figures._wrong[0].tolist() == pytest.approx(wrong.tolist())
    assert (tmp_path / "out" / "mistakes.png").is_file()
    events = EventAccumulator(str(tmp_path / "tb"), size_guidance={"images": 0})
    events.Reload()
    assert set(events.Tags()["images"]) == {"test/confusion_matrix", "test/most_confident_mistakes"}


# (true class, predicted class) of every test image: several batches, a short last one, classes never seen.
KNOWN_PAIRS = (
    [(0, 0)] * 5 + [(0, 3)] * 2 + [(1, 1)] * 3 + [(2, 9)] + [(5, 5)] * 4 + [(9, 2)] * 2 + [(7, 7)] * 2
)


class KnownPredictions(L.LightningModule):
    """Predicts the class written into each image's first pixel, so every (true, predicted) pair is known.

    Under DDP it shards the images itself, each one to one process, as seres.data.CIFAR10DataModule does.
    """

    def __init__(self, batch_size: int = 4) -> None:
        super().__init__()
        self.batch_size = batch_size

    def test_step(self, batch, batch_idx) -> dict[str, torch.Tensor]:
        images, _ = batch
        return {"logits": 4.0 * F.one_hot(images[:, 0, 0, 0].long(), len(CLASSES)).float()}

    def test_dataloader(self) -> DataLoader:
        generator = torch.Generator().manual_seed(0)
        pairs = torch.tensor(KNOWN_PAIRS)[torch.randperm(len(KNOWN_PAIRS), generator=generator)]
        images = torch.rand(len(pairs), 3, 32, 32, generator=generator)
        images[:, 0, 0, 0] = pairs[:, 1].float()
        dataset = TensorDataset(images, pairs[:, 0])
        world = self.trainer.world_size
        sampler = UnrepeatedDistributedSampler(dataset, world, self.trainer.global_rank, shuffle=False)
        return DataLoader(dataset, batch_size=self.batch_size, sampler=sampler if world > 1 else None)


def known_confusion() -> list[list[int]]:
    matrix = [[0] * len(CLASSES) for _ in CLASSES]
    for true, predicted in KNOWN_PAIRS:
        matrix[true][predicted] += 1
    return matrix


def assert_counts_the_known_pairs(results: dict[str, float], out_dir) -> None:
    matrix = json.loads((out_dir / "confusion.json").read_text())["matrix"]
    assert matrix == known_confusion()
    assert sum(map(sum, matrix)) == len(KNOWN_PAIRS)  # every image exactly once
    for index, name in enumerate(CLASSES):
        right = sum(pair == (index, index) for pair in KNOWN_PAIRS)
        seen = sum(true == index for true, _ in KNOWN_PAIRS)
        assert results[f"test/acc_{name}"] == pytest.approx(right / max(seen, 1))
    assert (out_dir / "mistakes.png").is_file()


def test_test_figures_count_every_known_true_and_predicted_pair_once(tmp_path):
    figures = callbacks.TestFigures(output_dir=str(tmp_path / "out"), mistakes=4)
    (results,) = trainer([figures]).test(KnownPredictions(), verbose=False)
    assert_counts_the_known_pairs(results, tmp_path / "out")
    # 5 images are wrong, all with the same confidence: 4 of them are kept.
    confidence = torch.softmax(torch.tensor([4.0] + [0.0] * 9), dim=0)[0].item()
    score, _, true, predicted = figures._wrong
    assert score.tolist() == pytest.approx([confidence] * 4)
    assert set(zip(true.tolist(), predicted.tolist(), strict=True)) <= {(0, 3), (2, 9), (9, 2)}


@pytest.mark.slow
def test_test_figures_sum_the_counts_of_two_processes_that_split_the_images_unevenly(tmp_path):
    # 19 images over 2 processes (10 and 9): a count left out or counted twice would change the matrix.
    figures = callbacks.TestFigures(output_dir=str(tmp_path / "out"), mistakes=4)
    test = trainer([figures], devices=2, strategy="ddp_spawn", use_distributed_sampler=False)
    (results,) = test.test(KnownPredictions(), verbose=False)
    assert_counts_the_known_pairs(results, tmp_path / "out")


def test_progress_bar_shows_the_logged_images_per_second_and_the_loss_and_is_silent_when_disabled(tmp_path):
    shown = ProgressBar()
    fit = trainer([shown, TrainingCompute()], max_epochs=1, log_every_n_steps=1)
    module = tiny_module()
    fit.fit(module, batches())
    items = shown.get_metrics(fit, module)
    assert isinstance(items["loss"], float) and "v_num" not in items
    # One measure of speed: the bar shows the figure TrainingCompute logs, under a short name.
    logged = float(fit.progress_bar_metrics["train/images_per_sec"])
    assert items["img/s"] == f"{logged:.0f}" and logged > 0 and "train/images_per_sec" not in items

    quiet = ProgressBar(enabled=False)
    fit = trainer([quiet], max_epochs=1, log_every_n_steps=1)
    fit.fit(tiny_module(), batches())
    assert quiet.is_disabled and quiet.progress is None  # no rich display was ever started
    assert "img/s" not in quiet.get_metrics(fit, module)


@pytest.mark.parametrize(("target", "reached_first"), [(0.0, True), (1.01, False)])
def test_time_to_accuracy_and_training_compute_keep_counting_across_a_resume(target, reached_first, tmp_path):
    first, first_compute = callbacks.TimeToAccuracy(target=target), callbacks.TrainingCompute()
    fit = trainer([first_compute, first], max_epochs=1, enable_checkpointing=True, default_root_dir=tmp_path)
    fit.fit(tiny_module(), batches(), batches(16))
    checkpoint = tmp_path / "epoch1.ckpt"
    fit.save_checkpoint(checkpoint)

    resumed, compute = callbacks.TimeToAccuracy(target=target), callbacks.TrainingCompute()
    fit = trainer([compute, resumed], max_epochs=2, enable_checkpointing=True, default_root_dir=tmp_path)
    fit.fit(tiny_module(), batches(), batches(16), ckpt_path=checkpoint)
    # The second run starts from the first one's clock and adds its own epoch to it.
    assert resumed.train_seconds > first.train_seconds > 0
    # 64 images an epoch, both epochs counted, at the FLOPs of the network's own training step.
    assert compute.train_images == 2 * first_compute.train_images == 128
    assert compute.train_flops == 128 * train_step_flops(tiny_module().net)["train_step_per_image"]
    if reached_first:
        assert (resumed.epoch_at_target, resumed.seconds_to_target) == (1, first.seconds_to_target)
        assert resumed.flops_to_target == first_compute.train_flops
    else:
        assert resumed.seconds_to_target is None and resumed.epoch_at_target is None
        assert resumed.flops_to_target is None
