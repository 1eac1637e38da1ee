"""A quiet console: messages of Lightning and torch that say nothing about this run are left out.

Everything else stays: a warning that concerns the run is worth its line.
"""

import logging
import warnings

# Warnings (regular expressions matching their start) that never concern a run of this project, and why.
IRRELEVANT_WARNINGS = (
    # Runs under SLURM go through srun or sbatch (seres/run/slurm.py); anywhere else the hint is wrong.
    r"The `srun` command is available on your system but is not used",
    # Lightning's own use of an API torch has deprecated: nothing a user can change.
    r"`isinstance\(treespec, LeafSpec\)` is deprecated",
    # The run directory always holds Hydra's .hydra/ and train.log; a directory that holds a run's results is
    # refused before the run starts (seres/run/start_checks.py).
    r"Checkpoint directory .* exists and is not empty",
    # The summary's size estimate under mixed precision: it counts 32 bits a weight, which is what they are.
    r"Precision .* is not supported by the model summary",
)
# Lightning's suggestions of its commercial services, written as information at every start.
ADVERTISING = "💡 Tip:"
LIGHTNING_INFO_LOGGERS = ("lightning.pytorch.utilities.rank_zero", "lightning.fabric.utilities.rank_zero")


class _LeaveOutAdvertising(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        return not str(record.msg).startswith(ADVERTISING)


def quiet_console() -> None:
    """Leave out the messages above in this process (train.py calls it first thing)."""
    for pattern in IRRELEVANT_WARNINGS:
        warnings.filterwarnings("ignore", message=pattern)
    for name in LIGHTNING_INFO_LOGGERS:
        logging.getLogger(name).addFilter(_LeaveOutAdvertising())
