"""seres: Squeeze-and-Excitation ResNets on CIFAR-10 with PyTorch Lightning and Hydra."""

# Registers the settings' schemas with Hydra before any config is composed (seres/run/config_schema.py).
from seres.run import config_schema as _config_schema  # noqa: E402, F401
