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
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

from llmbench import GIB
from llmbench.grid.schemas import SchemaError
from llmbench.grid.spec import OPTIONAL_AXES
from llmbench.predict import table_columns as predicted_columns
from llmbench.record.cell import read_cell_result
from llmbench.report.checkcolumns import check_columns

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


def _gib(value: int | float | None) -> float | None:
    return None if value is None else value / GIB


def _sum_devices(devices: Sequence[Mapping[str, Any]], key: str) -> float | None:
    values = [d.get(key) for d in devices]
    if not values or any(v is None for v in values):
        return None
    return _gib(sum(values))


def _phase(result: Mapping[str, Any], phase: str) -> Mapping[str, Any] | None:
    memory = result.get("memory") or {}
    return (memory.get("phases") or {}).get(phase)


def _memory_columns(result: Mapping[str, Any]) -> dict[str, float | None]:
    """``{phase}_{view}_gib`` for load, prefill and decode: state at the end of the phase
    (allocated, reserved, NVML), peaks within it, and host RSS."""
    columns: dict[str, float | None] = {}
    views = (
        ("allocated", "allocated_bytes"),
        ("reserved", "reserved_bytes"),
        ("peak_allocated", "peak_allocated_bytes"),
        ("peak_reserved", "peak_reserved_bytes"),
        ("nvml_device_used", "nvml_device_used_bytes"),
        ("nvml_process_used", "nvml_process_used_bytes"),
    )
    for phase in ("load", "prefill", "decode", "generate_prefill"):
        record = _phase(result, phase) or {}
        devices = record.get("devices") or []
        for view, key in views:
            columns[f"{phase}_{view}_gib"] = _sum_devices(devices, key)
        # What torch.cuda.memory_reserved() reads without a device argument, as the seed
        # notebook did: the first device only, however many the model spans.
        columns[f"{phase}_reserved_cuda0_gib"] = _sum_devices(devices[:1], "reserved_bytes")
        host = record.get("host") or {}
        columns[f"{phase}_host_rss_gib"] = _gib(host.get("rss_bytes"))
        columns[f"{phase}_host_peak_rss_gib"] = _gib(host.get("peak_rss_bytes"))
    return columns


def _latency_columns(result: Mapping[str, Any]) -> dict[str, float | None]:
    latency = result.get("latency") or {}
    prefill = latency.get("prefill") or {}
    decode = latency.get("decode_per_token") or {}
    return {
        "prefill_ms_p50": prefill.get("p50"),
        "prefill_ms_p90": prefill.get("p90"),
        "prefill_ms_min": prefill.get("min"),
        "prefill_ms_std": prefill.get("std"),
        "prefill_repeats": prefill.get("count"),
        "decode_ms_per_token_p50": decode.get("p50"),
        "decode_ms_per_token_p90": decode.get("p90"),
        "decode_ms_per_token_min": decode.get("min"),
        "decode_ms_per_token_std": decode.get("std"),
        "ttft_ms": latency.get("ttft_ms"),
        "tokens_per_s": latency.get("decode_tokens_per_s"),
        "prefill_tokens_per_s": latency.get("prefill_tokens_per_s"),
        "timer": latency.get("timer"),
        "graph_capture_s": latency.get("graph_capture_s"),
        # model.generate itself (eager decode_mode cells with measurement.generate)
        "generate_ttft_ms": (latency.get("generate") or {}).get("ttft_ms"),
        "generate_ms_per_token": (latency.get("generate") or {}).get("ms_per_token"),
    }


def _efficiency_columns(result: Mapping[str, Any]) -> dict[str, Any]:
    efficiency = result.get("efficiency") or {}
    energy = result.get("energy") or {}
    decode_p50 = ((result.get("latency") or {}).get("decode_per_token") or {}).get("p50")
    floor = efficiency.get("decode_floor_ms")
    return {
        "prefill_tflops_per_s": efficiency.get("prefill_tflops_per_s"),
        "mfu": efficiency.get("mfu"),
        "decode_gb_per_s": efficiency.get("decode_gb_per_s"),
        "mbu": efficiency.get("mbu"),
        "peak_source": efficiency.get("peak_source"),
        # against the device's own measured limits (measure.roofline)
        "decode_floor_ms": floor,
        # this cell's median decode step over its own floor (1 = at the floor)
        "decode_over_floor": decode_p50 / floor if decode_p50 and floor else None,
        "mbu_measured": efficiency.get("mbu_measured"),
        "mfu_measured": efficiency.get("mfu_measured"),
        "measured_copy_tb_per_s": None
        if efficiency.get("measured_copy_bandwidth_bytes_s") is None
        else efficiency["measured_copy_bandwidth_bytes_s"] / 1e12,
        "prefill_j_per_token": energy.get("prefill_j_per_token"),
        "decode_j_per_token": energy.get("decode_j_per_token"),
    }


def _model_columns(result: Mapping[str, Any]) -> dict[str, Any]:
    model = result.get("model") or {}
    weights = model.get("weights") or {}
    modules = weights.get("modules") or {}
    return {
        "checkpoint_kind": model.get("checkpoint_kind"),
        "n_parameters": model.get("n_parameters"),
        "weight_gib": _gib(weights.get("weight_bytes_total")),
        "weight_bytes_by_dtype": json.dumps(weights.get("weight_bytes_by_dtype"))
        if weights
        else None,
        "bnb_linear_layers": (modules.get("linear_4bit", 0) + modules.get("linear_8bit", 0))
        if modules
        else None,
        **check_columns(result),
    }


def _timing_columns(result: Mapping[str, Any]) -> dict[str, Any]:
    breakdown = result.get("timing_breakdown") or {}
    wall = breakdown.get("wall_s")
    load = breakdown.get("load_s")
    measure = breakdown.get("measure_s")
    overhead = None
    if wall and load is not None and measure is not None:
        overhead = max(0.0, wall - load - measure) / wall
    return {
        "cell_wall_s": wall,
        "start_and_imports_s": breakdown.get("start_and_imports_s"),
        "load_s": load,
        "measure_s": measure,
        "overhead_fraction": overhead,
        # How the cell's process started: spawned, or forked from the warm-start server.
        "start_method": breakdown.get("start_method"),
    }


def cell_row(result: Mapping[str, Any], path: str) -> dict[str, Any]:
    """One row of cells.csv from one cell result."""
    cell = result["cell"]
    environment = result.get("environment") or {}
    gpus = environment.get("gpus") or []
    error = result.get("error") or {}
    used_devices = (_phase(result, "load") or {}).get("devices") or []
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
        oom_requested_gib=_gib(error.get("requested_bytes")),
        device_name=gpus[0]["name"]
        if gpus and cell.get("device") == "cuda"
        else environment.get("cpu"),
        n_devices=len(used_devices) if cell.get("device") == "cuda" else 0,
        device_total_gib=_gib(
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
    row.update(_memory_columns(result))
    row.update(_latency_columns(result))
    row.update(_efficiency_columns(result))
    row.update(_model_columns(result))
    row.update(_timing_columns(result))
    row.update(predicted_columns(result))  # analytic model (predict.py) and measured/predicted
    return row


def device_rows(result: Mapping[str, Any]) -> list[dict[str, Any]]:
    """Rows of devices.csv: one per CUDA device and phase."""
    cell = result["cell"]
    placement = ((result.get("model") or {}).get("placement")) or {}
    parameter_bytes = placement.get("parameter_bytes_per_device") or {}
    modules = placement.get("hf_device_map_modules") or {}
    rows = []
    for phase in ("load", "prefill", "decode"):
        record = _phase(result, phase)
        for device in (record or {}).get("devices", []):
            name = device["device"]
            rows.append(
                {
                    **cell_identity(cell),
                    "status": result["status"],
                    "device": name,
                    "phase": phase,
                    "allocated_gib": _gib(device["allocated_bytes"]),
                    "reserved_gib": _gib(device["reserved_bytes"]),
                    "peak_allocated_gib": _gib(device["peak_allocated_bytes"]),
                    "peak_reserved_gib": _gib(device["peak_reserved_bytes"]),
                    "nvml_device_used_gib": _gib(device["nvml_device_used_bytes"]),
                    "nvml_process_used_gib": _gib(device["nvml_process_used_bytes"]),
                    "parameter_gib": _gib(parameter_bytes.get(name)),
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


def _rows_of(result: Mapping[str, Any], path: str) -> tuple[dict[str, Any], list[dict]]:
    """(cells.csv row, devices.csv rows) of one valid cell result. When computing them raises,
    the cell keeps a row with what the record states and the error in ``table_error``, and no
    device rows: one cell's surprise does not cost every other row."""
    try:
        return cell_row(result, path), device_rows(result)
    except Exception as exc:  # kept as data, in the table, next to the cell it concerns
        row = cell_identity(result["cell"])
        row.update(status=result["status"], phase=result.get("phase"), error=result.get("reason"))
        return {**row, "path": path, "table_error": f"{type(exc).__name__}: {exc}"}, []


def build_tables(
    paths: Iterable[str | Path], seed_cases: Iterable[Mapping[str, Any]] = ()
) -> tuple[Any, Any]:
    """Read and validate every cell JSON; return (cells, devices) DataFrames.

    Raises UnreadableCells (a SchemaError) naming every file that is not valid JSON or not a
    valid cell result, after reading them all.
    """
    import pandas as pd

    labels = seed_case_columns(seed_cases)
    rows, devices, problems = [], [], []
    for path in paths:
        try:
            result = read_cell_result(path)
        except (OSError, ValueError) as exc:  # read_cell_result's errors name the file
            problems.append((str(path), str(exc).removeprefix(f"{path}: ")))
            continue
        row, device_list = _rows_of(result, str(path))
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
