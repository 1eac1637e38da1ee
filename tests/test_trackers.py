"""MLflow, W&B and TensorBoard, each read back through its own client or server, over real tiny runs."""

import json
import os
import signal
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest
from conftest import REPO, TINY, TRAIN, fake_data, free_port, made_once, run_command
from interrupting import SLOW_STEPS, interrupt_in_epoch_2
from mlflow import MlflowClient
from wandb_records import records, summary

from seres.launch.sweep import read_metrics

pytestmark = pytest.mark.slow  # real runs and real servers

ATTACHED = ["best_model.pth", "confusion.png", "curves.png", "report.md"]
SERVER_SECONDS = 90  # how long a server gets to come up before the test fails


def tracked(root: Path, store: str, *overrides: str, sweep: bool = False) -> list[str]:
    """A tiny 2-epoch run logging to TensorBoard, MLflow (at `store`) and W&B (offline by default)."""
    return [
        sys.executable,
        str(REPO / "train.py"),
        *(["-m"] if sweep else []),
        *TINY,
        *fake_data(root, val_size=80),
        "trainer.accelerator=cpu",
        "trainer.max_epochs=2",
        "logger=[tensorboard,mlflow,wandb]",
        f"logger.mlflow.tracking_uri={store}",
        *overrides,
    ]


def without_wandb_settings() -> dict[str, str]:
    """This environment without the user's W&B settings: the run must be offline by its own config."""
    return {key: value for key, value in os.environ.items() if not key.startswith("WANDB_")}


LABELS = ["task_name=tracked", "tags=[cpu,tiny]"]


@pytest.fixture(scope="module")
def runs(tmp_path_factory, fake_cifar_bin) -> dict[str, Path]:
    """A 2-job sweep (optimizer.lr=0.05,0.1) with a task name and tags, tracked in all three; its job 1
    stands for a single run (a sweep job is one: train.py run again in a child process)."""

    def sweep(root: Path) -> None:
        swept = ["optimizer.lr=0.05,0.1", *LABELS, f"hydra.sweep.dir={root}/logs/sweep"]
        command = tracked(fake_cifar_bin, store_in(root), *swept, sweep=True)
        env = without_wandb_settings()
        result = subprocess.run(command, cwd=root, env=env, capture_output=True, text=True)
        assert result.returncode == 0, result.stderr[-3000:]

    root = made_once(tmp_path_factory, "tracked", sweep)
    logs = root / "logs"
    return {"root": root, "store": store_in(root), "run": logs / "sweep" / "1", "sweep": logs / "sweep"}


def store_in(root: Path) -> str:
    return f"sqlite:///{root}/mlflow.db"


def test_mlflow_holds_each_run_with_its_config_metrics_tags_and_files_and_a_sweep_in_one_experiment(runs):
    client = MlflowClient(runs["store"])
    experiment = client.get_experiment_by_name("seres")
    found = {run.info.run_name: run for run in client.search_runs([experiment.experiment_id])}
    assert len(found) == 2, sorted(found)
    # Sweep jobs are told apart by name: their overrides, swept values included.
    for job, lr in (("0", "0.05"), ("1", "0.1")):
        (name,) = [name for name in found if f"optimizer.lr={lr}" in name]
        run, expected = found[name], read_metrics(runs["sweep"] / job)
        assert run.info.status == "FINISHED"
        assert run.data.params["optimizer/lr"] == lr and run.data.params["trainer/max_epochs"] == "2"
        assert run.data.tags["task_name"] == "tracked" and run.data.tags["tags"] == "cpu,tiny"
        assert run.data.metrics["val/acc_best"] == pytest.approx(expected["best_val_acc"])
        assert run.data.metrics["test/acc"] == pytest.approx(expected["test_acc"])
        assert len(client.get_metric_history(run.info.run_id, "val/acc")) == 2  # one point per epoch
        assert sorted(a.path for a in client.list_artifacts(run.info.run_id)) == ATTACHED
        downloaded = Path(client.download_artifacts(run.info.run_id, "report.md", str(runs["root"] / job)))
        assert downloaded.read_bytes() == (runs["sweep"] / job / "report.md").read_bytes()


def test_wandb_runs_offline_with_its_tags_and_its_summary_holds_the_final_metrics(runs):
    run_dir = runs["run"]
    (offline,) = (run_dir / "wandb").glob("offline-run-*")  # offline without any W&B setting or account
    (log,) = offline.glob("run-*.wandb")
    final, expected = summary(log), read_metrics(run_dir)
    assert final["val/acc_best"] == pytest.approx(expected["best_val_acc"])
    assert final["test/acc"] == pytest.approx(expected["test_acc"])
    assert final["test/loss"] == pytest.approx(expected["test_loss"])
    (config,) = [record.config for record in records(log) if record.WhichOneof("record_type") == "config"]
    settings = {item.key: json.loads(item.value_json) for item in config.update}
    assert settings["optimizer"]["lr"] == 0.1 and settings["trainer"]["max_epochs"] == 2
    (run,) = [record.run for record in records(log) if record.WhichOneof("record_type") == "run"]
    assert list(run.tags) == ["cpu", "tiny"] and run.job_type == "tracked"
    files = offline / "files"
    for name in ATTACHED:
        assert (files / name).read_bytes() == (run_dir / name).read_bytes(), name


def get_json(url: str, body: dict | None = None) -> dict:
    data = None if body is None else json.dumps(body).encode()
    request = urllib.request.Request(url, data=data, headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(request, timeout=10) as response:
        return json.loads(response.read())


def hparams_table(base: str) -> list[dict]:
    """The rows of TensorBoard's HParams tab, as its page asks the server for them: a run, its config, its
    metrics."""
    every_status = ["STATUS_UNKNOWN", "STATUS_SUCCESS", "STATUS_FAILURE", "STATUS_RUNNING"]
    query = {"experimentName": "", "colParams": [], "startIndex": 0, "sliceSize": 100}
    query["allowedStatuses"] = every_status
    return get_json(f"{base}/plugin/hparams/session_groups", query)["sessionGroups"]


def wait_until(ready, what: str, server: subprocess.Popen) -> None:
    deadline = time.monotonic() + SERVER_SECONDS
    while True:
        assert server.poll() is None, f"{what} exited with {server.returncode}"
        try:
            if ready():
                return
        except OSError:
            pass  # not listening yet
        assert time.monotonic() < deadline, f"{what} not ready after {SERVER_SECONDS} s"
        time.sleep(0.5)


def stop(server: subprocess.Popen) -> None:
    server.terminate()
    try:
        server.wait(timeout=20)
    except subprocess.TimeoutExpired:
        server.kill()


def test_metrics_json_and_the_sweep_summary_carry_the_task_name_and_tags(runs):
    for job in ("0", "1"):
        metrics = read_metrics(runs["sweep"] / job)
        assert metrics["task_name"] == "tracked" and metrics["tags"] == ["cpu", "tiny"]
    assert "task_name: tracked, tags: cpu, tiny" in (runs["sweep"] / "summary.md").read_text()
    summary = json.loads((runs["sweep"] / "summary.json").read_text())
    assert (summary["task_name"], summary["tags"]) == ("tracked", ["cpu", "tiny"])


def test_a_tensorboard_server_shows_our_scalars_hparams_of_the_sweep_and_the_confusion_matrix(runs):
    port = free_port()
    command = [sys.executable, "-m", "tensorboard.main", "--logdir", str(runs["root"] / "logs")]
    server = subprocess.Popen(
        [*command, "--host", "127.0.0.1", "--port", str(port)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    base = f"http://127.0.0.1:{port}/data"
    expected_runs = {"sweep/0/tensorboard", "sweep/1/tensorboard"}
    try:
        wait_until(lambda: set(get_json(f"{base}/runs")) == expected_runs, "tensorboard", server)
        scalars = get_json(f"{base}/plugin/scalars/tags")
        for run in expected_runs:
            assert {"train/loss", "train/acc", "val/acc", "val/acc_best", "test/acc"} <= set(scalars[run])
        images = get_json(f"{base}/plugin/images/tags")
        assert all("test/confusion_matrix" in images[run] for run in expected_runs)
        # The HParams tab: one row per run, the sweep's two learning rates among them, with the metrics.
        rows = hparams_table(base)
        rates = {row["name"]: row["hparams"]["optimizer/lr"] for row in rows}
        assert rates == {"sweep/0/tensorboard": 0.05, "sweep/1/tensorboard": 0.1}
        for row in rows:
            assert row["hparams"]["task_name"] == "tracked" and row["hparams"]["tags"] == "['cpu', 'tiny']"
            shown = {value["name"]["tag"] for value in row["metricValues"]}
            assert {"hparams/best_val_acc", "hparams/test_acc"} <= shown, shown
    finally:
        stop(server)


def test_a_stopped_then_resumed_run_continues_its_runs_on_a_real_mlflow_server_and_in_wandb(
    fake_cifar_bin, tmp_path
):
    port = free_port()
    command = [sys.executable, "-m", "mlflow", "server", "--host", "127.0.0.1", "--port", str(port)]
    command += ["--backend-store-uri", f"sqlite:///{tmp_path}/server.db"]
    command += ["--artifacts-destination", str(tmp_path / "artifacts"), "--workers", "1"]
    server = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, cwd=tmp_path)
    uri = f"http://127.0.0.1:{port}"
    try:
        wait_until(lambda: urllib.request.urlopen(f"{uri}/health", timeout=5).status == 200, "mlflow", server)
        run_dir = tmp_path / "run"
        # 3 epochs, stopped in the second, then resumed: both halves belong to one MLflow run and one W&B run.
        three_epochs = ["trainer.max_epochs=3", SLOW_STEPS, f"hydra.run.dir={run_dir}"]
        _, _, *overrides = tracked(fake_cifar_bin, uri, *three_epochs)
        env = without_wandb_settings()
        stopped = interrupt_in_epoch_2(overrides, run_dir, signal.SIGTERM, cwd=tmp_path, env=env)
        assert "stopped by SIGTERM during epoch 2 of 3" in stopped.stderr, stopped.stderr[-3000:]
        run_command([*TRAIN, *overrides, "resume=true"], cwd=tmp_path, env=env)
        # W&B (offline): each process wrote its own record of the same run id, which `wandb sync` joins.
        wandb_id = json.loads((run_dir / "tracker_runs.json").read_text())["WandbLogger"]
        halves = sorted((run_dir / "wandb").glob("offline-run-*"))
        assert [path.name.rsplit("-", 1)[1] for path in halves] == [wandb_id, wandb_id]
        client = MlflowClient(uri)
        (run,) = client.search_runs([client.get_experiment_by_name("seres").experiment_id])
        assert run.info.status == "FINISHED"
        epochs = [m.step for m in client.get_metric_history(run.info.run_id, "val/acc")]
        assert len(epochs) == 3 and epochs == sorted(set(epochs)), epochs  # each epoch once, in order
        assert run.data.metrics["test/acc"] == pytest.approx(read_metrics(run_dir)["test_acc"])
        assert sorted(a.path for a in client.list_artifacts(run.info.run_id)) == ATTACHED
        # The server keeps the files: they are in its artefact store, not only in the run directory.
        assert len(list((tmp_path / "artifacts").rglob("best_model.pth"))) == 1
        # Resumed once more after it completed: still one run, whose params (unchangeable in MLflow) stay.
        run_command([*TRAIN, *overrides, "resume=true"], cwd=tmp_path, env=env)
        (again,) = client.search_runs([client.get_experiment_by_name("seres").experiment_id])
        assert again.info.run_id == run.info.run_id and again.data.params == run.data.params
    finally:
        stop(server)


def test_a_tracker_that_is_not_installed_is_refused_before_any_work_with_the_pip_command(
    fake_cifar_bin, tmp_path
):
    # A Python in which `import mlflow` fails, as where the extra is not installed.
    shadow = tmp_path / "shadow" / "mlflow"
    shadow.mkdir(parents=True)
    (shadow / "__init__.py").write_text("raise ImportError(\"No module named 'mlflow'\")\n")
    env = {**os.environ, "PYTHONPATH": str(tmp_path / "shadow")}
    run_dir = tmp_path / "run"
    command = tracked(fake_cifar_bin, store_in(tmp_path), "logger=mlflow", f"hydra.run.dir={run_dir}")
    refused = subprocess.run(command, cwd=tmp_path, env=env, capture_output=True, text=True)
    assert refused.returncode == 1
    assert "logger=mlflow needs the mlflow package" in refused.stderr
    assert "pip install -e '.[mlflow]'" in refused.stderr and "Traceback" not in refused.stderr
    assert not run_dir.exists()
