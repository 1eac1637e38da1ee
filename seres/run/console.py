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
# Log lines written at every start that say nothing about the run: Lightning's suggestions of its commercial
# services, and that it uses the model summary this project configures (seres.callbacks); torch's compiler
# saying, on a machine without a GPU, that it found no CUDA runtime.
LEFT_OUT_LINES = (
    "💡 Tip:",
    "Trainer already configured with model summary callbacks",
    "No CUDA runtime is found",
)
LEFT_OUT_FROM = (
    "lightning.pytorch.utilities.rank_zero",
    "lightning.fabric.utilities.rank_zero",
    "torch.utils.cpp_extension",
)


class _LeaveOutLines(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        return not str(record.msg).startswith(LEFT_OUT_LINES)


def quiet_console() -> None:
    """Leave out the messages above in this process (train.py calls it first thing)."""
    for pattern in IRRELEVANT_WARNINGS:
        warnings.filterwarnings("ignore", message=pattern)
    for name in LEFT_OUT_FROM:
        logging.getLogger(name).addFilter(_LeaveOutLines())
