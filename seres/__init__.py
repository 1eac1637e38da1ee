"""seres: Squeeze-and-Excitation ResNets on CIFAR-10 with PyTorch Lightning and Hydra."""
