"""The SE-ResNet as plain nn.Modules: sizes the paper states, shapes, SE gating, config errors."""

import pytest
import torch
from torch import nn

from seres.model import SEBasicBlock, SEResNet, SqueezeExcite, count_parameters


def test_final_model_has_the_papers_parameter_count():
    assert count_parameters(SEResNet(layer4=True)) == 4_398_890


def test_baseline_drops_the_fourth_stack():
    baseline = SEResNet(layer4=False)
    assert len(baseline.stacks) == 3
    assert baseline.fc.in_features == 128
    assert count_parameters(baseline) == 1_092_650


@pytest.mark.parametrize("layer4", [False, True])
def test_logits_shape_and_downsampling(layer4):
    model = SEResNet(layer4=layer4).eval()
    features = model.stacks(model.stem(torch.randn(2, 3, 32, 32)))
    assert features.shape == ((2, 256, 4, 4) if layer4 else (2, 128, 8, 8))
    assert model(torch.randn(2, 3, 32, 32)).shape == (2, 10)


def test_every_block_has_se_and_zero_reduction_removes_it():
    with_se = SEResNet(layer4=True)
    blocks = [m for m in with_se.modules() if isinstance(m, SEBasicBlock)]
    assert len(blocks) == 12
    assert all(isinstance(b.se, SqueezeExcite) for b in blocks)
    without = SEResNet(layer4=True, se_reduction=0)
    assert not any(isinstance(m, SqueezeExcite) for m in without.modules())
    se_params = sum(count_parameters(b.se) for b in blocks)
    assert count_parameters(with_se) - count_parameters(without) == se_params > 0


def test_se_gate_rescales_each_channel_by_a_value_in_unit_interval():
    se = SqueezeExcite(32, reduction=16)
    x = torch.randn(4, 32, 8, 8)
    gate = se.gate(x)
    assert gate.shape == (4, 32, 1, 1)
    assert ((gate > 0) & (gate < 1)).all()
    torch.testing.assert_close(se(x), x * gate)
    # The gate depends on the input: different images get different channel weights.
    assert not torch.allclose(gate[0], gate[1])


def test_se_is_applied_before_the_residual_add():
    block = SEBasicBlock(16, 16).eval()
    x = torch.randn(2, 16, 8, 8)
    gate_seen = {}
    block.se.register_forward_hook(lambda mod, inp, out: gate_seen.update(out=out))
    residual_branch_plus_shortcut = block(x)
    # The SE output (the gated residual branch) plus the identity shortcut, then ReLU, is the block.
    torch.testing.assert_close(residual_branch_plus_shortcut, torch.relu(gate_seen["out"] + x))


def test_projection_shortcut_only_when_shape_changes():
    assert isinstance(SEBasicBlock(32, 32, stride=1).shortcut, nn.Identity)
    assert isinstance(SEBasicBlock(32, 64, stride=2).shortcut, nn.Sequential)
    assert isinstance(SEBasicBlock(32, 32, stride=2).shortcut, nn.Sequential)


def test_widths_blocks_and_dropout_are_configurable():
    small = SEResNet(widths=[8, 16, 32, 64], blocks=[1, 2, 1, 1], stem_width=8, dropout=0.1)
    assert [len(stack) for stack in small.stacks] == [1, 2, 1]
    assert small.fc.in_features == 32
    assert any(isinstance(m, nn.Dropout2d) for m in small.modules())


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"layer4": True, "widths": [32, 64, 128]}, "model.widths"),
        ({"blocks": [3, 0, 3]}, "model.blocks"),
        ({"se_reduction": -1}, "model.se_reduction=-1"),
        ({"dropout": 1.5}, "model.dropout=1.5"),
        ({"bn_momentum": 0.0}, "model.bn_momentum=0.0"),
        ({"bn_scale_trainable": False, "zero_init_residual": True}, "set model.zero_init_residual=false"),
    ],
)
def test_impossible_architectures_are_refused_with_the_key(kwargs, message):
    with pytest.raises(ValueError, match=message):
        SEResNet(**kwargs)


def test_zero_init_residual_makes_blocks_start_as_identity_branches():
    model = SEResNet(zero_init_residual=True)
    assert all(b.bn2.weight.abs().sum() == 0 for b in model.modules() if isinstance(b, SEBasicBlock))


def test_batch_norm_momentum_and_frozen_scales_reach_every_batch_norm():
    model = SEResNet(bn_momentum=0.4, bn_scale_trainable=False)
    norms = [m for m in model.modules() if isinstance(m, nn.BatchNorm2d)]
    assert norms and all(m.momentum == 0.4 for m in norms)
    assert all(not m.weight.requires_grad and bool((m.weight == 1).all()) for m in norms)
    assert all(m.bias.requires_grad for m in norms)
