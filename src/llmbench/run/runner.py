"""The parent side of a cell: run the worker in its own process, always write the cell JSON.

The parent never imports torch. It takes the lock of every GPU the cell can use (so that two
runs on one host never measure on one GPU at once, :mod:`llmbench.run.gpulock`), starts
``python -m llmbench.measure.worker`` in a new process session, waits, and then writes the
final JSON atomically from the worker's last partial result, whatever happened: a finished
measurement, a classified failure, a timeout (the whole process group is killed) or a child
that died by a signal.

Time limits (:class:`TimeLimits`): start-up (process start and imports, phase ``setup`` in the
worker's partial JSON) has its own limit; the cell's limit counts from the moment the worker
leaves ``setup`` and covers load and measurement; under a scheduler the job's end is a hard
deadline for all of it. The JSON says which one ran out (``timing_breakdown.limit_exceeded``).

A cell whose model checkpoint could not be built (its manifest says ``status: failed``, see
:mod:`llmbench.run.builds`) starts no process: the parent writes it as an ``error`` cell in
phase ``load`` that names the failed build, its log and the command that rebuilds it.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import time
from collections.abc import Mapping
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from llmbench.grid.spec import Cell
from llmbench.record.cell import new_result, read_json, stamp_finished, write_json_atomic
from llmbench.run import gpulock, warmstart
from llmbench.run import scratch as run_scratch
from llmbench.run.builds import failed_build, model_not_built, unclassified_error
from llmbench.run.child import worker_environment
from llmbench.run.limits import STARTUP_LIMIT_S
from llmbench.run.warmchild import WarmChild

KILL_GRACE_S = 10.0
"""Seconds between SIGTERM and SIGKILL when a cell times out."""

LOG_TAIL_CHARS = 3000

POLL_S = 0.2
"""Seconds between two looks at a running worker (its exit, its partial JSON's phase)."""


@dataclass(frozen=True)
class TimeLimits:
    """How long a cell may take, in seconds: ``startup_s`` until the worker leaves ``setup``
    (process start and imports), ``cell_s`` from then on (load and measurement), and
    ``deadline_s`` from the start for all of it (a scheduler's end of job), or None."""

    cell_s: float
    startup_s: float = STARTUP_LIMIT_S
    deadline_s: float | None = None


def _start_worker(
    argv: list[str],
    log: Any,
    log_path: str | None,
    model_entry: Mapping[str, Any],
    allocator: str | None = None,
) -> tuple[Any, str]:
    """Start ``python -m argv...``: forked by the warm-start server when one is running
    (torch and transformers already imported), else as a fresh interpreter. Returns the
    process and how it was started (recorded in the cell's ``timing_breakdown``)."""
    env = worker_environment(model_entry, allocator)
    socket_path = os.environ.get(warmstart.SOCKET_VARIABLE)
    fallback = "spawn"
    if socket_path:
        if Path(socket_path).exists():
            try:
                child = WarmChild.start(socket_path, argv, env, log_path)
                return child, child.start_method
            except OSError as exc:
                fallback = f"spawn ({exc})"
        elif (refused := warmstart.refused_path(socket_path)).exists():
            fallback = f"spawn (warm-start server off: {refused.read_text().strip()})"
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


def _left_setup(partial_path: Path) -> bool:
    """Whether the worker's partial JSON says it has left ``setup`` (it is loading or on)."""
    try:
        return read_json(partial_path).get("phase") not in (None, "setup")
    except (OSError, ValueError):
        return False  # not written yet (renamed into place atomically, so never half)


def _limit_reached(limits: TimeLimits, since_start: float, measuring_for: float | None) -> str:
    """Which limit has run out ("job", "start-up", "cell"), or "" while none has."""
    if limits.deadline_s is not None and since_start >= limits.deadline_s:
        return "job"
    if measuring_for is None:
        return "start-up" if since_start >= limits.startup_s else ""
    return "cell" if measuring_for >= limits.cell_s else ""


def _wait(process: Any, limits: TimeLimits, partial_path: Path) -> tuple[int | None, str]:
    """(return code, the limit that ran out or ""): wait for the worker under ``limits``,
    killing its process group when one runs out; Ctrl-C takes the worker down too."""
    started = time.monotonic()
    measuring_since: float | None = None
    while True:
        try:
            return process.wait(timeout=POLL_S), ""
        except subprocess.TimeoutExpired:
            pass
        except BaseException:  # interrupted (Ctrl-C): take the worker down with us
            _kill_group(process)
            raise
        now = time.monotonic()
        if measuring_since is None and _left_setup(partial_path):
            measuring_since = now
        measuring_for = None if measuring_since is None else now - measuring_since
        reached = _limit_reached(limits, now - started, measuring_for)
        if reached:
            _kill_group(process)
            return process.returncode, reached


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


def _timeout_reason(limit: str, limits: TimeLimits, phase: str | None) -> str:
    if limit == "start-up":
        return (
            f"start-up (process start and imports) exceeded its limit of {limits.startup_s:.0f} s;"
            f" the cell time limit of {limits.cell_s:.0f} s counts from load on"
        )
    if limit == "job":
        return (
            f"the job's time ran out ({limits.deadline_s:.0f} s from the cell's start, start-up"
            f" included) in {phase}"
        )
    return f"exceeded the cell time limit of {limits.cell_s:.0f} s in {phase}"


def finalize(
    partial: dict[str, Any] | None,
    *,
    spec: Mapping[str, Any],
    returncode: int | None,
    timed_out: bool | str,
    timeout_s: float | TimeLimits,
    log_tail: str,
) -> dict[str, Any]:
    """Turn the worker's last partial result (or nothing) into a finished cell result.

    ``timed_out``: the limit that ran out ("cell", "start-up", "job"; True means "cell"),
    or False/"" when none did; ``timeout_s``: the cell's limit in seconds, or all of them."""
    if partial is None:
        partial = new_result(spec["cell"], spec["settings"])
    limits = timeout_s if isinstance(timeout_s, TimeLimits) else TimeLimits(cell_s=timeout_s)
    limit = "cell" if timed_out is True else (timed_out or "")
    result = dict(partial)
    finished = result.get("status") not in (None, "running")
    if limit:
        result["status"] = "timeout"
        result["reason"] = _timeout_reason(limit, limits, result["phase"])
        result["error"] = unclassified_error("timeout", result["reason"], log_tail)
        result.setdefault("timing_breakdown", {})["limit_exceeded"] = limit
    elif not finished:
        if returncode is not None and returncode < 0:
            how = f"killed by {_signal_name(-returncode)}"
            if -returncode == signal.SIGKILL:
                how += " (sent by the kernel's out-of-memory killer, a scheduler or a user)"
        else:
            how = f"exited with code {returncode} before writing its result"
        result["status"] = "crashed"
        result["reason"] = f"worker {how} in {result['phase']}"
        result["error"] = unclassified_error("crashed", result["reason"], log_tail)
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
    startup_timeout_s: float = STARTUP_LIMIT_S,
    deadline_s: float | None = None,
    time_limit_inputs: Mapping[str, float | None] | None = None,
    worker_module: str = "llmbench.measure.worker",
) -> dict[str, Any]:
    """Measure one cell in a child process and write its JSON to ``out_path``; never raises
    for a failure of the measurement itself.

    ``timeout_s`` limits load and measurement (seconds from the moment the worker leaves
    ``setup``), ``startup_timeout_s`` the process start and imports before it, ``deadline_s``
    (a scheduler's end of job, or None) all of it from now. ``time_limit_inputs`` (what the
    limits were derived from, e.g. the job's runtime) are recorded in ``timing_breakdown``.
    ``worker_module`` is run with ``python -m`` (tests substitute workers that hang or die).
    """
    started = time.perf_counter()
    log_path = None if log_path is None else Path(log_path)
    if log_path is not None:
        log_path.parent.mkdir(parents=True, exist_ok=True)
    unbuilt = failed_build(base_dir)
    if unbuilt is not None:  # no process: the checkpoint it would load does not exist
        result = model_not_built(cell, settings, *unbuilt)
        return _write(result, out_path, log_path, started, "not started (model not built)")
    limits = TimeLimits(cell_s=timeout_s, startup_s=startup_timeout_s, deadline_s=deadline_s)
    spec = {
        "cell": asdict(cell),
        "settings": dict(settings),
        "model_entry": dict(model_entry),
        "base_dir": base_dir,
        "prequantized_dir": prequantized_dir,
    }
    with _gpus_for(cell, settings, log_path) as lock:
        waited = time.perf_counter()
        result, start_method = _measure_in_child(spec, limits, log_path, worker_module)
    breakdown = result.setdefault("timing_breakdown", {})
    breakdown["child_s"] = time.perf_counter() - waited
    breakdown["gpu_lock"] = lock
    breakdown["time_limit_s"] = timeout_s
    breakdown["startup_limit_s"] = startup_timeout_s
    breakdown["deadline_s"] = deadline_s
    breakdown.update(time_limit_inputs or {})
    return _write(result, out_path, None, started, start_method)


def _gpus_for(cell: Cell, settings: Mapping[str, Any], log_path: Path | None) -> Any:
    """The GPU locks a cell holds while its process runs (none for a CPU cell)."""
    # the worker inherits this process's CUDA_VISIBLE_DEVICES (run.child leaves it alone)
    keys = [] if settings.get("device") == "cpu" else gpulock.visible_gpus()
    if not keys:
        return contextlib.nullcontext(None)

    def say(message: str) -> None:
        print(f"llmbench: {cell.relpath}: {message}", file=sys.stderr, flush=True)
        if log_path is not None:
            with open(log_path, "a") as log:
                print(message, file=log)

    return gpulock.exclusive_gpus(keys, {"cell": cell.relpath, "log": str(log_path)}, say)


def _measure_in_child(
    spec: dict[str, Any], limits: TimeLimits, log_path: Path | None, worker_module: str
) -> tuple[dict[str, Any], str]:
    """Run the worker on ``spec`` in a scratch folder; (finished result, start method)."""
    with run_scratch.folder("cell") as scratch:
        partial_path = Path(scratch) / "partial.json"
        spec = {**spec, "partial_path": str(partial_path), "spawned_at": time.time()}
        spec_path = Path(scratch) / "spec.json"
        write_json_atomic(spec_path, spec)
        log = open(log_path, "ab") if log_path is not None else subprocess.DEVNULL
        try:
            process, start_method = _start_worker(
                [worker_module, str(spec_path)],
                log,
                None if log_path is None else str(log_path),
                spec["model_entry"],
                spec["cell"].get("allocator", "default"),
            )
            returncode, limit = _wait(process, limits, partial_path)
        finally:
            if log is not subprocess.DEVNULL:
                log.close()
        partial = read_json(partial_path) if partial_path.is_file() else None
    result = finalize(
        partial,
        spec=spec,
        returncode=returncode,
        timed_out=limit,
        timeout_s=limits,
        log_tail=_log_tail(log_path),
    )
    result.setdefault("timing_breakdown", {})["worker_returncode"] = returncode
    return result, start_method


def _write(
    result: dict[str, Any],
    out_path: Path | str,
    log_path: Path | None,
    started: float,
    start_method: str,
) -> dict[str, Any]:
    """Record how the cell started and its wall time, write its JSON atomically, and, with
    ``log_path``, say in the cell's log why no worker ran."""
    breakdown = result.setdefault("timing_breakdown", {})
    breakdown["start_method"] = start_method
    breakdown["wall_s"] = time.perf_counter() - started
    stamp_finished(result)
    if log_path is not None:
        with open(log_path, "a") as log:
            print(f"{start_method}: {result['reason']}", file=log)
    write_json_atomic(out_path, result)
    return result
