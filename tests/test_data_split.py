"""Tests for seres/data/split.py: the stratified, seeded train/validation split."""

from __future__ import annotations

import pytest
import torch

from seres.data.split import stratified_split

BALANCED = torch.arange(1000) % 10


def test_split_sizes_disjoint_covering_and_stratified() -> None:
    train_idx, val_idx = stratified_split(BALANCED, val_size=200, seed=0)
    assert len(train_idx) == 800 and len(val_idx) == 200
    assert train_idx.dtype == torch.int64 and val_idx.dtype == torch.int64
    assert set(train_idx.tolist()).isdisjoint(val_idx.tolist())
    assert sorted(train_idx.tolist() + val_idx.tolist()) == list(range(1000))
    assert BALANCED[val_idx].bincount().tolist() == [20] * 10
    assert BALANCED[train_idx].bincount().tolist() == [80] * 10


def test_split_remainder_goes_to_lower_classes() -> None:
    _, val_idx = stratified_split(BALANCED, val_size=205, seed=3)
    assert BALANCED[val_idx].bincount().tolist() == [21] * 5 + [20] * 5


def test_split_is_proportional_for_imbalanced_classes() -> None:
    labels = torch.cat(
        [torch.zeros(600, dtype=torch.long), torch.ones(300, dtype=torch.long), torch.full((100,), 2)]
    )
    labels = labels[torch.randperm(1000, generator=torch.Generator().manual_seed(0))]
    _, val_idx = stratified_split(labels, val_size=100, seed=0)
    assert labels[val_idx].bincount().tolist() == [60, 30, 10]


def test_split_is_deterministic_by_seed_and_differs_across_seeds() -> None:
    first = stratified_split(BALANCED, val_size=100, seed=5)
    again = stratified_split(BALANCED, val_size=100, seed=5)
    other = stratified_split(BALANCED, val_size=100, seed=6)
    assert torch.equal(first[0], again[0]) and torch.equal(first[1], again[1])
    assert not torch.equal(first[1], other[1])


@pytest.mark.parametrize("bad", [0, -1, 1000, 1001, 2.5, True, "100"])
def test_split_rejects_bad_val_size(bad) -> None:
    with pytest.raises(ValueError, match=r"data\.val_size") as caught:
        stratified_split(BALANCED, val_size=bad, seed=0)
    assert repr(bad) in str(caught.value) and "999" in str(caught.value)
