"""Runs and sweeps on a real SLURM cluster: munged, slurmctld and slurmd here (tests/slurm_cluster.py)."""

import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest
from conftest import REPO, TINY, fake_data, run_command
from slurm_cluster import local_slurm
from test_reliability import val_acc_steps

from seres.launch.sweep import read_metrics

pytestmark = pytest.mark.slow  # real daemons and real runs

# The node has no GPUs: a CPU job asks for none (the launcher's gpus_per_node follows trainer.accelerator).
CPU_SWEEP = ["hydra/launcher=slurm", "trainer.accelerator=cpu"]


@pytest.fixture(scope="module")
def slurm(tmp_path_factory) -> dict[str, str]:
    """The environment of a user of the local cluster: SLURM_CONF, and tests/ importable (test callbacks)."""
    root = tmp_path_factory.mktemp("slurm")
    os.chmod(root, 0o700)  # munged refuses a key directory others can write to
    with local_slurm(root) as env:
        path = f"{Path(sys.executable).parent}{os.pathsep}{env['PATH']}"  # `python` is this interpreter
        yield {**env, "PATH": path, "PYTHONPATH": str(REPO / "tests")}


def small_run(root: Path) -> list[str]:
    return [*TINY, *fake_data(root, val_size=80), "trainer.accelerator=cpu"]


def epoch_numbers(run_dir: Path) -> list[int]:
    return [int(line.split(",")[0]) for line in (run_dir / "epochs.csv").read_text().splitlines()[1:]]


def test_a_slurm_sweep_runs_each_job_as_a_two_task_ddp_job_and_a_rerun_submits_nothing(
    slurm, fake_cifar_bin, tmp_path
):
    sweep = tmp_path / "sweep"
    command = [sys.executable, "train.py", "-m", *CPU_SWEEP, *small_run(fake_cifar_bin), "trainer.devices=2"]
    command += ["trainer.max_epochs=1", "optimizer.lr=0.05,0.1", f"hydra.sweep.dir={sweep}"]
    run_command(command, env=slurm)
    for job in ("0", "1"):
        result = read_metrics(sweep / job)
        assert result["status"] == "completed" and result["world_size"] == 2
        assert (sweep / job / "best_model.pth").is_file()
        # Both ranks were srun's tasks: Lightning took them from SLURM and started no process of its own.
        assert not list((sweep / job).glob("*ddp_process*"))
    # One SLURM job per sweep job, each with its submitit log per task (rank): a job array of 2-task jobs.
    submitted = sorted(p.name for p in (sweep / ".submitit").glob("*_*") if p.is_dir())
    assert len(submitted) == 2
    assert all(len(list((sweep / ".submitit" / name).glob("*_log.out"))) == 2 for name in submitted)
    rows = (sweep / "summary.csv").read_text().splitlines()
    assert [row.split(",")[:3] for row in rows[1:]] == [["0", "0.05", "completed"], ["1", "0.1", "completed"]]

    rerun = run_command(command, env=slurm)
    assert (rerun.stdout + rerun.stderr).count("already completed, not submitting it") == 2
    assert sorted(p.name for p in (sweep / ".submitit").glob("*_*") if p.is_dir()) == submitted, "submitted"


def test_jobs_that_slurm_refuses_end_the_sweep_with_sbatchs_reason_and_the_keys_to_check(
    slurm, fake_cifar_bin, tmp_path
):
    sweep = tmp_path / "sweep"
    command = [sys.executable, "train.py", "-m", *CPU_SWEEP, *small_run(fake_cifar_bin)]
    command += ["hydra.launcher.gpus_per_node=1", "optimizer.lr=0.05,0.1", f"hydra.sweep.dir={sweep}"]
    refused = run_command(command, env=slurm, expect_ok=False)
    output = refused.stdout + refused.stderr
    assert refused.returncode != 0 and "Traceback" not in output
    lines = [line for line in output.splitlines() if "SLURM refused the sweep's jobs" in line]
    assert len(lines) == 1, output[-3000:]
    assert "Invalid generic resource" in lines[0] and "gpus_per_node" in lines[0], lines[0]
    assert not list(sweep.glob("*/metrics.json"))


def job_id(env: dict[str, str]) -> str | None:
    queue = subprocess.run(["squeue", "-h", "-o", "%i"], env=env, capture_output=True, text=True)
    ids = queue.stdout.split()
    return ids[0] if ids else None


def job_state(env: dict[str, str], job: str) -> str:
    queue = subprocess.run(["squeue", "-h", "-j", job, "-o", "%T"], env=env, capture_output=True, text=True)
    return queue.stdout.strip()


def with_a_slow_requeue(env: dict[str, str], bin_dir: Path) -> dict[str, str]:
    """`env` whose `scontrol requeue` still runs when the requeue's SIGTERM reaches the job's processes: the
    race a loaded cluster has by chance (the requeue requested, the command not yet exited), every time."""
    real = shutil.which("scontrol", path=env["PATH"])
    bin_dir.mkdir()
    shim = bin_dir / "scontrol"
    shim.write_text(f'#!/bin/bash\n"{real}" "$@" || exit $?\nif [ "$1" = requeue ]; then sleep 3; fi\n')
    shim.chmod(0o755)
    return {**env, "PATH": f"{bin_dir}{os.pathsep}{env['PATH']}"}


def test_a_job_warned_of_its_end_is_requeued_and_resumes_from_last_ckpt(slurm, fake_cifar_bin, tmp_path):
    sweep = tmp_path / "sweep"
    command = [sys.executable, "train.py", "-m", *CPU_SWEEP, *small_run(fake_cifar_bin), "trainer.devices=1"]
    command += ["trainer.max_epochs=4", "+callbacks.slow._target_=recording.SlowSteps", "seed=0"]
    command += [f"hydra.sweep.dir={sweep}"]  # a one-job sweep
    sweep_process = subprocess.Popen(
        command,
        cwd=REPO,
        env=with_a_slow_requeue(slurm, tmp_path / "bin"),
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    job = sweep / "0"
    deadline = time.monotonic() + 300
    while not ((job / "epochs.csv").is_file() and epoch_numbers(job)):
        assert time.monotonic() < deadline and sweep_process.poll() is None, "the job never finished an epoch"
        time.sleep(0.2)
    # What SLURM sends signal_delay_s before a job's time limit, sent now, in the middle of epoch 2.
    warned = job_id(slurm)
    subprocess.run(["scancel", "--signal=USR2", warned], env=slurm, check=True)
    # SLURM holds a requeued job for about two minutes before it may start again; an administrator's
    # `scontrol update StartTime=now` lets it start at once, which is all this test needs.
    while job_state(slurm, warned) != "PENDING":
        assert time.monotonic() < deadline and sweep_process.poll() is None, "the job was not requeued"
        time.sleep(0.2)
    subprocess.run(["scontrol", "update", f"JobId={warned}", "StartTime=now"], env=slurm, check=True)
    output, _ = sweep_process.communicate(timeout=600)
    assert sweep_process.returncode == 0, output[-5000:]
    log = (job / "train.log").read_text()
    assert "resuming from" in log, "the requeued job did not continue from last.ckpt"
    submitit_logs = "".join(path.read_text() for path in (sweep / ".submitit").rglob("*_log.*"))
    assert "Caught signal SIGUSR2" in submitit_logs and "Requeued job" in submitit_logs
    assert read_metrics(job)["status"] == "completed" and read_metrics(job)["epochs"] == 4
    assert epoch_numbers(job) == [1, 2, 3, 4]
    # TensorBoard's curve has each epoch's validation accuracy once, in order.
    steps = val_acc_steps(job)
    assert steps == sorted(set(steps)) and len(steps) == 4


def test_srun_with_tasks_per_node_makes_one_ddp_run_and_ntasks_gets_the_fix(slurm, fake_cifar_bin, tmp_path):
    run_dir = tmp_path / "run"
    train = ["python", "train.py", "trainer=multinode", *small_run(fake_cifar_bin), "trainer.devices=2"]
    train += ["trainer.num_nodes=1", "trainer.max_epochs=1"]
    run_command(["srun", "--ntasks-per-node=2", *train, f"hydra.run.dir={run_dir}"], env=slurm)
    assert read_metrics(run_dir)["world_size"] == 2 and read_metrics(run_dir)["status"] == "completed"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["run"]
    # The first task writes the run's log and .hydra/; the second logs to a file of its own.
    assert (run_dir / "train_slurm_task_1.log").is_file()
    assert (run_dir / "train.log").read_text().count("done: best val acc") == 1

    refused_command = ["srun", "-n2", *train, f"hydra.run.dir={tmp_path / 'refused'}"]
    refused = run_command(refused_command, expect_ok=False, env=slurm)
    assert "srun --ntasks-per-node=2" in refused.stderr and "Traceback" not in refused.stderr
    assert not (tmp_path / "refused").exists()


def test_the_sbatch_script_trains_one_ddp_run_with_a_task_per_device(slurm, fake_cifar_bin, tmp_path):
    # As a user does: copy the script and set the resources this cluster has (no GPUs, 2 CPUs here).
    script = tmp_path / "train.sbatch"
    lines = (REPO / "scripts" / "train.sbatch").read_text().splitlines()
    script.write_text("\n".join(line for line in lines if "--gpus-per-node" not in line) + "\n")
    run_dir = tmp_path / "run"  # after the script's own hydra.run.dir, so it wins: the run stays out of REPO
    overrides = [*small_run(fake_cifar_bin), "trainer.max_epochs=1", f"hydra.run.dir={run_dir}"]
    sbatch = ["sbatch", "--parsable", "--ntasks-per-node=2", "--cpus-per-task=1"]
    sbatch.append(f"--output={tmp_path / 'slurm-%j.out'}")
    submitted = run_command([*sbatch, str(script), *overrides], env=slurm).stdout.strip()
    # Watched here rather than with `sbatch --wait`, whose checks grow up to 10 s apart: the job takes ~15 s.
    deadline = time.monotonic() + 300
    while job_state(slurm, submitted) in ("PENDING", "CONFIGURING", "RUNNING", "COMPLETING"):
        assert time.monotonic() < deadline, f"job {submitted} still queued or running after 300 s"
        time.sleep(0.5)
    assert read_metrics(run_dir)["world_size"] == 2 and read_metrics(run_dir)["status"] == "completed"
    # The script asks to resume, so that a requeued job continues: its first start found nothing to resume.
    assert "has no last.ckpt: starting a new run" in (run_dir / "train.log").read_text()
