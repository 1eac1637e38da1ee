"""TestFigures: the test set's confusion matrix, per-class accuracy and most confidently wrong images."""

from pathlib import Path
from typing import Any

import lightning as L
import numpy as np
import torch
from lightning.pytorch.loggers import TensorBoardLogger
from matplotlib.figure import Figure
from torch import Tensor
from torchmetrics.classification import MulticlassAccuracy, MulticlassConfusionMatrix

from seres.data import CLASSES
from seres.records.report import (
    CONFUSION_FILE,
    MISTAKES_FILE,
    confusion_figure,
    mistakes_figure,
    save_figure,
    write_confusion,
)

CONFUSION_TAG = "test/confusion_matrix"
MISTAKES_TAG = "test/most_confident_mistakes"


class TestFigures(L.Callback):
    """At the end of testing: confusion matrix, per-class accuracy and the most confidently wrong images.

    Logs `test/acc_<class>` (so trainer.test returns them too) and sends both figures to every TensorBoard
    logger; with `output_dir`, also writes confusion.json and mistakes.png there. Needs `test_step` to return
    `{"logits": ...}` (seres.module.ClassifierModule does). Works across processes: torchmetrics sums the
    counts over all of them, and the mistakes are gathered before rank 0 draws.
    """

    def __init__(self, output_dir: str | None = None, mistakes: int = 16) -> None:
        self.output_dir = Path(output_dir) if output_dir else None
        self.mistakes = mistakes
        self.classes = CLASSES
        n = len(self.classes)
        # Both count on the device and reduce over processes only in compute(); validate_args=False skips
        # their input checks (a torch.unique over each batch's labels and predictions).
        self._confusion = MulticlassConfusionMatrix(num_classes=n, validate_args=False)
        self._class_accuracy = MulticlassAccuracy(num_classes=n, average=None, validate_args=False)
        # (confidence, image, true label, prediction) of the most confident mistakes so far; right answers
        # and the initial padding carry confidence -1, so the tensors keep one size on every process.
        self._wrong: tuple[Tensor, ...] | None = None

    def on_test_epoch_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        for metric in (self._confusion, self._class_accuracy):
            metric.reset()
            metric.to(pl_module.device)
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
        self._confusion.update(predicted, labels)
        self._class_accuracy.update(predicted, labels)
        self._keep_confident_mistakes(images, labels, confidence, predicted)

    def _keep_confident_mistakes(
        self, images: Tensor, labels: Tensor, confidence: Tensor, predicted: Tensor
    ) -> None:
        score = torch.where(predicted != labels, confidence, -1.0)
        top = score.topk(min(self.mistakes, len(score))).indices
        candidates = (score[top], images[top].float(), labels[top], predicted[top])
        kept = self._wrong if self._wrong is not None else self._no_mistakes(score, images, labels)
        merged = [torch.cat(pair) for pair in zip(kept, candidates, strict=True)]
        keep = merged[0].topk(self.mistakes).indices
        self._wrong = tuple(t[keep] for t in merged)

    def _no_mistakes(self, score: Tensor, images: Tensor, labels: Tensor) -> tuple[Tensor, ...]:
        k = self.mistakes
        no_images = images.new_zeros((k, *images.shape[1:]), dtype=torch.float)
        return score.new_full((k,), -1.0), no_images, labels.new_zeros(k), labels.new_zeros(k)

    def on_test_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if self._wrong is None:  # no test batch ran
            return
        matrix = self._confusion.compute()
        for name, accuracy in zip(self.classes, self._class_accuracy.compute(), strict=True):
            # The same on every process (torchmetrics has reduced it); sync_dist spares Lightning's DDP
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
        figures = {CONFUSION_TAG: confusion_figure(matrix, self.classes)}
        order = score.argsort(descending=True)[: self.mistakes]
        order = order[score[order] >= 0]  # the padding and right answers are no mistakes
        if len(order):
            shown = _to_unit_range(trainer, images[order]).numpy()
            figures[MISTAKES_TAG] = mistakes_figure(
                shown, labels[order].tolist(), predicted[order].tolist(), score[order].tolist(), self.classes
            )
        _send_to_tensorboard(trainer, figures)
        if self.output_dir is not None:
            self._write_files(matrix, figures.get(MISTAKES_TAG))

    def _write_files(self, matrix: np.ndarray, mistakes: Figure | None) -> None:
        self.output_dir.mkdir(parents=True, exist_ok=True)
        write_confusion(matrix, self.classes, self.output_dir / CONFUSION_FILE)
        if mistakes is not None:
            save_figure(mistakes, self.output_dir / MISTAKES_FILE)


def _send_to_tensorboard(trainer: L.Trainer, figures: dict[str, Figure]) -> None:
    for logger in trainer.loggers:
        if isinstance(logger, TensorBoardLogger):
            for tag, figure in figures.items():
                logger.experiment.add_figure(tag, figure, global_step=trainer.global_step, close=False)


def _to_unit_range(trainer: L.Trainer, images: Tensor) -> Tensor:
    """Undo the data module's normalisation; without one, stretch each image to [0, 1]."""
    datamodule = getattr(trainer, "datamodule", None)
    mean, std = getattr(datamodule, "mean", None), getattr(datamodule, "std", None)
    if mean is not None and std is not None:
        return images * torch.tensor(std).view(1, -1, 1, 1) + torch.tensor(mean).view(1, -1, 1, 1)
    low = images.amin(dim=(1, 2, 3), keepdim=True)
    high = images.amax(dim=(1, 2, 3), keepdim=True)
    return (images - low) / (high - low).clamp(min=1e-6)
