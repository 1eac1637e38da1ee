"""Sharpness-aware minimisation (seres/optim/sam.py): its step by hand, and in Lightning's training step."""

import copy
from functools import partial

import lightning as L
import pytest
import torch
from conftest import tiny_net
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

from seres.module import ClassifierModule
from seres.optim.sam import SAM

RHO = 0.05
SGD = partial(torch.optim.SGD, lr=0.1, momentum=0.9, weight_decay=5e-4)


def batch(size: int = 16) -> tuple[torch.Tensor, torch.Tensor]:
    generator = torch.Generator().manual_seed(0)
    images = torch.randn(size, 3, 32, 32, generator=generator)
    return images, torch.randint(0, 10, (size,), generator=generator)


def gradients(net: nn.Module, images: torch.Tensor, labels: torch.Tensor) -> list[torch.Tensor]:
    net.zero_grad()
    nn.functional.cross_entropy(net(images), labels).backward()
    return [p.grad.clone() for p in net.parameters()]


def sam_step_by_hand(net: nn.Module, images: torch.Tensor, labels: torch.Tensor) -> nn.Module:
    """SAM's step written out: the gradient at w + rho g / ||g||, applied at w by SGD's first step (its
    momentum buffer starts as the gradient plus weight decay); BatchNorm's statistics from the pass at w."""
    stepped = copy.deepcopy(net)
    first = gradients(stepped, images, labels)  # at w; BatchNorm's running statistics move once, here
    norm = torch.linalg.vector_norm(torch.stack([torch.linalg.vector_norm(g) for g in first]))
    climbed = copy.deepcopy(stepped)
    with torch.no_grad():
        for parameter, gradient in zip(climbed.parameters(), first, strict=True):
            parameter.add_(gradient * RHO / norm)
    second = gradients(climbed, images, labels)
    with torch.no_grad():
        for parameter, gradient in zip(stepped.parameters(), second, strict=True):
            parameter.sub_(0.1 * (gradient + 5e-4 * parameter))
    return stepped


def assert_same_state(a: nn.Module, b: nn.Module) -> None:
    for (name, x), y in zip(a.state_dict().items(), b.state_dict().values(), strict=True):
        assert torch.allclose(x, y, atol=1e-6), name


def test_a_sam_step_is_the_hand_computed_two_pass_step_with_batchnorm_statistics_of_the_first_pass():
    torch.manual_seed(0)
    net, (images, labels) = tiny_net(), batch()
    expected = sam_step_by_hand(net, images, labels)
    optimizer = SAM(net.parameters(), SGD, RHO, list(net.buffers()))

    def closure() -> torch.Tensor:
        optimizer.zero_grad()
        loss = nn.functional.cross_entropy(net(images), labels)
        loss.backward()
        return loss

    optimizer.step(closure)
    assert_same_state(net, expected)
    # The momentum is the base optimizer's, and the checkpoint keeps it.
    assert optimizer.state_dict() == optimizer.base_optimizer.state_dict()
    assert optimizer.state_dict()["state"][0]["momentum_buffer"] is not None


@pytest.mark.parametrize("compiled", [False, True])
def test_in_lightnings_training_step_sam_takes_the_same_step_from_the_same_batch_twice(compiled):
    torch.manual_seed(0)
    net, (images, labels) = tiny_net(), batch()
    expected = sam_step_by_hand(net, images, labels)
    # torch.compile's "eager" backend: Dynamo's graph capture in seconds, without inductor's code generation.
    module = ClassifierModule(torch.compile(net, backend="eager") if compiled else net, SGD, sam_rho=RHO)
    passes = []
    module.net.register_forward_hook(lambda _net, inputs, _out: passes.append(inputs[0]))
    trainer = L.Trainer(
        accelerator="cpu",
        max_steps=1,
        limit_val_batches=0,
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
    )
    trainer.fit(module, train_dataloaders=DataLoader(TensorDataset(images, labels), batch_size=len(labels)))
    assert_same_state(net, expected)
    assert len(passes) == 2 and torch.equal(passes[0], passes[1])  # the same batch, twice
    assert module.passes_per_step == 2


def test_the_second_pass_reuses_the_first_passs_mixed_batch():
    torch.manual_seed(0)
    module = ClassifierModule(tiny_net(), SGD, sam_rho=RHO, mix={"mixup_alpha": 1.0})
    module.configure_optimizers()
    images, labels = batch()
    first = module.training_step((images, labels), 0)
    module.sam.second_pass = True
    second = module.training_step((images, labels), 0)  # a new draw would blend other pairs
    assert torch.allclose(first, second) and module.train_acc.update_count == 1


@pytest.mark.parametrize("rho", [-0.1, 0.0])
def test_sam_needs_a_positive_distance(rho):
    with pytest.raises(ValueError, match="rho must be > 0"):
        SAM(tiny_net().parameters(), SGD, rho)
