"""hydra-submitit-launcher's SLURM launcher, submitting only the sweep jobs that have not completed.

`python train.py -m hydra/launcher=slurm ...` (conf/hydra/launcher/slurm.yaml). submitit builds the sbatch
job array, runs each job under srun, requeues a job that SLURM warns of its end (signal_delay_s) and
collects the results; this subclass only leaves out the jobs whose directory already holds a completed run
of the same overrides, so that a rerun of a finished sweep submits nothing and a rerun of an interrupted one
submits just what is left. Those jobs keep their numbers, hence their directories. In the job, it also keeps
the requeue from failing the job it requeues (`__call__`).
"""

import logging
import signal
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from hydra.core.singleton import Singleton
from hydra.core.utils import JobReturn, JobStatus, filter_overrides
from hydra_plugins.hydra_submitit_launcher import submitit_launcher
from hydra_plugins.hydra_submitit_launcher.config import BaseQueueConf
from omegaconf import OmegaConf, open_dict

log = logging.getLogger("seres")

# Launcher settings that configure submitit's executor itself rather than each job's sbatch parameters.
EXECUTOR_SETTINGS = ("submitit_folder", "max_num_timeout")


class SlurmLauncher(submitit_launcher.SlurmLauncher):
    """The plugin's launcher; `launch` submits only the jobs without a completed run in their directory."""

    def launch(self, job_overrides: Sequence[Sequence[str]], initial_job_idx: int) -> Sequence[JobReturn]:
        numbered = list(enumerate(job_overrides, start=initial_job_idx))
        results = {number: self.completed_job(number, list(overrides)) for number, overrides in numbered}
        pending = [(number, list(overrides)) for number, overrides in numbered if results[number] is None]
        if pending:
            log.info(f"submitting {len(pending)} of {len(numbered)} jobs, sweep dir {self.sweep_dir}")
            # map_array takes one sequence per argument of __call__: transpose the jobs' argument tuples.
            arguments = list(zip(*(self.job_arguments(*job) for job in pending), strict=True))
            jobs = self.submit(arguments)
            for (number, _), job in zip(pending, jobs, strict=True):
                results[number] = job.results()[0]  # the job's first task (global rank 0) returns the run
        return [results[number] for number, _ in numbered]

    def submit(self, arguments: list[tuple[Any, ...]]) -> list[Any]:
        """The pending jobs as one job array; sbatch's refusal ends the sweep with its reason in one line."""
        from submitit.core.utils import FailedJobError

        try:
            return self.executor().map_array(self, *arguments)
        except FailedJobError as error:
            reasons = [line for line in str(error).splitlines() if "error" in line.lower()] or [str(error)]
            log.error(
                f"SLURM refused the sweep's jobs ({'; '.join(reasons)}); nothing was submitted. Check the "
                "launcher's settings: hydra.launcher.partition, gpus_per_node (none for trainer.accelerator="
                "cpu), cpus_per_task, mem_gb, timeout_min (conf/hydra/launcher/slurm.yaml)"
            )
            raise SystemExit(1) from None

    def __call__(self, *args: Any, **kwargs: Any) -> JobReturn:
        """The job (run by submitit on the node), with SIGTERM ignored by this process and what it starts.

        SLURM stops a requeued job by sending SIGTERM to every one of its processes, the `scontrol requeue`
        that submitit runs included: killed before it exits, that command fails the job it has just requeued
        (CalledProcessError, "died with SIGTERM"). Ignored, it always exits normally. submitit's own SIGTERM
        handler only logged the signal; the run itself, train.py in a child process, gets the default back
        (seres.launch.sweep_jobs.run_child) and stops at the end of its step as before.
        """
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        return super().__call__(*args, **kwargs)

    @property
    def sweep_dir(self) -> Path:
        return Path(str(self.config.hydra.sweep.dir))

    def executor(self) -> Any:
        import submitit  # as in the plugin: imported only when a sweep is launched

        self.sweep_dir.mkdir(parents=True, exist_ok=True)
        executor = submitit.AutoExecutor(
            folder=self.params["submitit_folder"], slurm_max_num_timeout=self.params["max_num_timeout"]
        )
        shared = set(OmegaConf.structured(BaseQueueConf).keys())
        executor.update_parameters(
            **{
                name if name in shared else f"slurm_{name}": value
                for name, value in self.params.items()
                if name not in EXECUTOR_SETTINGS
            }
        )
        return executor

    def job_arguments(self, number: int, overrides: list[str]) -> tuple[Any, ...]:
        """What submitit passes to `self.__call__` (the plugin's) in the job: the job keeps its number."""
        log.info(f"\t#{number} : {' '.join(filter_overrides(overrides))}")
        return overrides, "hydra.sweep.dir", number, f"job_id_for_{number}", Singleton.get_state()

    def completed_job(self, number: int, overrides: list[str]) -> JobReturn | None:
        """The finished run of job `number` as a JobReturn, or None if it has yet to run or complete."""
        config = self.hydra_context.config_loader.load_sweep_config(self.config, overrides)
        with open_dict(config.hydra.job):
            config.hydra.job.num = number
        job_dir = Path(str(config.hydra.sweep.dir)) / str(config.hydra.sweep.subdir)
        from seres.launch.sweep_jobs import (
            completed_metrics,  # not at start-up: Hydra imports this module on every run
        )

        metrics = completed_metrics(job_dir, overrides)
        if metrics is None:
            return None
        log.info(f"job {number} already completed, not submitting it: {' '.join(overrides)}")
        result = JobReturn(overrides=overrides, cfg=config, hydra_cfg=config.hydra, working_dir=str(job_dir))
        result.status, result.return_value = JobStatus.COMPLETED, metrics["best_val_acc"]
        return result
