"""Run names: directories sortable by time and unique to the process that made them, and trackers' run names;
with them every resolver conf/ uses. Loads neither torch nor Lightning: train.py registers the resolvers
before Hydra composes, so `--help`, `--cfg` and tab completion answer without them.

Two runs started in the same second, on one machine or on several sharing a disk, get different
directories: `outputs/DATE/HH-MM-SS-<suffix>`, the suffix random and drawn once per process
(conf/hydra/default.yaml: `${run_suffix:}`), so every part of one run (Hydra re-resolves the name) sees the
same value.
"""

import secrets
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from hydra.core.hydra_config import HydraConfig
from omegaconf import ListConfig, OmegaConf

RUN_SUFFIX = secrets.token_hex(3)  # 16.7 million values: a clash needs the same second and this draw


def command_overrides(overrides: ListConfig) -> list[str]:
    """Hydra's `overrides.task` or `overrides.hydra` as typed on the command line. Reading the list's items
    would resolve interpolations in them: `x=${paths.output_dir}/y` would be recorded with this machine's
    absolute path, and a sweep's child run would get its parent's value instead of its own."""
    return list(OmegaConf.to_container(overrides, resolve=False))


def run_overrides(overrides: Sequence[str]) -> list[str]:
    """The command line's overrides that define a run: without `resume=`, which says how this process
    starts it, not what it is (metrics.json's `overrides`, a sweep job's identity, trackers' run names)."""
    return [item for item in overrides if not item.startswith("resume=")]


def gpus_per_node(accelerator: str, devices: Any) -> Any:
    """hydra.launcher.gpus_per_node: `devices` GPUs for a job that trains on GPUs, none for a CPU job, which
    sbatch would refuse on nodes without GPUs ("Invalid generic resource (gres) specification")."""
    return None if str(accelerator) == "cpu" else devices


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
