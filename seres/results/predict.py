"""Use a trained model: load it from a run directory or a checkpoint, and classify image files.

    python -m seres.results.predict cat.jpg dog.png --model outputs/2025-01-31/12-00-00
    python -m seres.results.predict photos/*.jpg                # the newest run under outputs/ or multirun/

Prints the three most likely classes with their probabilities for each image. Images of any size and mode
(PNG, JPEG, ...) are converted to RGB and resized to 32x32, the CIFAR-10 size.
"""

from __future__ import annotations

import argparse
import dataclasses
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from omegaconf import OmegaConf
from omegaconf.errors import OmegaConfBaseException
from PIL import Image, UnidentifiedImageError
from torch import Tensor, nn

from seres.data import CLASSES, build_eval_transform
from seres.model import RUNTIME_KEYS, SEResNet
from seres.module import network_weights, tta_logits
from seres.run.checkpoints import CheckpointError, read_lightning_checkpoint, read_torch_file

# What a run directory offers, in order of preference: the Lightning checkpoint carries its own config.
RUN_WEIGHTS = ("best.ckpt", "best_model.pth")
MODEL_TARGET = "seres.model.SEResNet"


class ImageReadError(ValueError):
    """A file given to predict is missing or not an image."""


@dataclasses.dataclass(frozen=True)
class TrainedModel:
    """A trained network in eval mode on the CPU, with what is needed to feed it and the run's config."""

    net: nn.Module
    mean: tuple[float, ...]
    std: tuple[float, ...]
    config: dict[str, Any]
    source: Path


def resolve_weights(path: str | Path) -> Path:
    """The weights file for `path`: itself if a file, else the run directory's best.ckpt or best_model.pth."""
    path = Path(path)
    if path.is_dir():
        for name in RUN_WEIGHTS:
            if (path / name).is_file():
                return path / name
        raise CheckpointError(
            f"{path} holds neither {' nor '.join(RUN_WEIGHTS)}; give a run directory written by train.py "
            "(outputs/DATE/TIME) or the path of a .ckpt or .pth file"
        )
    if not path.is_file():
        raise CheckpointError(f"{path} does not exist; give a run directory, a .ckpt or a best_model.pth")
    if path.suffix not in (".ckpt", ".pth"):
        raise CheckpointError(
            f"{path}: expected a Lightning checkpoint (.ckpt) or a state_dict (.pth), got '{path.suffix}'"
        )
    return path


def build_network(model_config: dict[str, Any], source: Path) -> nn.Module:
    """The network described by a run's `model.*` config (only SEResNet; nothing else is ever called)."""
    settings = dict(model_config)
    target = settings.pop("_target_", MODEL_TARGET)
    if target != MODEL_TARGET:
        raise CheckpointError(f"{source}: model._target_={target!r}; only {MODEL_TARGET} can be rebuilt")
    for key in RUNTIME_KEYS:
        settings.pop(key, None)
    try:
        return SEResNet(**settings)
    except (TypeError, ValueError) as error:
        raise CheckpointError(f"{source}: its model config does not build an SEResNet ({error})") from error


def _config_of_state_dict(path: Path) -> dict[str, Any]:
    config_file = path.parent / ".hydra" / "config.yaml"
    if not config_file.is_file():
        raise CheckpointError(
            f"{path} holds only weights; rebuilding the network needs the run's {config_file} next to it "
            "(or give the run's best.ckpt, which carries its config)"
        )
    try:
        config = OmegaConf.load(config_file)
        # Only what rebuilding and evaluating needs: other keys refer to Hydra's state at training time.
        rebuilt = {key: OmegaConf.to_container(config[key], resolve=True) for key in ("model", "data")}
        rebuilt["trainer"] = {"precision": OmegaConf.select(config, "trainer.precision")}
        return rebuilt
    except (OmegaConfBaseException, KeyError) as error:
        raise CheckpointError(
            f"{config_file} does not give the run's model and data config ({error})"
        ) from error


def load_trained_model(path: str | Path) -> TrainedModel:
    """Load a run directory, a Lightning checkpoint (.ckpt) or a best_model.pth (with the run's .hydra/)."""
    source = resolve_weights(path)
    if source.suffix == ".ckpt":
        content = read_lightning_checkpoint(source)  # weights_only: a checkpoint is data, never code
        config, weights = content["hyper_parameters"]["config"], network_weights(content["state_dict"])
    else:
        config, weights = _config_of_state_dict(source), read_torch_file(source)
    net = build_network(config["model"], source)
    try:
        net.load_state_dict(weights)
    except (RuntimeError, TypeError, AttributeError) as error:
        raise CheckpointError(
            f"the weights in {source} do not fit the model its config describes: {error}"
        ) from error
    data = config.get("data", {})
    mean, std = tuple(data.get("mean", ())), tuple(data.get("std", ()))
    if len(mean) != 3 or len(std) != 3:
        raise CheckpointError(f"{source}: the run's config lacks data.mean and data.std (3 numbers each)")
    return TrainedModel(net=net.eval(), mean=mean, std=std, config=config, source=source)


def newest_run_weights(roots: Sequence[Path] = (Path("outputs"), Path("multirun"))) -> Path:
    """The weights of the most recently written run under `roots` (run dirs two or three levels down)."""
    found = [
        weights
        for root in roots
        for pattern in ("*/*/best.ckpt", "*/*/*/best.ckpt", "*/*/best_model.pth", "*/*/*/best_model.pth")
        for weights in root.glob(pattern)
    ]
    if not found:
        raise CheckpointError(
            f"no trained model under {' or '.join(map(str, roots))}; train one (python train.py) or pass "
            "--model RUN_DIR"
        )
    return max(found, key=lambda weights: weights.stat().st_mtime)


def read_image(path: str | Path) -> Tensor:
    """An image file as a uint8 (3, 32, 32) RGB tensor, resized (with anti-aliasing) from any size."""
    path = Path(path)
    try:
        with Image.open(path) as image:
            rgb = image.convert("RGB").resize((32, 32), Image.Resampling.BILINEAR)
    except FileNotFoundError as error:
        raise ImageReadError(f"{path}: no such file") from error
    except UnidentifiedImageError as error:
        raise ImageReadError(f"{path} is not an image file (give PNG, JPEG, BMP, GIF, WebP, ...)") from error
    except OSError as error:  # a directory, a truncated or damaged image
        raise ImageReadError(f"{path} could not be read as an image ({error})") from error
    return torch.from_numpy(np.asarray(rgb).copy()).permute(2, 0, 1).contiguous()


@torch.no_grad()
def class_probabilities(
    model: TrainedModel, images: Tensor, tta: bool = False, tta_translate: int = 0
) -> Tensor:
    """Softmax probabilities (N, 10) for uint8 images (N, 3, 32, 32); TTA as in seres.module.tta_logits."""
    inputs = build_eval_transform(model.mean, model.std)(images)
    logits = tta_logits(model.net, inputs, tta_translate) if tta else model.net(inputs)
    return logits.softmax(dim=1)


def top_classes(probabilities: Tensor, k: int = 3) -> list[list[tuple[str, float]]]:
    values, indices = probabilities.topk(k, dim=1)
    return [
        [
            (CLASSES[index], value)
            for index, value in zip(row_indices.tolist(), row_values.tolist(), strict=True)
        ]
        for row_indices, row_values in zip(indices, values, strict=True)
    ]


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        prog="python -m seres.results.predict",
        description="Print the 3 most likely CIFAR-10 classes for each image (any size; resized to 32x32).",
    )
    parser.add_argument("images", nargs="+", metavar="IMAGE", help="image files (PNG, JPEG, ...)")
    parser.add_argument(
        "--model",
        type=Path,
        default=None,
        help="run directory, .ckpt or best_model.pth (default: the newest run under outputs/ or multirun/)",
    )
    parser.add_argument("--tta", action="store_true", help="average over each image and its mirror image")
    parser.add_argument(
        "--tta-translate",
        type=int,
        choices=range(0, 9),
        default=0,
        metavar="PX",
        help="with --tta, also average over copies shifted by PX pixels (0-8; 0: none)",
    )
    args = parser.parse_args(argv)
    try:
        model = load_trained_model(args.model if args.model is not None else newest_run_weights())
    except CheckpointError as error:
        sys.exit(f"python -m seres.results.predict: {error}")
    images, problems = [], []
    for path in args.images:
        try:
            images.append(read_image(path))
        except ImageReadError as error:
            problems.append(str(error))
    if problems:
        sys.exit("python -m seres.results.predict: nothing predicted:\n  " + "\n  ".join(problems))
    print(f"model: {model.source}", file=sys.stderr)
    probabilities = class_probabilities(model, torch.stack(images), args.tta, args.tta_translate)
    for path, top in zip(args.images, top_classes(probabilities), strict=True):
        print(f"{path}: " + ", ".join(f"{name} {100 * p:.1f}%" for name, p in top))


if __name__ == "__main__":
    main()
