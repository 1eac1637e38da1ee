"""The LightningModule under a real Trainer, and the learning-rate schedules it wires."""

from collections.abc import Callable
from functools import partial

import lightning as L
import pytest
import torch
from conftest import compose_train, tiny_net
from hydra.utils import instantiate
from torch.utils.data import DataLoader, TensorDataset

from seres.module import (
    ClassifierModule,
    cosine_schedule,
    parameter_groups,
    step_schedule,
    triangular_schedule,
)


def tiny_module(**kwargs) -> ClassifierModule:
    net = tiny_net()
    return ClassifierModule(net, partial(torch.optim.SGD, lr=0.05, momentum=0.9), **kwargs)


def fixed_batches(n: int = 64, batch_size: int = 16) -> DataLoader:
    generator = torch.Generator().manual_seed(0)
    x = torch.randn(n, 3, 32, 32, generator=generator)
    y = torch.randint(0, 10, (n,), generator=generator)
    return DataLoader(TensorDataset(x, y), batch_size=batch_size)


def cpu_trainer(**kwargs) -> L.Trainer:
    defaults = dict(accelerator="cpu", logger=False, enable_checkpointing=False, enable_progress_bar=False)
    return L.Trainer(**{**defaults, **kwargs})


def evaluate_loss(module: ClassifierModule, loader: DataLoader) -> float:
    (results,) = cpu_trainer().validate(module, loader, verbose=False)
    return results["val/loss"]


def test_a_few_training_steps_lower_the_loss():
    L.seed_everything(0)
    module, loader = tiny_module(), fixed_batches()
    before = evaluate_loss(module, loader)
    cpu_trainer(max_epochs=15, gradient_clip_val=2.0).fit(module, loader)
    assert evaluate_loss(module, loader) < before - 0.2


def test_logged_keys_and_best_accuracy_tracking():
    L.seed_everything(0)
    module, loader = tiny_module(scheduler=partial(cosine_schedule)), fixed_batches()
    trainer = cpu_trainer(max_epochs=3)
    trainer.fit(module, loader, loader)
    logged = trainer.callback_metrics
    assert {"train/loss", "train/acc", "val/loss", "val/acc", "val/acc_best"} <= set(logged)
    assert logged["val/acc_best"] >= logged["val/acc"]
    (results,) = trainer.test(module, loader, verbose=False)
    assert set(results) == {"test/loss", "test/acc"}
    # Plain (micro) accuracy: a multiple of 1/64 on 64 samples.
    assert (results["test/acc"] * 64) == pytest.approx(round(results["test/acc"] * 64), abs=1e-4)


def test_label_smoothing_reaches_the_loss():
    logits, target = torch.randn(8, 10), torch.randint(0, 10, (8,))
    plain, smoothed = tiny_module().criterion, tiny_module(label_smoothing=0.1).criterion
    assert smoothed(logits, target) != plain(logits, target)


def test_scheduler_is_stepped_every_batch_over_the_whole_run():
    module, loader = tiny_module(scheduler=partial(cosine_schedule)), fixed_batches(n=64, batch_size=16)
    trainer = cpu_trainer(max_epochs=2)
    trainer.fit(module, loader)
    # 8 steps of cosine decay end at (almost) zero: the schedule spans exactly the run.
    final_lr = trainer.optimizers[0].param_groups[0]["lr"]
    assert final_lr == pytest.approx(0.0, abs=1e-12)
    assert trainer.lr_scheduler_configs[0].interval == "step"


def lrs(schedule, steps: int) -> list[float]:
    values = []
    for _ in range(steps):
        values.append(schedule.get_last_lr()[0])
        schedule.optimizer.step()
        schedule.step()
    return values


def sgd(lr: float = 1.0) -> torch.optim.SGD:
    return torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=lr)


def test_cosine_schedule_warms_up_then_decays_to_the_floor():
    values = lrs(
        cosine_schedule(sgd(), steps_per_epoch=10, max_epochs=10, warmup_epochs=1, min_lr_ratio=0.1), 101
    )
    assert values[0] == pytest.approx(0.1) and values[9] == pytest.approx(1.0)
    assert all(a >= b for a, b in zip(values[9:], values[10:], strict=False))
    assert values[55] == pytest.approx(0.1 + 0.9 * 0.5, abs=0.01)
    assert values[100] == pytest.approx(0.1)


def test_triangular_schedule_rises_and_falls_linearly():
    schedule = triangular_schedule(sgd(), steps_per_epoch=10, max_epochs=10, warmup_epochs=2, start_ratio=0.2)
    values = lrs(schedule, 101)
    assert values[0] == pytest.approx(0.2 + 0.8 / 20) and values[19] == pytest.approx(1.0)
    assert values[60] == pytest.approx(0.5) and values[100] == pytest.approx(0.0)
    falling = [a - b for a, b in zip(values[20:100], values[21:101], strict=True)]
    assert all(step == pytest.approx(1 / 80) for step in falling)


def test_step_schedule_drops_at_fractions_of_the_run():
    values = lrs(step_schedule(sgd(), steps_per_epoch=5, max_epochs=10, milestones=[0.5, 0.8], gamma=0.1), 50)
    assert values[24] == 1.0 and values[25] == pytest.approx(0.1)
    assert values[39] == pytest.approx(0.1) and values[40] == pytest.approx(0.01)


def test_epoch_loss_is_the_per_image_mean_when_the_last_batch_is_short():
    # 20 images in batches of 16 and 4: a mean of the two batch means would weight the 4 images 4x too much.
    module, loader = tiny_module(), fixed_batches(n=20, batch_size=16)
    (results,) = cpu_trainer().validate(module, loader, verbose=False)
    images, labels = loader.dataset.tensors
    with torch.no_grad():
        expected = torch.nn.functional.cross_entropy(module.eval()(images), labels).item()
    assert results["val/loss"] == pytest.approx(expected, rel=1e-5)


def test_a_compiled_network_is_compiled_once_for_training_and_once_for_evaluation(tmp_path):
    # The project's trainer settings: validation, the final test and flip-averaged evaluation share one
    # compiled evaluation graph (every graph is a whole compilation of the network).
    cfg = compose_train(f"paths.output_dir={tmp_path}", "trainer=cpu", "trainer.precision=32-true")
    graphs = []

    def counting_backend(graph: torch.fx.GraphModule, example_inputs: list) -> Callable:
        graphs.append(graph)
        return graph.forward  # runs the captured graph as it is; what is counted is Dynamo's captures

    net = tiny_net()
    module = ClassifierModule(
        torch.compile(net, backend=counting_backend), partial(torch.optim.SGD, lr=0.05), tta=True
    )
    trainer = instantiate(
        cfg.trainer, max_epochs=2, limit_train_batches=2, limit_val_batches=2, logger=False, callbacks=[]
    )
    trainer.fit(module, fixed_batches(), fixed_batches())
    trainer.test(module, fixed_batches(), verbose=False)
    assert len(graphs) == 2


def gradients_of_one_batch(module: ClassifierModule, batch: tuple[torch.Tensor, torch.Tensor]) -> dict:
    """Each parameter's gradient of the training loss on `batch`, computed on a copy of the network."""
    copy = copy_module(module)
    copy.train()
    x, y = batch
    copy.criterion(copy(x), y).backward()
    return {name: p.grad.clone() for name, p in copy.net.named_parameters() if p.grad is not None}


def copy_module(module: ClassifierModule) -> ClassifierModule:
    twin = tiny_module()
    twin.load_state_dict(module.state_dict())
    return twin


def test_norm_and_bias_groups_step_as_their_settings_say():
    # Plain SGD (no momentum) with weight decay: one step is p - lr * scale * (grad + decay / scale * p).
    lr, decay, scale = 0.05, 0.1, 64.0
    torch.manual_seed(0)
    net = tiny_net()
    module = ClassifierModule(
        net,
        partial(torch.optim.SGD, lr=lr, weight_decay=decay),
        param_groups={"decay_norm_and_bias": False, "norm_bias_lr_scale": scale},
    )
    loader = fixed_batches(n=16, batch_size=16)
    gradients = gradients_of_one_batch(module, next(iter(loader)))
    before = {name: p.detach().clone() for name, p in net.named_parameters()}
    cpu_trainer(max_steps=1).fit(module, loader)
    norm_names = {name for name, m in net.named_modules() if isinstance(m, torch.nn.BatchNorm2d)}
    for name, p in net.named_parameters():
        owner, kind = name.rsplit(".", 1)
        if owner in norm_names and kind == "bias":
            expected = before[name] - lr * scale * gradients[name]  # BatchNorm shift: scaled, no decay
        elif owner in norm_names or kind == "bias":
            expected = before[name] - lr * gradients[name]  # BatchNorm scale, other biases: no decay
        else:
            expected = before[name] - lr * (gradients[name] + decay * before[name])
        torch.testing.assert_close(p.detach(), expected, msg=name)


def test_default_groups_are_every_trainable_parameter_in_one_group():
    net = tiny_net(bn_scale_trainable=False)
    (group,) = parameter_groups(net)
    trainable = [p for p in net.parameters() if p.requires_grad]
    assert len(group["params"]) == len(trainable) < len(list(net.parameters()))
    assert all(a is b for a, b in zip(group["params"], trainable, strict=True))
