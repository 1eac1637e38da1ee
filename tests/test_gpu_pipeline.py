"""Tests for seres/gpu_pipeline.py on the CPU device.

Statistical checks compare a per-image statistic between the batched GPU path and the per-image torchvision
reference (or an exact expectation). Both sides use fixed seeds, so a run is deterministic; the tolerance
is SIGMAS standard errors of the difference, where a correct implementation fails with probability below
1e-6 per comparison while a wrong range, probability or fill shifts the statistics by far more.
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable, Iterator
from pathlib import Path

import lightning
import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp
from torch import Tensor
from torch.utils._python_dispatch import TorchDispatchMode
from torchvision.transforms import v2
from torchvision.transforms.v2 import functional as TF

from seres.data import (
    Augmentation,
    CIFAR10DataModule,
    Cutout,
    build_eval_transform,
    build_train_transform,
)
from seres.gpu_pipeline import (
    GPUEvalLoader,
    GPUTrainLoader,
    adjust_brightness,
    adjust_contrast,
    adjust_saturation,
    augment_batch,
    normalize,
    rotate_translate,
)
from seres.model import SEResNet
from seres.module import ClassifierModule

MEAN = (0.4914, 0.4822, 0.4465)
STD = (0.2470, 0.2435, 0.2616)
IDENTITY_MEAN, IDENTITY_STD = (0.0, 0.0, 0.0), (1.0, 1.0, 1.0)
CPU = torch.device("cpu")
SIGMAS = 5.0  # two-sided normal tail beyond 5 standard errors: 5.7e-7
COPIES = 2000  # images per comparison (500 per source image): standard errors of 2-5 % of the spread


@pytest.fixture(autouse=True)
def one_intra_op_thread() -> Iterator[None]:
    # The reference runs torchvision image by image; on tiny tensors OpenMP hand-off between threads costs
    # far more than the work (rotation was ~60x slower with 2 threads on the 2-core test machine).
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(previous)


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


def structured_images() -> Tensor:
    """(4, 3, 32, 32) uint8: colour ramps, an asymmetric two-tone picture, a colour checkerboard, noise."""
    ramp = (8 * torch.arange(32)).to(torch.uint8)
    grey = torch.full((32, 32), 128, dtype=torch.uint8)
    ramps = torch.stack((ramp.view(1, 32).expand(32, 32), grey, ramp.view(32, 1).expand(32, 32)))
    two_tone = torch.empty(3, 32, 32, dtype=torch.uint8)
    two_tone[:, :, :16] = torch.tensor([220, 180, 60], dtype=torch.uint8).view(3, 1, 1)
    two_tone[:, :, 16:] = torch.tensor([30, 40, 120], dtype=torch.uint8).view(3, 1, 1)
    two_tone[:, 2:10, 2:10] = 255
    cells = ((torch.arange(32).view(32, 1) // 4 + torch.arange(32).view(1, 32) // 4) % 2).bool()
    red, cyan = torch.tensor([250, 30, 30]).view(3, 1, 1), torch.tensor([30, 200, 250]).view(3, 1, 1)
    checker = torch.where(cells, red, cyan).to(torch.uint8)
    noise = torch.randint(0, 256, (3, 32, 32), generator=torch.Generator().manual_seed(0), dtype=torch.uint8)
    images = torch.stack((ramps, two_tone, checker, noise))
    assert images.dtype == torch.uint8
    return images


def copies(image: Tensor, count: int = COPIES) -> Tensor:
    """(count, C, H, W) copies of one (C, H, W) image, or of a (G, C, H, W) group cycled in order."""
    group = image if image.dim() == 4 else image.unsqueeze(0)
    return group.repeat(count // len(group), 1, 1, 1)


def reference(transform: Callable[[Tensor], Tensor], images: Tensor, seed: int = 1) -> Tensor:
    """Apply a per-image torchvision transform to each of (B, C, H, W) images, seeding the global RNG."""
    torch.manual_seed(seed)
    return torch.stack([transform(image) for image in images])


def ours(aug: Augmentation, images: Tensor, seed: int = 2, **kwargs) -> Tensor:
    return augment_batch(images, aug, torch.Generator().manual_seed(seed), **kwargs)


def to_uint8(unit: Tensor) -> Tensor:
    """Float images in [0, 1] back to uint8 (exact for values that came from uint8)."""
    return unit.mul(255).round().to(torch.uint8)


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


# ---------------------------------------------------------------------------------------------------------
# GPUTrainLoader: order, coverage, sharding
# ---------------------------------------------------------------------------------------------------------


def index_dataset(size: int) -> tuple[Tensor, Tensor]:
    """(size, 3, 4, 4) uint8 images whose channels 0/1 hold index % 256 / index // 256, and labels = index."""
    index = torch.arange(size)
    planes = torch.stack((index % 256, index // 256, torch.zeros_like(index)), dim=1)
    return planes.view(size, 3, 1, 1).expand(size, 3, 4, 4).to(torch.uint8).contiguous(), index


def index_loader(size: int, batch_size: int, seed: int = 0, **kwargs) -> GPUTrainLoader:
    images, labels = index_dataset(size)
    return GPUTrainLoader(
        images, labels, batch_size, Augmentation(), IDENTITY_MEAN, IDENTITY_STD, CPU, seed, **kwargs
    )


def epoch_order(loader: GPUTrainLoader) -> list[int]:
    """The indices of one epoch, read from the pixels; checks that labels travel with their images."""
    order = []
    for x, y in loader:
        pixels = to_uint8(x[:, :2, 0, 0]).long()
        assert torch.equal(pixels[:, 0] + 256 * pixels[:, 1], y)
        order += y.tolist()
    return order


def test_one_epoch_visits_every_index_once_without_drop_last() -> None:
    loader = index_loader(1000, 64, drop_last=False)
    assert len(loader) == 16
    assert [len(y) for _, y in loader] == [64] * 15 + [40]
    order = epoch_order(loader)
    assert sorted(order) == list(range(1000))
    assert order != list(range(1000))


def test_drop_last_yields_only_full_batches() -> None:
    loader = index_loader(1000, 64)
    assert len(loader) == 15
    assert [len(y) for _, y in loader] == [64] * 15
    order = epoch_order(loader)
    assert len(set(order)) == 960


def test_order_is_a_function_of_seed_and_epoch() -> None:
    loader = index_loader(500, 50)
    first, second = epoch_order(loader), epoch_order(loader)
    assert first != second  # epochs advance without set_epoch
    twin = index_loader(500, 50)
    assert epoch_order(twin) == first and epoch_order(twin) == second
    assert epoch_order(index_loader(500, 50, seed=1)) != first
    loader.set_epoch(0)
    assert epoch_order(loader) == first and epoch_order(loader) == second  # and continues from there


def test_an_iterator_never_advanced_uses_no_epoch() -> None:
    loader = index_loader(500, 50)
    iter(loader)  # what Lightning's iterability check does
    assert epoch_order(loader) == epoch_order(index_loader(500, 50))
    pending = iter(loader)
    loader.set_epoch(0)  # after iter(), before the first batch: still applies
    assert [y for _, y in pending][0].tolist() == epoch_order(index_loader(500, 50))[:50]


def test_loader_batches_are_normalised_augmented_and_reproducible() -> None:
    images, labels = copies(structured_images(), 256), torch.arange(256)
    aug = Augmentation(crop_padding=4, flip=True, rotation=15.0, translate=0.1, brightness=0.2, contrast=0.2,
                       saturation=0.2, cutout=8)  # fmt: skip
    loader = GPUTrainLoader(images, labels, 64, aug, MEAN, STD, CPU, seed=3, channels_last=True)
    batches = list(loader)
    assert len(batches) == 4
    for x, y in batches:
        assert x.shape == (64, 3, 32, 32) and x.dtype == torch.float32 and x.device == CPU
        assert x.is_contiguous(memory_format=torch.channels_last)
        assert y.dtype == torch.int64 and y.device == CPU
        assert not torch.equal(x, normalize(images[y], MEAN, STD))  # augmented
    loader.set_epoch(0)
    for (x, y), (x_again, y_again) in zip(batches, loader, strict=True):
        assert torch.equal(x, x_again) and torch.equal(y, y_again)
    plain = GPUTrainLoader(images, labels, 64, Augmentation(), MEAN, STD, CPU, seed=3)
    for x, y in plain:
        assert torch.equal(x, normalize(images[y], MEAN, STD))


class _LabelRecorder(lightning.LightningModule):
    """Trains nothing; records the labels of every training batch, one list per epoch."""

    def __init__(self, loader: GPUTrainLoader) -> None:
        super().__init__()
        self.loader = loader
        self.layer = torch.nn.Linear(3 * 4 * 4, 1)
        self.seen: list[list[int]] = []

    def train_dataloader(self) -> GPUTrainLoader:
        return self.loader

    def on_train_epoch_start(self) -> None:
        self.seen.append([])

    def training_step(self, batch: tuple[Tensor, Tensor], batch_index: int) -> Tensor:
        x, y = batch
        self.seen[-1] += y.tolist()
        return self.layer(x.flatten(1)).sum()

    def configure_optimizers(self) -> torch.optim.Optimizer:
        return torch.optim.SGD(self.parameters(), lr=0.0)


def test_lightning_trains_on_the_loader_with_epoch_e_using_permutation_e() -> None:
    loader = index_loader(200, 50)
    recorder = _LabelRecorder(loader)
    trainer = lightning.Trainer(
        max_epochs=3,
        accelerator="cpu",
        devices=1,
        limit_val_batches=0,
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
    )
    trainer.fit(recorder)
    # Lightning's iter() probe before training must not have used up an epoch.
    assert recorder.seen == [loader.rank_indices(epoch).tolist() for epoch in range(3)]


# Ops after which a CUDA host waits for the device: reading a value (.item(), bool(), int() all dispatch to
# _local_scalar_dense) or computing an output shape from the data.
HOST_SYNC_OPS = {"_local_scalar_dense", "nonzero", "masked_select", "unique_dim", "unique_consecutive"}


class _HostSyncRecorder(TorchDispatchMode):
    """Records every dispatched op that would sync a CUDA host, including boolean-mask indexing.

    (A CPU run cannot see ``.cpu()`` or ``.tolist()``: on CPU tensors they dispatch no op.)
    """

    def __init__(self) -> None:
        super().__init__()
        self.syncs: list[str] = []

    def __torch_dispatch__(
        self, func: torch._ops.OpOverload, types: tuple, args: tuple = (), kwargs: dict | None = None
    ) -> object:
        name = func.overloadpacket.__name__
        indices = args[1] if name.startswith("index") and isinstance(args[1], list | tuple) else ()
        boolean_mask = any(isinstance(index, Tensor) and index.dtype == torch.bool for index in indices)
        if name in HOST_SYNC_OPS or name.startswith("_unique") or boolean_mask:
            self.syncs.append(name)
        return func(*args, **(kwargs or {}))


def test_host_sync_recorder_sees_syncs() -> None:
    values = torch.arange(5.0)
    with _HostSyncRecorder() as recorder:
        values[0].item()
        values[values > 2]
        values.nonzero()
        values.unique()
    assert len(recorder.syncs) == 4, recorder.syncs


def test_an_epoch_with_every_augmentation_dispatches_no_host_sync() -> None:
    aug = Augmentation(crop_padding=4, flip=True, rotation=15.0, translate=0.1, brightness=0.2, contrast=0.2,
                       saturation=0.2, cutout=8)  # fmt: skip
    images = copies(structured_images(), 256)
    loader = GPUTrainLoader(images, torch.arange(256), 64, aug, MEAN, STD, CPU, seed=0, drop_last=False)
    with _HostSyncRecorder() as recorder:
        batches = sum(1 for _ in loader)
    assert batches == 4 and recorder.syncs == []


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        (dict(images=torch.zeros(10, 3, 4, 4)), "uint8"),
        (dict(labels=torch.zeros(9, dtype=torch.int64)), "labels"),
        (dict(rank=2, world_size=2), "rank"),
        (dict(batch_size=6, world_size=2), "no batch"),
    ],
)
def test_loader_rejects_bad_arguments(kwargs: dict, message: str) -> None:
    images, labels = index_dataset(10)
    arguments = dict(images=images, labels=labels, batch_size=4, aug=Augmentation(), mean=MEAN, std=STD,
                     device=CPU, seed=0) | kwargs  # fmt: skip
    with pytest.raises(ValueError, match=message):
        GPUTrainLoader(**arguments)


# (dataset size, batch size, drop_last): divisible by 2 ranks; not divisible, with and without drop_last.
SHARDING_CASES = [(1000, 50, False), (1001, 64, False), (1001, 64, True)]


def _sharding_worker(rank: int, world_size: int, store: str, result: str) -> None:
    """One DDP rank: run 2 epochs per case, gather every rank's batches, rank 0 writes them as JSON."""
    torch.set_num_threads(1)
    dist.init_process_group("gloo", init_method=f"file://{store}", rank=rank, world_size=world_size)
    try:
        gathered = {}
        for size, batch_size, drop_last in SHARDING_CASES:
            shard = dict(rank=rank, world_size=world_size, drop_last=drop_last)
            loader = index_loader(size, batch_size, seed=7, **shard)
            epochs = [[y.tolist() for _, y in loader] for _ in range(2)]
            everyone: list = [None] * world_size
            dist.all_gather_object(everyone, epochs)
            gathered[f"{size},{batch_size},{drop_last}"] = everyone
        if rank == 0:
            Path(result).write_text(json.dumps(gathered))
    finally:
        dist.destroy_process_group()


def test_ranks_of_a_real_process_group_share_the_epoch_disjointly(tmp_path: Path) -> None:
    world_size = 2
    result = tmp_path / "result.json"
    mp.spawn(_sharding_worker, args=(world_size, str(tmp_path / "store"), str(result)), nprocs=world_size)
    gathered = json.loads(result.read_text())
    for size, batch_size, drop_last in SHARDING_CASES:
        per_rank = gathered[f"{size},{batch_size},{drop_last}"]
        share = size // world_size
        batches = share // batch_size if drop_last else math.ceil(share / batch_size)
        for epoch in range(2):
            seen = [[index for batch in ranks_epochs[epoch] for index in batch] for ranks_epochs in per_rank]
            assert all(len(ranks_epochs[epoch]) == batches for ranks_epochs in per_rank)
            assert all(len(set(indices)) == len(indices) for indices in seen)
            assert not set(seen[0]) & set(seen[1])
            union = set(seen[0]) | set(seen[1])
            assert union <= set(range(size))
            if drop_last:
                assert len(union) == world_size * batches * batch_size
            else:  # everything but the at most world_size - 1 indices that make the shares equal
                assert len(union) == world_size * share >= size - (world_size - 1)
        assert per_rank[0][0] != per_rank[0][1]  # a new permutation each epoch


@pytest.mark.parametrize("stage", ["validate", "test"])
def test_evaluation_on_the_device_gives_the_cpu_paths_metrics(stage, fake_cifar_bin: Path) -> None:
    # 100 validation and 100 test images in batches of 48: the last batch is short.
    results = {}
    for pipeline in ("cpu", "gpu"):
        torch.manual_seed(0)
        net = SEResNet(widths=[8, 16, 32, 64], blocks=[1, 1, 1, 1], stem_width=8)
        datamodule = CIFAR10DataModule(
            root=str(fake_cifar_bin),
            verify=False,
            val_size=100,
            eval_batch_size=48,
            num_workers=0,
            pipeline=pipeline,
        )
        trainer = lightning.Trainer(
            accelerator="cpu", logger=False, enable_progress_bar=False, enable_model_summary=False
        )
        (results[pipeline],) = getattr(trainer, stage)(ClassifierModule(net, tta=True), datamodule=datamodule)
        loader = getattr(datamodule, f"{'val' if stage == 'validate' else 'test'}_dataloader")()
        assert isinstance(loader, GPUEvalLoader if pipeline == "gpu" else torch.utils.data.DataLoader)
    assert results["gpu"] == results["cpu"]
