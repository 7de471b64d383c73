"""The parent side of a cell: run the worker in its own process, always write the cell JSON.

The parent never imports torch. It starts ``python -m llmbench.measure.worker`` in a new process
session, waits up to the cell's time limit, and then writes the final JSON atomically from
the worker's last partial result, whatever happened: a finished measurement, a classified
failure, a timeout (the whole process group is killed) or a child that died by a signal.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Mapping
from dataclasses import asdict
from datetime import datetime
from pathlib import Path
from typing import Any

from llmbench import REPO_ROOT
from llmbench.grid.spec import Cell
from llmbench.record.cell import new_result, read_json, write_json_atomic
from llmbench.run import warmstart

KILL_GRACE_S = 10.0
"""Seconds between SIGTERM and SIGKILL when a cell times out."""

RUNTIME_MARGIN_S = 60.0
"""Seconds kept free before a scheduler's runtime limit, to write the timeout JSON."""

LOG_TAIL_CHARS = 3000

CELL_ATTEMPTS_VARIABLE = "LLMBENCH_CELL_ATTEMPTS"
"""Environment variable through which cells learn how many attempts Snakemake makes."""

SQUEUE_TIMEOUT_S = 20.0
"""Seconds to wait for squeue when asking for the job's end time."""


def effective_timeout(
    cell_timeout_s: float, runtime_min: float | None, job_time_left_s: float | None = None
) -> float:
    """The cell's time limit: the configured one, or less when the job ends sooner.

    A scheduler kills the whole job at its runtime; stopping the child a margin earlier
    leaves time to write a ``timeout`` cell instead of leaving no file. ``job_time_left_s``
    (see :func:`slurm_job_time_left`) counts what Snakemake's start-up inside the job used.
    """
    runtime_s = float(runtime_min) * 60.0 if runtime_min is not None and runtime_min > 0 else None
    known = [left for left in (job_time_left_s, runtime_s) if left is not None]
    if not known:
        return float(cell_timeout_s)
    margin = min(RUNTIME_MARGIN_S, (runtime_s or known[0]) * 0.1)
    return max(1.0, min(float(cell_timeout_s), min(known) - margin))


def parse_slurm_time(text: str) -> float | None:
    """Epoch seconds of a Slurm timestamp such as ``2026-11-25T19:42:09`` (the cluster's
    local time, as squeue prints it), or None for ``N/A``, ``Unknown`` and the like."""
    try:
        return datetime.fromisoformat(text.strip()).timestamp()
    except ValueError:
        return None


def slurm_job_time_left(environ: Mapping[str, str] | None = None) -> float | None:
    """Seconds until Slurm ends the job this process runs in, or None outside Slurm or when
    squeue cannot tell.

    Slurm (22.05) exports no end time to the job, so squeue is asked once per cell.
    """
    job_id = (os.environ if environ is None else environ).get("SLURM_JOB_ID")
    if not job_id:
        return None
    try:
        listing = subprocess.run(
            ["squeue", "--noheader", "--jobs", job_id, "--format", "%e"],
            capture_output=True,
            text=True,
            timeout=SQUEUE_TIMEOUT_S,
        )
    except (OSError, subprocess.SubprocessError):
        return None
    end = parse_slurm_time(listing.stdout) if listing.returncode == 0 else None
    return None if end is None else end - time.time()


def export_cell_attempts(retries: int) -> None:
    """Tell the cells this process starts, Slurm jobs included (they inherit the environment),
    how many attempts Snakemake makes at a failed job."""
    os.environ[CELL_ATTEMPTS_VARIABLE] = str(retries + 1)


def cell_attempts() -> int:
    """How many attempts Snakemake makes at this cell's job (1 when nobody said)."""
    return int(os.environ.get(CELL_ATTEMPTS_VARIABLE, "1"))


def fail_for_retry(status: str, attempt: int, attempts: int) -> bool:
    """Whether a finished cell should fail its job so that Snakemake runs it again.

    Only a ``crashed`` cell (the worker died without a verdict: a lost node, a killed
    process) is worth another try, and only while attempts are left: the last attempt keeps
    the crashed cell, so the grid still gets its JSON.
    """
    return status == "crashed" and attempt < attempts


def worker_environment() -> dict[str, str]:
    """Environment of the child: the package importable, CUDA devices in PCI order."""
    env = dict(os.environ)
    src = str(REPO_ROOT / "src")
    env["PYTHONPATH"] = os.pathsep.join(p for p in (src, env.get("PYTHONPATH")) if p)
    env.setdefault("CUDA_DEVICE_ORDER", "PCI_BUS_ID")
    env.setdefault("PYTHONUNBUFFERED", "1")
    return env


def _start_worker(argv: list[str], log: Any, log_path: str | None) -> tuple[Any, str]:
    """Start ``python -m argv...``: forked by the warm-start server when one is running
    (torch and transformers already imported), else as a fresh interpreter. Returns the
    process and how it was started (recorded in the cell's ``timing_breakdown``)."""
    env = worker_environment()
    socket_path = os.environ.get(warmstart.SOCKET_VARIABLE)
    fallback = "spawn"
    if socket_path:
        if Path(socket_path).exists():
            try:
                child = warmstart.WarmChild.start(socket_path, argv, env, log_path)
                return child, child.start_method
            except OSError as exc:
                fallback = f"spawn ({exc})"
        else:
            fallback = "spawn (warm-start server not ready)"
    process = subprocess.Popen(
        [sys.executable, "-m", *argv],
        stdout=log,
        stderr=subprocess.STDOUT,
        stdin=subprocess.DEVNULL,
        start_new_session=True,
        preexec_fn=warmstart.die_with_parent,
        env=env,
    )
    return process, fallback


def _kill_group(process: Any) -> None:
    """SIGTERM the child's process group, then SIGKILL what is left after a grace period."""
    for sig, wait in ((signal.SIGTERM, KILL_GRACE_S), (signal.SIGKILL, None)):
        try:
            os.killpg(process.pid, sig)
        except ProcessLookupError:
            return
        try:
            process.wait(timeout=wait)
            return
        except subprocess.TimeoutExpired:
            continue


def _log_tail(log_path: Path | None) -> str:
    if log_path is None or not log_path.is_file():
        return ""
    with open(log_path, "rb") as handle:
        handle.seek(0, os.SEEK_END)
        handle.seek(max(0, handle.tell() - LOG_TAIL_CHARS))
        return handle.read().decode(errors="replace")


def _signal_name(number: int) -> str:
    try:
        return signal.Signals(number).name
    except ValueError:
        return f"signal {number}"


def _unclassified_error(category: str, message: str, log_tail: str) -> dict[str, Any]:
    """The ``error`` record of a cell whose worker gave no exception to classify; the end
    of its log stands in for the traceback."""
    return {
        "category": category,
        "type": None,
        "message": message,
        "requested_bytes": None,
        "traceback": log_tail,
    }


def finalize(
    partial: dict[str, Any] | None,
    *,
    spec: Mapping[str, Any],
    returncode: int | None,
    timed_out: bool,
    timeout_s: float,
    log_tail: str,
) -> dict[str, Any]:
    """Turn the worker's last partial result (or nothing) into a finished cell result."""
    if partial is None:
        partial = new_result(spec["cell"], spec["settings"])
    result = dict(partial)
    finished = result.get("status") not in (None, "running")
    if timed_out:
        result["status"] = "timeout"
        result["reason"] = f"exceeded the cell time limit of {timeout_s:.0f} s in {result['phase']}"
        result["error"] = _unclassified_error("timeout", result["reason"], log_tail)
    elif not finished:
        if returncode is not None and returncode < 0:
            how = f"killed by {_signal_name(-returncode)}"
            if -returncode == signal.SIGKILL:
                how += " (sent by the kernel's out-of-memory killer, a scheduler or a user)"
        else:
            how = f"exited with code {returncode} before writing its result"
        result["status"] = "crashed"
        result["reason"] = f"worker {how} in {result['phase']}"
        result["error"] = _unclassified_error("crashed", result["reason"], log_tail)
    return result


def run_cell(
    *,
    cell: Cell,
    settings: Mapping[str, Any],
    model_entry: Mapping[str, Any],
    base_dir: str | None,
    prequantized_dir: str | None,
    out_path: Path | str,
    log_path: Path | str | None = None,
    timeout_s: float,
    time_limit_inputs: Mapping[str, float | None] | None = None,
    worker_module: str = "llmbench.measure.worker",
) -> dict[str, Any]:
    """Measure one cell in a child process and write its JSON to ``out_path``; never raises
    for a failure of the measurement itself. ``time_limit_inputs`` (what ``timeout_s`` was
    derived from, e.g. the job's runtime) are recorded next to it in ``timing_breakdown``.
    ``worker_module`` is run with ``python -m`` (tests substitute workers that hang or die)."""
    started = time.perf_counter()
    log_path = None if log_path is None else Path(log_path)
    if log_path is not None:
        log_path.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="llmbench-cell-") as scratch:
        partial_path = Path(scratch) / "partial.json"
        spec = {
            "cell": asdict(cell),
            "settings": dict(settings),
            "model_entry": dict(model_entry),
            "base_dir": base_dir,
            "prequantized_dir": prequantized_dir,
            "partial_path": str(partial_path),
            "spawned_at": time.time(),
        }
        spec_path = Path(scratch) / "spec.json"
        write_json_atomic(spec_path, spec)
        log = open(log_path, "ab") if log_path is not None else subprocess.DEVNULL
        try:
            process, start_method = _start_worker(
                [worker_module, str(spec_path)], log, None if log_path is None else str(log_path)
            )
            timed_out = False
            try:
                returncode: int | None = process.wait(timeout=timeout_s)
            except subprocess.TimeoutExpired:
                timed_out = True
                _kill_group(process)
                returncode = process.returncode
            except BaseException:  # interrupted (Ctrl-C): take the worker down with us
                _kill_group(process)
                raise
        finally:
            if log is not subprocess.DEVNULL:
                log.close()
        child_done = time.perf_counter()
        partial = read_json(partial_path) if partial_path.is_file() else None
    result = finalize(
        partial,
        spec=spec,
        returncode=returncode,
        timed_out=timed_out,
        timeout_s=timeout_s,
        log_tail=_log_tail(log_path),
    )
    breakdown = result.setdefault("timing_breakdown", {})
    breakdown["start_method"] = start_method
    breakdown["child_s"] = child_done - started
    breakdown["worker_returncode"] = returncode
    breakdown["wall_s"] = time.perf_counter() - started
    breakdown["time_limit_s"] = timeout_s
    breakdown.update(time_limit_inputs or {})
    write_json_atomic(out_path, result)
    return result
