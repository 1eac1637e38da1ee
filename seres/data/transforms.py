"""The CPU input pipeline: per-image training and evaluation transforms, and the dataset.

Images are uint8 tensors (3, 32, 32) in and normalised float32 out. Both pipelines read the settings of
:class:`~seres.data.augmentation.Augmentation`; the device pipeline (:mod:`seres.data.batch_augment`) follows
these transforms' order and semantics on whole batches.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch
from torch import Tensor
from torch.utils.data import Dataset
from torchvision.transforms import v2

from seres.data.augmentation import PADDING_MODES, Augmentation


class Cutout(torch.nn.Module):
    """Set one random ``size`` x ``size`` square of a (..., H, W) tensor to 0 (centre uniform, clipped)."""

    def __init__(self, size: int) -> None:
        super().__init__()
        self.size = size

    def forward(self, image: Tensor) -> Tensor:
        height, width = image.shape[-2:]
        top = int(torch.randint(height, ())) - self.size // 2
        left = int(torch.randint(width, ())) - self.size // 2
        image = image.clone()  # the dataset's tensor must not change
        image[..., max(top, 0) : max(top + self.size, 0), max(left, 0) : max(left + self.size, 0)] = 0
        return image

    def extra_repr(self) -> str:
        return f"size={self.size}"


def build_train_transform(aug: Augmentation, mean: Sequence[float], std: Sequence[float]) -> v2.Compose:
    """Per-image training transform: uint8 (3, 32, 32) in, normalised float32 (3, 32, 32) out.

    Order: RandomCrop -> HorizontalFlip -> policy -> Rotation -> Affine translate -> ColorJitter -> ToDtype ->
    Normalize -> Cutout, each step only when enabled in ``aug``.
    """
    if aug.flip and aug.flip_mode != "random":
        # A per-image transform sees neither the epoch nor the image's index, which alternation needs.
        raise ValueError(
            f"data.aug.flip_mode={aug.flip_mode} needs data.pipeline=device (the DataLoader pipeline flips "
            "at random); use data.pipeline=device, or data.aug.flip_mode=random"
        )
    steps: list[Callable[[Tensor], Tensor]] = []
    if aug.crop_padding:
        padding_mode = PADDING_MODES[aug.crop_padding_mode]
        steps.append(v2.RandomCrop(32, padding=aug.crop_padding, padding_mode=padding_mode))
    if aug.flip:
        steps.append(v2.RandomHorizontalFlip())
    if aug.policy != "none":
        steps.append(policy_transform(aug))
    if aug.rotation:
        steps.append(v2.RandomRotation(aug.rotation))
    if aug.translate:
        steps.append(v2.RandomAffine(degrees=0, translate=(aug.translate, aug.translate)))
    if aug.brightness or aug.contrast or aug.saturation:
        steps.append(v2.ColorJitter(aug.brightness, aug.contrast, aug.saturation))
    steps.extend(build_eval_transform(mean, std).transforms)
    if aug.cutout:
        steps.append(Cutout(aug.cutout))
    return v2.Compose(steps)


def policy_transform(aug: Augmentation) -> v2.Transform:
    """torchvision's transform of `aug.policy`, for one uint8 image (seres.data.batch_policy: batches)."""
    if aug.policy == "trivialaugment":
        return v2.TrivialAugmentWide()
    if aug.policy == "randaugment":
        return v2.RandAugment(num_ops=aug.policy_ops, magnitude=aug.policy_magnitude)
    return v2.AutoAugment(v2.AutoAugmentPolicy.CIFAR10)


def build_eval_transform(mean: Sequence[float], std: Sequence[float]) -> v2.Compose:
    """Evaluation transform: uint8 (3, 32, 32) -> float32 in [0, 1] -> (x - mean) / std per channel."""
    return v2.Compose([v2.ToDtype(torch.float32, scale=True), v2.Normalize(list(mean), list(std))])


class TensorImageDataset(Dataset):
    """Images from a uint8 tensor (N, 3, H, W) with int64 labels (N,), each passed through ``transform``."""

    def __init__(
        self, images: Tensor, labels: Tensor, transform: Callable[[Tensor], Tensor] | None = None
    ) -> None:
        if len(images) != len(labels):
            raise ValueError(f"{len(images)} images but {len(labels)} labels")
        self.images = images
        self.labels = labels
        self.transform = transform

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, index: int) -> tuple[Tensor, Tensor]:
        image = self.images[index]
        if self.transform is not None:
            image = self.transform(image)
        return image, self.labels[index]
