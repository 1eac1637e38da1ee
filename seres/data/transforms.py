"""The CPU input pipeline: augmentation settings, per-image training and evaluation transforms, the dataset.

Images are uint8 tensors (3, 32, 32) in and normalised float32 out. The device pipeline
(:mod:`seres.data.batch_augment`) reads the same :class:`Augmentation` settings and follows these transforms'
order and semantics on whole batches.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import torch
from torch import Tensor
from torch.utils.data import Dataset
from torchvision.transforms import v2

from seres.data.batch_augment import FLIP_MODES, PADDING_MODES
from seres.data.batch_policy import POLICIES, WIDE_BINS


@dataclasses.dataclass(frozen=True)
class Augmentation:
    """Training augmentation settings; every default means "off".

    crop_padding: pixels of padding before a random 32x32 crop.
    crop_padding_mode: what the padding holds: "zeros" (torchvision's default) or "reflect" (the image
        mirrored at its border, so a shifted image shows no black strip).
    flip: random horizontal flip with probability 0.5.
    flip_mode: "random" (a coin for every image every epoch) or "alternate" (every image mirrored on
        alternate epochs, from a random start of its own; the device pipeline only).
    policy: an automatic augmentation policy after the crop and flip, each image drawing its own operations:
        "none", "trivialaugment" (TrivialAugmentWide), "randaugment" or "autoaugment" (the CIFAR-10 policy).
    policy_ops, policy_magnitude: RandAugment's N (operations per image) and M (0..30).
    rotation: maximum rotation in degrees (uniform in [-rotation, rotation]).
    translate: maximum shift as a fraction of the image size, both axes (0..1).
    brightness, contrast, saturation: ColorJitter strengths (factor uniform in [1-x, 1+x]).
    cutout: side in pixels of one square patch set to 0 after normalisation (the mean colour), placed with
        its centre uniform over the image and clipped at the border.
    """

    crop_padding: int = 0
    crop_padding_mode: str = "zeros"
    flip: bool = False
    flip_mode: str = "random"
    policy: str = "none"
    policy_ops: int = 2
    policy_magnitude: int = 9
    rotation: float = 0.0
    translate: float = 0.0
    brightness: float = 0.0
    contrast: float = 0.0
    saturation: float = 0.0
    cutout: int = 0

    def __post_init__(self) -> None:
        for name in ("crop_padding", "cutout"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 0:
                raise ValueError(f"data.aug.{name} must be an int >= 0 (0 = off), got {value!r}")
        if self.crop_padding_mode not in PADDING_MODES:
            raise ValueError(
                f"data.aug.crop_padding_mode must be one of {', '.join(PADDING_MODES)}, "
                f"got {self.crop_padding_mode!r}"
            )
        if self.flip_mode not in FLIP_MODES:
            raise ValueError(
                f"data.aug.flip_mode must be one of {', '.join(FLIP_MODES)}, got {self.flip_mode!r}"
            )
        if self.policy not in POLICIES:
            raise ValueError(f"data.aug.policy must be one of {'|'.join(POLICIES)}, got {self.policy!r}")
        if not _is_int(self.policy_ops) or self.policy_ops < 1:
            raise ValueError(f"data.aug.policy_ops must be an int >= 1, got {self.policy_ops!r}")
        if not _is_int(self.policy_magnitude) or not 0 <= self.policy_magnitude < WIDE_BINS:
            raise ValueError(
                f"data.aug.policy_magnitude must be an int from 0 to {WIDE_BINS - 1}, "
                f"got {self.policy_magnitude!r}"
            )
        if not isinstance(self.flip, bool):
            raise ValueError(f"data.aug.flip must be true or false, got {self.flip!r}")
        for name in ("rotation", "translate", "brightness", "contrast", "saturation"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int | float) or value < 0:
                raise ValueError(f"data.aug.{name} must be a number >= 0 (0 = off), got {value!r}")
        if self.translate > 1:
            raise ValueError(
                f"data.aug.translate is a fraction of the image size in [0, 1], got {self.translate}"
            )

    @classmethod
    def from_dict(cls, settings: Mapping[str, Any]) -> Augmentation:
        """Build from a mapping (e.g. the ``data.aug`` config); unknown keys raise ValueError."""
        allowed = [field.name for field in dataclasses.fields(cls)]
        unknown = [key for key in settings if key not in allowed]
        if unknown:
            raise ValueError(
                f"unknown augmentation setting(s) {', '.join(f'data.aug.{key}' for key in unknown)}; "
                f"allowed: {', '.join(allowed)}"
            )
        return cls(**dict(settings))

    @classmethod
    def coerce(cls, aug: Mapping[str, Any] | Augmentation | None) -> Augmentation:
        """Accept an Augmentation, a mapping of its fields, or None (no augmentation)."""
        if aug is None:
            return cls()
        if isinstance(aug, Augmentation):
            return aug
        if isinstance(aug, Mapping):
            return cls.from_dict(aug)
        raise ValueError(
            f"data.aug must be a mapping of augmentation settings or null, got {type(aug).__name__}"
        )


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


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


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
