"""Runs started by SLURM (srun, sbatch, the slurm sweep launcher): one owner of requeueing, and task counts
that Lightning can use.

Lightning recognises SLURM by itself (SLURMEnvironment) and takes ranks, world size and the main address
from srun's variables. Its auto-requeue (a SIGUSR1 handler that saves an extra checkpoint and requeues the
job) is switched off here: submitit requeues sweep jobs, SLURM's own `--requeue` requeues plain jobs, and a
requeued run continues from last.ckpt with `resume=true`, the project's one way of continuing a run.
"""

import os

from lightning.pytorch.plugins.environments import SLURMEnvironment
from omegaconf import DictConfig, open_dict, read_write

from seres.run.config_checks import ConfigError


def is_first_slurm_task() -> bool:
    """False in the other tasks of a multi-task SLURM job: there, the job's first task records the outcome."""
    return os.environ.get("SLURM_PROCID", "0") == "0"


def leave_run_files_to_the_first_task(config: DictConfig) -> None:
    """In a later task of a multi-task SLURM job, write no .hydra/ and log to <job name>_slurm_task_N.log, as
    Lightning's own DDP launcher has its ranks do: the run directory's train.log and .hydra/ are the first
    task's alone, not interleaved lines of every task. `config` is Hydra's, before it makes the directory."""
    if is_first_slurm_task():
        return
    with read_write(config.hydra), open_dict(config.hydra):
        config.hydra.output_subdir = None
        config.hydra.job.name = f"{config.hydra.job.name}_slurm_task_{os.environ['SLURM_PROCID']}"


def slurm_plugins() -> list[SLURMEnvironment]:
    """Lightning's SLURM environment without auto-requeue where SLURM started this process, else none."""
    return [SLURMEnvironment(auto_requeue=False)] if SLURMEnvironment.detect() else []


def check_slurm_tasks() -> None:
    """Refuse `srun -n N` / `--ntasks=N` (N > 1): Lightning needs the tasks per node to place the ranks."""
    tasks = int(os.environ.get("SLURM_NTASKS", "1"))
    if tasks > 1 and "SLURM_NTASKS_PER_NODE" not in os.environ:
        raise ConfigError(
            f"SLURM started {tasks} tasks with --ntasks (srun -n {tasks}), which Lightning cannot map to "
            f"devices; give the tasks per node instead, e.g. srun --ntasks-per-node={tasks} python train.py "
            f"trainer=multinode trainer.devices={tasks} trainer.num_nodes=1 hydra.run.dir=..."
        )
