"""`resume=true` continues a run only under the settings it started with; `continue_from=CHECKPOINT` trains
on from another run's checkpoint, under new settings, but only with the same network.

Checked before anything is written (seres.run.start_checks), so a refused resume leaves the run's files
exactly as they were.
"""

from pathlib import Path
from typing import Any

from omegaconf import DictConfig, OmegaConf

from seres.model import RUNTIME_KEYS
from seres.run.checkpoints import read_lightning_checkpoint
from seres.run.config_checks import ConfigError
from seres.run.config_schema import NO_DEFAULT, schema_default

# The files that hold a run's results: kept when it is stopped, and never trained into without resume=true.
RUN_RESULTS = ("last.ckpt", "best.ckpt", "best_model.pth", "metrics.json")
# Where files are, how they load, the progress display and the switch itself may change on resume; nothing
# that shapes the training may.
MAY_CHANGE = ("resume", "output_dir", "data_dir", "paths.", "data.root", "data.num_workers", "progress")
# model.* keys a checkpoint's weights do not depend on: how the network executes, and how fast BatchNorm's
# running statistics follow the batches from here on (so continue_from can try another BatchNorm momentum).
NOT_THE_NETWORK = (*RUNTIME_KEYS, "bn_momentum")


class _NotASetting:
    """What a run had for a key newer than it that the schema gives no default (trainer, callbacks)."""

    def __repr__(self) -> str:
        return "(no such setting then)"


NOT_A_SETTING = _NotASetting()


def _flatten(tree: Any, prefix: str = "") -> dict[str, Any]:
    """{"a": {"b": 1}} -> {"a.b": 1}"""
    if not isinstance(tree, dict):
        return {prefix: tree}
    return {
        k: v
        for key, sub in tree.items()
        for k, v in _flatten(sub, f"{prefix}.{key}" if prefix else key).items()
    }


def _moved(settings: dict[str, Any], old_dir: str, new_dir: str) -> dict[str, Any]:
    """The settings with paths inside the old run directory put inside the new one: a run may be moved."""
    return {k: v.replace(old_dir, new_dir) if isinstance(v, str) else v for k, v in settings.items()}


def _as_run(before: dict[str, Any], key: str, prefix: str) -> Any:
    """The value the run had for `key`: the saved one, or for a key that came with a newer seres than the
    run's, its schema default, since a new setting's default keeps what runs did before it existed."""
    if key in before:
        return before[key]
    default = schema_default(prefix + key)
    return NOT_A_SETTING if default is NO_DEFAULT else default


def _changed_keys(before: dict[str, Any], now: dict[str, Any], prefix: str = "") -> list[str]:
    return sorted(k for k in now.keys() | before.keys() if now.get(k) != _as_run(before, k, prefix))


def _pairs(keys: list[str], before: dict[str, Any], now: dict[str, Any], prefix: str = "") -> str:
    """The first five changes as "key: the run's value -> now"."""
    return ", ".join(f"{prefix}{k}: {_as_run(before, k, prefix)!r} -> {now.get(k)!r}" for k in keys[:5])


def require_same_settings(checkpoint: Path, cfg: DictConfig) -> None:
    """Raise ConfigError naming the changed keys if `cfg` differs from the config saved in `checkpoint`."""
    saved = read_lightning_checkpoint(checkpoint, weights_only=False)["hyper_parameters"]["config"]
    now = _flatten(OmegaConf.to_container(cfg, resolve=True))
    before = _moved(_flatten(saved), str(saved["paths"]["output_dir"]), str(now["paths.output_dir"]))
    changed = [k for k in _changed_keys(before, now) if not k.startswith(MAY_CHANGE)]
    if changed:
        raise ConfigError(
            f"resume=true, but {checkpoint} was made with other settings ({_pairs(changed, before, now)}). "
            "Resume with the settings it was started with (the first value of each pair) or start a new run "
            "directory."
        )


def require_same_network(checkpoint: str, cfg: DictConfig) -> None:
    """ConfigError (or CheckpointError) unless `checkpoint` is train.py's, of the network `cfg` builds."""
    if not Path(checkpoint).is_file():
        raise ConfigError(
            f"continue_from={checkpoint} is not a file: give a checkpoint written by train.py, e.g. "
            "continue_from=outputs/DATE/TIME/last.ckpt"
        )
    saved = read_lightning_checkpoint(checkpoint, weights_only=False)["hyper_parameters"]["config"]["model"]
    now = OmegaConf.to_container(cfg.model, resolve=True)
    changed = [k for k in _changed_keys(saved, now, "model.") if k not in NOT_THE_NETWORK]
    if changed:
        raise ConfigError(
            f"continue_from={checkpoint} holds another network ({_pairs(changed, saved, now, 'model.')}); "
            "continue it with its own model settings (the first value of each pair)"
        )
