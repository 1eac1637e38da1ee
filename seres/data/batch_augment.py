"""Batched augmentation on the images' own device, written as plain tensor ops (no per-sample Python).

Augmentation order and semantics follow the CPU reference
``RandomCrop(32, padding) -> RandomHorizontalFlip -> policy -> RandomRotation -> RandomAffine(translate) ->
ColorJitter -> ToDtype(float32, scale=True) -> Normalize`` followed by cutout in normalised space; the policy
(TrivialAugmentWide, RandAugment, AutoAugment) is seres.data.batch_policy's. Documented deviations:

* Colour jitter uses the fixed order brightness -> contrast -> saturation, where torchvision draws a random
  order. The three ops commute exactly up to the [0, 1] clamps (brightness scales the grey level and the mean
  alike; contrast keeps the grey mean), so only clipped pixels can differ.
* Colour jitter runs on float32 in [0, 1]; torchvision applied to uint8 rounds each step down to an integer,
  which biases its outputs by up to -1/255.
* Rotation and translation are one ``affine_grid``/``grid_sample`` with ``nearest`` interpolation and zero
  fill by default, which is what RandomRotation and RandomAffine do by default; ``bilinear`` is available.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor

from seres.data.augmentation import PADDING_MODES, Augmentation
from seres.data.batch_policy import BatchPolicy

# torchvision's rgb_to_grayscale weights (ITU-R 601-2 luma), used by its contrast and saturation ops.
GRAYSCALE_WEIGHTS = (0.2989, 0.587, 0.114)

ChannelStats = Sequence[float] | Tensor

# A grid_sample coordinate beyond the image even for bilinear's neighbours, so it samples the zero fill.
_FAR_OUTSIDE = 4.0


def to_unit_float(images: Tensor) -> Tensor:
    """uint8 (..., H, W) in [0, 255] -> float32 in [0, 1], computed as ``ToDtype(float32, scale=True)`` does.

    Floating-point input is taken to be in [0, 1] already and is returned unchanged.
    """
    if images.is_floating_point():
        return images
    return images.to(torch.float32).mul_(1.0 / 255)


def normalize(images: Tensor, mean: ChannelStats, std: ChannelStats) -> Tensor:
    """(B, C, H, W) uint8 or unit float -> float32 ``(x - mean) / std``, bit-identical to ToDtype + Normalize.

    Pass ``mean``/``std`` as tensors already on the images' device inside a training loop: a Python sequence
    costs a small host-to-device copy on every call.
    """
    x = to_unit_float(images)
    return x.sub(_channel_column(mean, x)).div_(_channel_column(std, x))


def augment_batch(
    images: Tensor,
    aug: Augmentation,
    generator: torch.Generator | None = None,
    *,
    mean: ChannelStats | None = None,
    std: ChannelStats | None = None,
    interpolation: str = "nearest",
    flips: Tensor | None = None,
) -> Tensor:
    """Randomly augment a batch on its own device; every disabled step is skipped entirely.

    Args:
        images: (B, 3, H, W) uint8 in [0, 255] or float in [0, 1] (uint8 with ``aug.policy``).
        aug: the augmentation settings.
        generator: a torch.Generator on the images' device, or None for the global RNG.
        mean, std: per-channel statistics in [0, 1] units, both or neither. Given, the result is normalised
            (and cutout zeroes in normalised space); omitted, the result stays in [0, 1].
        interpolation: ``"nearest"`` (torchvision's default) or ``"bilinear"`` for rotation/translation.
        flips: (B,) bool, which images to mirror when ``aug.flip`` is on (e.g. ``alternating_flips``);
            None draws a coin per image.

    Returns:
        (B, 3, H, W) float32; may be ``images`` itself when it is float and nothing is enabled.
    """
    if (mean is None) != (std is None):
        raise ValueError("pass both mean and std, or neither")
    x = images
    if aug.crop_padding > 0:
        x = random_crop_flip(x, aug.crop_padding, aug.flip, generator, aug.crop_padding_mode, flips)
    elif aug.flip:
        x = random_flip(x, generator, flips)
    if aug.policy != "none":
        x = policy_of(aug.policy, aug.policy_ops, aug.policy_magnitude)(x, generator)
    x = to_unit_float(x)
    if aug.rotation > 0 or aug.translate > 0:
        x = random_rotate_translate(x, aug.rotation, aug.translate, generator, interpolation)
    if aug.brightness > 0:
        x = adjust_brightness(x, _jitter_factors(x, aug.brightness, generator))
    if aug.contrast > 0:
        x = adjust_contrast(x, _jitter_factors(x, aug.contrast, generator))
    if aug.saturation > 0:
        x = adjust_saturation(x, _jitter_factors(x, aug.saturation, generator))
    if mean is not None and std is not None:
        x = normalize(x, mean, std)
    if aug.cutout > 0:
        x = random_cutout(x, aug.cutout, generator)
    return x


@functools.cache
def policy_of(policy: str, num_ops: int, magnitude: int) -> BatchPolicy:
    """One BatchPolicy per setting, so that its tables reach the device once."""
    return BatchPolicy(policy, num_ops, magnitude)


def random_crop_flip(
    images: Tensor,
    padding: int,
    flip: bool,
    generator: torch.Generator | None,
    padding_mode: str = "zeros",
    flips: Tensor | None = None,
) -> Tensor:
    """Padded random crop back to (H, W) (torchvision ``RandomCrop(size, padding)``), then optional flip.

    ``padding_mode``: "zeros" (RandomCrop's default fill) or "reflect" (its ``padding_mode="reflect"``).
    ``flips``: (B,) bool, the images to mirror; None draws a coin per image.

    Each image gets its own offsets, uniform in [0, 2 * padding] per axis. The crop and the flip are one
    gather: the flip only reverses the column indices. (B, C, H, W) of any dtype -> same shape and dtype.
    """
    batch, channels, height, width = images.shape
    padded = F.pad(images, (padding, padding, padding, padding), mode=PADDING_MODES[padding_mode])
    rows = _random_ints(batch, 2 * padding + 1, images, generator)[:, None] + _arange(height, images)
    cols_in_crop = _arange(width, images).expand(batch, width)
    if flip:
        # Reversing the column order inside the crop flips it without a second pass over the pixels.
        flipped = (_coin_flips(batch, images, generator) if flips is None else flips)[:, None]
        cols_in_crop = torch.where(flipped, cols_in_crop.flip(1), cols_in_crop)
    cols = _random_ints(batch, 2 * padding + 1, images, generator)[:, None] + cols_in_crop
    flat_index = rows[:, :, None] * (width + 2 * padding) + cols[:, None, :]  # (B, H, W) in the padded plane
    flat_index = flat_index.view(batch, 1, height * width).expand(batch, channels, height * width)
    return padded.flatten(2).gather(2, flat_index).view(batch, channels, height, width)


def random_flip(images: Tensor, generator: torch.Generator | None, flips: Tensor | None = None) -> Tensor:
    """Mirror each image left-right with probability 0.5 (or where ``flips``). (B, C, H, W) any dtype."""
    if flips is None:
        flips = _coin_flips(images.shape[0], images, generator)
    flipped = flips.view(-1, 1, 1, 1)
    return torch.where(flipped, images.flip(3), images)


def alternating_flips(first_flips: Tensor, indices: Tensor, epoch: int) -> Tensor:
    """(B,) bool: image ``indices[i]`` is mirrored in ``epoch`` when its ``first_flips`` entry (the flip of
    epoch 0, a fair coin per image of the dataset) says so on even epochs, and the opposite on odd ones.

    Every image is seen both ways in any two consecutive epochs, where independent coins repeat a side half
    the time (airbench: about 10% fewer steps to 94%).
    """
    return first_flips[indices] ^ bool(epoch % 2)


def random_rotate_translate(
    images: Tensor,
    max_degrees: float,
    max_translate: float,
    generator: torch.Generator | None,
    interpolation: str = "nearest",
) -> Tensor:
    """RandomRotation(max_degrees) then RandomAffine(degrees=0, translate=(max_translate, max_translate)).

    Angles are uniform in [-max_degrees, max_degrees]; shifts uniform in +-max_translate * size px and, as in
    torchvision, rounded to whole pixels. (B, C, H, W) float -> same, zeros where the source is outside.
    """
    batch, _, height, width = images.shape
    degrees = _uniform(batch, -max_degrees, max_degrees, images, generator)
    shift_x = _uniform(batch, -max_translate * width, max_translate * width, images, generator).round_()
    shift_y = _uniform(batch, -max_translate * height, max_translate * height, images, generator).round_()
    return rotate_translate(images, degrees, shift_x, shift_y, interpolation)


def rotate_translate(
    images: Tensor, degrees: Tensor, shift_x: Tensor, shift_y: Tensor, interpolation: str = "nearest"
) -> Tensor:
    """Rotate each image about its centre, then shift it, in a single resampling with zero fill.

    Same result as torchvision ``rotate(img, degrees)`` followed by ``affine(translate=(shift_x, shift_y))``
    for whole-pixel shifts: positive degrees turn the picture counter-clockwise, positive shifts move it
    right / down, and the strip the shift uncovers is zero even where the rotation had moved content.

    Args:
        images: (B, C, H, W) float.
        degrees, shift_x, shift_y: (B,) float, in degrees and pixels.
    """
    height, width = images.shape[-2:]
    radians = degrees * (math.pi / 180)
    cos, sin = radians.view(-1, 1, 1).cos(), radians.view(-1, 1, 1).sin()
    # Coordinates are grid_sample's: [-1, 1] across the image, pixel centres at (2 i + 1) / size - 1
    # (align_corners=False, as torchvision). Output pixel p shows the rotated image at q = p - t.
    qx = _pixel_centres(width, images)[None, None, :] - (shift_x * (2 / width)).view(-1, 1, 1)  # (B, 1, W)
    qy = _pixel_centres(height, images)[None, :, None] - (shift_y * (2 / height)).view(-1, 1, 1)  # (B, H, 1)
    # The rotated image at q is the input at R^-1 q; with y pointing down, a visual counter-clockwise turn
    # has R^-1 = [[cos, -sin], [sin, cos]] in pixel units, rescaled here for non-square images.
    source_x = cos * qx - sin * (height / width) * qy
    source_y = sin * (width / height) * qx + cos * qy
    # torchvision crops the rotated image before shifting it: where q left the frame the output is fill.
    outside = (qx.abs() > 1) | (qy.abs() > 1)
    grid = torch.stack((source_x, source_y), dim=-1).masked_fill(outside.unsqueeze(-1), _FAR_OUTSIDE)
    return F.grid_sample(images, grid, mode=interpolation, padding_mode="zeros", align_corners=False)


def adjust_brightness(images: Tensor, factors: Tensor) -> Tensor:
    """torchvision brightness: ``clamp(x * f, 0, 1)``. images (B, C, H, W) in [0, 1]; factors (B, 1, 1, 1)."""
    return images.mul(factors).clamp_(0.0, 1.0)


def adjust_contrast(images: Tensor, factors: Tensor) -> Tensor:
    """torchvision contrast: blend with the image's mean grey level. (B, 3, H, W) in [0, 1]; (B, 1, 1, 1)."""
    grey_mean = _grayscale(images).mean(dim=(1, 2, 3), keepdim=True)
    return torch.lerp(grey_mean, images, factors).clamp_(0.0, 1.0)


def adjust_saturation(images: Tensor, factors: Tensor) -> Tensor:
    """torchvision saturation: blend with the grey image. (B, 3, H, W) in [0, 1]; factors (B, 1, 1, 1)."""
    return torch.lerp(_grayscale(images), images, factors).clamp_(0.0, 1.0)


def random_cutout(images: Tensor, size: int, generator: torch.Generator | None) -> Tensor:
    """Zero one size x size square per image (DeVries & Taylor 2017), as ``transforms.Cutout`` does.

    The centre is uniform over the pixels and the square is clipped at the border, so squares near an edge
    are smaller. (B, C, H, W) float -> same.
    """
    batch, _, height, width = images.shape
    top = _random_ints(batch, height, images, generator) - size // 2
    left = _random_ints(batch, width, images, generator) - size // 2
    in_rows = _within(_arange(height, images), top, size)  # (B, H)
    in_cols = _within(_arange(width, images), left, size)  # (B, W)
    return images.masked_fill((in_rows[:, :, None] & in_cols[:, None, :]).unsqueeze(1), 0.0)


def _channel_column(values: ChannelStats, like: Tensor) -> Tensor:
    """Per-channel values as a (C, 1, 1) tensor matching ``like``; no copy when already a matching tensor."""
    return torch.as_tensor(values, dtype=like.dtype, device=like.device).view(-1, 1, 1)


def _grayscale(images: Tensor) -> Tensor:
    """(B, 3, H, W) -> (B, 1, H, W) luma with torchvision's weights."""
    red, green, blue = images.unbind(dim=1)
    weight_r, weight_g, weight_b = GRAYSCALE_WEIGHTS
    return (red * weight_r + green * weight_g + blue * weight_b).unsqueeze(1)


def _jitter_factors(like: Tensor, strength: float, generator: torch.Generator | None) -> Tensor:
    """(B, 1, 1, 1) ColorJitter factors, uniform in [max(0, 1 - strength), 1 + strength]."""
    factors = _uniform(like.shape[0], max(0.0, 1.0 - strength), 1.0 + strength, like, generator)
    return factors.view(-1, 1, 1, 1)


def _within(positions: Tensor, starts: Tensor, size: int) -> Tensor:
    """(B, L) bool: positions (L,) inside [starts, starts + size) for each of the (B,) starts."""
    return (positions >= starts[:, None]) & (positions < starts[:, None] + size)


def _uniform(count: int, low: float, high: float, like: Tensor, generator: torch.Generator | None) -> Tensor:
    """(count,) float32 uniform in [low, high) on ``like``'s device."""
    return torch.rand(count, generator=generator, device=like.device).mul_(high - low).add_(low)


def _random_ints(count: int, high: int, like: Tensor, generator: torch.Generator | None) -> Tensor:
    """(count,) int64 uniform in [0, high) on ``like``'s device."""
    return torch.randint(0, high, (count,), generator=generator, device=like.device)


def _coin_flips(count: int, like: Tensor, generator: torch.Generator | None) -> Tensor:
    """(count,) bool, each True with probability 0.5."""
    return torch.rand(count, generator=generator, device=like.device) < 0.5


def _pixel_centres(count: int, like: Tensor) -> Tensor:
    """(count,) float32 pixel-centre coordinates in grid_sample's align_corners=False [-1, 1] convention."""
    return (torch.arange(count, device=like.device, dtype=torch.float32) * 2 + 1) / count - 1


def _arange(count: int, like: Tensor) -> Tensor:
    return torch.arange(count, device=like.device)
