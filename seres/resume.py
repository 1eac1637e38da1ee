"""`resume=true` continues a run only under the settings it started with, checked before anything is written.

Hydra rewrites the run directory's `.hydra/config.yaml` and `overrides.yaml` as soon as a job starts, so the
check runs earlier, as a Hydra callback (`ResumeGuard`, enabled in conf/hydra/default.yaml): a refused resume
leaves the run's files exactly as they were. `train.train` repeats the check for callers that bypass Hydra.
"""

import copy
import os
import sys
from pathlib import Path
from typing import Any

import torch
from hydra.core.hydra_config import HydraConfig
from hydra.experimental.callback import Callback
from omegaconf import DictConfig, OmegaConf, open_dict, read_write

# Where files are, how they load, the progress display and the switch itself may change on resume; nothing
# that shapes the training may.
MAY_CHANGE = ("resume", "output_dir", "data_dir", "paths.", "data.root", "data.num_workers", "progress")


def _flatten(tree: Any, prefix: str = "") -> dict[str, Any]:
    """{"a": {"b": 1}} -> {"a.b": 1}"""
    if not isinstance(tree, dict):
        return {prefix: tree}
    return {
        k: v
        for key, sub in tree.items()
        for k, v in _flatten(sub, f"{prefix}.{key}" if prefix else key).items()
    }


def require_same_settings(checkpoint: Path, cfg: DictConfig) -> None:
    """Raise ValueError naming the changed keys if `cfg` differs from the config saved in `checkpoint`."""
    saved = torch.load(checkpoint, map_location="cpu", weights_only=False)["hyper_parameters"].get("config")
    if saved is None:
        return
    now = _flatten(OmegaConf.to_container(cfg, resolve=True))
    before = _flatten(saved)
    changed = sorted(
        k for k in now.keys() | before.keys() if not k.startswith(MAY_CHANGE) and now.get(k) != before.get(k)
    )
    if changed:
        details = ", ".join(f"{k}: {before.get(k)!r} -> {now.get(k)!r}" for k in changed[:5])
        raise ValueError(
            f"resume=true, but {checkpoint} was made with other settings ({details}). Resume with the "
            f"settings it was started with (the first value of each pair) or start a new run directory."
        )


def task_config(config: DictConfig, run_dir: Path) -> DictConfig:
    """The config train.py will see in `run_dir`, made before Hydra has set up the job."""
    config = copy.deepcopy(config)
    with read_write(config.hydra.runtime), open_dict(config.hydra.runtime):
        config.hydra.runtime.output_dir = os.path.abspath(run_dir)  # as Hydra's run_job sets it
    HydraConfig.instance().set_config(config)  # so that ${hydra:...} resolves
    with read_write(config), open_dict(config):
        del config["hydra"]
    return config


class ResumeGuard(Callback):
    """Hydra callback: refuse `resume=true` under other settings before Hydra rewrites the run's files."""

    def on_run_start(self, config: DictConfig, **kwargs: Any) -> None:
        if not config.get("resume"):
            return
        run_dir = Path(config.hydra.run.dir)
        last = run_dir / "last.ckpt"
        if not last.is_file():
            return
        try:
            require_same_settings(last, task_config(config, run_dir))
        except ValueError as error:
            # Hydra turns a callback's exception into a warning and would go on; stop here instead.
            print(f"Error: {error}", file=sys.stderr)
            raise SystemExit(1) from error
