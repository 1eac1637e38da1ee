"""The seed paper's Squeeze-and-Excitation ResNet for 32x32 images, as plain nn.Modules.

Layout (defaults): 3x3 stem with 32 filters + BN + ReLU; stacks of basic blocks at 32/64/128/256 channels
with strides 1/2/2/2 and 3 blocks each; global average pooling; one linear layer. `layer4=True` keeps the
fourth stack (the paper's final model, 4,398,890 parameters); `layer4=False` drops it (the paper's baseline).
"""

from collections.abc import Sequence

import torch
from torch import Tensor, nn


def conv3x3(in_channels: int, out_channels: int, stride: int = 1) -> nn.Conv2d:
    # No bias: every convolution is followed by BatchNorm, whose shift makes a bias redundant.
    return nn.Conv2d(in_channels, out_channels, kernel_size=3, stride=stride, padding=1, bias=False)


class SqueezeExcite(nn.Module):
    """Channel gating: global average pool, FC down by `reduction`, ReLU, FC up, sigmoid, rescale."""

    def __init__(self, channels: int, reduction: int = 16) -> None:
        super().__init__()
        hidden = max(1, channels // reduction)
        # Bias-free FC layers, as in the seed (its parameter count, 4,398,890, holds only without them).
        self.down = nn.Linear(channels, hidden, bias=False)
        self.up = nn.Linear(hidden, channels, bias=False)

    def gate(self, x: Tensor) -> Tensor:
        """Per-channel weights in (0, 1), shape (N, C, 1, 1)."""
        squeezed = x.mean(dim=(2, 3))
        return torch.sigmoid(self.up(torch.relu(self.down(squeezed))))[:, :, None, None]

    def forward(self, x: Tensor) -> Tensor:
        return x * self.gate(x)


class SEBasicBlock(nn.Module):
    """Two 3x3 conv + BN, SE gating before the residual add, projection shortcut when the shape changes."""

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        stride: int = 1,
        se_reduction: int = 16,
        dropout: float = 0.0,
    ) -> None:
        super().__init__()
        self.conv1 = conv3x3(in_channels, out_channels, stride)
        self.bn1 = nn.BatchNorm2d(out_channels)
        self.conv2 = conv3x3(out_channels, out_channels)
        self.bn2 = nn.BatchNorm2d(out_channels)
        self.dropout = nn.Dropout2d(dropout) if dropout > 0 else nn.Identity()
        self.se = SqueezeExcite(out_channels, se_reduction) if se_reduction > 0 else nn.Identity()
        self.shortcut: nn.Module = nn.Identity()
        if stride != 1 or in_channels != out_channels:
            self.shortcut = nn.Sequential(
                nn.Conv2d(in_channels, out_channels, kernel_size=1, stride=stride, bias=False),
                nn.BatchNorm2d(out_channels),
            )

    def forward(self, x: Tensor) -> Tensor:
        out = torch.relu(self.bn1(self.conv1(x)))
        out = self.dropout(out)
        out = self.se(self.bn2(self.conv2(out)))
        return torch.relu(out + self.shortcut(x))


class SEResNet(nn.Module):
    """SE-ResNet for (N, 3, 32, 32) float inputs; returns (N, num_classes) logits.

    `widths`, `blocks` and `strides` list one entry per stack; `layer4=False` uses only the first three
    stacks. `se_reduction=0` removes the SE modules (for ablations). `dropout` is a channel dropout between
    the two convolutions of every block (0 = off). `bn_momentum` is every BatchNorm's running-statistics
    momentum; `bn_scale_trainable=False` keeps every BatchNorm scale at 1.
    """

    def __init__(
        self,
        layer4: bool = False,
        widths: Sequence[int] = (32, 64, 128, 256),
        blocks: Sequence[int] = (3, 3, 3, 3),
        strides: Sequence[int] = (1, 2, 2, 2),
        stem_width: int = 32,
        se_reduction: int = 16,
        dropout: float = 0.0,
        num_classes: int = 10,
        zero_init_residual: bool = False,
        bn_momentum: float = 0.1,
        bn_scale_trainable: bool = True,
    ) -> None:
        super().__init__()
        check_architecture(layer4, widths, blocks, strides, se_reduction, dropout)
        check_batch_norm(bn_momentum, bn_scale_trainable, zero_init_residual)
        stacks = 4 if layer4 else 3
        self.stem = nn.Sequential(conv3x3(3, stem_width), nn.BatchNorm2d(stem_width), nn.ReLU(inplace=True))
        layers, in_channels = [], stem_width
        for width, depth, stride in zip(widths[:stacks], blocks[:stacks], strides[:stacks], strict=True):
            layers.append(self._make_stack(in_channels, width, depth, stride, se_reduction, dropout))
            in_channels = width
        self.stacks = nn.Sequential(*layers)
        self.fc = nn.Linear(in_channels, num_classes)
        self._init_weights(zero_init_residual)
        self._set_batch_norm(bn_momentum, bn_scale_trainable)

    @staticmethod
    def _make_stack(
        in_channels: int, width: int, depth: int, stride: int, se_reduction: int, dropout: float
    ) -> nn.Sequential:
        blocks = [SEBasicBlock(in_channels, width, stride, se_reduction, dropout)]
        blocks += [SEBasicBlock(width, width, 1, se_reduction, dropout) for _ in range(depth - 1)]
        return nn.Sequential(*blocks)

    def _init_weights(self, zero_init_residual: bool) -> None:
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
            elif isinstance(m, nn.BatchNorm2d):
                nn.init.ones_(m.weight)
                nn.init.zeros_(m.bias)
        if zero_init_residual:
            # Each block starts as the identity, which helps large-batch training (Goyal et al., 2017).
            for m in self.modules():
                if isinstance(m, SEBasicBlock):
                    nn.init.zeros_(m.bn2.weight)

    def _set_batch_norm(self, momentum: float, scale_trainable: bool) -> None:
        for m in self.modules():
            if isinstance(m, nn.BatchNorm2d):
                m.momentum = momentum
                # Frozen at 1, the scales leave the learning rate of the convolutions' weights as the
                # only effective step size (Page, "How to train your ResNet", part 8).
                m.weight.requires_grad_(scale_trainable)

    def forward(self, x: Tensor) -> Tensor:
        x = self.stacks(self.stem(x))
        return self.fc(x.mean(dim=(2, 3)))


def check_architecture(
    layer4: bool,
    widths: Sequence[int],
    blocks: Sequence[int],
    strides: Sequence[int],
    se_reduction: int,
    dropout: float,
) -> None:
    """Raise ValueError naming the config key when the architecture cannot be built."""
    stacks = 4 if layer4 else 3
    for key, values in (("widths", widths), ("blocks", blocks), ("strides", strides)):
        if len(values) < stacks:
            raise ValueError(
                f"model.{key}={list(values)} has {len(values)} entries but model.layer4={layer4} needs "
                f"{stacks} (one per stack); give {stacks} values, e.g. model.{key}=[...]"
            )
        if any(int(v) < 1 for v in values):
            raise ValueError(f"model.{key}={list(values)}: every entry must be a positive integer")
    if se_reduction < 0:
        raise ValueError(f"model.se_reduction={se_reduction}: use a positive reduction, or 0 to remove SE")
    if not 0.0 <= dropout < 1.0:
        raise ValueError(f"model.dropout={dropout}: must be in [0, 1)")


def check_batch_norm(momentum: float, scale_trainable: bool, zero_init_residual: bool) -> None:
    """Raise ValueError naming the config key when the BatchNorm settings cannot train."""
    if not 0.0 < momentum <= 1.0:
        raise ValueError(f"model.bn_momentum={momentum}: must be in (0, 1] (torch's convention), e.g. 0.1")
    if zero_init_residual and not scale_trainable:
        raise ValueError(
            "model.bn_scale_trainable=false with model.zero_init_residual=true would freeze every block's "
            "last BatchNorm scale at 0, so no block could learn; set model.zero_init_residual=false"
        )


# model.* keys that say how a run executes the network (memory layout, compilation), not what it is.
RUNTIME_KEYS = ("channels_last", "compile")


def count_parameters(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())
