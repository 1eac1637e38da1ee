"""Lightning callbacks that the configs in conf/callbacks/ switch on.

None of them adds a host-device synchronisation per training step: values computed on the device are
logged at the trainer's `log_every_n_steps` cadence only, and time is measured with host timestamps.
"""

import csv
import logging
import sys
import time
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import lightning as L
import numpy as np
import torch
from lightning.pytorch.callbacks import RichProgressBar, WeightAveraging
from lightning.pytorch.loggers import TensorBoardLogger
from lightning.pytorch.utilities import rank_zero_only
from rich.file_proxy import FileProxy
from torch import Tensor, nn
from torch.nn import functional as F
from torch.optim.swa_utils import get_ema_multi_avg_fn

from seres.data import CLASSES
from seres.report import (
    CONFUSION_FILE,
    HISTORY_COLUMNS,
    MISTAKES_FILE,
    confusion_figure,
    mistakes_figure,
    save_figure,
    write_confusion,
)

log = logging.getLogger("seres")


def _percent(metrics: dict, key: str) -> str:
    value = metrics.get(key)
    return "   -  " if value is None else f"{100 * float(value):5.2f}%"


def _number(metrics: dict, key: str) -> str:
    value = metrics.get(key)
    return "  -   " if value is None else f"{float(value):.4f}"


def is_logging_step(trainer: L.Trainer) -> bool:
    """Whether Lightning writes step metrics after the batch about to run (call from on_train_batch_start)."""
    every = trainer.log_every_n_steps
    return every > 0 and (trainer.global_step + 1) % every == 0


def gradient_norm(parameters: Iterable[nn.Parameter]) -> Tensor:
    """The L2 norm of all gradients together, as `clip_grad_norm_` measures it; stays on the device."""
    norms = [p.grad.detach().float().norm() for p in parameters if p.grad is not None]
    return torch.linalg.vector_norm(torch.stack(norms)) if norms else torch.zeros(())


class EpochSummary(L.Callback):
    """One line per epoch (train and val loss/accuracy, learning rate, epoch time) from rank 0.

    Also logs the epoch time as `train/epoch_seconds`, and with `history_csv` appends the line's numbers as a
    row of that file (columns in seres.report.HISTORY_COLUMNS; val cells empty in epochs without validation).
    """

    def __init__(self, history_csv: str | None = None) -> None:
        self.history_csv = Path(history_csv) if history_csv else None
        self._epoch_start = 0.0
        self._validated = False

    @rank_zero_only
    def on_train_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        # Keep only the rows of epochs the (restored) run has completed: a fresh run into an old directory
        # starts an empty file, a resumed one drops the row of an epoch that was cut short.
        if self.history_csv is None or not self.history_csv.is_file():
            return
        with open(self.history_csv, newline="") as handle:
            rows = list(csv.reader(handle))
        kept = [row for row in rows[1:] if row and int(row[0]) <= trainer.current_epoch]
        with open(self.history_csv, "w", newline="") as handle:
            csv.writer(handle).writerows(rows[:1] + kept if kept else [])

    def on_train_epoch_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._epoch_start = time.perf_counter()
        self._validated = False

    def on_validation_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._validated = self._validated or not trainer.sanity_checking

    def on_train_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        # Validation has already run for this epoch, so both stages' epoch metrics are available here.
        seconds = time.perf_counter() - self._epoch_start
        # The slowest process sets the pace, hence the maximum over processes.
        pl_module.log("train/epoch_seconds", seconds, sync_dist=True, reduce_fx="max")
        self._report(trainer, seconds)

    @rank_zero_only
    def _report(self, trainer: L.Trainer, seconds: float) -> None:
        metrics = trainer.callback_metrics
        lr = trainer.optimizers[0].param_groups[0]["lr"] if trainer.optimizers else float("nan")
        log.info(
            f"epoch {trainer.current_epoch + 1:>3}/{trainer.max_epochs} | "
            f"train loss {_number(metrics, 'train/loss')} acc {_percent(metrics, 'train/acc')} | "
            f"val loss {_number(metrics, 'val/loss')} acc {_percent(metrics, 'val/acc')} | "
            f"lr {lr:.5f} | {seconds:.1f}s"
        )
        if self.history_csv is not None:
            self._append_row(metrics, lr, seconds, trainer.current_epoch + 1)

    def _append_row(self, metrics: dict[str, Any], lr: float, seconds: float, epoch: int) -> None:
        def value(key: str, stage: str) -> float | str:
            fresh = stage == "train" or self._validated
            return float(metrics[key]) if fresh and key in metrics else ""

        row = [epoch, value("train/loss", "train"), value("train/acc", "train")]
        row += [value("val/loss", "val"), value("val/acc", "val"), lr, round(seconds, 3)]
        new_file = not self.history_csv.is_file() or self.history_csv.stat().st_size == 0
        with open(self.history_csv, "a", newline="") as handle:
            writer = csv.writer(handle)
            if new_file:
                writer.writerow(HISTORY_COLUMNS)
            writer.writerow(row)


class TrainingMonitor(L.Callback):
    """Every `log_every_n_steps` steps: the gradient norm before clipping and the training throughput.

    Logs `train/grad_norm` (computed only on those steps) and `train/images_per_sec` (all processes together,
    over the steps since the last value; it includes data loading, but never validation).
    """

    def __init__(self) -> None:
        self._logging_step = False
        self._images = 0
        self._window_start = 0.0

    def on_train_epoch_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._images, self._window_start = 0, time.perf_counter()

    def on_train_batch_start(
        self, trainer: L.Trainer, pl_module: L.LightningModule, batch: Any, batch_idx: int
    ) -> None:
        self._logging_step = is_logging_step(trainer)

    def on_before_optimizer_step(
        self, trainer: L.Trainer, pl_module: L.LightningModule, optimizer: torch.optim.Optimizer
    ) -> None:
        # Lightning clips after this hook (and unscales mixed-precision gradients before it).
        if self._logging_step:
            pl_module.log(
                "train/grad_norm", gradient_norm(pl_module.parameters()), on_step=True, on_epoch=False
            )

    def on_train_batch_end(
        self, trainer: L.Trainer, pl_module: L.LightningModule, outputs: Any, batch: Any, batch_idx: int
    ) -> None:
        self._images += len(batch[0])
        if self._logging_step:
            now = time.perf_counter()
            rate = self._images * trainer.world_size / max(now - self._window_start, 1e-9)
            pl_module.log("train/images_per_sec", rate, on_step=True, on_epoch=False)
            self._images, self._window_start = 0, now


class TestFigures(L.Callback):
    """At the end of testing: confusion matrix, per-class accuracy and the most confidently wrong images.

    Logs `test/acc_<class>` (so trainer.test returns them too) and sends both figures to every TensorBoard
    logger; with `output_dir`, also writes confusion.json and mistakes.png there. Needs `test_step` to return
    `{"logits": ...}` (seres.module.ClassifierModule does). Works across processes: counts are summed and
    the mistakes gathered before rank 0 draws.
    """

    def __init__(self, output_dir: str | None = None, mistakes: int = 16) -> None:
        self.output_dir = Path(output_dir) if output_dir else None
        self.mistakes = mistakes
        self.classes = CLASSES
        self._confusion: Tensor | None = None
        # (confidence, image, true label, prediction) of the most confident mistakes so far; right answers
        # and the initial padding carry confidence -1, so the tensors keep one size on every process.
        self._wrong: tuple[Tensor, ...] | None = None

    def on_test_epoch_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        n = len(self.classes)
        self._confusion = torch.zeros(n * n, dtype=torch.long, device=pl_module.device)
        self._wrong = None

    def on_test_batch_end(
        self,
        trainer: L.Trainer,
        pl_module: L.LightningModule,
        outputs: Any,
        batch: Any,
        batch_idx: int,
        dataloader_idx: int = 0,
    ) -> None:
        images, labels = batch
        confidence, predicted = outputs["logits"].float().softmax(dim=1).max(dim=1)
        n = len(self.classes)
        # A one-hot sum rather than bincount: deterministic on CUDA, and cheap for 10 classes.
        self._confusion += F.one_hot(labels * n + predicted, n * n).sum(dim=0)
        score = torch.where(predicted != labels, confidence, -1.0)
        top = score.topk(min(self.mistakes, len(score))).indices
        batch_items = (score[top], images[top].float(), labels[top], predicted[top])
        if self._wrong is None:
            k = self.mistakes
            self._wrong = (
                score.new_full((k,), -1.0),
                images.new_zeros((k, *images.shape[1:]), dtype=torch.float),
            )
            self._wrong += (labels.new_zeros(k), labels.new_zeros(k))
        merged = [torch.cat(pair) for pair in zip(self._wrong, batch_items, strict=True)]
        keep = merged[0].topk(self.mistakes).indices
        self._wrong = tuple(t[keep] for t in merged)

    def on_test_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if self._wrong is None:  # no test batch ran
            return
        n = len(self.classes)
        matrix = trainer.strategy.reduce(self._confusion, reduce_op="sum").view(n, n)
        for index, name in enumerate(self.classes):
            accuracy = matrix[index, index].float() / matrix[index].sum().clamp(min=1)
            # The same on every process (the counts are already summed); sync_dist spares Lightning's DDP
            # warning at the cost of one small all-reduce per class, once per test.
            pl_module.log(f"test/acc_{name}", accuracy, sync_dist=True)
        # all_gather adds a leading process dimension only when there are several processes.
        gathered = [pl_module.all_gather(t).reshape(-1, *t.shape[1:]) for t in self._wrong]
        if trainer.is_global_zero:
            self._publish(trainer, matrix.cpu().numpy(), *(t.cpu() for t in gathered))

    def _publish(
        self,
        trainer: L.Trainer,
        matrix: np.ndarray,
        score: Tensor,
        images: Tensor,
        labels: Tensor,
        predicted: Tensor,
    ) -> None:
        order = score.argsort(descending=True)[: self.mistakes]
        order = order[score[order] >= 0]
        figures = {"test/confusion_matrix": confusion_figure(matrix, self.classes)}
        if len(order):
            shown = self._to_unit_range(trainer, images[order])
            figures["test/most_confident_mistakes"] = mistakes_figure(
                shown.numpy(),
                labels[order].tolist(),
                predicted[order].tolist(),
                score[order].tolist(),
                self.classes,
            )
        for logger in trainer.loggers:
            if isinstance(logger, TensorBoardLogger):
                for tag, figure in figures.items():
                    logger.experiment.add_figure(tag, figure, global_step=trainer.global_step, close=False)
        if self.output_dir is not None:
            self.output_dir.mkdir(parents=True, exist_ok=True)
            write_confusion(matrix, self.classes, self.output_dir / CONFUSION_FILE)
            if "test/most_confident_mistakes" in figures:
                save_figure(figures["test/most_confident_mistakes"], self.output_dir / MISTAKES_FILE)

    @staticmethod
    def _to_unit_range(trainer: L.Trainer, images: Tensor) -> Tensor:
        """Undo the data module's normalisation; without one, stretch each image to [0, 1]."""
        datamodule = getattr(trainer, "datamodule", None)
        mean, std = getattr(datamodule, "mean", None), getattr(datamodule, "std", None)
        if mean is not None and std is not None:
            return images * torch.tensor(std).view(1, -1, 1, 1) + torch.tensor(mean).view(1, -1, 1, 1)
        low = images.amin(dim=(1, 2, 3), keepdim=True)
        high = images.amax(dim=(1, 2, 3), keepdim=True)
        return (images - low) / (high - low).clamp(min=1e-6)


class ProgressBar(RichProgressBar):
    """Lightning's rich progress bar, plus training images/s and the latest training loss.

    `enabled=False` (config `progress=false`) shows nothing, for logs; EpochSummary's line stays either way.
    The loss is read at the `log_every_n_steps` cadence only, so the bar adds no per-step synchronisation.
    """

    def __init__(self, enabled: bool = True, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        if not enabled:
            self.disable()
        self._rerouted: dict[logging.StreamHandler, Any] = {}
        self._images = 0
        self._epoch_start = 0.0
        self._rate: float | None = None
        self._loss: float | None = None
        self._logging_step = False

    def _route_console_logs_through_rich(self) -> None:
        # In a terminal, rich's live display replaces sys.stdout/stderr with proxies that print above the
        # bar; logging handlers keep the real streams, so the line per epoch would garble the display.
        for handler in logging.getLogger().handlers:
            if type(handler) is not logging.StreamHandler or handler in self._rerouted:
                continue
            for proxy in (sys.stdout, sys.stderr):
                if isinstance(proxy, FileProxy) and handler.stream is proxy.rich_proxied_file:
                    self._rerouted[handler] = handler.setStream(proxy)

    def _restore_console_logs(self) -> None:
        for handler, stream in self._rerouted.items():
            handler.setStream(stream)
        self._rerouted.clear()

    def on_sanity_check_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        super().on_sanity_check_start(trainer, pl_module)
        self._route_console_logs_through_rich()

    def on_train_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        super().on_train_start(trainer, pl_module)
        self._route_console_logs_through_rich()

    def on_test_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        super().on_test_start(trainer, pl_module)
        self._route_console_logs_through_rich()

    def teardown(self, trainer: L.Trainer, pl_module: L.LightningModule, stage: str) -> None:
        super().teardown(trainer, pl_module, stage)
        self._restore_console_logs()

    def on_exception(
        self, trainer: L.Trainer, pl_module: L.LightningModule, exception: BaseException
    ) -> None:
        super().on_exception(trainer, pl_module, exception)
        self._restore_console_logs()

    def on_train_epoch_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        super().on_train_epoch_start(trainer, pl_module)
        self._images, self._epoch_start = 0, time.perf_counter()

    def on_train_batch_start(
        self, trainer: L.Trainer, pl_module: L.LightningModule, batch: Any, batch_idx: int
    ) -> None:
        self._logging_step = is_logging_step(trainer)

    def on_train_batch_end(
        self, trainer: L.Trainer, pl_module: L.LightningModule, outputs: Any, batch: Any, batch_idx: int
    ) -> None:
        if self.is_enabled:
            # Measured here, so that the validation at the end of the epoch does not lower the figure.
            self._images += len(batch[0]) * trainer.world_size
            self._rate = self._images / max(time.perf_counter() - self._epoch_start, 1e-9)
            if self._logging_step and isinstance(outputs, dict) and "loss" in outputs:
                self._loss = float(outputs["loss"])
        super().on_train_batch_end(trainer, pl_module, outputs, batch, batch_idx)

    def get_metrics(self, trainer: L.Trainer, pl_module: L.LightningModule) -> dict[str, Any]:
        items = super().get_metrics(trainer, pl_module)
        items.pop("v_num", None)  # the logger's version: always "" here
        if self._loss is not None:
            items["loss"] = self._loss
        if self._rate is not None:
            items["img/s"] = f"{self._rate:.0f}"
        return items


class TimeToAccuracy(L.Callback):
    """Training wall time until validation accuracy first reaches `target`, for time-to-accuracy recipes.

    Counts only training (validation is excluded) and starts after the first training step, so one-time
    costs (torch.compile, cuDNN autotuning, the first CUDA allocations) are left out; the device is
    synchronised at the two ends of each epoch's training, never per step. `run_metrics()` goes to
    metrics.json.
    """

    def __init__(self, target: float = 0.94) -> None:
        self.target = target
        self.train_seconds = 0.0
        self.seconds_to_target: float | None = None
        self.epoch_at_target: int | None = None
        self._started: float | None = None

    @staticmethod
    def _now(pl_module: L.LightningModule) -> float:
        if pl_module.device.type == "cuda":
            torch.cuda.synchronize(pl_module.device)
        return time.perf_counter()

    def on_train_batch_end(self, trainer: L.Trainer, pl_module: L.LightningModule, *args: Any) -> None:
        if self._started is None and trainer.current_epoch == 0 and trainer.global_step >= 1:
            self._started = self._now(pl_module)

    def _stop_clock(self, pl_module: L.LightningModule) -> None:
        if self._started is not None:
            self.train_seconds += self._now(pl_module) - self._started
            self._started = None

    def on_validation_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if not trainer.sanity_checking:
            self._stop_clock(pl_module)

    def on_train_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._stop_clock(pl_module)  # epochs without validation

    def on_train_epoch_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if trainer.current_epoch > 0:
            self._started = self._now(pl_module)

    def on_validation_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        accuracy = trainer.callback_metrics.get("val/acc")
        reached = accuracy is not None and float(accuracy) >= self.target
        if reached and self.seconds_to_target is None and not trainer.sanity_checking:
            self.seconds_to_target = round(self.train_seconds, 2)
            self.epoch_at_target = trainer.current_epoch + 1

    def state_dict(self) -> dict[str, Any]:
        # Kept in checkpoints, so a resumed run keeps counting from where it stopped.
        return {k: getattr(self, k) for k in ("train_seconds", "seconds_to_target", "epoch_at_target")}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        self.__dict__.update(state_dict)

    def run_metrics(self) -> dict[str, Any]:
        return {
            "target_val_acc": self.target,
            "seconds_to_target": self.seconds_to_target,
            "epoch_at_target": self.epoch_at_target,
            "train_seconds": round(self.train_seconds, 2),
        }


class EMA(WeightAveraging):
    """Exponential moving average of the weights: Lightning's WeightAveraging with torch's batched update.

    Validation, checkpoints (their `state_dict`), best_model.pth and the final test use the averaged weights,
    as with Lightning's EMAWeightAveraging. That one updates tensor by tensor, hundreds of small kernels per
    update; torch's foreach EMA needs a few. Each update also makes the host wait for the device twice
    (torch's AveragedModel reads its counter), so `every_n_steps` > 1 keeps a fast GPU fed.
    """

    def __init__(self, decay: float = 0.999, every_n_steps: int = 1, use_buffers: bool = True) -> None:
        if not 0.0 < decay < 1.0 or every_n_steps < 1:
            raise ValueError(
                f"EMA(decay={decay}, every_n_steps={every_n_steps}): decay must be in (0, 1) and "
                "every_n_steps >= 1, e.g. decay=0.999 every_n_steps=1"
            )
        super().__init__(use_buffers=use_buffers, multi_avg_fn=get_ema_multi_avg_fn(decay))
        self.every_n_steps = every_n_steps

    def should_update(self, step_idx: int | None = None, epoch_idx: int | None = None) -> bool:
        return step_idx is not None and step_idx % self.every_n_steps == 0


class NonFiniteLossError(RuntimeError):
    """The training loss became NaN or infinite."""


class StopOnNonFiniteLoss(L.Callback):
    """Stops training once the loss is NaN or infinite, before a checkpoint can store broken weights.

    The test runs on the device every step; the host reads its result only every `log_every_n_steps`
    steps and before each validation (where checkpoints are written), so it adds no per-step sync.
    """

    def __init__(self) -> None:
        self._first_bad_step: Tensor | None = None
        self._logging_step = False

    def on_train_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._first_bad_step = torch.full((), -1, dtype=torch.long, device=pl_module.device)

    def on_train_batch_start(
        self, trainer: L.Trainer, pl_module: L.LightningModule, batch: Any, batch_idx: int
    ) -> None:
        # Read on the steps Lightning logs anyway, where it waits for the device already.
        self._logging_step = is_logging_step(trainer)

    def on_train_batch_end(
        self, trainer: L.Trainer, pl_module: L.LightningModule, outputs: Any, batch: Any, batch_idx: int
    ) -> None:
        loss = outputs["loss"] if isinstance(outputs, dict) else outputs
        if loss is None or self._first_bad_step is None:
            return
        newly_bad = ~torch.isfinite(loss.detach()) & (self._first_bad_step < 0)
        self._first_bad_step = torch.where(newly_bad, trainer.global_step, self._first_bad_step)
        if self._logging_step:
            self._check(trainer)

    def on_validation_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if not trainer.sanity_checking:
            self._check(trainer)

    def on_train_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._check(trainer)

    def _check(self, trainer: L.Trainer) -> None:
        step = int(self._first_bad_step) if self._first_bad_step is not None else -1
        if step < 0:
            return
        lr = trainer.optimizers[0].param_groups[0]["lr"]
        last = trainer.checkpoint_callback.last_model_path if trainer.checkpoint_callback else ""
        kept = f"the last good checkpoint is {last}" if last else "no checkpoint had been written yet"
        raise NonFiniteLossError(
            f"the training loss became non-finite at optimizer step {step} "
            f"(epoch {trainer.current_epoch + 1}); training stopped and {kept}. Try a lower learning rate "
            f"(optimizer.lr, now {lr:g}), gradient clipping (trainer.gradient_clip_val=1.0) or full "
            f"precision (trainer.precision=32-true)."
        )
