"""Train an SE-ResNet on CIFAR-10, test the best checkpoint, and leave everything in the run directory.

    python train.py                                   # the default config (conf/train.yaml)
    python train.py model.layer4=true trainer.devices=2
    python train.py -m trainer.max_epochs=10,20 optimizer.lr=0.05,0.1
    python train.py experiment=seed_paper

The run directory (Hydra's output dir) receives best.ckpt, last.ckpt, best_model.pth (the network's plain
state_dict), metrics.json, TensorBoard event files and the composed config (.hydra/).
"""

import json
import logging
import os
import time
from pathlib import Path
from typing import Any

import hydra
import lightning as L
import torch
from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf

from seres.model import count_parameters
from seres.module import ClassifierModule

log = logging.getLogger("seres")


def build_module(cfg: DictConfig) -> ClassifierModule:
    scheduler = instantiate(cfg.scheduler) if cfg.get("scheduler") else None
    return ClassifierModule(
        net=instantiate(cfg.model),
        optimizer=instantiate(cfg.optimizer),
        scheduler=scheduler,
        label_smoothing=cfg.label_smoothing,
        num_classes=cfg.model.num_classes,
        config=OmegaConf.to_container(cfg, resolve=True),
    )


def build_trainer(cfg: DictConfig) -> L.Trainer:
    callbacks = [instantiate(c) for c in cfg.get("callbacks", {}).values() if c]
    loggers = [instantiate(c) for c in cfg.get("logger", {}).values() if c]
    return instantiate(cfg.trainer, callbacks=callbacks, logger=loggers or False)


def save_network_weights(checkpoint_path: str, destination: Path) -> None:
    """Write the network's plain state_dict from a Lightning checkpoint, atomically."""
    state = torch.load(checkpoint_path, map_location="cpu", weights_only=False)["state_dict"]
    weights = {k.removeprefix("net."): v for k, v in state.items() if k.startswith("net.")}
    temporary = destination.with_suffix(".tmp")
    torch.save(weights, temporary)
    os.replace(temporary, destination)


def write_json(data: dict[str, Any], destination: Path) -> None:
    temporary = destination.with_suffix(".tmp")
    temporary.write_text(json.dumps(data, indent=2) + "\n")
    os.replace(temporary, destination)


def log_hparams(trainer: L.Trainer, cfg: DictConfig, metrics: dict[str, Any]) -> None:
    """Fill TensorBoard's hparams tab with the run's config and its final metrics."""
    config = OmegaConf.to_container(cfg, resolve=True)
    final = {
        f"hparams/{k}": v for k, v in metrics.items() if k in ("best_val_acc", "test_acc") and v is not None
    }
    for logger in trainer.loggers:
        logger.log_hyperparams(config, metrics=final) if final else logger.log_hyperparams(config)
        logger.save()


def train(cfg: DictConfig) -> dict[str, Any]:
    """Fit, test the best checkpoint, and write the run's artefacts. Returns the metrics (all ranks)."""
    run_dir = Path(cfg.paths.output_dir)
    L.seed_everything(cfg.seed, workers=True)
    datamodule = instantiate(cfg.data, _convert_="all")
    module = build_module(cfg)
    trainer = build_trainer(cfg)

    started = time.perf_counter()
    trainer.fit(module, datamodule=datamodule)
    fit_seconds = time.perf_counter() - started

    checkpoint = trainer.checkpoint_callback
    best_path = checkpoint.best_model_path if checkpoint else ""
    best_score = checkpoint.best_model_score if checkpoint else None
    metrics: dict[str, Any] = {
        "best_val_acc": float(best_score) if best_score is not None else None,
        "test_acc": None,
        "test_loss": None,
        "params": count_parameters(module.net),
        "epochs": trainer.current_epoch,
        "fit_seconds": round(fit_seconds, 2),
        "best_checkpoint": Path(best_path).name if best_path else None,
        "seed": cfg.seed,
    }
    if cfg.test:
        # The best checkpoint by validation accuracy, never the last epoch's weights by default.
        (results,) = trainer.test(module, datamodule=datamodule, ckpt_path=best_path or None)
        metrics["test_acc"] = results.get("test/acc")
        metrics["test_loss"] = results.get("test/loss")

    if trainer.is_global_zero:
        if best_path:
            save_network_weights(best_path, run_dir / "best_model.pth")
        write_json(metrics, run_dir / "metrics.json")
        log_hparams(trainer, cfg, metrics)
        log.info(summary(metrics, run_dir))
    return metrics


def summary(metrics: dict[str, Any], run_dir: Path) -> str:
    def percent(value: float | None) -> str:
        return "-" if value is None else f"{100 * value:.2f}%"

    return (
        f"done: best val acc {percent(metrics['best_val_acc'])}, test acc {percent(metrics['test_acc'])}, "
        f"{metrics['params']:,} parameters, {metrics['epochs']} epochs in {metrics['fit_seconds']:.0f}s\n"
        f"run directory: {run_dir}"
    )


@hydra.main(version_base="1.3", config_path="conf", config_name="train")
def main(cfg: DictConfig) -> float | None:
    metrics = train(cfg)
    # Hydra sweepers (e.g. Optuna) optimise the returned value.
    return metrics["best_val_acc"]


if __name__ == "__main__":
    main()
