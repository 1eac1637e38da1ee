"""Automatic augmentation policies on whole uint8 batches, each image drawing its own operations.

TrivialAugmentWide (Müller & Hutter 2021), RandAugment N, M (Cubuk et al. 2020) and AutoAugment's CIFAR-10
policy (Cubuk et al. 2019), with torchvision's operations, magnitude tables and black fill (its
`transforms.v2` classes, which the `loader` pipeline uses image by image). torchvision given a batch applies
one draw to all of it, and kornia's policies draw one sub-policy per batch; here every image draws its own
operation, magnitude bin and sign, and each operation runs once over the batch with per-image magnitudes
(identity where an image drew another), as plain tensor ops without a host synchronisation:

* the geometric operations (shears, translations, rotation) are one `grid_sample` with a per-image inverse
  affine matrix, the matrix torchvision builds for each;
* the colour operations blend with their degenerate image by a per-image factor, in torchvision's float32
  arithmetic, then truncate to uint8 as it does;
* posterize, solarize, autocontrast, equalize and invert are per-image masks or selections.

Results match torchvision's per-image transform up to float rounding at uint8 truncation and grid
coordinates (tests/test_batch_policy.py compares every operation).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor
from torchvision.transforms import v2
from torchvision.transforms.v2 import functional as TF

from seres.data.augmentation import POLICIES, WIDE_BINS

# Every operation of the three policies, by the names torchvision's tables use.
OPS = (
    "Identity",
    "ShearX",
    "ShearY",
    "TranslateX",
    "TranslateY",
    "Rotate",
    "Brightness",
    "Color",
    "Contrast",
    "Sharpness",
    "Posterize",
    "Solarize",
    "AutoContrast",
    "Equalize",
    "Invert",
)
OP = {name: index for index, name in enumerate(OPS)}
AUTOAUGMENT_BINS = 10  # torchvision's AutoAugment: magnitudes indexed out of 10


class BatchPolicy:
    """`policy` (one of POLICIES) on (B, 3, H, W) uint8 batches; `num_ops` and `magnitude` are RandAugment's N
    and M (M indexes 31 bins: 0 = none, 30 = strongest)."""

    def __init__(self, policy: str, num_ops: int = 2, magnitude: int = 9, size: tuple[int, int] = (32, 32)):
        if policy not in POLICIES:
            raise ValueError(f"data.aug.policy must be one of {'|'.join(POLICIES)}, got {policy!r}")
        self.policy, self.num_ops, self.magnitude = policy, num_ops, magnitude
        source = {
            "trivialaugment": v2.TrivialAugmentWide,
            "randaugment": v2.RandAugment,
            "autoaugment": v2.AutoAugment,
        }.get(policy)
        bins = AUTOAUGMENT_BINS if policy == "autoaugment" else WIDE_BINS
        # torchvision's own tables (a private attribute: the one definition of its magnitudes).
        space = source._AUGMENTATION_SPACE if source else {}
        self.present = frozenset(space)
        table, signed = magnitude_table(space, bins, size)
        subpolicies = autoaugment_subpolicies() if policy == "autoaugment" else ()
        self._tables = {"ops": torch.tensor([OP[name] for name in space]), "table": table, "signed": signed}
        self._tables |= dict(zip(("sub_ops", "sub_probabilities", "sub_bins"), subpolicies, strict=False))
        self._on_device: dict[torch.device, dict[str, Tensor]] = {}

    def tables(self, device: torch.device) -> dict[str, Tensor]:
        """The policy's tables on `device`, copied there once (a copy per batch would wait for the device)."""
        if device not in self._on_device:
            self._on_device[device] = {name: table.to(device) for name, table in self._tables.items()}
        return self._on_device[device]

    def __call__(self, images: Tensor, generator: torch.Generator | None = None) -> Tensor:
        if images.dtype != torch.uint8:
            raise ValueError(f"data.aug.policy works on uint8 images, got {images.dtype}")
        for ops, magnitudes in self.draw(images.shape[0], images.device, generator):
            images = apply_ops(images, ops, magnitudes, self.present)
        return images

    def draw(
        self, batch: int, device: torch.device, generator: torch.Generator | None = None
    ) -> list[tuple[Tensor, Tensor]]:
        """Each layer's (ops, magnitudes): (B,) indices into OPS and (B,) float64 signed magnitudes."""
        if self.policy == "trivialaugment":
            ops = self._uniform_ops(batch, device, generator)
            bins = torch.randint(0, WIDE_BINS, (batch,), generator=generator, device=device)
            return [self._signed(ops, bins, generator)]
        if self.policy == "randaugment":
            fixed = torch.full((batch,), self.magnitude, device=device)
            return [
                self._signed(self._uniform_ops(batch, device, generator), fixed, generator)
                for _ in range(self.num_ops)
            ]
        if self.policy == "autoaugment":
            return self._autoaugment(batch, device, generator)
        return []

    def _uniform_ops(self, batch: int, device: torch.device, generator: torch.Generator | None) -> Tensor:
        ops = self.tables(device)["ops"]
        return ops[torch.randint(0, len(ops), (batch,), generator=generator, device=device)]

    def _signed(self, ops: Tensor, bins: Tensor, generator: torch.Generator | None) -> tuple[Tensor, Tensor]:
        """The magnitude of each image's op and bin, negated with probability 1/2 where the op is signed."""
        tables = self.tables(ops.device)
        table, signed = tables["table"], tables["signed"]
        flip = torch.rand(ops.shape, generator=generator, device=ops.device) <= 0.5
        magnitudes = table[ops, bins]
        return ops, torch.where(flip & signed[ops], -magnitudes, magnitudes)

    def _autoaugment(
        self, batch: int, device: torch.device, generator: torch.Generator | None
    ) -> list[tuple[Tensor, Tensor]]:
        """A sub-policy per image; each of its two operations applies with its own probability."""
        tables = self.tables(device)
        ops, probabilities, bins = tables["sub_ops"], tables["sub_probabilities"], tables["sub_bins"]
        chosen = torch.randint(0, len(ops), (batch,), generator=generator, device=device)
        layers = []
        for step in range(ops.shape[1]):
            applies = torch.rand(batch, generator=generator, device=device) <= probabilities[chosen, step]
            step_ops = torch.where(applies, ops[chosen, step], OP["Identity"])
            layers.append(self._signed(step_ops, bins[chosen, step], generator))
        return layers


def magnitude_table(space: dict, bins: int, size: tuple[int, int]) -> tuple[Tensor, Tensor]:
    """(len(OPS), bins) float64 magnitudes of each op (0 where it has none) and (len(OPS),) bool signed."""
    height, width = size
    table = torch.zeros(len(OPS), bins, dtype=torch.float64)
    signed = torch.zeros(len(OPS), dtype=torch.bool)
    for name, (magnitudes_of, is_signed) in space.items():
        magnitudes = magnitudes_of(bins, height, width)
        if magnitudes is not None and magnitudes.ndim > 0:
            table[OP[name]] = magnitudes.to(torch.float64)
            signed[OP[name]] = is_signed
    return table, signed


def autoaugment_subpolicies() -> tuple[Tensor, Tensor, Tensor]:
    """torchvision's CIFAR-10 AutoAugment policy as (subpolicies, 2) ops, probabilities and magnitude bins."""
    rows = v2.AutoAugment(v2.AutoAugmentPolicy.CIFAR10)._policies
    ops = torch.tensor([[OP[name] for name, _, _ in row] for row in rows])
    probabilities = torch.tensor([[p for _, p, _ in row] for row in rows], dtype=torch.float32)
    bins = torch.tensor([[b if b is not None else 0 for _, _, b in row] for row in rows])
    return ops, probabilities, bins


def apply_ops(
    images: Tensor, ops: Tensor, magnitudes: Tensor, present: frozenset[str] = frozenset(OPS)
) -> Tensor:
    """Each image's op (index into OPS) at its magnitude; (B, 3, H, W) uint8 -> same.

    Every op that the policy holds (`present`) runs over the whole batch, unchanging the images that drew
    another: asking which ops were drawn would wait for the device.
    """
    magnitudes = magnitudes.to(torch.float64)  # torchvision computes its factors in Python floats
    x = affine(images, inverse_affine_matrices(ops, magnitudes, images.shape[-2:]))
    for name, blend in (("Brightness", brightness), ("Color", saturation), ("Contrast", contrast)):
        x = blend(x, _factor(ops, magnitudes, OP[name]))
    x = sharpness(x, _factor(ops, magnitudes, OP["Sharpness"]))
    x = posterize(x, torch.where(ops == OP["Posterize"], magnitudes, 8.0))
    x = solarize(x, torch.where(ops == OP["Solarize"], magnitudes * 255.0, 256.0))
    for name, operation in (
        ("AutoContrast", autocontrast),
        ("Equalize", TF.equalize),
        ("Invert", _invert),
    ):
        if name in present:
            x = torch.where((ops == OP[name]).view(-1, 1, 1, 1), operation(x), x)
    return x


def _factor(ops: Tensor, magnitudes: Tensor, op: int) -> Tensor:
    """(B,) float64 blend factor 1 + magnitude where the image drew `op`, else 1 (unchanged)."""
    return torch.where(ops == op, 1.0 + magnitudes, 1.0)


def inverse_affine_matrices(ops: Tensor, magnitudes: Tensor, size: torch.Size) -> Tensor:
    """(B, 2, 3) float32: for each image, the matrix torchvision's affine/rotate samples its op's input with,
    mapping output pixel centres to input ones (both relative to the image centre); identity for other ops.

    ShearX is `affine(shear=[degrees(atan(m)), 0], center=[0, 0])`, ShearY likewise in y; TranslateX/Y
    `affine(translate=[int(m), 0])`; Rotate `rotate(angle=m)` (counter-clockwise), all computed in float64 as
    torchvision computes them in Python floats.
    """
    height, width = size
    m = magnitudes.to(torch.float64)
    shear = torch.tan(torch.deg2rad(torch.rad2deg(torch.atan(m))))
    shift = torch.trunc(m)
    angle = torch.deg2rad(-m)  # rotate() hands affine the negative angle
    one, zero = torch.ones_like(m), torch.zeros_like(m)
    cos, sin = torch.cos(angle), torch.sin(angle)
    rows = {
        # [m0, m1, m2, m3, m4, m5]: input x = m0 x + m1 y + m2, input y = m3 x + m4 y + m5.
        OP["ShearX"]: (one, shear, shear * (height / 2), zero, one, zero),
        OP["ShearY"]: (one, zero, zero, shear, one, shear * (width / 2)),
        OP["TranslateX"]: (one, zero, -shift, zero, one, zero),
        OP["TranslateY"]: (one, zero, zero, zero, one, -shift),
        OP["Rotate"]: (cos, sin, zero, -sin, cos, zero),
    }
    matrix = torch.stack((one, zero, zero, zero, one, zero), dim=1)
    for op, entries in rows.items():
        matrix = torch.where((ops == op)[:, None], torch.stack(entries, dim=1), matrix)
    return matrix.to(torch.float32).view(-1, 2, 3)


def affine(images: Tensor, matrices: Tensor) -> Tensor:
    """Nearest-neighbour resampling of each image by its inverse matrix, black outside, as torchvision's
    `_affine_grid` and `grid_sample` do for one image. (B, C, H, W) uint8 -> same."""
    batch, _, height, width = images.shape
    xs = torch.linspace((1.0 - width) * 0.5, (width - 1.0) * 0.5, width, device=images.device)
    ys = torch.linspace((1.0 - height) * 0.5, (height - 1.0) * 0.5, height, device=images.device)
    base = torch.stack(
        (
            xs.expand(height, width),
            ys[:, None].expand(height, width),
            torch.ones(height, width, device=xs.device),
        ),
        dim=-1,
    ).view(1, height * width, 3)
    scale = torch.empty(2, device=images.device)  # filled on the device: torch.tensor(...) would copy there
    scale[0], scale[1] = 0.5 * width, 0.5 * height
    grid = base.expand(batch, -1, -1).bmm(matrices.transpose(1, 2) / scale)
    sampled = F.grid_sample(
        images.float(),
        grid.view(batch, height, width, 2),
        mode="nearest",
        padding_mode="zeros",
        align_corners=False,
    )
    return sampled.round_().to(images.dtype)


def _blend(images: Tensor, degenerate: Tensor, factors: Tensor) -> Tensor:
    """torchvision's `_blend`, a factor per image: images * f + degenerate * (1 - f), truncated to uint8."""
    ratio = factors.to(torch.float32).view(-1, 1, 1, 1)
    rest = (1.0 - factors).to(torch.float32).view(-1, 1, 1, 1)
    # addcmul rounds as torchvision's add_(alpha=...) does, where a product then a sum would not.
    return torch.addcmul(images.mul(ratio), degenerate, rest).clamp_(0, 255).to(images.dtype)


def _grayscale(images: Tensor) -> Tensor:
    """torchvision's float luma of uint8 images, floored as its contrast and saturation use it."""
    red, green, blue = images.unbind(dim=1)
    return red.mul(0.2989).add_(green, alpha=0.587).add_(blue, alpha=0.114).unsqueeze(1).floor_()


def brightness(images: Tensor, factors: Tensor) -> Tensor:
    return images.mul(factors.to(torch.float32).view(-1, 1, 1, 1)).clamp_(0, 255).to(images.dtype)


def saturation(images: Tensor, factors: Tensor) -> Tensor:
    return _blend(images, _grayscale(images), factors)


def contrast(images: Tensor, factors: Tensor) -> Tensor:
    return _blend(images, _grayscale(images).mean(dim=(1, 2, 3), keepdim=True), factors)


def sharpness(images: Tensor, factors: Tensor) -> Tensor:
    """torchvision's adjust_sharpness: the interior blended with a rounded 3x3 smoothing, borders kept."""
    channels = images.shape[1]
    kernel = torch.full((3, 3), 1.0 / 13.0, device=images.device)
    kernel[1, 1] = 5.0 / 13.0
    output = images.to(torch.float32)
    blurred = F.conv2d(output, kernel.expand(channels, 1, 3, 3), groups=channels).round_()
    interior = output[..., 1:-1, 1:-1]
    rest = (1.0 - factors).to(torch.float32).view(-1, 1, 1, 1)
    interior.addcmul_(blurred.sub_(interior), rest)
    return output.clamp_(0, 255).to(images.dtype)


def posterize(images: Tensor, bits: Tensor) -> Tensor:
    """Keep each image's top `bits` (B,) bits of every channel value."""
    kept = bits.to(torch.int64)
    masks = ((1 << kept) - 1) << (8 - kept)
    return images & masks.to(images.dtype).view(-1, 1, 1, 1)


def solarize(images: Tensor, thresholds: Tensor) -> Tensor:
    """Invert the values at or above each image's threshold (B,); 256 leaves an image unchanged."""
    at_or_above = images >= thresholds.to(torch.float32).view(-1, 1, 1, 1)
    return torch.where(at_or_above, _invert(images), images)


def autocontrast(images: Tensor) -> Tensor:
    """torchvision's autocontrast (each channel stretched to 0..255), without its boolean-mask assignment,
    which would wait for the device."""
    x = images.to(torch.float32)
    low, high = x.amin(dim=(-2, -1), keepdim=True), x.amax(dim=(-2, -1), keepdim=True)
    flat = high == low
    inverse_scale = torch.where(flat, 1.0, (high - low).mul_(1.0 / 255))
    return x.sub_(torch.where(flat, 0.0, low)).div_(inverse_scale).clamp_(0, 255).to(images.dtype)


def _invert(images: Tensor) -> Tensor:
    return images.bitwise_not()
