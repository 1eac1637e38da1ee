"""The package's layers (README, Layout): what each part of seres may import."""

import ast
import subprocess
import sys
from pathlib import Path

import pytest

SERES = Path(__file__).resolve().parents[1] / "seres"
EXPERIMENT = ("model", "module", "data", "optim", "callbacks")
# From the bottom up: a layer imports nothing of the layers above it.
LAYERS = ["records", "experiment", "run", "launch", "results"]
PACKAGES = {"experiment": EXPERIMENT}  # the other layers are one subpackage each, of their name


def files(layer: str) -> list[Path]:
    found = []
    for name in PACKAGES.get(layer, (layer,)):
        module = SERES / f"{name}.py"
        found += [module] if module.is_file() else sorted((SERES / name).rglob("*.py"))
    return found


def seres_imports(path: Path) -> set[str]:
    """The seres modules `path` imports, as dotted names."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and node.module:
            found |= {node.module} | {f"{node.module}.{alias.name}" for alias in node.names}
        elif isinstance(node, ast.Import):
            found |= {alias.name for alias in node.names}
    return {name for name in found if name.startswith("seres.")}


@pytest.mark.parametrize("layer", LAYERS[:-1])
def test_imports_never_run_up_the_layers(layer):
    above = LAYERS[LAYERS.index(layer) + 1 :] + ["bench"]
    forbidden = tuple(f"seres.{name}" for upper in above for name in PACKAGES.get(upper, (upper,)))
    wrong = sorted(
        f"{path.relative_to(SERES)} imports {name}"
        for path in files(layer)
        for name in seres_imports(path)
        if name.startswith(forbidden)
    )
    assert not wrong, wrong


def test_the_package_holds_the_two_core_modules_and_the_layers_subpackages():
    top = {path.name for path in SERES.iterdir() if path.suffix == ".py"}
    packages = {path.name for path in SERES.iterdir() if (path / "__init__.py").is_file()}
    assert top == {"__init__.py", "model.py", "module.py"}
    assert packages == {"records", "data", "optim", "callbacks", "run", "launch", "results", "bench"}


def test_the_results_table_the_report_and_the_sweep_choice_read_runs_without_loading_torch():
    # They only read runs' files: torch and Lightning would add seconds to every call.
    modules = "seres.results.runs_table, seres.records.report, seres.launch.sweep"
    code = f"import sys, {modules}; print(sorted({{'torch', 'lightning'}} & set(sys.modules)))"
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert result.stdout.strip() == "[]"


QUESTIONS = [
    ("train.py", ["--help"], "train.py: train an SE-ResNet on CIFAR-10"),
    ("train.py", ["--cfg", "job", "experiment=fast"], "blocks:"),
    ("eval.py", ["--help"], "ckpt_path"),
    ("eval.py", ["--cfg", "job", "tta=true"], "tta: true"),
]


@pytest.mark.parametrize(("script", "question", "answer"), QUESTIONS)
def test_the_entry_points_answer_help_and_cfg_without_loading_torch(script, question, answer):
    # Only composing the config: torch and Lightning would add seconds to every question and tab completion.
    heavy = "print('loaded:', sorted({'torch', 'lightning'} & set(sys.modules)))"
    code = (
        f"import atexit, runpy, sys; atexit.register(lambda: {heavy}); "
        f"sys.argv = [{script!r}, *{question!r}]; runpy.run_path({script!r}, run_name='__main__')"
    )
    command = [sys.executable, "-c", code]
    result = subprocess.run(command, capture_output=True, text=True, check=True, cwd=SERES.parent)
    assert result.stdout.strip().endswith("loaded: []"), result.stdout[-300:]
    assert answer in result.stdout
