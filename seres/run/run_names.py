"""Run names: directories sortable by time and unique to the process that made them, and trackers' run names.

Two runs started in the same second, on one machine or on several sharing a disk, get different
directories: `outputs/DATE/HH-MM-SS-<suffix>`, the suffix random and drawn once per process
(conf/hydra/default.yaml: `${run_suffix:}`), so every part of one run (Hydra re-resolves the name) sees the
same value.
"""

import secrets
from pathlib import Path

from hydra.core.hydra_config import HydraConfig
from omegaconf import ListConfig, OmegaConf

from seres.run.resume import run_overrides
from seres.run.slurm import gpus_per_node

RUN_SUFFIX = secrets.token_hex(3)  # 16.7 million values: a clash needs the same second and this draw


def command_overrides(overrides: ListConfig) -> list[str]:
    """Hydra's `overrides.task` or `overrides.hydra` as typed on the command line. Reading the list's items
    would resolve interpolations in them: `x=${paths.output_dir}/y` would be recorded with this machine's
    absolute path, and a sweep's child run would get its parent's value instead of its own."""
    return list(OmegaConf.to_container(overrides, resolve=False))


def tracker_run_name() -> str | None:
    """The run's name in MLflow or W&B (conf/logger): its overrides, so that a sweep's jobs are told apart by
    their swept values; the run directory's name when it has none. None (the tracker's own name) for a config
    composed without a Hydra run, e.g. with Hydra's compose API."""
    if not HydraConfig.initialized():
        return None
    hydra = HydraConfig.get()
    overrides = run_overrides(command_overrides(hydra.overrides.task))
    return " ".join(overrides) or Path(hydra.runtime.output_dir).name


def register_resolvers() -> None:
    """Every resolver conf/ uses: run directory suffixes, trackers' run names and tags, SLURM's GPUs per
    node."""
    OmegaConf.register_new_resolver("run_suffix", lambda: RUN_SUFFIX, replace=True)
    OmegaConf.register_new_resolver("tracker_run_name", tracker_run_name, replace=True)
    OmegaConf.register_new_resolver("slurm_gpus_per_node", gpus_per_node, replace=True)
    # A list as one text (MLflow's tag values are strings): [a, b] -> "a,b".
    OmegaConf.register_new_resolver("comma_list", lambda items: ",".join(map(str, items)), replace=True)
