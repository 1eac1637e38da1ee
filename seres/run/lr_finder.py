"""`python train.py tune=lr ...`: Lightning's learning-rate range test on the composed run, not a training.

Lightning's Tuner trains from the run's initial weights for LR_FIND_STEPS steps while the learning rate grows
exponentially from MIN_LR to MAX_LR (every parameter group alike: the BN-bias multiplier and the configured
schedule are set aside), then restores the weights. Its curve and suggestion go into the run directory, and
the suggestion is printed as the `optimizer.lr=...` to give train.py. Callbacks are set aside too (Lightning
runs only its own), so a stem whitened at fit start (callbacks.patch_whitening) is searched unwhitened.
"""

from pathlib import Path
from typing import Any

import lightning as L
from lightning.pytorch.tuner import Tuner

from seres.records.atomic import write_json

LR_FIND_STEPS = 100  # Lightning's default: enough for the loss curve to turn
MIN_LR, MAX_LR = 1e-4, 10.0  # SGD learning rates of this network family lie well inside


def find_lr(
    trainer: L.Trainer, module: L.LightningModule, datamodule: Any, run_dir: Path, lr_scale: float
) -> float | None:
    """Run the range test; write lr_find.png and lr_find.json on rank 0; return the `optimizer.lr` to use.

    `lr_scale`: the run's learning rate over `optimizer.lr` (the number of processes with
    ddp.batch=per_device, else 1): the test finds the rate the optimizer should run at, and the value to
    give is that rate over `lr_scale`.
    """
    finder = Tuner(trainer).lr_find(
        module,
        datamodule=datamodule,
        min_lr=MIN_LR,
        max_lr=MAX_LR,
        num_training=LR_FIND_STEPS,
        update_attr=False,
    )
    suggested = finder.suggestion() if finder is not None else None
    to_give = None if suggested is None else suggested / lr_scale
    if trainer.is_global_zero and finder is not None:
        write_finder_files(finder, run_dir, suggested, to_give)
    return to_give


def write_finder_files(finder: Any, run_dir: Path, suggested: float | None, to_give: float | None) -> None:
    import matplotlib

    matplotlib.use("Agg")  # files only; no display needed
    import matplotlib.pyplot as plt

    figure = finder.plot(suggest=suggested is not None)
    figure.savefig(run_dir / "lr_find.png", dpi=100)
    plt.close(figure)
    write_json(
        {
            "lr": finder.results["lr"],
            "loss": finder.results["loss"],
            "suggested_lr": suggested,  # the rate the optimizer runs at
            "optimizer.lr": to_give,  # the setting that gives it
            "steps": LR_FIND_STEPS,
        },
        run_dir / "lr_find.json",
    )
