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
from pathlib import Path
from typing import Any

from llmbench.grid.spec import Cell
from llmbench.record.cell import new_result, read_json, write_json_atomic
from llmbench.run import warmstart
from llmbench.run.child import worker_environment
from llmbench.run.warmchild import WarmChild

KILL_GRACE_S = 10.0
"""Seconds between SIGTERM and SIGKILL when a cell times out."""

LOG_TAIL_CHARS = 3000


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
                child = WarmChild.start(socket_path, argv, env, log_path)
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
