"""Default run and sweep directory names: sortable by time and unique to the process that made them.

Two runs started in the same second, on one machine or on several sharing a disk, get different
directories: `outputs/DATE/HH-MM-SS-<suffix>`, the suffix random and drawn once per process
(conf/hydra/default.yaml: `${run_suffix:}`), so every part of one run (Hydra re-resolves the name) sees the
same value.
"""

import secrets

from omegaconf import OmegaConf

RUN_SUFFIX = secrets.token_hex(3)  # 16.7 million values: a clash needs the same second and this draw


def register_run_suffix() -> None:
    OmegaConf.register_new_resolver("run_suffix", lambda: RUN_SUFFIX, replace=True)
