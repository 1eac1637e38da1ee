"""A real one-node SLURM cluster on this machine: munged, slurmctld and slurmd, started and stopped by a test.

Debian's `slurm-wlm` and `munge` packages (`make slurm` installs them as root). Everything the daemons write
(configuration, key, state, logs, sockets) lives in one temporary directory; the ports are free ones. The
node is this machine under the name `localhost`, with its CPUs; jobs run as the user who started the cluster.
"""

import contextlib
import os
import shutil
import socket
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

PROGRAMS = ("munged", "slurmctld", "slurmd", "sbatch", "srun", "squeue", "scontrol")
INSTALL = "make slurm (apt-get install slurm-wlm munge, as root)"


def require_slurm() -> None:
    """Skip when SLURM cannot run here; fail instead where SERES_REQUIRE_SLURM=1 (CI), so it never skips."""
    missing = [program for program in PROGRAMS if shutil.which(program) is None]
    why = f"missing {', '.join(missing)}: {INSTALL}" if missing else ""
    if not why and os.geteuid() != 0:
        why = "the SLURM daemons of these tests run as root; run the tests as root"
    if why and os.environ.get("SERES_REQUIRE_SLURM") == "1":
        pytest.fail(f"SERES_REQUIRE_SLURM=1 but SLURM cannot run: {why}")
    if why:
        pytest.skip(f"SLURM tests need a local SLURM: {why}")


def free_ports(count: int) -> list[int]:
    probes = [socket.socket() for _ in range(count)]
    for probe in probes:
        probe.bind(("127.0.0.1", 0))
    ports = [probe.getsockname()[1] for probe in probes]
    for probe in probes:
        probe.close()
    return ports


def slurm_conf(root: Path, munge_socket: Path) -> str:
    controller_port, node_port = free_ports(2)
    return f"""\
ClusterName=seres-test
SlurmctldHost=localhost
SlurmctldPort={controller_port}
SlurmdPort={node_port}
SlurmUser=root
AuthType=auth/munge
CredType=cred/munge
AuthInfo=socket={munge_socket}
StateSaveLocation={root}/state
SlurmdSpoolDir={root}/spool
SlurmctldPidFile={root}/slurmctld.pid
SlurmdPidFile={root}/slurmd.pid
SlurmctldLogFile={root}/slurmctld.log
SlurmdLogFile={root}/slurmd.log
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
SelectType=select/cons_tres
SelectTypeParameters=CR_CPU
SchedulerType=sched/backfill
MpiDefault=none
ReturnToService=2
JobRequeue=1
KillWait=30
NodeName=localhost NodeAddr=127.0.0.1 CPUs={os.cpu_count()} State=UNKNOWN
PartitionName=debug Nodes=localhost Default=YES MaxTime=INFINITE State=UP
"""


def wait_for(condition, what: str, logs: list[Path], timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            tails = "\n".join(f"--- {log}\n{log.read_text()[-3000:]}" for log in logs if log.is_file())
            raise TimeoutError(f"{what} not ready after {timeout:.0f} s\n{tails}")
        time.sleep(0.2)


def node_is_idle(env: dict[str, str]) -> bool:
    state = subprocess.run(["sinfo", "-h", "-o", "%T"], env=env, capture_output=True, text=True)
    return state.returncode == 0 and state.stdout.strip() == "idle"


@contextlib.contextmanager
def local_slurm(root: Path) -> Iterator[dict[str, str]]:
    """Start munged, slurmctld and slurmd under `root`; yield the environment that points clients at them."""
    require_slurm()
    for name in ("state", "spool", "munge"):
        (root / name).mkdir(parents=True, exist_ok=True)
    os.chmod(root / "munge", 0o700)
    key, munge_socket = root / "munge" / "munge.key", root / "munge" / "munge.socket"
    key.write_bytes(os.urandom(1024))
    os.chmod(key, 0o600)
    conf = root / "slurm.conf"
    conf.write_text(slurm_conf(root, munge_socket))
    env = {**os.environ, "SLURM_CONF": str(conf)}
    munge = ["munged", "--foreground", "--force", f"--key-file={key}", f"--socket={munge_socket}"]
    munge += [f"--pid-file={root}/munge/munged.pid", f"--log-file={root}/munge/munged.log"]
    munge += [f"--seed-file={root}/munge/munged.seed"]
    quiet = {"env": env, "stdout": subprocess.DEVNULL, "stderr": subprocess.DEVNULL}  # each has its log file
    daemons = [subprocess.Popen(munge, **quiet)]
    try:
        wait_for(munge_socket.exists, "munged", [root / "munge" / "munged.log"])
        for daemon in (["slurmctld", "-D", "-i"], ["slurmd", "-D", "-N", "localhost"]):
            daemons.append(subprocess.Popen(daemon, **quiet))
        wait_for(lambda: node_is_idle(env), "the SLURM node", [root / "slurmctld.log", root / "slurmd.log"])
        yield env
    finally:
        subprocess.run(["scancel", "--full", "--user", str(os.getuid())], env=env, capture_output=True)
        for daemon in reversed(daemons):
            daemon.terminate()
        for daemon in reversed(daemons):
            try:
                daemon.wait(timeout=20)
            except subprocess.TimeoutExpired:
                daemon.kill()
