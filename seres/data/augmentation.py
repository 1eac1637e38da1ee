"""The augmentation settings (`data.aug`) and the values they may take, for both input pipelines.

Plain Python, no torch: the settings' schema (seres.run.config_schema) reads them when a config is composed,
so everything that composes one, however light, gets them without loading torch. The per-image transforms
(:mod:`seres.data.transforms`) and the batched ones (:mod:`seres.data.batch_augment`,
:mod:`seres.data.batch_policy`) read the same settings.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from typing import Any

# crop_padding_mode -> the mode of the batched pipeline's F.pad and of torchvision RandomCrop's padding_mode.
PADDING_MODES = {"zeros": "constant", "reflect": "reflect"}

# data.aug.flip_mode: a coin per image and epoch, or alternate epochs from a per-image start.
FLIP_MODES = ("random", "alternate")

# data.aug.policy: none, or an automatic augmentation policy (seres.data.batch_policy on batches).
POLICIES = ("none", "trivialaugment", "randaugment", "autoaugment")
WIDE_BINS = 31  # TrivialAugmentWide's and RandAugment's magnitude bins (RandAugment's M indexes them)


def is_int(value: Any) -> bool:
    """An int, and not a bool (which Python counts as one): what every integer setting must be."""
    return isinstance(value, int) and not isinstance(value, bool)


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
            if not is_int(value) or value < 0:
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
        if not is_int(self.policy_ops) or self.policy_ops < 1:
            raise ValueError(f"data.aug.policy_ops must be an int >= 1, got {self.policy_ops!r}")
        if not is_int(self.policy_magnitude) or not 0 <= self.policy_magnitude < WIDE_BINS:
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
