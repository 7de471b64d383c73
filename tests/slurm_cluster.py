"""A throwaway single-node Slurm cluster for tests: munged, slurmctld and slurmd run as plain
processes (no systemd) with every file they write under one directory, and are stopped by PID.

Only what the Debian packages ``slurm-wlm`` and ``munge`` install is needed. The node has no
accounting database (Snakemake asks ``squeue`` for job states) and advertises fake GPUs, so
that jobs asking for ``--gpus`` are accepted and scheduled on them as on a GPU node.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[1]
INSTALL_SCRIPT = REPO_ROOT / ".ci" / "install-slurm.sh"
SBIN_DIRS = ("/usr/sbin", "/sbin", "/usr/local/sbin")
PROGRAMS = (
    "munged",
    "slurmctld",
    "slurmd",
    "sbatch",
    "srun",
    "squeue",
    "sinfo",
    "scontrol",
    "scancel",
)

PARTITION = "llmbench-test"
NODE = "llmbench-node"
FAKE_GPU_FILES = ("/dev/null", "/dev/zero")
"""Character devices standing in for the node's GPUs (slurmd wants device files; with
task/none nothing restricts access to them)."""
NODE_MIN_CPUS = 16
NODE_MIN_MEMORY_MB = 98304
"""The node advertises at least this much, room for two cells of profiles/slurm/ (8 CPUs,
32000 MB each), so that the profile is tested with its own requests on a small CI machine:
``SlurmdParameters=config_overrides`` lets slurmd accept more than the hardware has, and with
task/none and no cgroups nothing pins or limits a job."""


def which(name: str) -> str | None:
    """A program on PATH, or in the sbin directories that a non-root PATH may lack."""
    found = shutil.which(name)
    if found:
        return found
    for directory in SBIN_DIRS:
        candidate = Path(directory) / name
        if candidate.is_file() and os.access(candidate, os.X_OK):
            return str(candidate)
    return None


def missing_programs() -> list[str]:
    """The Slurm and munge programs this module needs that are not installed."""
    return [name for name in PROGRAMS if which(name) is None]


def ensure_installed() -> str | None:
    """Install Slurm and munge with .ci/install-slurm.sh when they are missing.

    Returns None when everything is there, else the exact reason why it cannot be.
    """
    missing = missing_programs()
    if not missing:
        return None
    what = f"Slurm programs missing ({', '.join(missing)})"
    if os.geteuid() != 0:
        return f"{what}, and installing them with apt-get needs root"
    if shutil.which("apt-get") is None:
        return f"{what}, and there is no apt-get on this machine (not Debian/Ubuntu)"
    install = subprocess.run(
        ["bash", str(INSTALL_SCRIPT)], capture_output=True, text=True, timeout=1800
    )
    if install.returncode != 0:
        output = (install.stdout + install.stderr).strip()[-2000:]
        return f"{what}; {INSTALL_SCRIPT.name} failed (exit {install.returncode}): {output}"
    still_missing = missing_programs()
    if still_missing:
        return f"{INSTALL_SCRIPT.name} ran, but these are still missing: {still_missing}"
    return None


def _free_ports(count: int) -> list[int]:
    """Distinct TCP ports free right now (held open together so none repeats)."""
    probes = [socket.socket() for _ in range(count)]
    try:
        for probe in probes:
            probe.bind(("127.0.0.1", 0))
        return [probe.getsockname()[1] for probe in probes]
    finally:
        for probe in probes:
            probe.close()


def _memory_mb() -> int:
    with open("/proc/meminfo") as meminfo:
        for line in meminfo:
            if line.startswith("MemTotal:"):
                return int(line.split()[1]) // 1024
    return 0


@dataclass
class SlurmCluster:
    """A single-node cluster under ``root``; ``env`` points Slurm's clients (and through them
    Snakemake and its jobs) at it.

    ``gpus`` fake GPUs: two let a test see GPU jobs run side by side, i.e. that nothing
    serializes their submission.
    """

    root: Path
    partition: str = PARTITION
    gpus: int = 2
    env: dict[str, str] = field(default_factory=dict)
    daemons: dict[str, subprocess.Popen[bytes]] = field(default_factory=dict)

    @property
    def conf(self) -> Path:
        return self.root / "etc" / "slurm.conf"

    def run(self, *args: str, check: bool = True, timeout: float = 60) -> str:
        """Run a Slurm client command against this cluster; its stdout."""
        command = [which(args[0]) or args[0], *args[1:]]
        done = subprocess.run(
            command, env=self.env, capture_output=True, text=True, timeout=timeout
        )
        if check and done.returncode != 0:
            raise RuntimeError(f"{' '.join(args)} failed: {done.stderr.strip()}")
        return done.stdout

    def logs(self) -> str:
        """Tails of the daemons' logs, for the message of a failing test."""
        return "\n".join(
            f"--- {log.name}\n{log.read_text(errors='replace')[-3000:]}"
            for log in sorted((self.root / "log").glob("*.log"))
        )

    def start(self) -> SlurmCluster:
        """Write the configuration, start munged, slurmctld and slurmd, wait for an idle node."""
        for sub in ("etc", "log", "run", "state", f"spool/{NODE}", "munge", "bin"):
            (self.root / sub).mkdir(parents=True, exist_ok=True)
        # munged refuses directories that others may write to.
        for sub in ("", "munge", "run", "log"):
            os.chmod(self.root / sub, 0o755)
        key = self.root / "munge" / "munge.key"
        key.write_bytes(os.urandom(1024))
        os.chmod(key, 0o400)
        munge_socket = self.root / "run" / "munge.socket"
        self._write_config(munge_socket)
        # Slurm variables of an enclosing job or another cluster would override slurm.conf.
        self.env = {
            name: value
            for name, value in os.environ.items()
            if not name.startswith(("SLURM_", "SBATCH_", "SRUN_", "SQUEUE_", "SINFO_"))
        }
        self.env["SLURM_CONF"] = str(self.conf)
        self.env["PATH"] = os.pathsep.join([str(self._write_srun_shim()), self.env["PATH"]])

        self._spawn(
            "munged",
            "--foreground",
            "--force",
            f"--socket={munge_socket}",
            f"--key-file={key}",
            f"--pid-file={self.root / 'run' / 'munged.pid'}",
            f"--log-file={self.root / 'log' / 'munged.log'}",
            f"--seed-file={self.root / 'munge' / 'munged.seed'}",
        )
        self._wait_for(munge_socket.exists, "munged to open its socket", 30)
        self._spawn("slurmctld", "-D", "-i", "-f", str(self.conf))
        self._wait_for(
            lambda: self.run("sinfo", "-h", check=False, timeout=10) != "",
            "slurmctld to answer",
            60,
        )
        self._spawn("slurmd", "-D", "-N", NODE, "-f", str(self.conf))
        self._wait_for(self._node_idle, f"node {NODE} to become idle", 90)
        return self

    def _write_config(self, munge_socket: Path) -> None:
        # Slurm compares these with the short host name.
        host = socket.gethostname().split(".")[0]
        cpus = max(os.cpu_count() or 1, NODE_MIN_CPUS)
        memory_mb = max(_memory_mb() - 1024, NODE_MIN_MEMORY_MB)
        controller_port, node_port = _free_ports(2)
        root = self.root
        self.conf.write_text(
            f"""\
ClusterName=llmbench-test
SlurmctldHost={host}(127.0.0.1)
SlurmctldPort={controller_port}
SlurmdPort={node_port}
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
CredType=cred/munge
AuthInfo=socket={munge_socket}
StateSaveLocation={root / "state"}
SlurmdSpoolDir={root / "spool" / "%n"}
SlurmctldPidFile={root / "run" / "slurmctld.pid"}
SlurmdPidFile={root / "run" / "slurmd.pid"}
SlurmctldLogFile={root / "log" / "slurmctld.log"}
SlurmdLogFile={root / "log" / "slurmd.log"}
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
SelectType=select/cons_tres
SelectTypeParameters=CR_Core_Memory
SlurmdParameters=config_overrides
AccountingStorageType=accounting_storage/none
JobAcctGatherType=jobacct_gather/none
JobCompType=jobcomp/none
MpiDefault=none
ReturnToService=2
# squeue shows finished jobs this long: Snakemake's squeue-based status needs them, and the
# test looks the run's jobs up afterwards.
MinJobAge=3600
GresTypes=gpu
NodeName={NODE} NodeHostname={host} NodeAddr=127.0.0.1 CPUs={cpus} RealMemory={memory_mb} \
Gres=gpu:{self.gpus} State=UNKNOWN
PartitionName={self.partition} Nodes={NODE} Default=YES MaxTime=INFINITE State=UP
"""
        )
        (self.conf.parent / "gres.conf").write_text(
            "".join(
                f"NodeName={NODE} Name=gpu File={device}\n"
                for device in FAKE_GPU_FILES[: self.gpus]
            )
        )

    def _write_srun_shim(self) -> Path:
        """A directory holding an ``srun`` that points back at this cluster's slurm.conf.

        snakemake-executor-plugin-slurm-jobstep drops every SLURM_* variable except the job
        ids before it runs ``srun`` inside the job, SLURM_CONF included (known upstream:
        snakemake-executor-plugin-slurm issue 164). A real cluster keeps slurm.conf where srun
        looks by default; a test must not write to /etc.
        """
        srun = which("srun")
        if srun is None:
            raise RuntimeError("srun is not installed")
        shim = self.root / "bin" / "srun"
        shim.write_text(f'#!/bin/sh\nexport SLURM_CONF="{self.conf}"\nexec "{srun}" "$@"\n')
        shim.chmod(0o755)
        return shim.parent

    def _spawn(self, name: str, *args: str) -> None:
        program = which(name)
        if program is None:
            raise RuntimeError(f"{name} is not installed")
        with open(self.root / "log" / f"{name}.stdout.log", "ab") as log:
            self.daemons[name] = subprocess.Popen(
                [program, *args],
                stdout=log,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                env=self.env,
                # Own session: Ctrl-C of the test run reaches the teardown, not the daemons.
                start_new_session=True,
            )

    def _node_idle(self) -> bool:
        state = self.run("sinfo", "-h", "-n", NODE, "-o", "%T", check=False, timeout=10)
        return state.strip().rstrip("*") == "idle"

    def _wait_for(self, condition: Callable[[], bool], what: str, timeout_s: float) -> None:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            for name, process in self.daemons.items():
                if process.poll() is not None:
                    raise RuntimeError(
                        f"{name} exited with {process.returncode} while waiting for {what}\n"
                        f"{self.logs()}"
                    )
            if condition():
                return
            time.sleep(0.5)
        raise RuntimeError(f"timed out after {timeout_s:.0f} s waiting for {what}\n{self.logs()}")

    def stop(self) -> None:
        """Cancel what is left of the jobs, then stop slurmd, slurmctld and munged by PID."""
        controller = self.daemons.get("slurmctld")
        if controller is not None and controller.poll() is None:
            self.run("scancel", "--partition", self.partition, check=False, timeout=20)
            deadline = time.monotonic() + 30
            while (
                time.monotonic() < deadline
                and self.run("squeue", "-h", "-t", "PD,R,CG", check=False, timeout=10).strip()
            ):
                time.sleep(1)
        for name in ("slurmd", "slurmctld", "munged"):
            process = self.daemons.pop(name, None)
            if process is None or process.poll() is not None:
                continue
            process.send_signal(signal.SIGTERM)
            try:
                process.wait(timeout=20)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait(timeout=10)
