"""What eval.py runs on its composed config: the model of `ckpt_path` evaluated on the test or validation
split (optionally with test-time augmentation, and on the shift test sets), its metrics and figures written.

eval.py loads this module only once Hydra has composed the config, so that `--help` and `--cfg` answer
without loading torch and Lightning.
"""

import logging
import sys
from pathlib import Path
from typing import Any

import lightning as L
from omegaconf import DictConfig, OmegaConf

from seres.callbacks import ProgressBar, TestFigures
from seres.data import CIFAR10DataModule, CIFAR10Error, build_eval_transform
from seres.data.shift_sets import cifar10_1_files, cifar10_c_corruptions
from seres.module import ClassifierModule
from seres.records.atomic import write_json
from seres.records.report import CONFUSION_FILE, confusion_figure, read_confusion, save_figure
from seres.results.predict import TrainedModel, load_trained_model
from seres.results.shift import cifar10_1_accuracy, cifar10_c_accuracy, write_shift_report
from seres.run.auto_settings import AUTO, choose_precision
from seres.run.checkpoints import CheckpointError
from seres.run.config_checks import ConfigError, check_tta_translate

log = logging.getLogger("seres")


def build_datamodule(cfg: DictConfig, model: TrainedModel) -> CIFAR10DataModule:
    data = model.config["data"]
    return CIFAR10DataModule(
        root=cfg.data_root or data["root"],
        # Training-side settings only have to be valid; the test split is the official one either way.
        batch_size=data.get("batch_size", 128),
        val_size=data.get("val_size", 5000),
        split_seed=data.get("split_seed", 0),
        eval_batch_size=cfg.batch_size,
        num_workers=cfg.num_workers,
        mean=model.mean,
        std=model.std,
        verify=data.get("verify", True),
    )


def test_precision(cfg: DictConfig, model: TrainedModel) -> str:
    """eval's own precision, else the run's (`auto` chosen for this machine), else fp32."""
    precision = cfg.precision or model.config.get("trainer", {}).get("precision") or "32-true"
    return choose_precision(cfg.accelerator)[0] if precision == AUTO else precision


def build_trainer(cfg: DictConfig, model: TrainedModel, output_dir: Path, figures: bool) -> L.Trainer:
    """A one-device Trainer for testing; with `figures`, TestFigures writes into `output_dir`."""
    callbacks = [ProgressBar(enabled=cfg.progress)]
    if figures:
        callbacks.append(TestFigures(output_dir=str(output_dir)))
    return L.Trainer(
        accelerator=cfg.accelerator,
        devices=1,
        precision=test_precision(cfg, model),
        logger=False,
        callbacks=callbacks,
        enable_model_summary=False,
        limit_test_batches=cfg.limit_batches,
        default_root_dir=output_dir,
    )


def shift_metrics(cfg: DictConfig, model: TrainedModel, module: ClassifierModule, output_dir: Path) -> dict:
    """Accuracy on the shift test sets asked for (cifar10_1, cifar10_c); CIFAR-10.1 gets its own figures."""
    inputs = (build_eval_transform(model.mean, model.std), cfg.batch_size)
    metrics = {}
    if cfg.cifar10_1:
        figures_dir = output_dir / "cifar10_1"
        figures_dir.mkdir(exist_ok=True)
        trainer = build_trainer(cfg, model, figures_dir, figures=True)
        metrics["cifar10_1"] = cifar10_1_accuracy(trainer, module, cfg.cifar10_1, inputs)
    if cfg.cifar10_c:
        trainer = build_trainer(cfg, model, output_dir, figures=False)
        metrics["cifar10_c"] = cifar10_c_accuracy(trainer, module, cfg.cifar10_c, inputs)
    return metrics


def check_eval_settings(cfg: DictConfig) -> None:
    """Refuse a missing checkpoint, a bad split or TTA shift before any work, naming the key and the fix."""
    if OmegaConf.is_missing(cfg, "ckpt_path"):
        raise ConfigError("give the model to evaluate: ckpt_path=RUN_DIR (or its best.ckpt, best_model.pth)")
    if cfg.split not in ("test", "val"):
        raise ConfigError(f"split={cfg.split!r} is not allowed: test (the official test split) or val")
    check_tta_translate(cfg.tta_translate)


def evaluate(cfg: DictConfig) -> dict[str, Any]:
    """Test the model named by cfg.ckpt_path (and on the shift sets asked for); write and return metrics."""
    check_eval_settings(cfg)
    model = load_trained_model(cfg.ckpt_path)
    # Missing shift-set files are named before any work.
    if cfg.cifar10_1:
        cifar10_1_files(cfg.cifar10_1)
    if cfg.cifar10_c:
        cifar10_c_corruptions(cfg.cifar10_c)
    split = cfg.split
    default_dir = "eval" + ("_val" if split == "val" else "") + ("_tta" if cfg.tta else "")
    output_dir = Path(cfg.output_dir or model.source.parent / default_dir)
    output_dir.mkdir(parents=True, exist_ok=True)
    module = ClassifierModule(
        model.net, num_classes=model.net.fc.out_features, tta=cfg.tta, tta_translate=cfg.tta_translate
    )
    trainer = build_trainer(cfg, model, output_dir, figures=True)
    datamodule = build_datamodule(cfg, model)
    datamodule.setup("test")
    loader = datamodule.val_dataloader() if split == "val" else datamodule.test_dataloader()
    # The module's test step runs either split: its results are named test/* whatever the images.
    (results,) = trainer.test(module, dataloaders=loader, verbose=False)
    matrix, classes = read_confusion(output_dir / CONFUSION_FILE)
    save_figure(confusion_figure(matrix, classes), output_dir / "confusion.png")
    metrics = {
        "checkpoint": str(model.source),
        "tta": bool(cfg.tta),
        "tta_translate": cfg.tta_translate if cfg.tta else 0,
        "split": split,
        f"{split}_acc": results["test/acc"],
        f"{split}_loss": results["test/loss"],
        f"{split}_images": int(matrix.sum()),
        "per_class_acc": {name: results[f"test/acc_{name}"] for name in classes},
    }
    metrics |= shift_metrics(cfg, model, module, output_dir)
    write_json(metrics, output_dir / "metrics.json")
    write_shift_report(metrics, output_dir)
    log.info(
        f"{split} acc {100 * metrics[f'{split}_acc']:.2f}% on {metrics[f'{split}_images']:,} images"
        f"{' with TTA' if cfg.tta else ''} ({model.source}); results in {output_dir}"
    )
    return metrics


def run(cfg: DictConfig) -> None:
    """`python eval.py ...`: evaluate, or one line naming the bad setting or file and the fix."""
    try:
        evaluate(cfg)
    except (CheckpointError, CIFAR10Error, ConfigError) as error:
        sys.exit(f"eval.py: {error}")
