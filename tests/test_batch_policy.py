"""Augmentation policies on batches (seres/data/batch_policy.py), against torchvision's on each image."""

import pytest
import torch
import torch.nn.functional as F
from torchvision.transforms import InterpolationMode, v2

from seres.data.augmentation import POLICIES, Augmentation
from seres.data.batch_policy import OP, OPS, BatchPolicy, apply_ops
from seres.data.device_loaders import DeviceTrainLoader
from seres.data.transforms import build_train_transform

REFERENCE = v2.TrivialAugmentWide()  # any of torchvision's policies: they share the operations
SIGNED_MAGNITUDES = {"ShearX": 0.61, "ShearY": -0.37, "TranslateX": -13.0, "TranslateY": 9.0, "Rotate": -71.0}


def images(count: int = 12, seed: int = 0) -> torch.Tensor:
    """Smooth-ish uint8 images: every operation changes them visibly."""
    noise = torch.randint(0, 256, (count, 3, 32, 32), generator=torch.Generator().manual_seed(seed))
    smooth = F.avg_pool2d(noise.float(), 3, 1, 1).round().to(torch.uint8)
    smooth[0, 1] = 90  # one flat channel: autocontrast and equalize have nothing to stretch there
    return smooth


def torchvision_op(image: torch.Tensor, op: str, magnitude: float) -> torch.Tensor:
    return REFERENCE._apply_image_or_video_transform(
        image, op, magnitude, InterpolationMode.NEAREST, REFERENCE._fill
    )


def assert_close_to_torchvision(ours: torch.Tensor, theirs: torch.Tensor) -> None:
    """Equal but for float rounding at uint8 truncation: 1 level, in under 1% of the values."""
    difference = (ours.int() - theirs.int()).abs()
    assert difference.max() <= 1 and (difference > 0).float().mean() < 0.01


@pytest.mark.parametrize("op", OPS)
def test_each_operation_on_a_batch_is_torchvisions_on_each_image(op):
    batch = images()
    magnitude = {"Posterize": 5.0, "Solarize": 0.4}.get(op, SIGNED_MAGNITUDES.get(op, 0.55))
    magnitudes = torch.full((len(batch),), magnitude, dtype=torch.float64)
    ours = apply_ops(batch, torch.full((len(batch),), OP[op]), magnitudes)
    theirs = torch.stack([torchvision_op(image, op, magnitude) for image in batch])
    assert_close_to_torchvision(ours, theirs)
    if op != "Identity":
        assert not torch.equal(ours, batch)


@pytest.mark.parametrize("policy", POLICIES[1:])
def test_each_image_of_a_batch_draws_its_own_operations_and_gets_exactly_those(policy):
    batch = images(64)
    augment = BatchPolicy(policy)
    layers = augment.draw(len(batch), batch.device, torch.Generator().manual_seed(0))
    drawn_ops = torch.stack([ops for ops, _ in layers], dim=1)
    assert len(torch.unique(drawn_ops[:, 0])) >= 6, "one operation for the whole batch"
    augmented = batch
    for ops, magnitudes in layers:
        augmented = apply_ops(augmented, ops, magnitudes, augment.present)
    expected = []
    for index, image in enumerate(batch):
        for ops, magnitudes in layers:
            image = torchvision_op(image, OPS[ops[index]], magnitudes[index].item())
        expected.append(image)
    assert_close_to_torchvision(augmented, torch.stack(expected))


def test_draws_follow_torchvisions_tables_and_repeat_from_the_same_generator_state():
    trivial = BatchPolicy("trivialaugment")
    ops, magnitudes = trivial.draw(4096, torch.device("cpu"), torch.Generator().manual_seed(1))[0]
    assert set(OPS[i] for i in ops.unique()) == set(v2.TrivialAugmentWide._AUGMENTATION_SPACE)
    rotations = magnitudes[ops == OP["Rotate"]]
    assert rotations.abs().max() <= 135 and (rotations < 0).any() and (rotations > 0).any()  # signed
    assert set(magnitudes[ops == OP["Posterize"]].tolist()) <= set(range(2, 9))
    (again, again_magnitudes), *_ = trivial.draw(4096, torch.device("cpu"), torch.Generator().manual_seed(1))
    assert torch.equal(ops, again) and torch.equal(magnitudes, again_magnitudes)
    randaugment = BatchPolicy("randaugment", num_ops=3, magnitude=30)
    layers = randaugment.draw(512, torch.device("cpu"), torch.Generator().manual_seed(2))
    shears = torch.cat([m[o == OP["ShearX"]] for o, m in layers])
    assert len(layers) == 3 and torch.allclose(shears.abs(), torch.tensor(0.3, dtype=torch.float64))


def test_autoaugment_applies_each_step_of_a_subpolicy_with_its_probability():
    layers = BatchPolicy("autoaugment").draw(20000, torch.device("cpu"), torch.Generator().manual_seed(3))
    # CIFAR-10's policy: every operation it names occurs, and about a third of the steps are skipped.
    names = {OPS[i] for ops, _ in layers for i in ops.unique()}
    assert {"Invert", "Equalize", "Posterize", "Rotate"} <= names
    skipped = torch.cat([ops == OP["Identity"] for ops, _ in layers]).float().mean()
    assert 0.2 < skipped < 0.6


def test_the_device_pipeline_repeats_an_epochs_policy_and_the_loader_pipeline_uses_torchvisions():
    aug = Augmentation(crop_padding=4, flip=True, policy="randaugment", policy_ops=2, policy_magnitude=9)
    mean, std = (0.5, 0.5, 0.5), (0.25, 0.25, 0.25)
    loader = DeviceTrainLoader(images(64), torch.arange(64) % 10, 32, aug, mean, std, "cpu", seed=7)
    epochs = []
    for epoch in (1, 1, 2):  # a resumed run sets its epoch again: the same batches
        loader.set_epoch(epoch)
        epochs.append(next(iter(loader))[0])
    assert torch.equal(epochs[0], epochs[1]) and not torch.equal(epochs[0], epochs[2])
    transform = build_train_transform(aug, mean, std)
    assert any(isinstance(step, v2.RandAugment) and step.num_ops == 2 for step in transform.transforms)


def test_a_policy_refuses_float_images_and_unknown_settings():
    with pytest.raises(ValueError, match="works on uint8 images"):
        BatchPolicy("trivialaugment")(torch.rand(2, 3, 32, 32))
    with pytest.raises(ValueError, match="data.aug.policy must be one of none|trivialaugment"):
        Augmentation(policy="augmix")
    with pytest.raises(ValueError, match="data.aug.policy_magnitude must be an int from 0 to 30"):
        Augmentation(policy="randaugment", policy_magnitude=31)
