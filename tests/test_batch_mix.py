"""MixUp and CutMix of training batches (seres/data/batch_mix.py), and the module training on them."""

import json
from functools import partial

import pytest
import torch
from conftest import TINY, fake_data, tiny_net
from entry_point import run_entry_point

from seres.callbacks.flop_count import train_step_flops
from seres.data.batch_mix import BatchMix
from seres.module import ClassifierModule

CLASSES = 10


def batch(size: int = 8, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    generator = torch.Generator().manual_seed(seed)
    return torch.randn(size, 3, 32, 32, generator=generator), torch.randperm(CLASSES, generator=generator)[
        :size
    ]


def partner_share(targets: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """Each image's weight on the label of the image before it (torchvision's partner)."""
    return targets[torch.arange(len(labels)), labels.roll(1)]


def test_mixup_blends_each_image_with_its_partner_by_the_weight_of_its_targets():
    torch.manual_seed(0)
    images, labels = batch()
    mixed, targets, dominant = BatchMix(mixup_alpha=1.0)(images, labels)
    assert torch.allclose(targets.sum(dim=1), torch.ones(len(labels)))
    share = partner_share(targets, labels)
    own = targets[torch.arange(len(labels)), labels]
    assert torch.allclose(own + share, torch.ones(len(labels)))
    expected = (1 - share).view(-1, 1, 1, 1) * images + share.view(-1, 1, 1, 1) * images.roll(1, 0)
    assert torch.allclose(mixed, expected, atol=1e-6)
    assert torch.equal(dominant, torch.where(share > 0.5, labels.roll(1), labels))


def test_cutmix_pastes_a_box_of_the_partner_whose_area_is_the_partners_share():
    torch.manual_seed(1)
    images, labels = batch()
    mixed, targets, _ = BatchMix(cutmix_alpha=1.0)(images, labels)
    from_partner = (mixed != images).all(dim=1, keepdim=True).expand_as(mixed)  # the partner's pixels
    assert torch.equal(mixed[from_partner], images.roll(1, 0)[from_partner])
    area = from_partner[:, 0].float().mean(dim=(1, 2))
    assert torch.allclose(area, partner_share(targets, labels), atol=1e-6)
    assert 0 < area[0] < 1  # a box, neither nothing nor the whole image


def test_off_or_unlucky_batches_are_left_as_they_are_with_their_hard_labels():
    images, labels = batch()
    for mix in (BatchMix(), BatchMix(mixup_alpha=1.0, prob=0.0)):
        assert not mix.enabled or mix.prob == 0
        out, targets, dominant = mix(images, labels)
        assert out is images and targets is labels and dominant is labels
    with pytest.raises(ValueError, match="mix.cutmix_alpha must be >= 0"):
        BatchMix(cutmix_alpha=-1.0)


def test_the_module_mixes_training_batches_only_and_counts_the_dominant_label():
    torch.manual_seed(2)
    images, labels = batch()
    module = ClassifierModule(tiny_net(), partial(torch.optim.SGD, lr=0.1), mix={"mixup_alpha": 1.0})
    module.eval()  # BatchNorm's running statistics: the same network for every call below
    torch.manual_seed(3)
    loss = module.training_step((images, labels), 0)
    torch.manual_seed(3)
    mixed, targets, dominant = module.batch_mix(images, labels)
    logits = module.net(mixed)
    assert torch.allclose(loss, torch.nn.functional.cross_entropy(logits, targets))
    assert module.train_acc.compute() == (logits.argmax(dim=1) == dominant).float().mean()
    # Validation sees the plain batch: its loss is that of the unmixed images.
    val_loss = module._shared_step(images, labels, labels, "val")[0]
    assert torch.allclose(val_loss, torch.nn.functional.cross_entropy(module.net(images), labels))


@pytest.mark.slow
def test_a_bf16_run_with_mixup_cutmix_sam_a_policy_ema_and_tta_trains_validates_and_tests(
    fake_cifar_bin, tmp_path, monkeypatch
):
    arguments = [*TINY, *fake_data(fake_cifar_bin), "trainer.accelerator=cpu", "trainer.max_epochs=2"]
    arguments += ["mix.mixup_alpha=0.2", "mix.cutmix_alpha=1.0", "mix.prob=0.8", "tta=true", "progress=false"]
    arguments += ["+callbacks.ema._target_=seres.callbacks.EMA", "+callbacks.ema.decay=0.9", "sam_rho=0.05"]
    arguments += ["trainer.precision=bf16-mixed", "data.aug.policy=autoaugment"]  # gradient clipping: default
    assert run_entry_point([*arguments, f"hydra.run.dir={tmp_path}"], monkeypatch) == 0
    metrics = json.loads((tmp_path / "metrics.json").read_text())
    assert metrics["status"] == "completed" and metrics["epochs"] == 2
    assert metrics["best_val_acc"] is not None and metrics["test_acc"] is not None
    # SAM's second pass is counted in the compute.
    assert metrics["flops_per_image"] == 2 * train_step_flops(tiny_net())["train_step_per_image"]
    saved = torch.load(tmp_path / "last.ckpt", weights_only=False)["hyper_parameters"]["config"]["mix"]
    assert saved == {"mixup_alpha": 0.2, "cutmix_alpha": 1.0, "prob": 0.8}
