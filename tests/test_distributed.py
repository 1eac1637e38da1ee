"""DDP, torchrun and multirun sweeps with real processes on the CPU."""

import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from conftest import TINY, fake_data, free_port, run_command, run_train, tiny_net, write_fake_cifar10
from omegaconf import OmegaConf

from seres.data import CIFAR10DataModule

pytestmark = pytest.mark.slow  # real runs in subprocesses

REPO = Path(__file__).resolve().parents[1]
TWO_CPU_PROCESSES = ["trainer.accelerator=cpu", "trainer.devices=2"]
# What every job of a DDP sweep leaves in its directory (rank 1 writes only its log).
JOB_FILES = ["best.ckpt", "last.ckpt", "best_model.pth", ".hydra/config.yaml", "train_ddp_process_1.log"]


@pytest.fixture(scope="module")
def data_root(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("ddp_data")
    write_fake_cifar10(root, "bin", n_per_class_train=40, n_per_class_test=10)
    return root


def data_args(root: Path) -> list[str]:
    # 400 images, 80 held out: 320 = 2 ranks x 5 batches x 32, so one epoch covers every image exactly.
    return fake_data(root, val_size=80)


def metrics(run_dir: Path) -> dict:
    return json.loads((run_dir / "metrics.json").read_text())


def evaluate_on_val(run_dir: Path, root: Path, val_size: int = 80) -> float:
    """Accuracy of best_model.pth on the validation split, in this single process."""
    data = CIFAR10DataModule(root=str(root), verify=False, val_size=val_size, batch_size=32, num_workers=0)
    data.setup()
    net = tiny_net().eval()
    net.load_state_dict(torch.load(run_dir / "best_model.pth", weights_only=True))
    correct = 0
    with torch.no_grad():
        for images, labels in data.val_dataloader():
            correct += (net(images).argmax(dim=1) == labels).sum().item()
    return correct / len(data.val_labels)


@pytest.mark.parametrize("pipeline", ["loader", "device"])
def test_ddp_ranks_see_disjoint_data_covering_the_set_and_val_acc_matches_one_process(
    pipeline, data_root, tmp_path
):
    run_dir = tmp_path / "run"
    result = run_train(
        *TINY,
        *data_args(data_root),
        *TWO_CPU_PROCESSES,
        "data/aug=none",
        f"data.pipeline={pipeline}",
        "trainer.max_epochs=2",
        "+callbacks.seen._target_=recording.RecordSeenSamples",
        f"+callbacks.seen.dirpath={run_dir}",
        f"hydra.run.dir={run_dir}",
    )
    for epoch in (0, 1):
        rank0, rank1 = (json.loads((run_dir / f"seen_rank{r}_epoch{epoch}.json").read_text()) for r in (0, 1))
        assert len(rank0) == len(rank1) == 160
        assert not set(rank0) & set(rank1), "ranks saw the same images"
        assert sorted(rank0 + rank1) == list(range(320)), "the ranks together did not cover the set once"
    orders = [json.loads((run_dir / f"seen_rank0_epoch{e}.json").read_text()) for e in (0, 1)]
    assert orders[0] != orders[1], "every epoch must be shuffled anew"
    # Metrics are reduced over both ranks: the logged accuracy is the one of the whole validation split.
    assert metrics(run_dir)["best_val_acc"] == pytest.approx(evaluate_on_val(run_dir, data_root), abs=1e-6)
    assert metrics(run_dir)["world_size"] == 2 and metrics(run_dir)["test_acc"] is not None
    assert "Initializing distributed: GLOBAL_RANK: 1, MEMBER: 2/2" in result.stdout + result.stderr
    for name in JOB_FILES:
        assert (run_dir / name).is_file(), name
    # Rank 1 ran in the same run directory and wrote no run directory of its own.
    assert sorted(p.name for p in tmp_path.iterdir()) == ["run"]
    # Every event file comes from one process (the file name ends in .<pid>.<n>): rank 0 logs alone.
    writers = {p.name.split(".")[-2] for p in run_dir.glob("tensorboard/**/events.out.tfevents.*")}
    assert len(writers) == 1, writers


@pytest.mark.parametrize("pipeline", ["loader", "device"])
def test_ddp_evaluation_counts_every_image_once_when_the_split_does_not_divide(pipeline, data_root, tmp_path):
    # 81 validation images over 2 processes: a padded sampler would evaluate one image twice.
    run_dir = tmp_path / "odd"
    run_train(
        *TINY,
        *data_args(data_root),
        *TWO_CPU_PROCESSES,
        f"data.pipeline={pipeline}",
        "data.val_size=81",
        "trainer.max_epochs=1",
        "test=false",
        f"hydra.run.dir={run_dir}",
    )
    assert metrics(run_dir)["best_val_acc"] == pytest.approx(
        evaluate_on_val(run_dir, data_root, 81), abs=1e-6
    )


def test_global_batch_mode_splits_the_batch_and_refuses_an_uneven_one_and_sam_keeps_the_ranks_in_step(
    data_root, tmp_path
):
    run_dir = tmp_path / "global"
    run_train(
        *TINY,
        *data_args(data_root),
        *TWO_CPU_PROCESSES,
        "ddp.batch=global",
        "data.batch_size=64",
        "trainer.max_epochs=1",
        "optimizer.lr=0.1",
        # SAM climbs along the gradient of both ranks' images; each rank mixes and augments its own.
        "sam_rho=0.05",
        "mix.cutmix_alpha=1.0",
        "data.aug.policy=trivialaugment",
        "+callbacks.weights._target_=recording.RecordWeights",
        f"+callbacks.weights.dirpath={run_dir}",
        f"hydra.run.dir={run_dir}",
    )
    result = metrics(run_dir)
    assert (result["global_batch_size"], result["lr"]) == (64, 0.1)
    rank0, rank1 = (torch.load(run_dir / f"weights_rank{r}.pt") for r in (0, 1))
    assert all(torch.equal(rank0[name], rank1[name]) for name in rank0)  # the same SAM steps on both
    failed = run_train(
        *TINY,
        *data_args(data_root),
        *TWO_CPU_PROCESSES,
        "ddp.batch=global",
        "data.batch_size=33",
        f"hydra.run.dir={tmp_path / 'uneven'}",
        expect_ok=False,
    )
    assert "data.batch_size=33 cannot be split evenly over 2 processes" in failed.stderr
    assert not (tmp_path / "uneven" / "last.ckpt").exists()


def test_two_torchrun_nodes_make_one_run_with_the_one_node_result(data_root, tmp_path):
    settings = [*TINY, *data_args(data_root), "trainer.accelerator=cpu", "trainer.deterministic=true"]
    settings.append("trainer.max_epochs=1")
    one_node = tmp_path / "one_node"
    run_train(*settings, "trainer.devices=2", f"hydra.run.dir={one_node}")

    # Two torchrun agents, node ranks 0 and 1 with one process each, meeting on 127.0.0.1: as on two machines.
    two_nodes = tmp_path / "two_nodes"
    torchrun = [sys.executable, "-m", "torch.distributed.run", "--nnodes=2", "--nproc_per_node=1"]
    torchrun += ["--master_addr=127.0.0.1", f"--master_port={free_port()}"]
    multinode = [*settings, "trainer=multinode", "trainer.devices=1", "trainer.num_nodes=2"]
    agents = [
        subprocess.Popen(
            [*torchrun, f"--node_rank={rank}", "train.py", *multinode, f"hydra.run.dir={two_nodes}"],
            cwd=REPO,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        for rank in (0, 1)
    ]
    for agent in agents:
        output, _ = agent.communicate(timeout=600)
        assert agent.returncode == 0, output[-5000:]
    assert metrics(two_nodes)["world_size"] == 2 and (two_nodes / "best_model.pth").is_file()
    assert metrics(two_nodes)["best_val_acc"] == metrics(one_node)["best_val_acc"]
    weights = [torch.load(run / "best_model.pth", weights_only=True) for run in (one_node, two_nodes)]
    assert all(torch.equal(weights[0][name], weights[1][name]) for name in weights[0])
    assert sorted(p.name for p in tmp_path.iterdir()) == ["one_node", "two_nodes"]

    # Started elsewhere, so the time-stamped directories Hydra makes before the refusal stay out of the repo.
    standalone = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2"]
    refused_command = [*standalone, str(REPO / "train.py"), *TINY, *data_args(data_root), *TWO_CPU_PROCESSES]
    refused = run_command(refused_command, expect_ok=False, cwd=tmp_path / "two_nodes")
    assert "without hydra.run.dir" in refused.stderr


def test_ddp_multirun_runs_complete_jobs_summarises_and_resumes(data_root, tmp_path):
    sweep = tmp_path / "sweep"
    command = [
        "-m",
        *TINY,
        *data_args(data_root),
        *TWO_CPU_PROCESSES,
        "trainer.max_epochs=1",
        "optimizer.lr=0.05,0.1",
        f"hydra.sweep.dir={sweep}",
    ]
    first = run_train(*command)
    # Job subprocesses share the sweep's output: a DDP child that re-ran the sweep would launch it again.
    assert (first.stdout + first.stderr).count("Launching 2 jobs") == 1
    jobs = sorted(p for p in sweep.iterdir() if p.is_dir() and p.name.isdigit())
    assert [job.name for job in jobs] == ["0", "1"]
    for job in jobs:
        for name in JOB_FILES:
            assert (job / name).is_file(), f"{job}/{name}"
        assert metrics(job)["world_size"] == 2 and metrics(job)["status"] == "completed"
        # Every job is started with resume=true and says that it found nothing to resume.
        assert "has no last.ckpt: starting a new run" in (job / "train.log").read_text()
    # No DDP child re-ran the sweep: nothing but the two jobs and the summary at the sweep root.
    assert sorted(p.name for p in sweep.iterdir()) == [
        "0",
        "1",
        "multirun.yaml",
        "summary.csv",
        "summary.json",
        "summary.md",
        "summary.png",
    ]
    rows = (sweep / "summary.csv").read_text().splitlines()
    assert rows[0] == "job,optimizer.lr,status,best_val_acc,test_acc,epochs,fit_seconds"
    for row, job, lr in zip(rows[1:], jobs, ("0.05", "0.1"), strict=True):
        values = row.split(",")
        assert values[0] == job.name and values[1] == lr and values[2] == "completed"
        assert float(values[3]) == pytest.approx(metrics(job)["best_val_acc"], abs=1e-4)
        assert int(values[5]) == metrics(job)["epochs"] == 1
        # The job's own learning rate, doubled for its 2 processes (ddp.batch=per_device).
        assert metrics(job)["lr"] == pytest.approx(2 * float(lr))

    # The same command again trains nothing: every job is already complete.
    stamps = {job.name: (job / "best.ckpt").stat().st_mtime_ns for job in jobs}
    second = run_train(*command)
    assert (second.stdout + second.stderr).count("already completed, skipping it") == 2
    assert stamps == {job.name: (job / "best.ckpt").stat().st_mtime_ns for job in jobs}


def test_a_failing_job_is_recorded_the_others_run_and_a_rerun_with_other_settings_is_refused(
    data_root, tmp_path
):
    sweep = tmp_path / "sweep"
    common = ["-m", *TINY, *data_args(data_root), "trainer.accelerator=cpu", "trainer.max_epochs=1"]
    common += ["data.batch_size=32,100000", f"hydra.sweep.dir={sweep}"]
    result = run_train(*common, expect_ok=False)
    assert metrics(sweep / "0")["status"] == "completed"
    assert metrics(sweep / "1")["status"] == "failed"
    assert "1 of 2 jobs did not complete" in result.stdout + result.stderr
    assert "| 1 | 100000 | failed |" in (sweep / "summary.md").read_text()

    # The same sweep directory with another learning rate: job 0's finished run is not overwritten.
    kept = {name: (sweep / "0" / name).read_bytes() for name in ("metrics.json", "best.ckpt")}
    other = run_train(*common, "optimizer.lr=0.2", expect_ok=False)
    assert "job 0 of this sweep directory ran other settings" in other.stdout + other.stderr
    assert "give this sweep a new hydra.sweep.dir" in other.stdout + other.stderr
    assert {name: (sweep / "0" / name).read_bytes() for name in kept} == kept
    assert "| 0 | 32 | other settings |" in (sweep / "summary.md").read_text()


def test_a_short_optuna_search_maximises_validation_accuracy(data_root, tmp_path):
    sweep = tmp_path / "search"
    run_train(
        "-m",
        "hparams_search=optuna",
        "hydra.sweeper.n_trials=2",
        # The real search space (10 to 30 epochs), made quick with two batches an epoch.
        "++trainer.limit_train_batches=2",
        "++trainer.check_val_every_n_epoch=10",
        *TINY,
        *data_args(data_root),
        "trainer.accelerator=cpu",
        f"hydra.sweep.dir={sweep}",
    )
    trials = [metrics(sweep / str(n)) for n in (0, 1)]
    assert all(trial["status"] == "completed" for trial in trials)
    lrs = {trial["lr"] for trial in trials}
    assert len(lrs) == 2 and all(0.01 <= lr <= 0.5 for lr in lrs)
    assert all(trial["epochs"] in (10, 20, 30) for trial in trials)
    best = OmegaConf.load(sweep / "optimization_results.yaml")
    assert best.best_value == pytest.approx(max(trial["best_val_acc"] for trial in trials))
    assert (sweep / "summary.csv").read_text().count("completed") == 2
