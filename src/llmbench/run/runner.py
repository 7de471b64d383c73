"""The parent side of a cell: run the worker in its own process, always write the cell JSON.

The parent never imports torch. It starts ``python -m llmbench.measure.worker`` in a new process
session, waits up to the cell's time limit, and then writes the final JSON atomically from
the worker's last partial result, whatever happened: a finished measurement, a classified
failure, a timeout (the whole process group is killed) or a child that died by a signal.

A cell whose model checkpoint could not be built (its manifest says ``status: failed``, see
``failed_build_manifest``) starts no process: the parent writes it as an ``error`` cell in
phase ``load`` that names the failed build, its log and the command that rebuilds it.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import tempfile
import time
import traceback
from collections.abc import Mapping
from dataclasses import asdict
from pathlib import Path
from typing import Any

from llmbench.grid.spec import Cell
from llmbench.record.cell import new_result, read_json, write_json_atomic
from llmbench.run import warmstart
from llmbench.run.child import worker_environment
from llmbench.run.warmchild import WarmChild

CHECKPOINT_MANIFEST = "checkpoint.json"
"""The manifest a model-building job leaves in a checkpoint folder (``llmbench.measure.models``
writes it on success; ``failed_build_manifest`` gives its form when the build failed)."""

BUILD_FAILED = "failed"
"""``status`` of a checkpoint manifest whose build raised."""

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


def _wait(process: Any, timeout_s: float) -> tuple[int | None, bool]:
    """(return code, timed out): wait up to ``timeout_s`` for the worker, then kill its group."""
    try:
        return process.wait(timeout=timeout_s), False
    except subprocess.TimeoutExpired:
        _kill_group(process)
        return process.returncode, True
    except BaseException:  # interrupted (Ctrl-C): take the worker down with us
        _kill_group(process)
        raise


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


def failed_build_manifest(
    exc: BaseException, *, kind: str, source: str, log_path: str | None
) -> dict[str, Any]:
    """The manifest a model-building job writes instead of failing when its build raised:
    ``status: failed``, the exception, the file the build read (``source``: the architecture
    config or the base checkpoint) and the job's log. Cells of that model then end as ``error``
    cells (``run_cell``) and the rest of the run goes on."""
    return {
        "kind": kind,
        "status": BUILD_FAILED,
        "source": source,
        "error_type": f"{type(exc).__module__}.{type(exc).__qualname__}",
        "error": f"{type(exc).__name__}: {exc}"[:2000],
        "traceback": "".join(traceback.format_exception(exc))[-8000:],
        "log": log_path,
    }


def failed_build(checkpoint_dir: str | Path | None) -> tuple[Path, dict[str, Any]] | None:
    """(manifest path, manifest) when ``checkpoint_dir``'s build failed, else None (no folder
    given, no manifest yet, or a built checkpoint). An unreadable manifest counts as failed."""
    if checkpoint_dir is None:
        return None
    path = Path(checkpoint_dir) / CHECKPOINT_MANIFEST
    if not path.is_file():
        return None
    try:
        manifest = read_json(path)
    except ValueError as exc:  # read_json names the file
        return path, {"status": BUILD_FAILED, "error": str(exc), "source": str(path)}
    if isinstance(manifest, dict) and manifest.get("status") == BUILD_FAILED:
        return path, manifest
    return None


def model_not_built(
    cell: Cell, settings: Mapping[str, Any], manifest_path: Path, manifest: Mapping[str, Any]
) -> dict[str, Any]:
    """The result of a cell whose model checkpoint could not be built: status ``error`` in
    phase ``load``, the build's exception as the error, its reason naming the file the build
    read, its log and the command that rebuilds it."""
    reason = (
        f"model checkpoint not built ({manifest.get('error') or 'no error recorded'}; "
        f"from {manifest.get('source') or '?'}; log {manifest.get('log') or '?'}); "
        f"after fixing the cause: snakemake -R {manifest_path}"
    )
    result = new_result(asdict(cell), settings)
    result.update(status="error", phase="load", reason=reason)
    result["error"] = {
        **_unclassified_error("other_error", reason, manifest.get("traceback") or ""),
        "type": manifest.get("error_type"),
    }
    return result


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
    unbuilt = failed_build(base_dir)
    if unbuilt is not None:  # no process: the checkpoint it would load does not exist
        result = model_not_built(cell, settings, *unbuilt)
        return _write(result, out_path, log_path, started, "not started (model not built)")
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
            returncode, timed_out = _wait(process, timeout_s)
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
    breakdown["child_s"] = child_done - started
    breakdown["worker_returncode"] = returncode
    breakdown["time_limit_s"] = timeout_s
    breakdown.update(time_limit_inputs or {})
    return _write(result, out_path, None, started, start_method)


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
    if log_path is not None:
        with open(log_path, "a") as log:
            print(f"{start_method}: {result['reason']}", file=log)
    write_json_atomic(out_path, result)
    return result
