"""PatchWhitening: the first convolution starts as a whitening of the training images' patches."""

import lightning as L
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from seres.data.batch_augment import normalize


def first_convolution(net: nn.Module) -> nn.Conv2d:
    """The network's first Conv2d (the stem), also inside a torch.compile wrapper."""
    for module in net.modules():
        if isinstance(module, nn.Conv2d):
            return module
    raise ValueError("the network has no Conv2d for patch whitening")


def patch_covariance(images: Tensor, kernel: tuple[int, int], chunk: int = 500) -> Tensor:
    """(D, D) float64 second moment of every kernel-sized patch of (N, C, H, W) float images, D = C*kh*kw.

    Uncentered, as in airbench: the images are already normalised to a mean near 0 per channel.
    """
    size = images.shape[1] * kernel[0] * kernel[1]
    total, count = torch.zeros(size, size, dtype=torch.float64, device=images.device), 0
    for start in range(0, len(images), chunk):
        # (n, D, L) -> (n * L, D): one row per patch position.
        patches = F.unfold(images[start : start + chunk].double(), kernel).transpose(1, 2).reshape(-1, size)
        total += patches.T @ patches
        count += len(patches)
    return total / count


def whitening_filters(covariance: Tensor, filters: int, kernel_shape: torch.Size, eps: float) -> Tensor:
    """`filters` conv filters: the covariance's top filters/2 eigenvectors scaled by 1/sqrt(eigenvalue + eps),
    then the same negated, so that a ReLU after them keeps both signs of each whitened direction."""
    eigenvalues, eigenvectors = torch.linalg.eigh(covariance)  # ascending
    top = filters // 2
    values, vectors = eigenvalues.flip(0)[:top], eigenvectors.flip(1)[:, :top].T
    scaled = (vectors / torch.sqrt(values + eps)[:, None]).reshape(top, *kernel_shape)
    return torch.cat((scaled, -scaled)).float()


class PatchWhitening(L.Callback):
    """Sets the stem's filters to whiten the training split's patches (Page; airbench), optionally frozen.

    Computed at fit set-up on rank 0 from the first `images` training images as the network sees them
    (normalised, not augmented), then broadcast, so every rank starts from the same filters. They are
    ordinary weights: checkpoints, resume (which restores them after this), eval and export need no data.
    The stem needs an even number of filters, at most twice its patch size (3x3x3: 54).
    """

    def __init__(
        self, enabled: bool = True, images: int = 5000, eps: float = 5e-4, freeze: bool = False
    ) -> None:
        if images < 1 or eps <= 0:
            raise ValueError(f"PatchWhitening(images={images}, eps={eps}): images >= 1 and eps > 0")
        self.enabled = enabled
        self.images = images
        self.eps = eps
        self.freeze = freeze

    def setup(self, trainer: L.Trainer, pl_module: L.LightningModule, stage: str) -> None:
        if not self.enabled or stage != "fit":
            return
        conv = first_convolution(pl_module.net)
        filters, patch_size = conv.out_channels, conv.weight[0].numel()
        if filters % 2 or filters > 2 * patch_size:
            raise ValueError(
                f"patch whitening needs an even stem width of at most {2 * patch_size}, got {filters}; set "
                "model.stem_width, e.g. 32"
            )
        weight = self._filters(trainer, conv) if trainer.is_global_zero else None
        weight = trainer.strategy.broadcast(weight, src=0)
        with torch.no_grad():
            conv.weight.copy_(weight.to(conv.weight.device))
        # Before the optimizer is built (Lightning builds it after set-up), so a frozen stem is not in it.
        conv.weight.requires_grad_(not self.freeze)

    def _filters(self, trainer: L.Trainer, conv: nn.Conv2d) -> Tensor:
        data = trainer.datamodule
        images = normalize(data.train_images[: self.images], data.mean, data.std)
        covariance = patch_covariance(images, conv.kernel_size)
        return whitening_filters(covariance, conv.out_channels, conv.weight.shape[1:], self.eps).cpu()
