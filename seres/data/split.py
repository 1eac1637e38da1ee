"""The validation split: a stratified, seeded hold-out of the official training set."""

from __future__ import annotations

import torch
from torch import Tensor


def stratified_split(labels: Tensor, val_size: int, seed: int) -> tuple[Tensor, Tensor]:
    """Split indices 0..N-1 into (train_idx, val_idx), stratified by class and deterministic in ``seed``.

    ``labels`` is an integer tensor of shape (N,). Each class contributes validation images in proportion
    to its size; when that does not divide evenly, the leftover images go to the classes with the largest
    fractional share, lower class index first (for balanced CIFAR-10, val_size=5005 gives classes 0-4 501
    images and classes 5-9 500). Both results are sorted int64 tensors; together they cover 0..N-1 once.
    """
    if labels.ndim != 1 or labels.dtype.is_floating_point or labels.dtype == torch.bool:
        raise ValueError(
            f"labels must be a 1-D integer tensor, got dtype {labels.dtype} shape {tuple(labels.shape)}"
        )
    total = len(labels)
    if isinstance(val_size, bool) or not isinstance(val_size, int) or not 1 <= val_size < total:
        raise ValueError(
            f"data.val_size must be an int with 1 <= data.val_size <= {total - 1} (the training set has "
            f"{total} images), got {val_size!r}; set e.g. data.val_size={max(total // 10, 1)}."
        )
    generator = torch.Generator().manual_seed(seed)
    classes = torch.unique(labels)  # sorted, so the quota order does not depend on label order
    members = [torch.nonzero(labels == label).flatten() for label in classes]
    quotas = _class_quotas([len(indices) for indices in members], val_size)
    val_parts = []
    for indices, quota in zip(members, quotas, strict=True):
        order = torch.randperm(len(indices), generator=generator)
        val_parts.append(indices[order[:quota]])
    val_idx = torch.sort(torch.cat(val_parts)).values
    is_val = torch.zeros(total, dtype=torch.bool)
    is_val[val_idx] = True
    train_idx = torch.nonzero(~is_val).flatten()
    return train_idx, val_idx


def _class_quotas(class_counts: list[int], val_size: int) -> list[int]:
    """Validation images per class, proportional to class size (largest remainder, ties to lower class)."""
    total = sum(class_counts)
    quotas = [val_size * count // total for count in class_counts]
    remainders = [val_size * count % total for count in class_counts]
    shortfall = val_size - sum(quotas)
    by_remainder = sorted(range(len(class_counts)), key=lambda index: (-remainders[index], index))
    for index in by_remainder[:shortfall]:
        quotas[index] += 1
    return quotas
