"""Ctrl-C or SIGTERM during a run: stop cleanly, say what was kept and the command that continues the run.

Lightning stops at the end of the current step on either signal (SIGTERM is what `kill`, a cluster's time
limit and most job schedulers send) and ends with SystemExit; last.ckpt holds the last finished epoch, so
`resume=true` continues from there to the same result as a run never interrupted.
"""

import contextlib
import shlex
import signal
import sys
import threading
from collections.abc import Iterator, Sequence
from pathlib import Path
from types import FrameType

import lightning as L
from lightning.pytorch.trainer.states import TrainerFn, TrainerStatus

from seres.run.resume import RUN_RESULTS
from seres.run.run_names import run_overrides


class CtrlCIsNeverLost(L.Callback):
    """Raises a Ctrl-C again at the end of the next step when Python has dropped it.

    Ctrl-C reaches a run as KeyboardInterrupt, which Lightning turns into a clean stop. Raised inside a fork
    handler or a finalizer (a DataLoader runs both as it starts and stops its worker processes), Python
    prints it as "Exception ignored", with a traceback, and goes on: the run would train to its end. From the
    fit's setup to its teardown this callback notes every Ctrl-C, keeps such a dropped one off the console,
    and raises it again at the end of the next training, validation or test step.
    """

    def __init__(self) -> None:
        self.pending = False
        self._previous_unraisable_hook = None

    def _on_ctrl_c(self, signum: int, frame: FrameType | None) -> None:
        self.pending = True
        raise KeyboardInterrupt

    def _on_unraisable(self, unraisable) -> None:
        if not (self.pending and issubclass(unraisable.exc_type, KeyboardInterrupt)):
            self._previous_unraisable_hook(unraisable)

    def setup(self, trainer: L.Trainer, pl_module: L.LightningModule, stage: str) -> None:
        # Only where Ctrl-C raises KeyboardInterrupt: a process that ignores SIGINT keeps ignoring it.
        in_main_thread = threading.current_thread() is threading.main_thread()
        if in_main_thread and signal.getsignal(signal.SIGINT) is signal.default_int_handler:
            signal.signal(signal.SIGINT, self._on_ctrl_c)
            self._previous_unraisable_hook, sys.unraisablehook = sys.unraisablehook, self._on_unraisable

    def _raise_if_dropped(self) -> None:
        if self.pending:
            raise KeyboardInterrupt

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        self._raise_if_dropped()

    def on_validation_batch_end(self, trainer, pl_module, outputs, batch, batch_idx, dataloader_idx=0):
        self._raise_if_dropped()

    def on_test_batch_end(self, trainer, pl_module, outputs, batch, batch_idx, dataloader_idx=0):
        self._raise_if_dropped()

    def _uninstall(self) -> None:
        if self._previous_unraisable_hook is None:
            return
        # Lightning ignores further Ctrl-Cs while it shuts down after one: that handler is left in place.
        if signal.getsignal(signal.SIGINT) == self._on_ctrl_c:
            signal.signal(signal.SIGINT, signal.default_int_handler)
        sys.unraisablehook, self._previous_unraisable_hook = self._previous_unraisable_hook, None

    def on_exception(self, trainer: L.Trainer, pl_module: L.LightningModule, error: BaseException) -> None:
        self._uninstall()

    def teardown(self, trainer: L.Trainer, pl_module: L.LightningModule, stage: str) -> None:
        self._uninstall()


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
    if trainer.state.fn == TrainerFn.TESTING:  # the final test of the best checkpoint, after the fit
        when = "while testing the best checkpoint (training had finished)"
    else:
        when = f"during epoch {finished + 1} of {trainer.max_epochs}"
    return (
        f"stopped by {signal_name} {when}; {what} in {run_dir}. "
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
