"""Lightning callbacks that the configs in conf/callbacks/ switch on, one per module.

None of them adds a host-device synchronisation per training step: values computed on the device are
logged at the trainer's `log_every_n_steps` cadence only, and time is measured with host timestamps.
"""

from seres.callbacks.compile_notice import CompileNotice
from seres.callbacks.ema import EMA
from seres.callbacks.epoch_summary import EpochSummary
from seres.callbacks.grad_norm import GradientNorm
from seres.callbacks.lookahead import Lookahead
from seres.callbacks.network_summary import NetworkSummary
from seres.callbacks.non_finite import NonFiniteLossError, StopOnNonFiniteLoss
from seres.callbacks.patch_whitening import PatchWhitening
from seres.callbacks.progress import ProgressBar
from seres.callbacks.run_measure import RunMeasure
from seres.callbacks.test_figures import TestFigures
from seres.callbacks.time_to_accuracy import TimeToAccuracy
from seres.callbacks.training_compute import TrainingCompute

__all__ = [
    "CompileNotice",
    "EMA",
    "EpochSummary",
    "GradientNorm",
    "Lookahead",
    "NetworkSummary",
    "NonFiniteLossError",
    "PatchWhitening",
    "ProgressBar",
    "RunMeasure",
    "StopOnNonFiniteLoss",
    "TestFigures",
    "TimeToAccuracy",
    "TrainingCompute",
]
