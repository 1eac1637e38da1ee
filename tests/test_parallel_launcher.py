"""hydra/launcher=parallel: sweep jobs side by side on one machine, each on devices no running job shares."""

import itertools
from datetime import datetime

import pytest
from conftest import TINY, fake_data, run_train

from seres.launch.device_slots import cpu_slot, gpu_slot
from seres.launch.sweep import read_metrics
from seres.run.config_checks import ConfigError


def test_gpu_slots_give_each_job_its_own_gpus_and_refuse_too_few():
    gpus = ["0", "1", "2", "3"]
    assert [gpu_slot(slot, 4, 1, gpus) for slot in range(4)] == ["0", "1", "2", "3"]
    assert [gpu_slot(slot, 2, 2, gpus) for slot in range(2)] == ["0,1", "2,3"]
    # CUDA_VISIBLE_DEVICES already set by the user (or SLURM): slots are cut from what is visible.
    assert gpu_slot(1, 2, 1, ["4", "6"]) == "6"
    with pytest.raises(ConfigError, match=r"n_jobs=3 jobs of trainer.devices=2 GPUs need 6 GPUs.*n_jobs=2"):
        gpu_slot(0, 3, 2, gpus)


def test_cpu_slots_split_the_cores_evenly():
    assert [cpu_slot(slot, 2, [0, 1, 2, 3]) for slot in range(2)] == [[0, 1], [2, 3]]
    with pytest.raises(ConfigError, match=r"n_jobs=3 jobs at once need a CPU core each.*n_jobs=2"):
        cpu_slot(0, 3, [0, 1])


@pytest.mark.slow
def test_parallel_jobs_overlap_in_time_and_never_share_a_core(fake_cifar_bin, tmp_path):
    sweep = tmp_path / "sweep"
    # Job 1 runs beside job 0, and job 2 must take job 1's freed slot while job 0 still runs.
    run_train(
        "-m",
        "hydra/launcher=parallel",
        "hydra.launcher.n_jobs=2",
        *TINY,
        *fake_data(fake_cifar_bin, val_size=80),
        "trainer.accelerator=cpu",
        "trainer.max_epochs=1",
        "+callbacks.overlap._target_=recording.OverlapThreeJobs",
        f"+callbacks.overlap.dirpath={tmp_path / 'started'}",
        "+callbacks.overlap.job=0,1,2",
        f"hydra.sweep.dir={sweep}",
    )
    jobs = [read_metrics(sweep / str(n)) for n in range(3)]
    assert [job["status"] for job in jobs] == ["completed"] * 3
    spans = [[datetime.fromisoformat(job[key]) for key in ("started_at", "finished_at")] for job in jobs]
    pairs = itertools.combinations(range(3), 2)
    overlapping = [(a, b) for a, b in pairs if spans[a][0] < spans[b][1] and spans[b][0] < spans[a][1]]
    assert (0, 1) in overlapping and (0, 2) in overlapping, spans
    for a, b in overlapping:
        cores = [set(jobs[a]["cpus"]), set(jobs[b]["cpus"])]
        assert all(cores) and not cores[0] & cores[1], f"jobs {a} and {b} ran at once on cores {cores}"
    assert (sweep / "summary.md").read_text().count("| completed |") == 3
