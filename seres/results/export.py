"""Export a trained model to ONNX or TorchScript, for use without this code base.

    python -m seres.results.export RUN_DIR --format onnx          # writes RUN_DIR/model.onnx
    python -m seres.results.export RUN_DIR --format torchscript   # writes RUN_DIR/model.torchscript.pt

RUN_DIR may also be a .ckpt or a best_model.pth (see seres.results.predict.load_trained_model). The exported
model takes float32 RGB images scaled to [0, 1], shape (N, 3, 32, 32) for any N, and returns (N, 10) logits in
the order of seres.data.CLASSES: the run's normalisation is built in. After writing, the file is loaded
back and its outputs compared with the PyTorch model's (for ONNX, when onnxruntime is installed).
ONNX export needs the `onnx` and `onnxscript` packages: pip install -e '.[export]'.
"""

from __future__ import annotations

import argparse
import sys
import warnings
from collections.abc import Sequence
from pathlib import Path

import torch
from torch import Tensor, nn

from seres.results.predict import TrainedModel, load_trained_model
from seres.run.checkpoints import CheckpointError

FORMATS = {"onnx": "model.onnx", "torchscript": "model.torchscript.pt"}
# Float32 kernels may sum in another order than PyTorch's; anything beyond this is a wrong export.
TOLERANCE = 1e-4


class ExportError(RuntimeError):
    """The export failed, or the exported model does not reproduce the PyTorch model's outputs."""


class NormalizedNet(nn.Module):
    """The network behind the run's per-channel normalisation: [0, 1] images in, logits out."""

    def __init__(self, net: nn.Module, mean: Sequence[float], std: Sequence[float]) -> None:
        super().__init__()
        self.net = net
        self.register_buffer("mean", torch.tensor(mean, dtype=torch.float32).view(1, 3, 1, 1))
        self.register_buffer("std", torch.tensor(std, dtype=torch.float32).view(1, 3, 1, 1))

    def forward(self, images: Tensor) -> Tensor:
        return self.net((images - self.mean) / self.std)


def _export_onnx(model: nn.Module, example: Tensor, destination: Path) -> None:
    try:
        import onnx  # noqa: F401  (torch.onnx needs it, and fails less clearly without it)
        import onnxscript  # noqa: F401
    except ImportError as error:
        raise ExportError(
            f"ONNX export needs the onnx and onnxscript packages ({error}); pip install -e '.[export]'"
        ) from error
    torch.onnx.export(
        model,
        (example,),
        str(destination),
        input_names=["images"],
        output_names=["logits"],
        dynamic_shapes=({0: torch.export.Dim("batch")},),
        external_data=False,  # one self-contained file
        verbose=False,
    )


def _export_torchscript(model: nn.Module, example: Tensor, destination: Path) -> None:
    with warnings.catch_warnings():
        # Recent PyTorch marks TorchScript deprecated; this format was asked for explicitly.
        warnings.filterwarnings("ignore", category=FutureWarning)
        torch.jit.save(torch.jit.trace(model, example), str(destination))


def run_exported(path: Path, file_format: str, images: Tensor) -> Tensor | None:
    """Outputs of the exported file for `images`; None for ONNX when onnxruntime is not installed."""
    if file_format == "torchscript":
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", category=FutureWarning)
            return torch.jit.load(str(path))(images)
    try:
        import onnxruntime
    except ImportError:
        return None
    onnx_model = onnxruntime.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    return torch.from_numpy(onnx_model.run(["logits"], {"images": images.numpy()})[0])


@torch.no_grad()
def export(model: TrainedModel, file_format: str, destination: Path) -> float | None:
    """Write `model` as `file_format` to `destination`; return the largest output difference found.

    None means the file could not be checked (ONNX without onnxruntime).
    """
    if file_format not in FORMATS:
        raise ExportError(f"format {file_format!r} is not one of {'|'.join(FORMATS)}")
    destination.parent.mkdir(parents=True, exist_ok=True)
    wrapped = NormalizedNet(model.net, model.mean, model.std).eval()
    example = torch.rand(2, 3, 32, 32, generator=torch.Generator().manual_seed(0))
    (_export_onnx if file_format == "onnx" else _export_torchscript)(wrapped, example, destination)
    # A batch size other than the example's shows that N is free in the exported model.
    images = torch.rand(5, 3, 32, 32, generator=torch.Generator().manual_seed(1))
    exported = run_exported(destination, file_format, images)
    if exported is None:
        return None
    expected = wrapped(images)
    difference = (exported - expected).abs().max().item()
    if difference > TOLERANCE * max(1.0, expected.abs().max().item()):
        raise ExportError(f"{destination} differs from the PyTorch model by up to {difference:.2e}")
    return difference


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        prog="python -m seres.results.export",
        description="Export a trained model (input: float32 RGB in [0, 1], (N, 3, 32, 32); output: logits).",
    )
    parser.add_argument("run", type=Path, metavar="RUN_DIR", help="run directory, .ckpt or best_model.pth")
    parser.add_argument("--format", required=True, choices=sorted(FORMATS), help="onnx or torchscript")
    parser.add_argument(
        "--output",
        type=Path,
        default=None,
        help="default: model.onnx / model.torchscript.pt next to the weights",
    )
    args = parser.parse_args(argv)
    try:
        model = load_trained_model(args.run)
        destination = args.output or model.source.parent / FORMATS[args.format]
        difference = export(model, args.format, destination)
    except (CheckpointError, ExportError) as error:
        sys.exit(f"python -m seres.results.export: {error}")
    check = (
        "not checked: onnxruntime is not installed"
        if difference is None
        else f"checked: outputs within {difference:.1e} of PyTorch's"
    )
    print(f"wrote {destination} (from {model.source}; {check})")


if __name__ == "__main__":
    main()
