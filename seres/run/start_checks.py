"""The start of a run, before its directory is made: a refused start prints one message and writes nothing.

Hydra creates the run directory, its `.hydra/` files and `train.log` before train.py's task function
starts, and rewrites `.hydra/` of a run being resumed. So a run's start is checked earlier, once, by a Hydra
callback (`StartChecks`, enabled in conf/hydra/default.yaml): the settings (seres.run.config_checks), the
`auto` settings resolved (seres.run.auto_settings), the dataset files already present, and a resume under the
run's own settings. seres.run.training.train takes the config as StartChecks leaves it.
"""

import copy
import logging
import os
import sys
from pathlib import Path
from typing import Any, NoReturn

from hydra.core.hydra_config import HydraConfig
from hydra.experimental.callback import Callback
from omegaconf import DictConfig, OmegaConf, open_dict, read_write

from seres.callbacks import NonFiniteLossError
from seres.data import CIFAR10Error, find_cifar10, require_room_for_cifar10
from seres.records.atomic import DiskFullError
from seres.run.auto_settings import resolve_auto
from seres.run.checkpoints import CheckpointError
from seres.run.config_checks import ConfigError, check_config
from seres.run.interrupts import RunInterrupted
from seres.run.resume import RUN_RESULTS, require_same_network, require_same_settings
from seres.run.slurm import check_slurm_tasks, leave_run_files_to_the_first_task
from seres.run.trackers import require_trackers

log = logging.getLogger("seres")
# Errors a user can fix from the message alone: printed as one line, without a traceback.
USER_ERRORS = (ConfigError, CIFAR10Error, CheckpointError, NonFiniteLossError, DiskFullError, RunInterrupted)


def task_config(config: DictConfig, run_dir: Path) -> DictConfig:
    """The config train.py will see in `run_dir`, made before Hydra has set up the job."""
    config = copy.deepcopy(config)
    with read_write(config.hydra.runtime), open_dict(config.hydra.runtime):
        config.hydra.runtime.output_dir = os.path.abspath(run_dir)  # as Hydra's run_job sets it
    HydraConfig.instance().set_config(config)  # so that ${hydra:...} resolves
    with read_write(config), open_dict(config):
        del config["hydra"]
    return config


def require_unused(run_dir: Path) -> None:
    """A directory that holds a run's results is never trained into again without resume=true."""
    found = [name for name in RUN_RESULTS if (run_dir / name).exists()]
    if found:
        raise ConfigError(
            f"{run_dir} already holds a run ({', '.join(found)}); nothing was changed. Continue that run "
            f"with resume=true, or give a new directory: hydra.run.dir=... (or leave it out for a fresh one)"
        )


def check_settings(cfg: DictConfig) -> None:
    """Raise ConfigError if a setting of `cfg` is not allowed, or not possible on this machine."""
    settings = OmegaConf.to_container(cfg, resolve=True)
    check_config(settings)
    require_trackers(settings)
    check_slurm_tasks()


def check_run_files(cfg: DictConfig, run_dir: Path) -> None:
    """Raise one of USER_ERRORS if the data or `run_dir` keep the run `cfg` (auto resolved) from starting."""
    # Files that are there but damaged; missing ones are fetched later by the DataModule, if they can be.
    if find_cifar10(cfg.data.root, verify=cfg.data.verify) is None:
        require_room_for_cifar10(cfg.data.root)
    last = run_dir / "last.ckpt"
    if not cfg.resume:
        require_unused(run_dir)
    elif last.is_file():
        require_same_settings(last, cfg)
        return  # the run continues itself, not continue_from
    if cfg.continue_from:
        require_same_network(cfg.continue_from, cfg)


def exit_with(error: BaseException) -> NoReturn:
    print(f"Error: {error}", file=sys.stderr)
    raise SystemExit(1)


class StartChecks(Callback):
    """Hydra callback: refuse a run that cannot start, before Hydra writes anything of it, and resolve its
    `auto` settings, saying why once the run's log is open."""

    def __init__(self) -> None:
        self.auto_reasons: list[str] = []

    def on_run_start(self, config: DictConfig, **kwargs: Any) -> None:
        leave_run_files_to_the_first_task(config)
        run_dir = Path(config.hydra.run.dir)
        try:
            check_settings(task_config(config, run_dir))
            # In Hydra's own config, from which it makes the job's: the job, .hydra/config.yaml and the
            # checkpoints all hold the choice made here.
            self.auto_reasons = resolve_auto(config)
            check_run_files(task_config(config, run_dir), run_dir)
        except USER_ERRORS as error:
            # Hydra turns a callback's exception into a warning and would go on; stop here instead.
            exit_with(error)

    def on_job_start(self, config: DictConfig, **kwargs: Any) -> None:
        for reason in self.auto_reasons:  # train.log exists from here on
            log.info(reason)
