"""Tests for seres/data/transforms.py: augmentation settings and the per-image CPU transforms."""

from __future__ import annotations

import pytest
import torch
from data_helpers import MEAN, STD, normalise
from torchvision.transforms import v2

from seres.data.augmentation import Augmentation
from seres.data.transforms import Cutout, build_eval_transform, build_train_transform


def test_augmentation_rejects_unknown_keys_naming_them() -> None:
    with pytest.raises(ValueError, match=r"data\.aug\.mixup") as caught:
        Augmentation.from_dict({"flip": True, "mixup": 0.2})
    assert "crop_padding" in str(caught.value) and "cutout" in str(caught.value)


@pytest.mark.parametrize(
    "settings", [{"crop_padding": -1}, {"cutout": 2.5}, {"flip": "yes"}, {"rotation": -5}, {"translate": 1.5}]
)
def test_augmentation_rejects_bad_values(settings) -> None:
    (key,) = settings
    with pytest.raises(ValueError, match=rf"data\.aug\.{key}"):
        Augmentation.from_dict(settings)


def test_train_transform_has_the_enabled_steps_in_order() -> None:
    everything = Augmentation(
        crop_padding=4,
        flip=True,
        rotation=15.0,
        translate=0.1,
        brightness=0.2,
        contrast=0.2,
        saturation=0.2,
        cutout=8,
    )
    steps = [type(step) for step in build_train_transform(everything, MEAN, STD).transforms]
    assert steps == [
        v2.RandomCrop,
        v2.RandomHorizontalFlip,
        v2.RandomRotation,
        v2.RandomAffine,
        v2.ColorJitter,
        v2.ToDtype,
        v2.Normalize,
        Cutout,
    ]
    plain = [type(step) for step in build_train_transform(Augmentation(), MEAN, STD).transforms]
    assert plain == [v2.ToDtype, v2.Normalize]


def test_eval_transform_is_plain_normalisation() -> None:
    images = torch.randint(0, 256, (4, 3, 32, 32), dtype=torch.uint8)
    transformed = torch.stack([build_eval_transform(MEAN, STD)(image) for image in images])
    torch.testing.assert_close(transformed, normalise(images))


def test_cutout_zeroes_one_square_in_normalised_space() -> None:
    torch.manual_seed(0)
    image = torch.full((3, 32, 32), 200, dtype=torch.uint8)
    transform = build_train_transform(Augmentation(cutout=8), MEAN, STD)
    expected = normalise(image[None])[0]
    for _ in range(20):
        out = transform(image)
        zero = (out == 0).all(dim=0)
        rows, cols = zero.any(dim=1).nonzero().flatten(), zero.any(dim=0).nonzero().flatten()
        assert 1 <= len(rows) <= 8 and 1 <= len(cols) <= 8
        assert zero.sum() == len(rows) * len(cols)  # one axis-aligned rectangle
        torch.testing.assert_close(out[:, ~zero], expected[:, ~zero])
    assert torch.equal(image, torch.full((3, 32, 32), 200, dtype=torch.uint8))  # input untouched
