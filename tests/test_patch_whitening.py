"""PatchWhitening: the stem's filters whiten the training patches, at fit start, kept by checkpoints."""

from functools import partial
from pathlib import Path

import lightning as L
import pytest
import torch
import torch.nn.functional as F
from conftest import TINY, fake_data, run_train, tiny_net

from seres.callbacks import PatchWhitening
from seres.callbacks.patch_whitening import first_convolution, patch_covariance, whitening_filters
from seres.data import CIFAR10DataModule
from seres.data.batch_augment import normalize
from seres.module import ClassifierModule


def correlated_images(n: int = 200) -> torch.Tensor:
    """(n, 3, 16, 16) float images whose neighbouring pixels and channels are strongly correlated."""
    generator = torch.Generator().manual_seed(0)
    noise = torch.randn(n, 1, 18, 18, generator=generator)
    smooth = F.avg_pool2d(noise, 3, stride=1)  # (n, 1, 16, 16)
    return smooth * torch.tensor([1.0, 0.8, 0.5]).view(1, 3, 1, 1) + 0.1 * torch.randn(n, 3, 16, 16)


def test_the_top_filters_whiten_the_patches_and_the_rest_are_their_negatives():
    images = correlated_images()
    filters = whitening_filters(patch_covariance(images, (3, 3)), 16, torch.Size((3, 3, 3)), eps=1e-6)
    responses = F.conv2d(images, filters)  # (n, 16, 14, 14), one per patch position
    flat = responses.transpose(0, 1).reshape(16, -1).double()
    second_moment = flat[:8] @ flat[:8].T / flat.shape[1]
    torch.testing.assert_close(second_moment, torch.eye(8, dtype=torch.float64), atol=1e-3, rtol=0)
    torch.testing.assert_close(filters[8:], -filters[:8])


def whitened_module(freeze: bool) -> tuple[ClassifierModule, PatchWhitening]:
    net = tiny_net()
    return ClassifierModule(net, partial(torch.optim.SGD, lr=0.05)), PatchWhitening(images=300, freeze=freeze)


def fit(module: ClassifierModule, callbacks: list, root: Path, epochs: int = 1, **kwargs) -> L.Trainer:
    data = CIFAR10DataModule(root=str(root), batch_size=32, val_size=50, verify=False, num_workers=0)
    trainer = L.Trainer(
        accelerator="cpu",
        max_epochs=epochs,
        limit_train_batches=3,
        limit_val_batches=1,
        logger=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        enable_checkpointing=False,
        callbacks=callbacks,
    )
    trainer.fit(module, datamodule=data, **kwargs)
    return trainer


def expected_stem(root: Path, stem: torch.nn.Conv2d) -> torch.Tensor:
    data = CIFAR10DataModule(root=str(root), val_size=50, verify=False)
    data.setup("fit")
    images = normalize(data.train_images[:300], data.mean, data.std)
    return whitening_filters(patch_covariance(images, (3, 3)), stem.out_channels, stem.weight.shape[1:], 5e-4)


def test_a_frozen_whitened_stem_is_set_at_fit_start_and_left_out_of_the_optimizer(fake_cifar_bin):
    module, callback = whitened_module(freeze=True)
    trainer = fit(module, [callback], fake_cifar_bin)
    stem = first_convolution(module.net)
    torch.testing.assert_close(stem.weight.detach(), expected_stem(fake_cifar_bin, stem))  # 3 steps later
    optimized = {id(p) for group in trainer.optimizers[0].param_groups for p in group["params"]}
    assert id(stem.weight) not in optimized and not stem.weight.requires_grad


def test_a_resumed_run_keeps_its_trained_stem_instead_of_whitening_again(fake_cifar_bin, tmp_path):
    module, callback = whitened_module(freeze=False)
    first = fit(module, [callback], fake_cifar_bin)
    trained = first_convolution(module.net).weight.detach().clone()
    assert not torch.allclose(trained, expected_stem(fake_cifar_bin, first_convolution(module.net)))
    checkpoint = tmp_path / "trained.ckpt"
    first.save_checkpoint(checkpoint)

    seen = {}

    class StemAtTrainStart(L.Callback):
        def on_train_start(self, trainer, pl_module) -> None:
            seen["stem"] = first_convolution(pl_module.net).weight.detach().clone()

    resumed, callback = whitened_module(freeze=False)
    fit(resumed, [callback, StemAtTrainStart()], fake_cifar_bin, epochs=2, ckpt_path=checkpoint)
    torch.testing.assert_close(seen["stem"], trained)


@pytest.mark.slow
def test_two_ddp_processes_start_from_rank_zeros_whitened_stem(fake_cifar_bin, tmp_path):
    run_dir = tmp_path / "run"
    whitening = ["callbacks.patch_whitening.enabled=true", "callbacks.patch_whitening.freeze=true"]
    whitening.append("callbacks.patch_whitening.images=300")
    run_train(
        *TINY,
        *fake_data(fake_cifar_bin, val_size=50),
        "trainer.accelerator=cpu",
        "trainer.devices=2",
        "trainer.max_epochs=1",
        *whitening,
        f"hydra.run.dir={run_dir}",
    )
    weights = torch.load(run_dir / "best_model.pth", weights_only=True)
    stem = first_convolution(tiny_net())
    torch.testing.assert_close(weights["stem.0.weight"], expected_stem(fake_cifar_bin, stem))
