"""Ctrl-C or SIGTERM during a run: stop cleanly, say what was kept and the command that continues the run.

Lightning stops at the end of the current step on either signal (SIGTERM is what `kill`, a cluster's time
limit and most job schedulers send) and ends with SystemExit; last.ckpt holds the last finished epoch, so
`resume=true` continues from there to the same result as a run never interrupted.
"""

import contextlib
import shlex
import sys
from collections.abc import Iterator, Sequence
from pathlib import Path

import lightning as L
from lightning.pytorch.trainer.states import TrainerStatus

from seres.run.resume import RUN_RESULTS, run_overrides


class RunInterrupted(RuntimeError):
    """The run was stopped by a signal; the message says what was kept and how to continue."""


def continue_command(run_dir: Path, overrides: Sequence[str]) -> str:
    kept = [item for item in run_overrides(overrides) if not item.startswith("hydra.run.dir=")]
    return shlex.join([sys.argv[0], *kept, f"hydra.run.dir={run_dir}", "resume=true"])


def interrupted_message(trainer: L.Trainer, run_dir: Path, overrides: Sequence[str]) -> str:
    signal_name = "SIGTERM" if trainer.received_sigterm else "Ctrl-C (SIGINT)"
    finished = trainer.current_epoch  # epochs completed; last.ckpt is written at the end of each
    kept = [name for name in RUN_RESULTS if (run_dir / name).is_file()]
    what = (
        f"kept {', '.join(kept)} (after epoch {finished})" if kept else "nothing kept: no epoch had finished"
    )
    return (
        f"stopped by {signal_name} during epoch {finished + 1} of {trainer.max_epochs}; {what} in {run_dir}. "
        f"Continue the run with: python {continue_command(run_dir, overrides)}"
    )


@contextlib.contextmanager
def stops_cleanly(trainer: L.Trainer, run_dir: Path, overrides: Sequence[str]) -> Iterator[None]:
    """Turn Lightning's exit after a signal into RunInterrupted; any other exit passes through."""
    try:
        yield
    except SystemExit:
        if trainer.state.status != TrainerStatus.INTERRUPTED:
            raise
        raise RunInterrupted(interrupted_message(trainer, run_dir, overrides)) from None
