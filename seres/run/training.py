"""A run of train.py: the Trainer, DataModule and LightningModule built from the composed config, the fit,
the test of the best checkpoint and the run directory's files; or a `tune=` search instead.

train.py loads this module only once Hydra has composed a run's config, so that `--help`, `--cfg` and tab
completion answer without loading torch and Lightning.
"""

import logging
import os
import time
from collections.abc import Sequence
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import lightning as L
import torch
from hydra.core.hydra_config import HydraConfig
from hydra.utils import instantiate
from lightning.pytorch.accelerators import CUDAAccelerator
from lightning.pytorch.loggers import TensorBoardLogger
from lightning.pytorch.strategies import ParallelStrategy
from lightning.pytorch.utilities import rank_zero_only
from omegaconf import DictConfig, OmegaConf

from seres.callbacks import RunMeasure
from seres.model import RUNTIME_KEYS, count_parameters
from seres.module import ClassifierModule, network_weights
from seres.records.atomic import atomic_save, write_json
from seres.records.report import percent, write_report
from seres.run.batch_size_finder import MAX_BATCH, find_batch_size
from seres.run.checkpoints import read_lightning_checkpoint
from seres.run.config_checks import ConfigError
from seres.run.config_tree import config_tree
from seres.run.console import quiet_console
from seres.run.interrupts import CtrlCIsNeverLost, stops_cleanly
from seres.run.lr_finder import find_lr
from seres.run.run_names import command_overrides, run_overrides
from seres.run.slurm import slurm_plugins
from seres.run.start_checks import USER_ERRORS, exit_with
from seres.run.trackers import KeepTrackerRuns, attach_run_files, continued_run, holds_params

log = logging.getLogger("seres")


def build_network(model_cfg: DictConfig) -> torch.nn.Module:
    """The network from `model.*`; `model.channels_last` and `model.compile` say how it runs, not what."""
    settings = OmegaConf.to_container(model_cfg, resolve=True)
    channels_last, compile_net = (settings.pop(key, False) for key in RUNTIME_KEYS)
    net = instantiate(settings)
    if channels_last:
        # NHWC lets cuDNN use its fastest mixed-precision convolution kernels.
        net = net.to(memory_format=torch.channels_last)
    return torch.compile(net) if compile_net else net


def build_module(cfg: DictConfig, lr: float | None = None) -> ClassifierModule:
    """The LightningModule for `cfg`; `lr` replaces optimizer.lr (e.g. scaled for several devices)."""
    scheduler = instantiate(cfg.scheduler) if cfg.get("scheduler") else None
    optimizer = instantiate(cfg.optimizer, **({} if lr is None else {"lr": lr}))
    return ClassifierModule(
        net=build_network(cfg.model),
        optimizer=optimizer,
        scheduler=scheduler,
        label_smoothing=cfg.label_smoothing,
        tta=cfg.tta,
        tta_translate=cfg.tta_translate,
        param_groups=OmegaConf.to_container(cfg.param_groups),
        mix=OmegaConf.to_container(cfg.mix),
        sam_rho=cfg.sam_rho,
        num_classes=cfg.model.num_classes,
        config=OmegaConf.to_container(cfg, resolve=True),
    )


def build_trainer(cfg: DictConfig) -> L.Trainer:
    """The Trainer of `cfg`, whose `auto` settings are resolved (seres.run.start_checks)."""
    run_dir = Path(cfg.paths.output_dir)
    callbacks = [instantiate(c) for c in cfg.get("callbacks", {}).values() if c]
    # A resumed run continues its MLflow and W&B runs, whose ids KeepTrackerRuns keeps in the run directory.
    loggers = [
        instantiate(c, _convert_="all", **continued_run(c, run_dir, cfg.resume))
        for c in cfg.get("logger", {}).values()
        if c
    ]
    callbacks.append(KeepTrackerRuns(run_dir))  # writes nothing without an MLflow or W&B logger
    callbacks.append(CtrlCIsNeverLost())
    # The configured plugins (conf/trainer), and under SLURM Lightning's SLURM environment without its own
    # requeueing (seres/run/slurm.py).
    plugins = [instantiate(p) for p in cfg.trainer.get("plugins") or []] + slurm_plugins()
    return instantiate(cfg.trainer, callbacks=callbacks, logger=loggers or False, plugins=plugins or None)


def batch_and_lr_for(cfg: DictConfig, world_size: int) -> tuple[int, float]:
    """Per-process batch size and learning rate for `world_size` processes (see `ddp.batch` in conf).

    per_device: each process takes data.batch_size images, so the global batch grows with the world size,
    and the learning rate grows with it (the linear scaling rule). global: data.batch_size is the global
    batch, split evenly across the processes, and the learning rate is unchanged.
    """
    batch, lr, mode = cfg.data.batch_size, cfg.optimizer.lr, cfg.ddp.batch
    if mode == "per_device":
        return batch, lr * world_size
    if mode != "global":
        raise ConfigError(f"ddp.batch={mode!r} is not one of per_device|global; e.g. ddp.batch=per_device")
    if batch % world_size:
        raise ConfigError(
            f"data.batch_size={batch} cannot be split evenly over {world_size} processes with "
            f"ddp.batch=global; use a multiple of {world_size}, e.g. "
            f"data.batch_size={batch - batch % world_size or world_size}"
        )
    return batch // world_size, lr


def best_weights(trainer: L.Trainer) -> dict[str, torch.Tensor] | None:
    """The module's weights in the best checkpoint by validation accuracy (with EMA, the averaged ones), read
    once for the final test and best_model.pth; None when no checkpoint was kept."""
    best_path = trainer.checkpoint_callback.best_model_path if trainer.checkpoint_callback else ""
    return read_lightning_checkpoint(best_path, weights_only=False)["state_dict"] if best_path else None


def log_hparams(trainer: L.Trainer, cfg: DictConfig, metrics: dict[str, Any]) -> None:
    """Fill TensorBoard's hparams tab with the run's config and its final metrics."""
    config = OmegaConf.to_container(cfg, resolve=True)
    final = {
        f"hparams/{k}": v for k, v in metrics.items() if k in ("best_val_acc", "test_acc") and v is not None
    }
    for logger in trainer.loggers:
        # Only TensorBoard's hparams tab pairs a config with metrics; other loggers take the config alone.
        if final and isinstance(logger, TensorBoardLogger):
            logger.log_hyperparams(config, metrics=final)
        elif not holds_params(logger):
            logger.log_hyperparams(config)
        logger.save()


def build_run(cfg: DictConfig) -> tuple[L.Trainer, Any, ClassifierModule, int, float]:
    """The seeded Trainer, DataModule and LightningModule of `cfg`, and the per-process batch size and
    learning rate they use."""
    L.seed_everything(cfg.seed, workers=True)
    trainer = build_trainer(cfg)
    batch_size, lr = batch_and_lr_for(cfg, trainer.world_size)
    datamodule = instantiate(cfg.data, batch_size=batch_size, _convert_="all")
    return trainer, datamodule, build_module(cfg, lr=lr), batch_size, lr


def tune_lr(cfg: DictConfig) -> None:
    """`tune=lr`: the learning-rate range test instead of training (seres/run/lr_finder.py)."""
    trainer, datamodule, module, _, lr = build_run(cfg)
    scale = lr / cfg.optimizer.lr
    to_give = find_lr(trainer, module, datamodule, Path(cfg.paths.output_dir), scale)
    if not trainer.is_global_zero:
        return
    if to_give is None:
        print("The learning-rate finder found no steepest descent (the loss never fell); see lr_find.png")
        return
    scaled = f" (the run multiplies it by {scale:g}: ddp.batch=per_device)" if scale != 1 else ""
    print(f"Suggested learning rate: optimizer.lr={to_give:.3g}{scaled}; curve in {cfg.paths.output_dir}")


def tune_batch_size(cfg: DictConfig) -> None:
    """`tune=batch_size`: the largest training batch that fits in GPU memory (seres/run/batch_size_finder)."""
    trainer, datamodule, module, _, _ = build_run(cfg)
    if not isinstance(trainer.accelerator, CUDAAccelerator):
        print(
            "tune=batch_size finds the largest batch that fits in GPU memory; this run trains on the CPU, "
            "where the batch is limited by time, not memory: nothing to find"
        )
        return
    if isinstance(trainer.strategy, ParallelStrategy):
        raise ConfigError(
            f"tune=batch_size runs Lightning's batch-size finder in one process on one GPU, not under "
            f"{type(trainer.strategy).__name__} on {trainer.num_devices} devices: add trainer.devices=1 "
            "trainer.strategy=auto, and use the batch it finds per GPU with ddp.batch=per_device"
        )
    found = find_batch_size(trainer, module, datamodule, Path(cfg.paths.output_dir))
    if found is None:
        configured = datamodule.batch_size
        print(f"tune=batch_size tries batches below {MAX_BATCH}; data.batch_size={configured} is not")
        return
    print(
        f"Largest batch that fits: data.batch_size={found} (the configured batch doubled or halved, below "
        f"{MAX_BATCH}); scale optimizer.lr by {found / datamodule.batch_size:g} with it, or run tune=lr at it"
    )


def train(cfg: DictConfig, overrides: Sequence[str] = ()) -> dict[str, Any]:
    """Fit, test the best checkpoint, and write the run's artefacts. Returns the metrics (all ranks).

    `cfg` is as seres.run.start_checks.StartChecks leaves it: checked, its `auto` settings resolved, a resume
    under the run's own settings. `overrides` (the command line's) are recorded in metrics.json so a sweep
    can recognise a finished job.
    """
    run_dir = Path(cfg.paths.output_dir)
    if rank_zero_only.rank == 0:  # once per run, not once per DDP process
        log.info(config_tree(cfg))
    trainer, datamodule, module, batch_size, lr = build_run(cfg)
    resume_from = checkpoint_to_resume(cfg, run_dir)
    with stops_cleanly(trainer, run_dir, overrides):
        started, started_at = time.perf_counter(), datetime.now(timezone.utc)
        trainer.fit(module, datamodule=datamodule, ckpt_path=resume_from)
        metrics = run_metrics(trainer, module, cfg, time.perf_counter() - started)
        metrics |= when_and_where(started_at)
        metrics |= {"global_batch_size": batch_size * trainer.world_size, "lr": lr}
        # What ran, after `auto`: runs on machines with and without native bf16 differ in it.
        metrics["precision"] = str(trainer.precision)
        metrics |= {"task_name": cfg.task_name, "tags": list(cfg.tags)}
        metrics["overrides"] = run_overrides(overrides)
        best = best_weights(trainer)
        if cfg.test:
            metrics |= test_best_checkpoint(trainer, module, datamodule, best)
    if trainer.is_global_zero:
        write_artefacts(trainer, cfg, metrics, run_dir, best)
    return metrics


def checkpoint_to_resume(cfg: DictConfig, run_dir: Path) -> str | None:
    """The run's last.ckpt with resume=true; else `continue_from` (another run's checkpoint); else None."""
    last = run_dir / "last.ckpt"
    if cfg.resume and last.is_file():
        log.info(f"resuming from {last}")
        return str(last)
    if cfg.continue_from:
        log.info(f"continuing from {cfg.continue_from} (weights, optimizer, epoch) under this run's settings")
        return cfg.continue_from
    if cfg.resume:
        # Normal for a sweep's new job; for a person, usually a forgotten hydra.run.dir.
        log.info(f"resume=true, but {run_dir} has no last.ckpt: starting a new run (give hydra.run.dir=...)")
    return None


def run_metrics(
    trainer: L.Trainer, module: ClassifierModule, cfg: DictConfig, seconds: float
) -> dict[str, Any]:
    """What metrics.json says of the fit: the best validation accuracy, size, length and time."""
    checkpoint = trainer.checkpoint_callback
    best_path = checkpoint.best_model_path if checkpoint else ""
    best_score = checkpoint.best_model_score if checkpoint else None
    metrics: dict[str, Any] = {
        "status": "completed",
        "best_val_acc": float(best_score) if best_score is not None else None,
        "test_acc": None,
        "test_loss": None,
        "params": count_parameters(module.net),
        "epochs": trainer.current_epoch,
        "fit_seconds": round(seconds, 2),
        "best_checkpoint": Path(best_path).name if best_path else None,
        "seed": cfg.seed,
        "world_size": trainer.world_size,
    }
    for callback in trainer.callbacks:
        # Callbacks that measure the run (e.g. TimeToAccuracy) add their numbers to metrics.json.
        if isinstance(callback, RunMeasure):
            metrics.update(callback.run_metrics())
    return metrics


def when_and_where(started_at: datetime) -> dict[str, Any]:
    """When the fit ran (UTC) and on which devices: what tells apart sweep jobs that ran side by side."""
    return {
        "started_at": started_at.isoformat(timespec="milliseconds"),
        "finished_at": datetime.now(timezone.utc).isoformat(timespec="milliseconds"),
        "cuda_visible_devices": os.environ.get("CUDA_VISIBLE_DEVICES"),
        "cpus": sorted(os.sched_getaffinity(0)),
    }


def test_best_checkpoint(
    trainer: L.Trainer, module: ClassifierModule, datamodule: Any, best: dict[str, torch.Tensor] | None
) -> dict[str, Any]:
    """Test the `best` weights by validation accuracy, never the last epoch's weights by default.

    Not trainer.test(ckpt_path=...): after a fit, Lightning's WeightAveraging callback answers that load by
    putting the raw, unaveraged weights back into the module, so the test would not see the averaged weights
    that were validated, selected and saved.
    """
    if best is not None:
        module.load_state_dict(best)
    (results,) = trainer.test(module, datamodule=datamodule)
    return {"test_acc": results.get("test/acc"), "test_loss": results.get("test/loss")}


def write_artefacts(
    trainer: L.Trainer, cfg: DictConfig, metrics: dict[str, Any], run_dir: Path, best: dict | None
) -> None:
    """best_model.pth (the network's plain state_dict of the `best` weights), metrics.json, the hparams tab
    and the report; on rank 0 only."""
    if best is not None:
        atomic_save(network_weights(best), run_dir / "best_model.pth")
    write_json(metrics, run_dir / "metrics.json")
    log_hparams(trainer, cfg, metrics)
    write_report(run_dir)  # curves.png, confusion.png, report.md
    attach_run_files(trainer.loggers, run_dir)  # to MLflow and W&B runs
    log.info(summary(metrics, run_dir))


def summary(metrics: dict[str, Any], run_dir: Path) -> str:
    return (
        f"done: best val acc {percent(metrics['best_val_acc'])}, test acc {percent(metrics['test_acc'])}, "
        f"{metrics['params']:,} parameters, {metrics['epochs']} epochs in {metrics['fit_seconds']:.0f}s\n"
        f"run directory: {run_dir}"
    )


def require_shared_run_dir(overrides: Sequence[str]) -> None:
    """Processes started by torchrun or srun must agree on one run directory; the clock may not."""
    external = "TORCHELASTIC_RUN_ID" in os.environ or int(os.environ.get("SLURM_NTASKS", 1)) > 1
    if external and not any(item.startswith("hydra.run.dir=") for item in overrides):
        raise ConfigError(
            "started by torchrun or SLURM with several processes, but without hydra.run.dir: each process "
            "would pick its own time-stamped directory. Add e.g. hydra.run.dir=outputs/my_run"
        )


# `tune=...`: a search on the composed run instead of a training.
TUNERS = {"lr": tune_lr, "batch_size": tune_batch_size}


def run(cfg: DictConfig) -> float | None:
    """What `python train.py` does with a single run's composed `cfg`: train it, or a `tune=` search. Returns
    the best validation accuracy, the value Hydra's sweepers (e.g. Optuna) optimise."""
    quiet_console()
    hydra_cfg = HydraConfig.get()
    try:
        require_shared_run_dir(command_overrides(hydra_cfg.overrides.hydra))
        if cfg.tune:
            TUNERS[cfg.tune](cfg)
            return None
        return train(cfg, command_overrides(hydra_cfg.overrides.task))["best_val_acc"]
    except USER_ERRORS as error:
        exit_with(error)
