"""Callbacks for tests, used as e.g. `+callbacks.seen._target_=recording.RecordSeenSamples` with `tests/` on
PYTHONPATH: which training images each DDP rank saw (looked up by content, so it needs `data/aug=none`), slow
steps to interrupt, each rank's trained weights, three sweep jobs made to overlap without timing guesses.
"""

import json
import signal
import time
from pathlib import Path

import lightning as L
import torch


class RecordSeenSamples(L.Callback):
    def __init__(self, dirpath: str) -> None:
        self.dirpath = Path(dirpath)
        self.seen: list[int] = []

    def on_train_epoch_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        data = trainer.datamodule
        self.index_of = {bytes(image.numpy().tobytes()): i for i, image in enumerate(data.train_images)}
        self.mean = torch.tensor(data.mean).view(1, 3, 1, 1)
        self.std = torch.tensor(data.std).view(1, 3, 1, 1)
        self.seen = []

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx) -> None:
        images = ((batch[0].cpu().float() * self.std + self.mean) * 255).round().clamp(0, 255).to(torch.uint8)
        self.seen += [self.index_of[image.contiguous().numpy().tobytes()] for image in images]

    def on_train_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        path = self.dirpath / f"seen_rank{trainer.global_rank}_epoch{trainer.current_epoch}.json"
        path.write_text(json.dumps(self.seen))


class SlowSteps(L.Callback):
    """Sleeps after every training step, so that a test can kill a run in the middle of an epoch."""

    def __init__(self, seconds: float = 0.1) -> None:
        self.seconds = seconds

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        time.sleep(self.seconds)


class CtrlCInAFinalizer(L.Callback):
    """Sends the run a Ctrl-C from inside a finalizer at step `step` of its second epoch: Python prints the
    KeyboardInterrupt raised there as "Exception ignored" and goes on, as when a Ctrl-C lands while a
    DataLoader starts its worker processes."""

    def __init__(self, step: int = 3) -> None:
        self.step = step

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        if trainer.current_epoch == 1 and batch_idx == self.step:
            _SendsCtrlCWhenCollected()  # collected at once


class CtrlCInTheTest(L.Callback):
    """Sends the run a Ctrl-C during its final test, once: it marks that in `dirpath`, so that the command
    which continues the run tests to the end."""

    def __init__(self, dirpath: str) -> None:
        self.marker = Path(dirpath) / "ctrl_c_sent"

    def on_test_batch_end(self, trainer, pl_module, outputs, batch, batch_idx, dataloader_idx=0) -> None:
        if not self.marker.exists():
            self.marker.touch()
            signal.raise_signal(signal.SIGINT)


class _SendsCtrlCWhenCollected:
    def __del__(self) -> None:
        signal.raise_signal(signal.SIGINT)


class RecordWeights(L.Callback):
    """Writes each rank's trained parameters at the end of the fit: weights_rank{R}.pt in `dirpath`."""

    def __init__(self, dirpath: str) -> None:
        self.dirpath = Path(dirpath)

    def on_train_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        weights = {name: p.detach().cpu() for name, p in pl_module.net.named_parameters()}
        torch.save(weights, self.dirpath / f"weights_rank{trainer.global_rank}.pt")


class OverlapThreeJobs(L.Callback):
    """Makes sweep jobs 0, 1 and 2 overlap by waiting on each other, not on timing: job 1 trains only once
    job 0 has started training, and job 0 ends only once job 2 has started (in the slot job 1 freed). Each job
    marks its start in `dirpath`. A wait gives up after `timeout` s, so a launcher that runs one job at a time
    fails the test's overlap check instead of hanging."""

    def __init__(self, dirpath: str, job: int, timeout: float = 300.0) -> None:
        self.dirpath = Path(dirpath)
        self.job = job
        self.timeout = timeout

    def on_train_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self.dirpath.mkdir(parents=True, exist_ok=True)
        (self.dirpath / f"{self.job}.started").touch()
        if self.job == 1:
            self._wait_for_start_of(0)

    def on_train_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if self.job == 0:
            self._wait_for_start_of(2)

    def _wait_for_start_of(self, job: int) -> None:
        deadline = time.monotonic() + self.timeout
        while not (self.dirpath / f"{job}.started").exists() and time.monotonic() < deadline:
            time.sleep(0.1)
