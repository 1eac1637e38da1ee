"""Reading a run's checkpoint and weights files, with one clear message for a damaged or foreign file.

A file cut short by a full disk or a copy, or one written by something other than train.py, is refused
naming the file, what is wrong with it and what to use instead; nothing in its directory is touched.
"""

from pathlib import Path
from typing import Any

import torch

# The files a run directory holds, each with the ones that can stand in for it.
INSTEAD = {
    "last.ckpt": "best.ckpt (to evaluate) or a fresh run directory (to train)",
    "best.ckpt": "the run's best_model.pth, or its last.ckpt",
    "best_model.pth": "the run's best.ckpt",
}


class CheckpointError(ValueError):
    """A path that does not lead to a checkpoint or weights file this project can use."""


def instead_of(path: Path) -> str:
    return INSTEAD.get(path.name, "a best.ckpt or best_model.pth written by train.py")


def read_torch_file(path: str | Path, weights_only: bool = True) -> Any:
    """torch.load `path` on the CPU; CheckpointError if it is damaged or not a PyTorch file."""
    path = Path(path)
    try:
        return torch.load(path, map_location="cpu", weights_only=weights_only)
    except Exception as error:  # torch raises many types for foreign or damaged files
        raise CheckpointError(
            f"{path} is not a readable PyTorch file ({type(error).__name__}: {error}): it is truncated, "
            f"damaged or not written by this project. Use {instead_of(path)} instead"
        ) from error


def read_lightning_checkpoint(path: str | Path, weights_only: bool = True) -> dict[str, Any]:
    """A checkpoint written by train.py: it has the module's state_dict and the run's config.

    weights_only=False also reads callback states that are not plain tensors; only for the run's own files.
    """
    path = Path(path)
    content = read_torch_file(path, weights_only=weights_only)
    config = content.get("hyper_parameters", {}).get("config") if isinstance(content, dict) else None
    if not isinstance(config, dict) or "model" not in config or "state_dict" not in content:
        raise CheckpointError(
            f"{path} is not a checkpoint written by train.py (no state_dict or hyper_parameters.config). "
            f"Use {instead_of(path)} instead"
        )
    return content
