"""Evaluate a trained model on the CIFAR-10 test split, optionally with test-time augmentation.

    python eval.py ckpt_path=outputs/DATE/TIME/best.ckpt
    python eval.py ckpt_path=outputs/DATE/TIME/best_model.pth tta=true
    python eval.py ckpt_path=outputs/DATE/TIME split=val tta=true tta_translate=2   # choose TTA on validation
    python eval.py ckpt_path=outputs/DATE/TIME             # the run's best.ckpt
    python eval.py ckpt_path=outputs/DATE/TIME cifar10_1=DIR cifar10_c=DIR   # and the shift test sets

Writes metrics.json (test accuracy and loss, per-class accuracy), confusion.json, confusion.png and
mistakes.png into `output_dir` (default: eval/, or eval_tta/ with tta=true, next to the checkpoint). The
test runs through the same LightningModule as train.py's, so without TTA it reproduces the run's test_acc.
`split=val` evaluates the run's own validation split instead (keys val_acc, val_loss, val_images; default
directory eval_val/ or eval_val_tta/), so that evaluation settings are chosen without the test split.
With cifar10_1 or cifar10_c, metrics.json and report.md also hold the shift sets' accuracy
(seres/results/shift.py).
"""

import hydra
from omegaconf import DictConfig

import seres.run.config_schema  # noqa: F401  (the settings' types, which conf/eval.yaml composes on)


@hydra.main(version_base="1.3", config_path="conf", config_name="eval")
def main(cfg: DictConfig) -> None:
    # Loaded here, once the config is composed: `--help` and `--cfg` need no torch or Lightning, which take
    # seconds to load.
    from seres.results.evaluation import run

    run(cfg)


if __name__ == "__main__":
    main()
