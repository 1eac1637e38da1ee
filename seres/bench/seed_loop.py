"""(3): the seed's pipeline: a DataLoader over PIL images with torchvision's per-image augmentations, fp32."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np
from PIL import Image
from torch import Tensor, nn
from torch.utils.data import DataLoader, Dataset
from torchvision import transforms

from seres.bench.recipe import Recipe
from seres.bench.settings import Settings
from seres.bench.timing import time_steps
from seres.model import SEResNet


class PILImages(Dataset):
    """(N, 32, 32, 3) uint8 images handed out as PIL images, as torchvision's CIFAR10 dataset does."""

    def __init__(self, images_hwc: np.ndarray, labels: np.ndarray, transform: Callable) -> None:
        self.images, self.labels, self.transform = images_hwc, labels, transform

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, index: int) -> tuple[Tensor, int]:
        return self.transform(Image.fromarray(self.images[index])), int(self.labels[index])


def seed_transform(recipe: Recipe) -> transforms.Compose:
    """The recipe's augmentations as the seed wrote them: torchvision's classic API, one PIL image at a time.

    Not seres.data.build_train_transform (v2 on uint8 tensors): (3) measures the seed's way. Cutout has no
    classic counterpart and the seed used none, so it is left out.
    """
    aug = recipe.aug
    steps: list[Callable] = []
    if aug.crop_padding:
        steps.append(transforms.RandomCrop(32, padding=aug.crop_padding))
    if aug.flip:
        steps.append(transforms.RandomHorizontalFlip())
    if aug.rotation:
        steps.append(transforms.RandomRotation(aug.rotation))
    if aug.translate:
        steps.append(transforms.RandomAffine(0, translate=(aug.translate, aug.translate)))
    if aug.brightness or aug.contrast or aug.saturation:
        steps.append(transforms.ColorJitter(aug.brightness, aug.contrast, aug.saturation))
    return transforms.Compose([*steps, transforms.ToTensor(), transforms.Normalize(recipe.mean, recipe.std)])


def seed_loader(images: Tensor, labels: Tensor, settings: Settings) -> DataLoader:
    """Shuffled batches of the seed recipe's size from `seed_workers` CPU worker processes."""
    images_hwc = images.permute(0, 2, 3, 1).contiguous().numpy()
    return DataLoader(
        PILImages(images_hwc, labels.numpy(), seed_transform(settings.seed)),
        batch_size=settings.seed.batch_size,
        shuffle=True,
        drop_last=True,
        num_workers=settings.seed_workers,
        pin_memory=settings.torch_device.type == "cuda",
    )


def seed_loop(images: Tensor, labels: Tensor, settings: Settings) -> dict[str, Any]:
    """The same architecture, fresh, as the seed ran it: fp32, NCHW, eager, the seed recipe's optimizer."""
    device, recipe = settings.torch_device, settings.seed
    net = SEResNet(**settings.model).to(device)
    optimizer = recipe.optimizer_factory()(net.parameters())
    criterion = nn.CrossEntropyLoss()
    report = {"loss": 0.0, "correct": 0}

    def step(x: Tensor, y: Tensor) -> None:
        x, y = x.to(device, non_blocking=True), y.to(device, non_blocking=True)
        logits = net(x)
        loss = criterion(logits, y)
        optimizer.zero_grad()
        loss.backward()
        recipe.clip_gradients(net.parameters())
        optimizer.step()
        # A per-epoch report kept the common way: running loss and accuracy read back every step.
        report["loss"] += loss.item()
        report["correct"] += int((logits.argmax(dim=1) == y).sum().item())

    net.train()
    loader = seed_loader(images, labels, settings)
    result = time_steps(step, loader, device, recipe.batch_size, settings.seed_warmup, settings.seed_steps)
    result["mean_loss"] = report["loss"] / (settings.seed_warmup + settings.seed_steps)
    result["workers"] = settings.seed_workers
    return result
