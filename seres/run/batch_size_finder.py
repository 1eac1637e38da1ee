"""`python train.py tune=batch_size ...`: the largest training batch that fits in GPU memory, not a training.

Lightning's Tuner (power mode) trains TRIAL_STEPS steps, and validates as many batches, at the configured
`data.batch_size`, then doubles it after each trial that fits and halves it after one that runs out of memory,
up to MAX_BATCH; then it restores the run's initial weights. On a CPU nothing runs out of memory before the
run becomes too slow to be worth it, so there the finder says so and tries nothing (train.py).
"""

from pathlib import Path
from typing import Any

import lightning as L
from lightning.pytorch.tuner import Tuner

from seres.records.atomic import write_json

TRIAL_STEPS = 3  # Lightning's default: the first steps allocate what later ones reuse
MAX_BATCH = 16384  # a third of the training split; linear lr scaling stops holding well before


def find_batch_size(
    trainer: L.Trainer, module: L.LightningModule, datamodule: Any, run_dir: Path, max_batch: int = MAX_BATCH
) -> int | None:
    """The largest power-of-two multiple or fraction of the configured per-process batch that trained
    without running out of memory, below `max_batch`; written to batch_size_find.json on rank 0. None when
    nothing was tried (the configured batch is not below `max_batch`)."""
    configured = datamodule.batch_size
    found = Tuner(trainer).scale_batch_size(
        module,
        datamodule=datamodule,
        mode="power",
        steps_per_trial=TRIAL_STEPS,
        init_val=configured,
        max_val=max_batch,
    )
    datamodule.batch_size = configured  # the finder leaves its last trial's size behind
    if found is not None and found >= max_batch:
        # Lightning stops when the next size reaches max_val, without trying it.
        found = largest_doubling_below(configured, max_batch)
    if trainer.is_global_zero:
        write_json(
            {"batch_size": found, "configured": configured, "max_batch": max_batch, "steps": TRIAL_STEPS},
            run_dir / "batch_size_find.json",
        )
    return found


def largest_doubling_below(start: int, limit: int) -> int | None:
    """The largest start x 2**k (k >= 0) below `limit`: the last size power mode tried before it."""
    if start >= limit:
        return None
    while start * 2 < limit:
        start *= 2
    return start
