"""Using a trained model from the command line: eval.py, seres.results.predict and seres.results.export, on a
real-data run."""

import json
import os
import shutil
from functools import partial
from pathlib import Path

import lightning as L
import numpy as np
import pytest
import torch
from conftest import compose_eval, real_cifar_root, tiny_net
from PIL import Image
from real_run import run_cli, short_real_run
from torch.utils.data import DataLoader, TensorDataset

from seres.data import CLASSES, build_eval_transform, load_cifar10
from seres.module import ClassifierModule, tta_logits
from seres.results.evaluation import evaluate
from seres.results.export import main as export_main
from seres.results.predict import load_trained_model, newest_run_weights
from seres.results.predict import main as predict_main
from seres.run.checkpoints import CheckpointError
from seres.run.config_checks import ConfigError


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory) -> Path:
    return short_real_run(tmp_path_factory)


@torch.no_grad()
def original_logits(run_dir: Path, images: torch.Tensor, tta: bool = False) -> torch.Tensor:
    """The trained network as README shows it (no seres.results.predict), on uint8 images."""
    net = tiny_net().eval()
    net.load_state_dict(torch.load(run_dir / "best_model.pth", weights_only=True))
    x = build_eval_transform([0.4914, 0.4822, 0.4465], [0.2470, 0.2435, 0.2616])(images)
    return (net(x) + net(x.flip(-1))) / 2 if tta else net(x)


@pytest.fixture(scope="module")
def test_images() -> tuple[torch.Tensor, torch.Tensor]:
    images, labels = load_cifar10(real_cifar_root(), verify=False)["test"]
    return images[:8], labels[:8]


# ------------------------------------------------------------------------------------------------------
# eval.py
# ------------------------------------------------------------------------------------------------------


def test_eval_reproduces_the_runs_test_accuracy_and_writes_its_own_results(run_dir):
    # The run tested 2 batches of 512 images; the same 2 batches give the same accuracy.
    run_cli("eval.py", f"ckpt_path={run_dir}/best.ckpt", "limit_batches=2", "num_workers=0", "progress=false")
    results = run_dir / "eval"
    metrics = json.loads((results / "metrics.json").read_text())
    trained = json.loads((run_dir / "metrics.json").read_text())
    assert metrics["test_acc"] == pytest.approx(trained["test_acc"], abs=1e-6)
    assert metrics["test_loss"] == pytest.approx(trained["test_loss"], rel=1e-5)
    assert metrics["test_images"] == 1024 and metrics["tta"] is False
    assert set(metrics["per_class_acc"]) == set(CLASSES)
    assert json.loads((results / "confusion.json").read_text()) == json.loads(
        (run_dir / "confusion.json").read_text()
    )
    for name in ["confusion.png", "mistakes.png"]:
        assert Image.open(results / name).size[0] > 300


def test_eval_on_the_validation_split_reproduces_the_runs_best_validation_accuracy(run_dir, tmp_path):
    # The run validated 2 batches of 512 images each epoch; best.ckpt is its best epoch's.
    out = tmp_path / "val"
    arguments = ["limit_batches=2", "num_workers=0", "progress=false", f"output_dir={out}"]
    run_cli("eval.py", f"ckpt_path={run_dir}/best.ckpt", "split=val", *arguments)
    metrics = json.loads((out / "metrics.json").read_text())
    trained = json.loads((run_dir / "metrics.json").read_text())
    assert metrics["split"] == "val" and metrics["val_images"] == 1024 and "test_acc" not in metrics
    assert metrics["val_acc"] == pytest.approx(trained["best_val_acc"], abs=1e-6)
    assert (out / "report.md").read_text().splitlines()[2] == f"val accuracy {100 * metrics['val_acc']:.2f}%"


def test_eval_of_best_model_pth_with_tta_rebuilds_the_network_from_the_runs_config(run_dir, tmp_path):
    out = tmp_path / "tta"
    cfg = compose_eval(
        f"ckpt_path={run_dir}/best_model.pth",
        "tta=true",
        "limit_batches=1",
        "num_workers=0",
        "progress=false",
        f"output_dir={out}",
    )
    returned = evaluate(cfg)
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics == returned
    assert metrics["tta"] is True and metrics["test_images"] == 512
    assert metrics["checkpoint"].endswith("best_model.pth")
    images, labels = load_cifar10(real_cifar_root(), verify=False)["test"]
    flip_averaged = original_logits(run_dir, images[:512], tta=True)
    assert not torch.allclose(flip_averaged, original_logits(run_dir, images[:512]))  # TTA changes the logits
    predictions = flip_averaged.argmax(dim=1)
    assert metrics["test_acc"] == pytest.approx((predictions == labels[:512]).float().mean().item())


@pytest.mark.parametrize(
    ("override", "message"),
    [("split=train", "split='train' is not allowed"), ("tta_translate=9", "tta_translate=9 is not allowed")],
)
def test_eval_refuses_a_bad_split_or_shift_before_any_work(override, message):
    with pytest.raises(ConfigError, match=message):
        evaluate(compose_eval("ckpt_path=/nonexistent/best.ckpt", override))


def test_eval_without_a_checkpoint_says_what_to_give_and_its_help_lists_its_own_keys():
    result = run_cli("eval.py", expect_success=False)
    assert result.returncode != 0 and "Traceback" not in result.stderr
    assert (
        result.stderr.strip()
        == "eval.py: give the model to evaluate: ckpt_path=RUN_DIR (or its best.ckpt, best_model.pth)"
    )
    shown = run_cli("eval.py", "--help").stdout
    assert "ckpt_path: ???" in shown and "tta_translate: 0" in shown
    assert "experiment:" not in shown and "trainer:" not in shown  # train.py's groups are not eval's


def test_eval_of_a_missing_checkpoint_names_it():
    with pytest.raises(CheckpointError, match="/nonexistent/best.ckpt does not exist"):
        evaluate(compose_eval("ckpt_path=/nonexistent/best.ckpt"))


def test_tta_averages_the_logits_of_each_image_its_mirror_and_with_tta_translate_their_shifts():
    torch.manual_seed(0)
    net = tiny_net().eval()
    x, y = torch.randn(16, 3, 32, 32), torch.randint(0, 10, (16,))
    expected = ((net(x) + net(x.flip(-1))) / 2).argmax(1)
    with torch.no_grad():
        multi_crop_logits = tta_logits(net, x, translate=2)
        assert not torch.allclose(multi_crop_logits, tta_logits(net, x))  # the shifted views count
    multi_crop = multi_crop_logits.argmax(1)
    trainer = L.Trainer(
        accelerator="cpu", logger=False, enable_progress_bar=False, enable_model_summary=False
    )
    cases = [((True, 0), expected), ((True, 2), multi_crop), ((False, 2), net(x).argmax(1))]
    for (tta, translate), predictions in cases:
        module = ClassifierModule(net, partial(torch.optim.SGD, lr=0.1), tta=tta, tta_translate=translate)
        (results,) = trainer.test(module, DataLoader(TensorDataset(x, y), batch_size=8), verbose=False)
        assert results["test/acc"] == pytest.approx((predictions == y).float().mean().item())


def reflected(index: int, size: int) -> int:
    """The source row or column that reflect padding shows at `index` (which may lie outside the image)."""
    return -index if index < 0 else 2 * (size - 1) - index if index >= size else index


def test_multi_crop_tta_weighs_the_unshifted_mirror_pair_half_and_each_shifted_pair_a_quarter():
    image = torch.arange(2 * 32 * 32, dtype=torch.float32).view(1, 2, 32, 32)

    def pixel_net(x: torch.Tensor) -> torch.Tensor:  # "logits": channel 0's first row, channel 1's last
        return torch.cat((x[:, 0, 0, :], x[:, 1, -1, :]), dim=1)

    def view(shift: int, mirrored: bool) -> torch.Tensor:
        """pixel_net of the image moved so that output (r, c) shows source (r + shift, c + shift)."""
        cols = [reflected(c + shift, 32) for c in range(32)]
        rows = [reflected(r + shift, 32) for r in range(32)]
        moved = image[:, :, rows][:, :, :, cols]
        return pixel_net(moved.flip(-1) if mirrored else moved)

    expected = sum(
        weight * (view(shift, False) + view(shift, True)) / 2
        for shift, weight in ((0, 0.5), (-3, 0.25), (3, 0.25))
    )
    torch.testing.assert_close(tta_logits(pixel_net, image, translate=3), expected)


# ------------------------------------------------------------------------------------------------------
# python -m seres.results.predict
# ------------------------------------------------------------------------------------------------------


def write_picture(path: Path, image: torch.Tensor, size: tuple[int, int], mode: str = "RGB") -> Path:
    Image.fromarray(image.permute(1, 2, 0).numpy()).resize(size).convert(mode).save(path)
    return path


def test_predict_prints_the_top_three_classes_for_images_of_any_size_and_mode(run_dir, test_images, tmp_path):
    images, _ = test_images
    files = [
        write_picture(tmp_path / "small.png", images[0], (32, 32)),
        write_picture(tmp_path / "wide.jpg", images[1], (300, 120)),
        write_picture(tmp_path / "grey.png", images[2], (64, 64), mode="L"),
    ]
    result = run_cli("-m", "seres.results.predict", *map(str, files), "--model", str(run_dir))
    lines = result.stdout.strip().splitlines()
    assert len(lines) == 3 and f"model: {run_dir}/best.ckpt" in result.stderr
    for file, line in zip(files, lines, strict=True):
        name, predictions = line.split(": ", 1)
        assert name == str(file)
        top = [item.rsplit(" ", 1) for item in predictions.split(", ")]
        assert len(top) == 3 and all(label in CLASSES for label, _ in top)
        probabilities = [float(p.rstrip("%")) for _, p in top]
        assert probabilities == sorted(probabilities, reverse=True)

    # The 32x32 PNG is the test image itself: the printed classes and probabilities are the model's own.
    softmax = original_logits(run_dir, images[:1]).softmax(dim=1)[0]
    top = softmax.topk(3)
    pairs = zip(top.values.tolist(), top.indices.tolist(), strict=True)
    expected = ", ".join(f"{CLASSES[i]} {100 * p:.1f}%" for p, i in pairs)
    assert lines[0].split(": ", 1)[1] == expected


def test_predict_refuses_files_that_are_not_images_and_names_each(run_dir, test_images, tmp_path, capsys):
    good = write_picture(tmp_path / "good.png", test_images[0][0], (32, 32))
    text = tmp_path / "notes.png"
    text.write_text("not an image")
    missing = tmp_path / "missing.jpg"
    with pytest.raises(SystemExit) as exit_info:
        predict_main([str(good), str(text), str(missing), "--model", str(run_dir)])
    message = str(exit_info.value.code)
    assert f"{text} is not an image file" in message and f"{missing}: no such file" in message
    assert capsys.readouterr().out == ""  # nothing predicted, not even for the good file


def test_predict_without_a_model_takes_the_newest_run(tmp_path):
    with pytest.raises(CheckpointError, match="no trained model under .*pass --model RUN_DIR"):
        newest_run_weights([tmp_path / "outputs"])
    old, new = tmp_path / "outputs/day/09-00-00", tmp_path / "multirun/day/10-00-00/3"
    for run, mtime in [(old, 1_000_000), (new, 2_000_000)]:
        run.mkdir(parents=True)
        (run / "best.ckpt").touch()
        os.utime(run / "best.ckpt", (mtime, mtime))
    assert newest_run_weights([tmp_path / "outputs", tmp_path / "multirun"]) == new / "best.ckpt"


def test_loading_names_what_is_wrong_with_the_model_path(run_dir, tmp_path):
    with pytest.raises(CheckpointError, match="holds neither best.ckpt nor best_model.pth"):
        load_trained_model(tmp_path)
    lone = tmp_path / "lone"
    lone.mkdir()
    shutil.copy(run_dir / "best_model.pth", lone / "best_model.pth")
    with pytest.raises(CheckpointError, match=r"holds only weights.*\.hydra/config\.yaml"):
        load_trained_model(lone / "best_model.pth")
    (lone / "junk.ckpt").write_bytes(b"\x00" * 64)
    with pytest.raises(CheckpointError, match="junk.ckpt is not a readable PyTorch file"):
        load_trained_model(lone / "junk.ckpt")
    with pytest.raises(CheckpointError, match=r"expected a Lightning checkpoint \(\.ckpt\)"):
        load_trained_model(run_dir / "metrics.json")


# ------------------------------------------------------------------------------------------------------
# python -m seres.results.export
# ------------------------------------------------------------------------------------------------------


@pytest.mark.filterwarnings("ignore::FutureWarning")  # recent PyTorch marks TorchScript deprecated
def test_torchscript_export_gives_the_models_outputs(run_dir, test_images, tmp_path):
    destination = tmp_path / "model.pt"
    result = run_cli(
        "-m", "seres.results.export", str(run_dir), "--format", "torchscript", "--output", str(destination)
    )
    assert f"wrote {destination}" in result.stdout
    exported = torch.jit.load(str(destination))
    expected = original_logits(run_dir, test_images[0])
    torch.testing.assert_close(exported(test_images[0] / 255), expected, rtol=1e-4, atol=1e-4)


def test_onnx_export_gives_the_models_outputs(run_dir, test_images, capsys):
    pytest.importorskip("onnxscript", reason="ONNX export needs the export extra: pip install -e '.[export]'")
    onnxruntime = pytest.importorskip("onnxruntime")
    export_main([str(run_dir), "--format", "onnx"])
    destination = run_dir / "model.onnx"
    assert f"wrote {destination}" in capsys.readouterr().out
    onnx_model = onnxruntime.InferenceSession(str(destination), providers=["CPUExecutionProvider"])
    (exported,) = onnx_model.run(None, {"images": (test_images[0] / 255).numpy()})
    expected = original_logits(run_dir, test_images[0]).numpy()
    np.testing.assert_allclose(exported, expected, rtol=1e-4, atol=1e-4)


def test_export_of_something_that_is_no_model_fails_clearly(tmp_path):
    with pytest.raises(SystemExit) as exit_info:
        export_main([str(tmp_path), "--format", "torchscript"])
    assert f"{tmp_path} holds neither best.ckpt nor best_model.pth" in str(exit_info.value.code)
