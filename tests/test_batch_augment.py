"""Tests for seres/data/batch_augment.py on the CPU device.

Statistical checks compare a per-image statistic between the batched GPU path and the per-image torchvision
reference (or an exact expectation). Both sides use fixed seeds, so a run is deterministic; the tolerance
is SIGMAS standard errors of the difference, where a correct implementation fails with probability below
1e-6 per comparison while a wrong range, probability or fill shifts the statistics by far more.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator

import pytest
import torch
from data_helpers import MEAN, STD, copies, one_intra_op_thread, structured_images, to_uint8
from torch import Tensor
from torchvision.transforms import v2
from torchvision.transforms.v2 import functional as TF

from seres.data.augmentation import Augmentation
from seres.data.batch_augment import (
    adjust_brightness,
    adjust_contrast,
    adjust_saturation,
    augment_batch,
    normalize,
    rotate_translate,
)
from seres.data.transforms import Cutout, build_eval_transform, build_train_transform

SIGMAS = 5.0  # two-sided normal tail beyond 5 standard errors: 5.7e-7


@pytest.fixture(autouse=True)
def single_intra_op_thread() -> Iterator[None]:
    with one_intra_op_thread():
        yield


# ---------------------------------------------------------------------------------------------------------
# Test images and statistics
# ---------------------------------------------------------------------------------------------------------


def position_image() -> Tensor:
    """(3, 32, 32) uint8 whose pixel (r, c) is (1 + 8 r, 1 + 8 c, 255): never 0, so 0 marks the fill."""
    steps = 1 + 8 * torch.arange(32)
    rows = steps.view(32, 1).expand(32, 32)
    cols = steps.view(1, 32).expand(32, 32)
    return torch.stack((rows, cols, torch.full((32, 32), 255))).to(torch.uint8)


def source_position(outputs: Tensor, row: int, col: int) -> tuple[Tensor, Tensor]:
    """(B,) source row and column of pixel (row, col) of augmented position images (B, 3, 32, 32) uint8."""
    return (outputs[:, 0, row, col].long() - 1) // 8, (outputs[:, 1, row, col].long() - 1) // 8


def reference(transform: Callable[[Tensor], Tensor], images: Tensor, seed: int = 1) -> Tensor:
    """Apply a per-image torchvision transform to each of (B, C, H, W) images, seeding the global RNG."""
    torch.manual_seed(seed)
    return torch.stack([transform(image) for image in images])


def ours(aug: Augmentation, images: Tensor, seed: int = 2, **kwargs) -> Tensor:
    return augment_batch(images, aug, torch.Generator().manual_seed(seed), **kwargs)


def channel_stats(images: Tensor) -> Tensor:
    """(B, 6) float64 per-image statistics: the 3 channel means, then the 3 channel standard deviations."""
    flat = images.double().flatten(2)
    return torch.cat((flat.mean(2), flat.std(2)), dim=1)


def fill_fraction(images: Tensor) -> Tensor:
    """(B,) fraction of pixels that are 0 in every channel."""
    return (images == 0).all(dim=1).double().mean(dim=(1, 2))


def assert_mean_near(samples: Tensor, expected: float, what: str) -> None:
    """The sample mean of (n,) values is within SIGMAS standard errors of ``expected``."""
    samples = samples.double()
    tolerance = SIGMAS * samples.std().item() / math.sqrt(len(samples)) + 1e-9
    mean = samples.mean().item()
    assert abs(mean - expected) <= tolerance, f"{what}: {mean:.5f} vs {expected:.5f}"


def assert_same_mean(mine: Tensor, theirs: Tensor, what: str, allowance: float = 0.0) -> None:
    """Two independent (n,) samples: their means agree within SIGMAS standard errors + ``allowance``."""
    mine, theirs = mine.double(), theirs.double()
    standard_error = math.sqrt(mine.var().item() / len(mine) + theirs.var().item() / len(theirs))
    difference = abs(mine.mean().item() - theirs.mean().item())
    tolerance = SIGMAS * standard_error + allowance + 1e-9
    assert difference <= tolerance, f"{what}: means differ by {difference:.5f}, tolerance {tolerance:.5f}"


def assert_same_distribution(mine: Tensor, theirs: Tensor, what: str, allowance: float = 0.0) -> None:
    """Same mean and same spread (mean squared deviation from the pooled mean) of a per-image statistic."""
    assert_same_mean(mine, theirs, f"{what} (mean)", allowance)
    centre = torch.cat((mine, theirs)).double().mean()
    assert_same_mean((mine - centre) ** 2, (theirs - centre) ** 2, f"{what} (spread)")


def assert_same_channel_stats(mine: Tensor, theirs: Tensor, allowances: list[float] | None = None) -> None:
    """``channel_stats`` of ``copies(structured_images())`` agree image by image and statistic by statistic.

    Comparing within each source image keeps the spread between the 4 pictures out of the standard error.
    """
    allowances = allowances or [0.0] * mine.shape[1]
    source = torch.arange(len(mine)) % 4
    for group in range(4):
        for stat, allowance in enumerate(allowances):
            what = f"image {group} statistic {stat}"
            assert_same_distribution(
                mine[source == group, stat], theirs[source == group, stat], what, allowance
            )


def assert_uniform_counts(
    values: Tensor, categories: int, what: str, probabilities: Tensor | None = None
) -> None:
    """Chi-square goodness of fit to ``probabilities`` (default uniform): the statistic, with k - 1 degrees
    of freedom, stays within SIGMAS standard deviations of its mean k - 1."""
    counts = torch.bincount(values, minlength=categories).double()
    assert len(counts) == categories, f"{what}: values outside 0..{categories - 1}"
    if probabilities is None:
        probabilities = torch.full((categories,), 1.0 / categories, dtype=torch.float64)
    expected = probabilities * len(values)
    chi_square = ((counts - expected) ** 2 / expected).sum().item()
    dof = categories - 1
    assert chi_square <= dof + SIGMAS * math.sqrt(2 * dof), f"{what}: chi-square {chi_square:.1f}, {dof} dof"


def shift_with_zero_fill(image: Tensor, down: int, right: int) -> Tensor:
    """(C, H, W) image moved ``down``/``right`` px (negative: up/left), uncovered pixels 0."""
    height, width = image.shape[-2:]
    pad = max(height, width)
    padded = torch.nn.functional.pad(image, (pad, pad, pad, pad))
    return padded[:, pad - down : pad - down + height, pad - right : pad - right + width]


# ---------------------------------------------------------------------------------------------------------
# Normalisation and disabled steps
# ---------------------------------------------------------------------------------------------------------


def test_normalize_equals_torchvision_eval_transform() -> None:
    generator = torch.Generator().manual_seed(0)
    images = torch.randint(0, 256, (64, 3, 32, 32), dtype=torch.uint8, generator=generator)
    expected = build_eval_transform(MEAN, STD)(images)
    assert torch.equal(normalize(images, MEAN, STD), expected)
    # Float input in [0, 1] skips the scaling; x / 255 differs from x * (1 / 255) by an ulp at most.
    unit = normalize(images.float() / 255, torch.tensor(MEAN), torch.tensor(STD))
    torch.testing.assert_close(unit, expected, atol=1e-6, rtol=0)


def test_everything_off_is_normalisation_and_draws_no_random_numbers() -> None:
    images = copies(structured_images(), 8)
    generator = torch.Generator().manual_seed(0)
    state = generator.get_state()
    out = augment_batch(images, Augmentation(), generator, mean=MEAN, std=STD)
    assert torch.equal(out, normalize(images, MEAN, STD))
    assert torch.equal(generator.get_state(), state)


# ---------------------------------------------------------------------------------------------------------
# Crop and flip
# ---------------------------------------------------------------------------------------------------------


def recover_crop(outputs: Tensor) -> tuple[Tensor, Tensor, Tensor]:
    """(dy, dx, flipped) of crops of the position image: output (r, c) shows source (r + dy, c + dx) before
    the flip. The 2x1 pixels read at the centre are inside the source for any |d| <= 4."""
    _, col_centre = source_position(outputs, 16, 16)
    _, col_right = source_position(outputs, 16, 17)
    flipped = col_right < col_centre
    unflipped = torch.where(flipped.view(-1, 1, 1, 1), outputs.flip(-1), outputs)
    row, col = source_position(unflipped, 16, 16)
    return row - 16, col - 16, flipped


@pytest.mark.parametrize("flip", [False, True])
def test_random_crop_matches_torchvision(flip: bool) -> None:
    padding = 4
    image = position_image()
    steps = [v2.RandomCrop(32, padding=padding)] + ([v2.RandomHorizontalFlip()] if flip else [])
    outputs = {
        "ours": to_uint8(ours(Augmentation(crop_padding=padding, flip=flip), copies(image))),
        "torchvision": reference(v2.Compose(steps), copies(image)),
    }
    # Offsets are uniform on {-4..4}^2: E|d| = 2 (1 + 2 + 3 + 4) / 9 per axis; the zero-padded area of a
    # 32x32 crop is 32|dy| + 32|dx| - |dy||dx| pixels.
    mean_abs_shift = 20 / 9
    expected_padded = (2 * 32 * mean_abs_shift - mean_abs_shift**2) / 1024
    for name, out in outputs.items():
        dy, dx, flipped = recover_crop(out)
        for index in range(len(out)):  # every output is exactly a zero-padded (and maybe mirrored) crop
            crop = shift_with_zero_fill(image, -int(dy[index]), -int(dx[index]))
            assert torch.equal(out[index], crop.flip(-1) if flipped[index] else crop), f"{name} image {index}"
        assert_uniform_counts((dy + padding) * 9 + dx + padding, 81, f"{name} crop offsets")
        assert_mean_near(dy.abs(), mean_abs_shift, f"{name} mean |dy|")
        assert_mean_near(dx.abs(), mean_abs_shift, f"{name} mean |dx|")
        assert_mean_near(fill_fraction(out), expected_padded, f"{name} zero-padded fraction")
        if flip:
            assert_mean_near(flipped.double(), 0.5, f"{name} flipped fraction")
        else:
            assert not flipped.any()
    assert_same_distribution(fill_fraction(outputs["ours"]), fill_fraction(outputs["torchvision"]), "padding")


def test_reflect_padded_crop_shows_the_mirrored_border_on_both_pipelines() -> None:
    padding = 2
    image = position_image()
    aug = Augmentation(crop_padding=padding, crop_padding_mode="reflect", flip=True)
    outputs = {
        "ours": to_uint8(ours(aug, copies(image))),
        "torchvision": to_uint8(reference(build_train_transform(aug, [0, 0, 0], [1, 1, 1]), copies(image))),
    }
    reflected = torch.nn.functional.pad(image, (padding,) * 4, mode="reflect")
    for name, out in outputs.items():
        dy, dx, flipped = recover_crop(out)
        assert not (out == 0).any(), f"{name}: a reflect-padded crop holds no zero fill"
        for index in range(len(out)):
            top, left = padding + int(dy[index]), padding + int(dx[index])
            crop = reflected[:, top : top + 32, left : left + 32]
            assert torch.equal(out[index], crop.flip(-1) if flipped[index] else crop), f"{name} image {index}"
        assert_uniform_counts((dy + padding) * 5 + dx + padding, 25, f"{name} crop offsets")


def test_an_unknown_padding_mode_is_refused_with_the_choices() -> None:
    with pytest.raises(ValueError, match="crop_padding_mode must be one of zeros, reflect, got 'edge'"):
        Augmentation(crop_padding=4, crop_padding_mode="edge")


def test_random_flip_matches_torchvision() -> None:
    image = position_image()  # left-right asymmetric
    mine = to_uint8(ours(Augmentation(flip=True), copies(image)))
    theirs = reference(v2.RandomHorizontalFlip(), copies(image))
    for name, out in (("ours", mine), ("torchvision", theirs)):
        unchanged = (out == image).all(dim=(1, 2, 3))
        mirrored = (out == image.flip(-1)).all(dim=(1, 2, 3))
        assert (unchanged ^ mirrored).all(), f"{name}: an output is neither the image nor its mirror"
        assert_mean_near(mirrored.double(), 0.5, f"{name} flipped fraction")
    assert_same_mean(
        (mine == image.flip(-1)).all(dim=(1, 2, 3)), (theirs == image.flip(-1)).all(dim=(1, 2, 3)), "flips"
    )


# ---------------------------------------------------------------------------------------------------------
# Rotation and translation
# ---------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("degrees", "shift_x", "shift_y", "size"),
    [(30.0, 0, 0, (32, 32)), (-17.0, 3, -2, (32, 32)), (90.0, 0, 0, (32, 32)), (-44.0, -7, 5, (32, 32)),
     (0.0, 2, 1, (32, 32)), (-50.0, 3, -2, (24, 40))],
)  # fmt: skip
def test_rotate_translate_equals_torchvision_rotate_then_affine(
    degrees: float, shift_x: int, shift_y: int, size: tuple[int, int]
) -> None:
    generator = torch.Generator().manual_seed(0)
    image = torch.randint(0, 256, (3, *size), dtype=torch.uint8, generator=generator)
    rotated = TF.rotate(image, degrees)
    expected = TF.affine(rotated, angle=0.0, translate=[shift_x, shift_y], scale=1.0, shear=[0.0])
    params = (torch.tensor([degrees]), torch.tensor([float(shift_x)]), torch.tensor([float(shift_y)]))
    # Nearest sampling of the same grid: bit-identical, including the uncovered (zero) strips.
    assert torch.equal(to_uint8(rotate_translate(image[None] / 255, *params))[0], expected)


def test_bilinear_rotation_equals_torchvision_bilinear() -> None:
    image = torch.rand(3, 32, 32, generator=torch.Generator().manual_seed(0))
    expected = TF.rotate(image, 23.0, interpolation=v2.InterpolationMode.BILINEAR)
    zero = torch.zeros(1)
    mine = rotate_translate(image[None], torch.tensor([23.0]), zero, zero, interpolation="bilinear")[0]
    torch.testing.assert_close(mine, expected, atol=1e-5, rtol=0)


def test_random_translate_matches_torchvision() -> None:
    # translate 0.125 of 32 px: shifts round(U(-4, 4)), so +-4 have probability 1/16 and -3..3 have 1/8.
    image = position_image()
    mine = to_uint8(ours(Augmentation(translate=0.125), copies(image)))
    theirs = reference(v2.RandomAffine(degrees=0, translate=(0.125, 0.125)), copies(image))
    probabilities = torch.tensor([1, 2, 2, 2, 2, 2, 2, 2, 1], dtype=torch.float64) / 16
    for name, out in (("ours", mine), ("torchvision", theirs)):
        source_row, source_col = source_position(out, 16, 16)
        down, right = 16 - source_row, 16 - source_col
        for index in range(len(out)):  # every output is exactly a whole-pixel shift with zero fill
            expected = shift_with_zero_fill(image, int(down[index]), int(right[index]))
            assert torch.equal(out[index], expected), f"{name} image {index}"
        for axis, shift in (("x", right), ("y", down)):
            assert_uniform_counts(shift + 4, 9, f"{name} {axis} shift", probabilities)
            assert_mean_near(shift.abs(), 2.0, f"{name} mean |{axis} shift|")
    # Shifts are whole pixels, so even bilinear sampling copies pixels (up to float rounding of the grid)
    # instead of blending neighbours, which would be off the 1/255 lattice by up to 4/255.
    bilinear = ours(Augmentation(translate=0.125), copies(image, 200), interpolation="bilinear")
    torch.testing.assert_close(bilinear, to_uint8(bilinear) / 255, atol=1e-4, rtol=0)


@pytest.mark.parametrize(("degrees", "translate"), [(30.0, 0.0), (15.0, 0.1)])
def test_random_rotation_and_translation_match_torchvision(degrees: float, translate: float) -> None:
    aug = Augmentation(rotation=degrees, translate=translate)
    steps = [v2.RandomRotation(degrees)]
    if translate:
        steps.append(v2.RandomAffine(degrees=0, translate=(translate, translate)))
    # The fill fraction of a never-zero image grows with |angle| and |shift|: its mean and spread pin both
    # ranges (with nearest sampling, as torchvision's default).
    filled = {
        "ours": fill_fraction(ours(aug, copies(position_image()))),
        "torchvision": fill_fraction(reference(v2.Compose(steps), copies(position_image()) / 255)),
    }
    assert_same_distribution(filled["ours"], filled["torchvision"], "fill fraction")
    images = copies(structured_images())
    mine, theirs = channel_stats(ours(aug, images)), channel_stats(reference(v2.Compose(steps), images / 255))
    assert_same_channel_stats(mine, theirs)


# ---------------------------------------------------------------------------------------------------------
# Colour jitter
# ---------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("mine", "theirs"),
    [
        (adjust_brightness, TF.adjust_brightness),
        (adjust_contrast, TF.adjust_contrast),
        (adjust_saturation, TF.adjust_saturation),
    ],
)
def test_colour_ops_equal_torchvision(mine: Callable, theirs: Callable) -> None:
    images = torch.rand(7, 3, 16, 16, generator=torch.Generator().manual_seed(0))
    factor_list = [0.0, 0.3, 0.8, 1.0, 1.2, 1.5, 2.0]
    factors = torch.tensor(factor_list)
    expected = torch.stack([theirs(image, factor) for image, factor in zip(images, factor_list, strict=True)])
    torch.testing.assert_close(mine(images, factors.view(-1, 1, 1, 1)), expected, atol=1e-6, rtol=0)


@pytest.mark.parametrize(
    "strengths",
    [(0.4, 0.0, 0.0), (0.0, 0.4, 0.0), (0.0, 0.0, 0.4), (0.4, 0.4, 0.4)],
    ids=["brightness", "contrast", "saturation", "all"],
)
def test_colour_jitter_matches_torchvision(strengths: tuple[float, float, float]) -> None:
    brightness, contrast, saturation = strengths
    aug = Augmentation(brightness=brightness, contrast=contrast, saturation=saturation)
    images = copies(structured_images())
    # Reference on float images, like ours; a fixed op order instead of ColorJitter's random one differs
    # only where the [0, 1] clamp cuts, which these statistics must not be able to tell apart.
    mine = channel_stats(ours(aug, images))
    theirs = channel_stats(reference(v2.ColorJitter(brightness, contrast, saturation), images / 255))
    assert_same_channel_stats(mine, theirs)


# ---------------------------------------------------------------------------------------------------------
# Cutout and the whole pipeline
# ---------------------------------------------------------------------------------------------------------


def test_cutout_matches_seres_cutout() -> None:
    size = 8
    images = copies(torch.full((3, 32, 32), 255, dtype=torch.uint8))
    normalised_white = normalize(images[:1], MEAN, STD)[0]
    mine = ours(Augmentation(cutout=size), images, mean=MEAN, std=STD)
    theirs = reference(Cutout(size), normalize(images, MEAN, STD))
    # Per axis the covered length is |[c - 4, c + 4) & [0, 32)| for a uniform centre c in 0..31.
    lengths = [min(centre + size // 2, 32) - max(centre - size // 2, 0) for centre in range(32)]
    expected_area = (sum(lengths) / 32) ** 2 / 1024
    for name, out in (("ours", mine), ("seres.data.Cutout", theirs)):
        cut = (out == 0).all(dim=1)  # zero in normalised space = the mean colour
        kept = torch.where(cut.unsqueeze(1), normalised_white, out)
        assert torch.equal(kept, normalised_white.expand_as(out)), (
            f"{name}: changed pixels outside the square"
        )
        cut_rows, cut_cols = cut.any(dim=2), cut.any(dim=1)
        assert torch.equal(cut, cut_rows[:, :, None] & cut_cols[:, None, :]), f"{name}: not a rectangle"
        assert cut_rows.sum(1).max() == size and cut_cols.sum(1).max() == size and cut_rows.sum(1).min() >= 4
        assert_mean_near(cut.double().mean(dim=(1, 2)), expected_area, f"{name} cut fraction")
    assert_same_distribution(fill_fraction(mine), fill_fraction(theirs), "cut fraction")


def test_full_seed_pipeline_matches_cpu_transform() -> None:
    aug = Augmentation(crop_padding=4, flip=True, rotation=15.0, translate=0.1, brightness=0.2, contrast=0.2,
                       saturation=0.2, cutout=8)  # fmt: skip
    images = copies(structured_images())
    mine = channel_stats(ours(aug, images, mean=MEAN, std=STD))
    theirs = channel_stats(reference(build_train_transform(aug, MEAN, STD), images))
    # torchvision jitters uint8 images and truncates after each of the 3 colour ops (at most -1/255 each);
    # ours stays in float. Channel means may therefore differ by up to 3/255 in [0, 1] units.
    bias = [3 / 255 / std for std in STD] + [0.0, 0.0, 0.0]
    assert_same_channel_stats(mine, theirs, allowances=bias)
