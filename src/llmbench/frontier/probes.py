"""Probing: a probe is one ordinary cell, reused from its JSON or measured in its own process.

Owns the probes' settings (:func:`probe_settings`, :func:`probe_device`), what a probe's peak
is checked against (:func:`budget_peak_bytes`), reuse of an existing probe JSON
(:func:`reusable_probe`, :data:`REUSABLE_STATUSES`) and the ``probe(value)`` callable a search
runs (:func:`make_probe`). May import: :mod:`.search`, :mod:`.planning`, ``llmbench.grid``,
``llmbench.record``, ``llmbench.run`` (``runner.run_cell``, lazily: the parent never imports
torch).

Probe reuse: a probe JSON already at ``probes/{cell.relpath}`` is reused instead of run when it
is a valid cell measured with the same settings (budget, measurement, device, probe
environment; threads aside) and has a decisive status (ok, oom, unsupported, unavailable,
check_failed); error/timeout/crashed probes and corrupt files are run again.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from llmbench.frontier.planning import Search
from llmbench.frontier.search import ProbeRecord

REUSABLE_STATUSES: frozenset[str] = frozenset(
    {"ok", "oom", "unsupported", "unavailable", "check_failed"}
)
"""Probe statuses an existing probe JSON is reused with. error/timeout/crashed may be transient
(a killed job, a busy node), so those probes are run again."""


def probe_settings(config: Mapping[str, Any], section: Mapping[str, Any]) -> dict[str, Any]:
    """Settings of every probe: the cell settings with the frontier's overrides (lighter
    measurement, its own budget and time limit when set) and the probe environment."""
    from llmbench.grid.plan import cell_settings

    settings = {k: v for k, v in cell_settings(config).items()}
    settings["measurement"] = {**settings["measurement"], **(section.get("measurement") or {})}
    if section.get("memory_budget_gib") is not None:
        settings["memory_budget_gib"] = section["memory_budget_gib"]
    if section.get("cell_timeout_s") is not None:
        settings["cell_timeout_s"] = section["cell_timeout_s"]
    threshold = section.get("cpu_malloc_mmap_threshold_bytes")
    settings["probe_environment"] = (
        {"MALLOC_MMAP_THRESHOLD_": str(int(threshold))} if threshold is not None else {}
    )
    return settings


def probe_device(settings: Mapping[str, Any], has_cuda: bool) -> str:
    """Where probes run, decided in the parent (which never imports torch)."""
    if settings["device"] == "cpu" or (settings["device"] == "auto" and not has_cuda):
        return "cpu"
    return "cuda"


def _comparable(settings: Mapping[str, Any]) -> dict[str, Any]:
    """Settings as compared for probe reuse (threads only change speed, not memory;
    ``measurement.generate`` false is the same as absent, as in probes measured before it)."""
    import json

    comparable = json.loads(json.dumps({k: v for k, v in settings.items() if k != "threads"}))
    measurement = comparable.get("measurement")
    if isinstance(measurement, dict) and not measurement.get("generate"):
        measurement.pop("generate", None)
    return comparable


def budget_peak_bytes(result: Mapping[str, Any]) -> tuple[int | None, bool]:
    """The largest per-phase peak of what the memory budget is checked against, and whether it
    is complete: CUDA peak reserved (summed over devices; at an out-of-memory error only what
    was reserved before the failed allocation, so a lower bound) or CPU peak RSS growth over
    the pre-load baseline (measured after the phase, so complete)."""
    memory = result.get("memory") or {}
    phases = memory.get("phases") or {}
    if (result.get("cell") or {}).get("device") == "cuda":
        peaks = [
            sum(d.get("peak_reserved_bytes") or 0 for d in phase["devices"])
            for phase in phases.values()
            if phase.get("devices")
        ]
        exact = result.get("status") != "oom"
    else:
        base = memory.get("host_rss_before_load_bytes")
        peaks = [
            phase["host"]["peak_rss_bytes"] - base
            for phase in phases.values()
            if base is not None and (phase.get("host") or {}).get("peak_rss_bytes") is not None
        ]
        exact = True
    return (max(peaks), exact) if peaks else (None, False)


def reusable_probe(path: Path, settings: Mapping[str, Any]) -> dict[str, Any] | None:
    """An existing probe JSON at ``path`` that this search may reuse, or None.

    Reused: a valid cell JSON measured with the same settings (budget, measurement, device,
    probe environment...) and a decisive status (:data:`REUSABLE_STATUSES`).
    """
    from llmbench.record.cell import read_cell_result

    if not path.is_file():
        return None
    try:
        document = read_cell_result(path)
    except (ValueError, OSError):
        return None
    if document.get("status") not in REUSABLE_STATUSES:
        return None
    measured, wanted = _comparable(document.get("settings") or {}), _comparable(settings)
    if (document.get("cell") or {}).get("device") == "cuda":  # host malloc: no GPU effect
        measured.pop("probe_environment", None)
        wanted.pop("probe_environment", None)
    if measured != wanted:
        return None
    return document


def _record(value: int, result: Mapping[str, Any], relpath: str, reused: bool) -> ProbeRecord:
    """What the search keeps of a probe's cell JSON ``result`` (its budget peak, status...)."""
    peak, _ = budget_peak_bytes(result)
    return ProbeRecord(
        value=value,
        status=str(result.get("status")),
        reused=reused,
        path=relpath,
        peak_bytes=peak,
        wall_s=(result.get("timing_breakdown") or {}).get("wall_s"),
        reason=result.get("reason"),
    )


def make_probe(
    search: Search,
    *,
    settings: Mapping[str, Any],
    model_entry: Mapping[str, Any],
    base_dir: str | None,
    prequantized_dir: str | None,
    probes_dir: Path | str,
    logs_dir: Path | str | None,
    timeout_s: float,
    runner: Callable[..., dict[str, Any]] | None = None,
    log: Callable[[str], None] = print,
    results: dict[int, dict[str, Any]] | None = None,
) -> Callable[[int], ProbeRecord]:
    """``probe(value)``: reuse ``probes_dir/{cell.relpath}`` if :func:`reusable_probe` allows,
    else measure the cell with ``runner`` (default ``runner.run_cell``: its own process) and
    write it there. Full probe results are collected in ``results`` when given."""
    if runner is None:
        from llmbench.run.runner import run_cell as runner
    probes_dir = Path(probes_dir)

    def probe(value: int) -> ProbeRecord:
        cell = search.cell(value)
        path = probes_dir / cell.relpath
        existing = reusable_probe(path, settings)
        if existing is not None:
            record = _record(value, existing, cell.relpath, reused=True)
            log(f"probe {cell.relpath}: {record.status} (reused {path})")
        else:
            started = time.perf_counter()
            with _environment(settings.get("probe_environment") or {}):
                result = runner(
                    cell=cell,
                    settings=settings,
                    model_entry=model_entry,
                    base_dir=base_dir,
                    prequantized_dir=prequantized_dir,
                    out_path=path,
                    log_path=None
                    if logs_dir is None
                    else Path(logs_dir) / cell.relpath.replace(".json", ".log"),
                    timeout_s=timeout_s,
                )
            record = _record(value, result, cell.relpath, reused=False)
            if record.wall_s is None:
                record.wall_s = time.perf_counter() - started
            existing = result
            log(
                f"probe {cell.relpath}: {record.status} in {record.wall_s:.1f} s"
                + (f" ({record.reason})" if record.reason else "")
            )
        if results is not None:
            results[value] = dict(existing)
        return record

    return probe


class _environment:
    """Set environment variables for the probes' child processes, restore them afterwards."""

    def __init__(self, variables: Mapping[str, str]) -> None:
        self.variables = dict(variables)
        self.saved: dict[str, str | None] = {}

    def __enter__(self) -> None:
        for key, value in self.variables.items():
            self.saved[key] = os.environ.get(key)
            os.environ[key] = value

    def __exit__(self, *exc: object) -> None:
        for key, value in self.saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value
