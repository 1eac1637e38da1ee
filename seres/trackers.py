"""Experiment trackers beside TensorBoard (conf/logger): MLflow and Weights & Biases, optional extras.

Lightning's MLFlowLogger and WandbLogger carry every metric the run logs (val/acc_best and the test numbers
included) and train.py gives them the run's config as params (`log_hparams`). Here: the check that a chosen
tracker is installed, made before any work, and the run's files attached to its tracker runs at the end.
"""

import importlib
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from lightning.pytorch.loggers import Logger, MLFlowLogger, WandbLogger

from seres.config_checks import ConfigError

# Logger class name -> (its option in conf/logger, which is also the project's extra; the package it needs).
TRACKERS = {"MLFlowLogger": ("mlflow", "mlflow"), "WandbLogger": ("wandb", "wandb")}
# What a tracker run gets of the run directory, where they exist.
ATTACHED = ("report.md", "curves.png", "confusion.png", "best_model.pth")


def require_trackers(config: dict[str, Any]) -> None:
    """Raise ConfigError naming the pip command if a chosen tracker's package cannot be imported."""
    for logger in (config.get("logger") or {}).values():
        name = str((logger or {}).get("_target_", "")).rsplit(".", 1)[-1]
        if name not in TRACKERS:
            continue
        option, package = TRACKERS[name]
        try:
            importlib.import_module(package)
        except ImportError as error:
            raise ConfigError(
                f"logger={option} needs the {package} package, which cannot be imported here ({error}); "
                f"install it with: pip install -e '.[{option}]'"
            ) from None


def attach_run_files(loggers: Iterable[Logger], run_dir: Path) -> None:
    """Attach report.md, curves.png, confusion.png and best_model.pth to each tracker's run (rank 0), and end
    the W&B run here, so that its record (summary and files) is complete before the process exits."""
    files = [run_dir / name for name in ATTACHED if (run_dir / name).is_file()]
    for logger in loggers:
        if isinstance(logger, MLFlowLogger):
            for path in files:
                logger.experiment.log_artifact(logger.run_id, str(path))
        elif isinstance(logger, WandbLogger):
            for path in files:
                logger.experiment.save(str(path), base_path=str(run_dir), policy="now")
            logger.experiment.finish()
