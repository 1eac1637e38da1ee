"""The default run and sweep directories: the date, the time and a suffix drawn once per process."""

import re

from conftest import compose_conf
from hydra.core.hydra_config import HydraConfig

import train  # noqa: F401  (registers the resolvers, as running train.py does)
from seres.run.run_names import RUN_SUFFIX


def test_the_default_directories_are_time_sortable_and_carry_this_processs_suffix():
    cfg = compose_conf("train", hydra_config=True)
    HydraConfig.instance().set_config(cfg)
    run_dir, sweep_dir = str(cfg.hydra.run.dir), str(cfg.hydra.sweep.dir)
    assert re.fullmatch(rf"outputs/\d{{4}}-\d\d-\d\d/\d\d-\d\d-\d\d-{RUN_SUFFIX}", run_dir), run_dir
    assert re.fullmatch(rf"multirun/\d{{4}}-\d\d-\d\d/\d\d-\d\d-\d\d-{RUN_SUFFIX}", sweep_dir), sweep_dir
    assert re.fullmatch(r"[0-9a-f]{6}", RUN_SUFFIX)
    assert str(cfg.hydra.run.dir) == run_dir  # resolved again, the same name
