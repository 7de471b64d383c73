"""Tidy tables from cell JSONs: one row per cell (cells.csv/.parquet), one per device and
phase (devices.csv).

Memory columns are GiB (2^30 bytes). In cells.csv they are summed over the CUDA devices a cell
used (peaks of different devices need not coincide, so a summed peak is an upper bound of the
simultaneous total); devices.csv keeps the per-device numbers. CPU cells have no CUDA memory
columns (empty) and report host RSS instead.

Failures stay data: a cell whose row cannot be computed (an analysis bug, an unforeseen record)
keeps a row with its cell, status and the reason in ``table_error``; a model the memory model
cannot predict gets empty ``predicted_*`` columns and the reason in ``predicted_error``
(``llmbench.predict.columns``); each column exists when some row has one. Only cell files
that are not valid cell JSONs stop a build (``UnreadableCells``, naming every one), and then
no table is written: ``write_tables`` replaces each table atomically, so readers see the
previous tables or the new ones.

Cell files are read, validated and turned into rows by a pool of worker processes, one per
usable core, when there are at least ``PARALLEL_MIN_CELLS`` of them (JSON-schema validation
and the predicted columns cost milliseconds per cell: 10,000 cells took 45 s on one core);
rows keep the order of the paths, so the tables do not depend on the number of workers.
"""

from __future__ import annotations

import functools
import os
from collections.abc import Iterable, Iterator, Mapping, Sequence
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path
from typing import Any

from llmbench.grid.schemas import SchemaError
from llmbench.grid.spec import OPTIONAL_AXES
from llmbench.measure.failures import stopped_in
from llmbench.predict import table_columns as predicted_columns
from llmbench.record.cell import phase_record, read_cell_result
from llmbench.report.cellcolumns import (
    efficiency_columns,
    gib,
    latency_columns,
    memory_columns,
    model_columns,
    timing_columns,
)

CELL_KEYS = ("model", "quant", "attn", "dtype", "batch", "seq", *OPTIONAL_AXES)
"""What tells cells apart (``grid.spec.Cell``'s fields)."""


def cell_identity(cell: Mapping[str, Any]) -> dict[str, Any]:
    """The :data:`CELL_KEYS` of a JSON ``cell`` block or a seed case; an optional axis that is
    absent (cells written before it existed) takes its default, the value they ran with."""
    return {
        key: cell[key] if key in cell or key not in OPTIONAL_AXES else OPTIONAL_AXES[key][0]
        for key in CELL_KEYS
    }


REQUIRED_COLUMNS = (
    "model",
    "quant",
    "attn",
    "sdpa_backend",
    "dtype",
    "batch",
    "seq",
    "status",
    "phase",
    "error",
    "device_name",
    "n_devices",
    "load_allocated_gib",
    "prefill_peak_allocated_gib",
    "prefill_peak_reserved_gib",
    "decode_peak_allocated_gib",
    "prefill_ms_p50",
    "prefill_ms_p90",
    "decode_ms_per_token_p50",
    "ttft_ms",
    "tokens_per_s",
)
"""Columns every cells table has, whatever else is added."""


class UnreadableCells(SchemaError):
    """Cell files that are not valid JSON or do not match the cell schema: the message names
    every one with its error (``problems``: (path, error) pairs) and how to measure them again."""

    def __init__(self, problems: Sequence[tuple[str, str]]):
        self.problems = list(problems)
        lines = "".join(f"\n  {path}: {error}" for path, error in self.problems)
        super().__init__(
            f"{len(self.problems)} cell file(s) not a valid cell JSON:{lines}\n"
            "Delete such a file and rerun to measure its cell again."
        )


def cell_row(
    result: Mapping[str, Any], path: str, models: Mapping[str, Any] | None = None
) -> dict[str, Any]:
    """One row of cells.csv from one cell result; ``models``: the run's model registry, whose
    architecture files the predicted columns read (None: config/config.yaml's)."""
    cell = result["cell"]
    environment = result.get("environment") or {}
    gpus = environment.get("gpus") or []
    error = result.get("error") or {}
    used_devices = (phase_record(result, "load") or {}).get("devices") or []
    used_names = {d["device"] for d in used_devices}
    row: dict[str, Any] = cell_identity(cell)
    row.update(
        sdpa_backend=cell.get("sdpa_backend"),
        attn_implementation=cell.get("attn_implementation"),
        device=cell.get("device"),
        status=result["status"],
        phase=result.get("phase"),
        error=result.get("reason"),
        error_type=error.get("type"),
        error_category=error.get("category"),
        oom_requested_gib=gib(error.get("requested_bytes")),
        device_name=gpus[0]["name"]
        if gpus and cell.get("device") == "cuda"
        else environment.get("cpu"),
        n_devices=len(used_devices) if cell.get("device") == "cuda" else 0,
        device_total_gib=gib(
            sum(g["total_memory_bytes"] for g in gpus if g["device"] in used_names)
        )
        if used_names
        else None,
        nvidia_driver=environment.get("nvidia_driver"),
        torch=(environment.get("packages") or {}).get("torch"),
        transformers=(environment.get("packages") or {}).get("transformers"),
        bitsandbytes=(environment.get("packages") or {}).get("bitsandbytes"),
        git_commit=(environment.get("git") or {}).get("commit"),
        finished_at=result.get("finished_at"),  # UTC ISO 8601; empty for older cells
        path=path,
    )
    row.update(memory_columns(result))
    row.update(latency_columns(result))
    row.update(efficiency_columns(result))
    row.update(model_columns(result))
    row.update(timing_columns(result))
    # the analytic memory model's peaks and measured / predicted
    row.update(predicted_columns(result, models=models))
    return row


def device_rows(result: Mapping[str, Any]) -> list[dict[str, Any]]:
    """Rows of devices.csv: one per CUDA device and phase (GiB); ``phase_finished`` is False
    for the phase a failed cell stopped in, whose numbers are what it held when it failed."""
    cell = result["cell"]
    placement = ((result.get("model") or {}).get("placement")) or {}
    parameter_bytes = placement.get("parameter_bytes_per_device") or {}
    modules = placement.get("hf_device_map_modules") or {}
    rows = []
    failed = stopped_in(result)
    for phase in ("load", "prefill", "decode"):
        record = phase_record(result, phase)
        for device in (record or {}).get("devices", []):
            name = device["device"]
            rows.append(
                {
                    **cell_identity(cell),
                    "status": result["status"],
                    "device": name,
                    "phase": phase,
                    "phase_finished": phase != failed,
                    "allocated_gib": gib(device["allocated_bytes"]),
                    "reserved_gib": gib(device["reserved_bytes"]),
                    "peak_allocated_gib": gib(device["peak_allocated_bytes"]),
                    "peak_reserved_gib": gib(device["peak_reserved_bytes"]),
                    "nvml_device_used_gib": gib(device["nvml_device_used_bytes"]),
                    "nvml_process_used_gib": gib(device["nvml_process_used_bytes"]),
                    "parameter_gib": gib(parameter_bytes.get(name)),
                    "modules": ",".join(modules.get(name, [])) or None,
                }
            )
    return rows


def seed_case_columns(seed_cases: Iterable[Mapping[str, Any]]) -> dict[tuple, dict[str, Any]]:
    """Map a cell's key to its seed-case columns: label, variant, the notebook's own readings."""
    index = {}
    for case in seed_cases:
        printed = case.get("notebook_reserved_gib") or {}
        index[tuple(cell_identity(case).values())] = {
            "seed_case": case["case"],
            "seed_variant": case["variant"],
            "notebook_initial_reserved_gib": printed.get("initial"),
            "notebook_inference_reserved_gib": printed.get("inference"),
        }
    return index


SEED_COLUMNS = (
    "seed_case",
    "seed_variant",
    "notebook_initial_reserved_gib",
    "notebook_inference_reserved_gib",
)


def _rows_of(
    result: Mapping[str, Any], path: str, models: Mapping[str, Any] | None = None
) -> tuple[dict[str, Any], list[dict]]:
    """(cells.csv row, devices.csv rows) of one valid cell result. When computing them raises,
    the cell keeps a row with what the record states and the error in ``table_error``, and no
    device rows: one cell's surprise does not cost every other row."""
    try:
        return cell_row(result, path, models), device_rows(result)
    except Exception as exc:  # kept as data, in the table, next to the cell it concerns
        row = cell_identity(result["cell"])
        row.update(status=result["status"], phase=result.get("phase"), error=result.get("reason"))
        return {**row, "path": path, "table_error": f"{type(exc).__name__}: {exc}"}, []


PARALLEL_MIN_CELLS = 256
"""Fewer cell files than this are read in the calling process: starting workers would cost
more than they save."""


def _cell_entry(
    path: str, models: Mapping[str, Any] | None = None
) -> tuple[dict[str, Any], list[dict]] | tuple[None, str]:
    """(cells.csv row, devices.csv rows) of one cell file, or (None, why) when the file is not
    a valid cell JSON. Module-level, so that worker processes can run it."""
    try:
        result = read_cell_result(path)
    except (OSError, ValueError) as exc:  # read_cell_result's errors name the file
        return None, str(exc).removeprefix(f"{path}: ")
    return _rows_of(result, path, models)


def _cell_entries(
    paths: list[str], workers: int | None, models: Mapping[str, Any] | None = None
) -> Iterator[tuple[Any, Any]]:
    """``_cell_entry`` of each path, in order; over ``workers`` processes (default: one per
    usable core) when there are at least ``PARALLEL_MIN_CELLS`` paths."""
    if workers is None:
        workers = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else 1
    if workers <= 1 or len(paths) < PARALLEL_MIN_CELLS:
        yield from map(functools.partial(_cell_entry, models=models), paths)
        return
    with ProcessPoolExecutor(workers) as pool:
        # a few chunks per worker: balanced, without one inter-process message per cell
        entry = functools.partial(_cell_entry, models=models)
        yield from pool.map(entry, paths, chunksize=len(paths) // (8 * workers) + 1)


def build_tables(
    paths: Iterable[str | Path],
    seed_cases: Iterable[Mapping[str, Any]] = (),
    *,
    workers: int | None = None,
    models: Mapping[str, Any] | None = None,
) -> tuple[Any, Any]:
    """Read and validate every cell JSON; return (cells, devices) DataFrames.

    ``workers``: processes that read the cells (module docstring); None for one per usable
    core, 1 for this process only. The tables are the same whatever it is. ``models``: the
    run's model registry (Snakemake's ``config["models"]``, ``--configfile`` applied), whose
    architecture files the predicted columns read; None: config/config.yaml's.
    Raises UnreadableCells (a SchemaError) naming every file that is not valid JSON or not a
    valid cell result, after reading them all.
    """
    import pandas as pd

    labels = seed_case_columns(seed_cases)
    rows, devices, problems = [], [], []
    paths = [str(path) for path in paths]
    for path, (row, device_list) in zip(paths, _cell_entries(paths, workers, models), strict=True):
        if row is None:
            problems.append((path, device_list))
            continue
        row.update(labels.get(tuple(row[k] for k in CELL_KEYS), dict.fromkeys(SEED_COLUMNS)))
        rows.append(row)
        devices.extend(device_list)
    if problems:
        raise UnreadableCells(problems)
    cells = pd.DataFrame(rows)
    for column in REQUIRED_COLUMNS:
        if column not in cells:
            cells[column] = None
    if not cells.empty:
        cells = cells.sort_values(list(CELL_KEYS), kind="stable").reset_index(drop=True)
    device_columns = [
        *CELL_KEYS,
        "status",
        "device",
        "phase",
        "phase_finished",
        "allocated_gib",
        "reserved_gib",
        "peak_allocated_gib",
        "peak_reserved_gib",
        "nvml_device_used_gib",
        "nvml_process_used_gib",
        "parameter_gib",
        "modules",
    ]
    return cells, pd.DataFrame(devices, columns=device_columns)


def write_tables(
    cells: Any, devices: Any, *, cells_csv: str, cells_parquet: str, devices_csv: str
) -> None:
    """Write the tables (parent folders created), each to a temporary file beside it first and
    then renamed over the old one once all three are written: a failure while writing leaves
    the previous tables as they were. Raises what pandas or the filesystem raise."""
    writers = (
        (cells_csv, lambda tmp: cells.to_csv(tmp, index=False)),
        (cells_parquet, lambda tmp: cells.to_parquet(tmp, index=False)),
        (devices_csv, lambda tmp: devices.to_csv(tmp, index=False)),
    )
    written: list[tuple[str, str]] = []
    try:
        for path, write in writers:
            target = Path(path)
            target.parent.mkdir(parents=True, exist_ok=True)
            tmp = str(target.with_name(f".{target.name}.{os.getpid()}.tmp"))  # umask's mode
            written.append((tmp, path))
            write(tmp)
        for tmp, path in written:
            os.replace(tmp, path)
    finally:
        for tmp, _ in written:
            Path(tmp).unlink(missing_ok=True)
