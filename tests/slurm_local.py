"""A throwaway single-node Slurm cluster on 127.0.0.1 for the integration test (tests/test_slurm.py).

    with cluster(tmp) as info: ...   installs slurm-wlm and munge from the distribution's packages when missing,
                                     starts munged, slurmctld and slurmd (no accounting database), waits for the
                                     node to be idle, and stops everything afterwards.

Needs root (package install, daemons, /etc/slurm/slurm.conf: the job step's `srun` reads the configuration only
from its default path). Raises Unavailable with the reason when it cannot run here; the test skips with it. It
never overwrites a Slurm configuration it did not write (a real cluster's).
"""
from __future__ import annotations

import contextlib
import os
import shutil
import signal
import socket
import subprocess
import time
from pathlib import Path

CONF = Path("/etc/slurm/slurm.conf")
MARK = "# written by the harness's Slurm integration test"


class Unavailable(Exception):
    """Why a local Slurm cannot be started on this machine."""


def _run(*cmd: str, timeout: float = 60, check: bool = True) -> subprocess.CompletedProcess:
    out = subprocess.run(list(cmd), capture_output=True, text=True, timeout=timeout)
    if check and out.returncode != 0:
        raise Unavailable(f"`{' '.join(cmd)}` failed: {(out.stderr or out.stdout).strip()[-300:]}")
    return out


def install() -> None:
    """slurm-wlm and munge from the distribution's packages (apt), unless already installed."""
    if all(shutil.which(b) for b in ("slurmctld", "slurmd", "munged", "sbatch", "squeue")):
        return
    if not shutil.which("apt-get"):
        raise Unavailable("slurm-wlm is not installed and there is no apt-get to install it")
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    for attempt in (["apt-get", "install", "-y", "-q", "slurm-wlm", "munge"], ["apt-get", "update", "-q"],
                    ["apt-get", "install", "-y", "-q", "slurm-wlm", "munge"]):
        out = subprocess.run(attempt, capture_output=True, text=True, timeout=900, env=env)
        if out.returncode == 0 and attempt[1] == "install":
            return
    raise Unavailable(f"apt-get could not install slurm-wlm and munge: {out.stderr.strip()[-300:]}")


def _start_munge() -> bool:
    """munged running (started here when it was not: returns True then, so that it is stopped afterwards)."""
    key = Path("/etc/munge/munge.key")
    if not key.exists():
        _run("mungekey", "--create")
        shutil.chown(key, "munge", "munge")
    run_dir = Path("/run/munge")
    run_dir.mkdir(parents=True, exist_ok=True)
    shutil.chown(run_dir, "munge", "munge")
    started = _run("bash", "-c", "munge -n | unmunge", check=False).returncode != 0
    if started:
        _run("runuser", "-u", "munge", "--", "munged", "--force")
    _run("bash", "-c", "munge -n | unmunge")
    return started


def _memory_mb() -> int:
    for line in Path("/proc/meminfo").read_text().splitlines():
        if line.startswith("MemTotal:"):
            return int(line.split()[1]) // 1024 - 1024  # leave 1 GB to the system
    return 2000


def _write_conf(state: Path) -> str:
    node = socket.gethostname().split(".")[0]
    for sub in ("state", "spool"):
        (state / sub).mkdir(parents=True, exist_ok=True)
    CONF.parent.mkdir(parents=True, exist_ok=True)
    CONF.write_text(f"""{MARK}
ClusterName=harness
SlurmctldHost={node}(127.0.0.1)
SlurmUser=root
AuthType=auth/munge
StateSaveLocation={state / 'state'}
SlurmdSpoolDir={state / 'spool'}
SlurmctldPidFile={state / 'slurmctld.pid'}
SlurmdPidFile={state / 'slurmd.pid'}
SlurmctldLogFile={state / 'slurmctld.log'}
SlurmdLogFile={state / 'slurmd.log'}
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
JobAcctGatherType=jobacct_gather/none
AccountingStorageType=accounting_storage/none
SelectType=select/cons_tres
SelectTypeParameters=CR_Core_Memory
MinJobAge=86400
ReturnToService=2
NodeName={node} NodeAddr=127.0.0.1 CPUs={os.cpu_count()} RealMemory={_memory_mb()} State=UNKNOWN
PartitionName=debug Nodes={node} Default=YES MaxTime=INFINITE State=UP
""")
    return node


def _stop(pid_file: Path) -> None:
    with contextlib.suppress(FileNotFoundError, ValueError, ProcessLookupError):
        os.kill(int(pid_file.read_text().strip()), signal.SIGTERM)


@contextlib.contextmanager
def cluster(state: Path):
    """A running single-node cluster; yields {"node", "state"}. Raises Unavailable before starting anything."""
    if os.geteuid() != 0:
        raise Unavailable("needs root to install and start munged, slurmctld and slurmd (CI runs as root)")
    if CONF.exists() and MARK not in CONF.read_text():
        raise Unavailable(f"{CONF} exists and is not this test's: a real cluster's configuration is never touched")
    install()
    munge_started = _start_munge()
    node = _write_conf(state)
    try:
        _run("slurmctld")
        _run("slurmd")
        deadline = time.monotonic() + 60
        while "idle" not in _run("sinfo", "-h", "-o", "%T", check=False).stdout:
            if time.monotonic() > deadline:
                log = (state / "slurmd.log").read_text()[-500:] if (state / "slurmd.log").exists() else ""
                raise Unavailable(f"the Slurm node never became idle: {_run('sinfo', check=False).stdout} {log}")
            time.sleep(1)
        yield {"node": node, "state": state}
    finally:
        _stop(state / "slurmd.pid")
        _stop(state / "slurmctld.pid")
        if munge_started:
            _stop(Path("/run/munge/munged.pid"))
        time.sleep(1)
        CONF.unlink(missing_ok=True)
