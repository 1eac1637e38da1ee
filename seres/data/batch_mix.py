"""MixUp and CutMix of a training batch (torchvision's transforms.v2): soft targets and the dominant label.

Each image is mixed with the one before it in the batch (torchvision rolls the batch by one; batches are
shuffled, so the partner is random). MixUp blends the two whole images, CutMix pastes a box of the partner;
either way the target is the two one-hot labels weighted by their share of the image. Their randomness
comes from torch's global generator, which the data module reseeds from (seed, epoch, rank) every epoch, so
a resumed run mixes as an uninterrupted one.
"""

import torch
from torch import Tensor
from torchvision.transforms import v2


class BatchMix:
    """`mixup_alpha`, `cutmix_alpha`: the Beta(alpha, alpha) of each's mixing weight (0 = off; both > 0: one
    of the two, at random, per batch); `prob`: the chance that a batch is mixed at all."""

    def __init__(
        self, mixup_alpha: float = 0.0, cutmix_alpha: float = 0.0, prob: float = 1.0, num_classes: int = 10
    ) -> None:
        for name, alpha in (("mixup_alpha", mixup_alpha), ("cutmix_alpha", cutmix_alpha)):
            if alpha < 0:
                raise ValueError(f"mix.{name} must be >= 0 (0 = off), got {alpha}")
        if not 0 <= prob <= 1:
            raise ValueError(f"mix.prob must be in [0, 1], got {prob}")
        mixes = [v2.MixUp(alpha=mixup_alpha, num_classes=num_classes)] if mixup_alpha > 0 else []
        mixes += [v2.CutMix(alpha=cutmix_alpha, num_classes=num_classes)] if cutmix_alpha > 0 else []
        self.mix = v2.RandomChoice(mixes) if len(mixes) > 1 else (mixes[0] if mixes else None)
        self.prob = prob

    @property
    def enabled(self) -> bool:
        return self.mix is not None and self.prob > 0

    def __call__(self, images: Tensor, labels: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        """(images, targets, dominant labels): targets are soft (B, classes) for a mixed batch, else `labels`;
        the dominant label is the one with the larger share of each image (the accuracy counts it)."""
        if not self.enabled or (self.prob < 1 and torch.rand(()).item() >= self.prob):
            return images, labels, labels
        mixed, targets = self.mix(images, labels)
        return mixed, targets, targets.argmax(dim=1)
