"""The training recipes the benchmark runs, composed from the project's Hydra configs in conf/.

The project recipe (`python train.py`'s defaults) gives (1) and (2) their optimizer and gradient clipping;
the seed recipe (`experiment=seed_paper`) gives every section its augmentations and normalisation, and (3)
its optimizer, clipping and batch size. Nothing is copied here, so a change in conf/ changes the benchmark.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from hydra import compose, initialize_config_dir
from hydra.utils import instantiate
from omegaconf import OmegaConf
from torch import nn

from seres.data import Augmentation
from seres.data.files import CIFAR10_TRAIN_IMAGES

CONF_DIR = Path(__file__).resolve().parents[2] / "conf"  # the repository's conf/, as train.py uses it
SEED_OVERRIDES = ("experiment=seed_paper",)


@dataclass(frozen=True)
class Recipe:
    """What one composed train config says about a training step and its data."""

    overrides: tuple[str, ...]
    aug: Augmentation
    mean: tuple[float, ...]
    std: tuple[float, ...]
    optimizer: dict[str, Any]  # the optimizer node, `_target_` and `_partial_` included
    batch_size: int
    gradient_clip_val: float | None
    gradient_clip_algorithm: str  # "norm" or "value", as Lightning's Trainer takes it
    cudnn_benchmark: bool
    val_size: int
    split_seed: int
    epoch_images: int  # the training images of one epoch: the training split less data.val_size

    def optimizer_factory(self) -> Callable[[Iterable[nn.Parameter]], torch.optim.Optimizer]:
        """The optimizer as train.py builds it: called with the parameters."""
        return instantiate(self.optimizer)

    def clip_gradients(self, parameters: Iterable[nn.Parameter]) -> None:
        """What Lightning's gradient_clip_val / gradient_clip_algorithm do, for a plain loop."""
        if self.gradient_clip_val is None:
            return
        if self.gradient_clip_algorithm == "value":
            nn.utils.clip_grad_value_(parameters, self.gradient_clip_val)
        else:
            nn.utils.clip_grad_norm_(parameters, self.gradient_clip_val)


def compose_recipe(overrides: Sequence[str] = ()) -> Recipe:
    """Compose conf/train.yaml with `overrides` (as `python train.py` would) and read the recipe from it."""
    with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
        cfg = compose("train", overrides=list(overrides))
    data, trainer = cfg.data, cfg.trainer
    return Recipe(
        overrides=tuple(overrides),
        aug=Augmentation.from_dict(OmegaConf.to_container(data.aug, resolve=True)),
        mean=tuple(data.mean),
        std=tuple(data.std),
        optimizer=OmegaConf.to_container(cfg.optimizer, resolve=True),
        batch_size=data.batch_size,
        gradient_clip_val=trainer.gradient_clip_val,
        gradient_clip_algorithm=trainer.gradient_clip_algorithm,
        cudnn_benchmark=trainer.benchmark,
        val_size=data.val_size,
        split_seed=data.split_seed,
        epoch_images=CIFAR10_TRAIN_IMAGES - data.val_size,
    )
