"""The LightningModule: loss, metrics and the optimizer/scheduler wiring around a plain network."""

import math
from collections.abc import Callable, Iterable, Sequence
from typing import Any

import lightning as L
import torch.nn.functional as F
from torch import Tensor, nn
from torch.optim import Optimizer
from torch.optim.lr_scheduler import LambdaLR
from torchmetrics import MaxMetric, MeanMetric
from torchmetrics.classification import MulticlassAccuracy

from seres.data.batch_mix import BatchMix
from seres.optim.sam import SAM

OptimizerFactory = Callable[[Iterable[nn.Parameter]], Optimizer]
# Called as factory(optimizer, steps_per_epoch=..., max_epochs=...); see cosine_schedule and step_schedule.
SchedulerFactory = Callable[..., LambdaLR]


def cosine_schedule(
    optimizer: Optimizer,
    steps_per_epoch: int,
    max_epochs: int,
    warmup_epochs: float = 0.0,
    min_lr_ratio: float = 0.0,
) -> LambdaLR:
    """Linear warm-up, then cosine decay to `min_lr_ratio` x the base rate at the end of training.

    Stepped every optimizer step (not every epoch) so short runs get a smooth decay too.
    """
    total = max(1, steps_per_epoch * max_epochs)
    warmup = round(warmup_epochs * steps_per_epoch)

    def factor(step: int) -> float:
        if step < warmup:
            return (step + 1) / warmup
        progress = min(1.0, (step - warmup) / max(1, total - warmup))
        return min_lr_ratio + (1.0 - min_lr_ratio) * 0.5 * (1.0 + math.cos(math.pi * progress))

    return LambdaLR(optimizer, factor)


def triangular_schedule(
    optimizer: Optimizer,
    steps_per_epoch: int,
    max_epochs: int,
    warmup_epochs: float = 0.0,
    start_ratio: float = 0.0,
    end_ratio: float = 0.0,
) -> LambdaLR:
    """Linear from `start_ratio` x the base rate up to it over the warm-up, then linear down to `end_ratio` x.

    The one-cycle shape of the fastest CIFAR-10 schedules (Page's ResNet-9, airbench), stepped every step.
    """
    total = max(1, steps_per_epoch * max_epochs)
    warmup = round(warmup_epochs * steps_per_epoch)

    def factor(step: int) -> float:
        if step < warmup:
            return start_ratio + (1.0 - start_ratio) * (step + 1) / warmup
        progress = min(1.0, (step - warmup) / max(1, total - warmup))
        return 1.0 + (end_ratio - 1.0) * progress

    return LambdaLR(optimizer, factor)


def step_schedule(
    optimizer: Optimizer,
    steps_per_epoch: int,
    max_epochs: int,
    milestones: Sequence[float] = (0.5, 0.75),
    gamma: float = 0.1,
) -> LambdaLR:
    """Multiply the rate by `gamma` at each milestone, given as a fraction of `max_epochs`."""
    boundaries = sorted(round(m * max_epochs) * steps_per_epoch for m in milestones)

    def factor(step: int) -> float:
        return gamma ** sum(step >= b for b in boundaries)

    return LambdaLR(optimizer, factor)


def parameter_groups(
    net: nn.Module, decay_norm_and_bias: bool = True, norm_bias_lr_scale: float = 1.0
) -> list[dict[str, Any]]:
    """The trainable parameters of `net` as optimizer groups, named for the learning-rate monitor.

    With the defaults, one group of every trainable parameter (as `net.parameters()`, frozen ones left
    out). `decay_norm_and_bias=False` puts BatchNorm scales and shifts and every bias in a group without
    weight decay (only convolution and linear weights decay). `norm_bias_lr_scale` multiplies the learning
    rate of BatchNorm shifts and divides their weight decay (`scale_group_lrs` applies it once the optimizer
    exists), so that their decay per step, lr x weight decay, stays that of the other parameters.
    """
    trainable = [parameter for parameter in net.parameters() if parameter.requires_grad]
    if decay_norm_and_bias and norm_bias_lr_scale == 1.0:
        return [{"params": trainable}]
    decayed, undecayed, norm_shifts = [], [], []
    for module in net.modules():
        is_norm = isinstance(module, nn.modules.batchnorm._BatchNorm)
        for name, parameter in module.named_parameters(recurse=False):
            if not parameter.requires_grad:
                continue
            if is_norm and name == "bias":
                norm_shifts.append(parameter)
            elif (is_norm or name == "bias") and not decay_norm_and_bias:
                undecayed.append(parameter)
            else:
                decayed.append(parameter)
    shifts_decay = {} if decay_norm_and_bias else {"weight_decay": 0.0}
    groups = [
        {"name": "decayed", "params": decayed},
        {"name": "no_decay", "params": undecayed, "weight_decay": 0.0},
        {"name": "norm_shifts", "params": norm_shifts, "lr_scale": norm_bias_lr_scale, **shifts_decay},
    ]
    return [group for group in groups if group["params"]]


def scale_group_lrs(optimizer: Optimizer) -> None:
    """Apply each group's `lr_scale` (from parameter_groups): lr times it, weight decay divided by it."""
    for group in optimizer.param_groups:
        scale = group.get("lr_scale", 1.0)
        group["lr"] *= scale
        if "weight_decay" in group:
            group["weight_decay"] /= scale


def tta_logits(net: nn.Module, x: Tensor, translate: int = 0) -> Tensor:
    """Test-time augmentation of (N, 3, H, W) images: the mean logits of each image and its mirror image.

    With `translate` px, airbench's multi-crop: half the weight on that mean, half on the same mean for two
    copies shifted by `translate` px, one up and left, one down and right (reflect-padded borders).
    """
    mirrored = (net(x) + net(x.flip(-1))) / 2
    if translate == 0:
        return mirrored
    height, width = x.shape[-2:]
    padded = F.pad(x, (translate,) * 4, mode="reflect")
    far = 2 * translate
    shifted = (padded[..., :height, :width], padded[..., far : far + height, far : far + width])
    translated = sum((net(view) + net(view.flip(-1))) / 2 for view in shifted) / 2
    return (mirrored + translated) / 2


def network_weights(state_dict: dict[str, Tensor]) -> dict[str, Tensor]:
    """The plain network's state_dict out of a ClassifierModule's (a Lightning checkpoint's `state_dict`).

    Keeps the `net.` entries without that prefix; a compiled network also nests them under `_orig_mod.`.
    """
    prefix = "net."
    return {
        k.removeprefix(prefix).removeprefix("_orig_mod."): v
        for k, v in state_dict.items()
        if k.startswith(prefix)
    }


class ClassifierModule(L.LightningModule):
    """Trains `net` with cross-entropy; logs loss and accuracy per stage under `train/`, `val/`, `test/`.

    `optimizer` is called with the parameters, `scheduler` (optional) with the optimizer and the run's
    length; both come from Hydra as partials (`_partial_: true`), and evaluation needs neither. `config` is
    the run's resolved config, kept in the checkpoint so a checkpoint alone says how it was made.
    `tta=True` evaluates (val and test) on the mean logits of each image and its horizontal mirror, and
    `tta_translate` > 0 adds shifted copies of both (`tta_logits`).
    `param_groups` holds `parameter_groups`' keyword arguments (how BatchNorm parameters and biases train).
    `mix` holds BatchMix's keyword arguments: MixUp or CutMix of training batches, soft targets in the loss,
    the training accuracy counted on each image's dominant label; validation and test see plain batches.
    `sam_rho` > 0 steps with sharpness-aware minimisation around the optimizer (seres/optim/sam.py): a second
    forward-backward pass of the same (mixed) batch, which leaves the metrics and BatchNorm statistics alone.
    """

    def __init__(
        self,
        net: nn.Module,
        optimizer: OptimizerFactory | None = None,
        scheduler: SchedulerFactory | None = None,
        label_smoothing: float = 0.0,
        num_classes: int = 10,
        config: dict[str, Any] | None = None,
        tta: bool = False,
        tta_translate: int = 0,
        param_groups: dict[str, Any] | None = None,
        mix: dict[str, Any] | None = None,
        sam_rho: float = 0.0,
    ) -> None:
        super().__init__()
        # Partials and the network are rebuilt from `config`, so only plain values go into the checkpoint.
        self.save_hyperparameters(ignore=["net", "optimizer", "scheduler"], logger=False)
        self.net = net
        self.optimizer_factory = optimizer
        self.scheduler_factory = scheduler
        self.criterion = nn.CrossEntropyLoss(label_smoothing=label_smoothing)
        # Metrics accumulate on the device; they are reduced across ranks only when computed. Both skip
        # torchmetrics' input checks (a NaN scan; torch.unique on the targets), each a host sync every step;
        # a NaN loss then shows as a NaN mean.
        for stage in ("train", "val", "test"):
            setattr(self, f"{stage}_loss", MeanMetric(nan_strategy="disable"))
            accuracy = MulticlassAccuracy(num_classes=num_classes, average="micro", validate_args=False)
            setattr(self, f"{stage}_acc", accuracy)
        self.val_acc_best = MaxMetric()
        # Kept in checkpoints so a resumed run remembers its best validation accuracy.
        self.val_acc_best.persistent(True)
        self.tta = tta
        self.tta_translate = tta_translate
        self.param_groups = dict(param_groups or {})
        self.batch_mix = BatchMix(**(mix or {}), num_classes=num_classes)
        self.sam_rho = sam_rho
        self.sam: SAM | None = None  # the optimizer, once configured with sam_rho > 0
        self.sam_batch: tuple[Tensor, Tensor] | None = None  # this step's (images, targets), for SAM

    @property
    def passes_per_step(self) -> int:
        """Forward-backward passes of each training batch: SAM takes two."""
        return 2 if self.sam_rho > 0 else 1

    def forward(self, x: Tensor) -> Tensor:
        return self.net(x)

    def _shared_step(self, x: Tensor, targets: Tensor, y: Tensor, stage: str) -> tuple[Tensor, Tensor]:
        """Loss against `targets` (soft for mixed images), metrics against the labels `y`."""
        # Training always sees the augmented image alone; only evaluation averages over its views.
        averaged = self.tta and stage != "train"
        logits = tta_logits(self.net, x, self.tta_translate) if averaged else self(x)
        loss = self.criterion(logits, targets)
        loss_metric, acc_metric = getattr(self, f"{stage}_loss"), getattr(self, f"{stage}_acc")
        # The batch mean once per image: a per-image mean even for a short last batch, without copying a
        # weight to the device (with nan_strategy="disable", torchmetrics would also drop a given weight).
        loss_metric.update(loss.detach().expand(y.numel()))
        acc_metric.update(logits.detach(), y)
        self.log(f"{stage}/loss", loss_metric, on_step=False, on_epoch=True, prog_bar=stage != "test")
        self.log(f"{stage}/acc", acc_metric, on_step=False, on_epoch=True, prog_bar=True)
        return loss, logits

    def training_step(self, batch: tuple[Tensor, Tensor], batch_idx: int) -> Tensor:
        if self.sam is not None and self.sam.second_pass:
            images, targets = self.sam_batch
            return self.criterion(self(images), targets)
        # Mixed images learn soft targets; accuracy counts each one's dominant label.
        images, targets, labels = self.batch_mix(*batch)
        if self.sam is not None:
            self.sam_batch = (images, targets)
        return self._shared_step(images, targets, labels, "train")[0]

    def validation_step(self, batch: tuple[Tensor, Tensor], batch_idx: int) -> None:
        images, labels = batch
        self._shared_step(images, labels, labels, "val")

    def test_step(self, batch: tuple[Tensor, Tensor], batch_idx: int) -> dict[str, Tensor]:
        # The logits reach callbacks' on_test_batch_end (seres.callbacks.TestFigures).
        images, labels = batch
        return {"logits": self._shared_step(images, labels, labels, "test")[1].detach()}

    def on_train_epoch_start(self) -> None:
        # The data module makes each epoch's randomness depend on (seed, epoch, rank) only, so that a run
        # resumed from last.ckpt continues exactly as if it had never stopped.
        datamodule = self.trainer.datamodule
        if hasattr(datamodule, "set_epoch"):
            datamodule.set_epoch(self.current_epoch, self.global_rank)

    def on_validation_epoch_end(self) -> None:
        if self.trainer.sanity_checking:
            return
        self.val_acc_best.update(self.val_acc.compute())
        # Identical on every rank (val_acc is already reduced); sync_dist spares Lightning's DDP warning at
        # the cost of one all-reduce an epoch.
        self.log("val/acc_best", self.val_acc_best.compute(), sync_dist=True)

    def configure_optimizers(self) -> Optimizer | dict[str, Any]:
        if self.optimizer_factory is None:
            raise ValueError(
                "this ClassifierModule was built without an optimizer (for evaluation); give one to fit"
            )
        groups = parameter_groups(self.net, **self.param_groups)
        if self.sam_rho > 0:
            # Every buffer (BatchNorm's running statistics) keeps what the first pass made of it.
            optimizer = self.sam = SAM(groups, self.optimizer_factory, self.sam_rho, list(self.net.buffers()))
        else:
            optimizer = self.optimizer_factory(groups)
        scale_group_lrs(optimizer)
        if self.scheduler_factory is None:
            return optimizer
        max_epochs = max(1, self.trainer.max_epochs or 1)
        steps_per_epoch = math.ceil(self.trainer.estimated_stepping_batches / max_epochs)
        scheduler = self.scheduler_factory(optimizer, steps_per_epoch=steps_per_epoch, max_epochs=max_epochs)
        return {"optimizer": optimizer, "lr_scheduler": {"scheduler": scheduler, "interval": "step"}}
