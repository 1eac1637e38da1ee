"""When Lightning writes step metrics: the steps on which callbacks may read device values."""

import lightning as L


def is_logging_step(trainer: L.Trainer) -> bool:
    """Whether Lightning writes step metrics after the batch about to run (call from on_train_batch_start)."""
    every = trainer.log_every_n_steps
    return every > 0 and (trainer.global_step + 1) % every == 0
