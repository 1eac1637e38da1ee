"""Experiment trackers beside TensorBoard (conf/logger): MLflow and Weights & Biases, optional extras.

Lightning's MLFlowLogger and WandbLogger carry every metric the run logs (val/acc_best and the test numbers
included) and train.py gives them the run's config as params (`log_hparams`). Here: the check that a chosen
tracker is installed, made before any work; the tracker runs' ids kept in the run directory, so that
`resume=true` continues the same MLflow and W&B runs (as TensorBoard continues its event directory); and the
run's files attached to its tracker runs at the end.
"""

import importlib
import json
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from lightning.pytorch import Callback, LightningModule, Trainer
from lightning.pytorch.loggers import Logger, MLFlowLogger, WandbLogger

from seres.records.atomic import write_json
from seres.run.config_checks import ConfigError

# Logger class name -> (its option in conf/logger, which is also the project's extra; the package it needs).
TRACKERS = {"MLFlowLogger": ("mlflow", "mlflow"), "WandbLogger": ("wandb", "wandb")}
# What a tracker run gets of the run directory, where they exist.
ATTACHED = ("report.md", "curves.png", "confusion.png", "best_model.pth")
# In the run directory: {logger class name: its tracker run's id}, written when the fit starts.
TRACKER_RUNS = "tracker_runs.json"


def tracker_name(logger_settings: dict[str, Any] | None) -> str:
    """The logger class name of one `logger.*` entry, e.g. "MLFlowLogger"."""
    return str((logger_settings or {}).get("_target_", "")).rsplit(".", 1)[-1]


def require_trackers(config: dict[str, Any]) -> None:
    """Raise ConfigError naming the pip command if a chosen tracker's package cannot be imported."""
    for logger in (config.get("logger") or {}).values():
        name = tracker_name(logger)
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


def continued_run(logger_settings: dict[str, Any], run_dir: Path, resume: bool) -> dict[str, Any]:
    """The logger's arguments that continue the tracker run recorded in `run_dir`, when the run resumes."""
    path, name = run_dir / TRACKER_RUNS, tracker_name(logger_settings)
    run_id = json.loads(path.read_text()).get(name) if resume and path.is_file() else None
    if run_id is None:
        return {}
    if name == "MLFlowLogger":
        return {"run_id": run_id}
    return {"id": run_id, "resume": "allow"}  # W&B: continue the run of this id, or start it under that id


class KeepTrackerRuns(Callback):
    """Writes the MLflow and W&B runs' ids to `run_dir`/tracker_runs.json when the fit starts (rank 0)."""

    def __init__(self, run_dir: Path) -> None:
        self.path = Path(run_dir) / TRACKER_RUNS

    def on_fit_start(self, trainer: Trainer, pl_module: LightningModule) -> None:
        if not trainer.is_global_zero:
            return
        ids = {}
        for logger in trainer.loggers:
            if isinstance(logger, MLFlowLogger):
                ids["MLFlowLogger"] = logger.run_id  # creates the run if it is not there yet
            elif isinstance(logger, WandbLogger):
                ids["WandbLogger"] = logger.experiment.id
        if ids:
            write_json(ids, self.path)


def holds_params(logger: Logger) -> bool:
    """Whether `logger` is an MLflow run that already holds params: a completed run resumed again. Its params
    cannot change in MLflow, and the settings that shape training cannot change on resume."""
    return isinstance(logger, MLFlowLogger) and bool(logger.experiment.get_run(logger.run_id).data.params)


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
