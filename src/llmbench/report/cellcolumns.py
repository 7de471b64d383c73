"""The column groups of one cells.csv row, each read from one part of a cell JSON: memory per
phase, latency, efficiency (with the measured floor), model and checks, timing breakdown.

GiB = 2^30 bytes; memory summed over the CUDA devices a cell used. Every function takes a
validated cell result and returns ``{column: value}``, None where the record lacks the value.
May import ``llmbench`` constants, ``llmbench.measure.timing`` (no torch at import), the
phase-record readers of ``llmbench.record.cell`` and
``llmbench.report.checkcolumns``. Tests mirror it in
``tests/report/test_aggregate.py`` (through ``build_tables``).
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from typing import Any

from llmbench import GIB
from llmbench.measure.failures import stopped_in
from llmbench.measure.timing import tail_percentile
from llmbench.record.cell import phase_record, summed_device_bytes
from llmbench.report.checkcolumns import check_columns


def gib(value: int | float | None) -> float | None:
    """``value`` bytes in GiB (2^30 bytes); None stays None."""
    return None if value is None else value / GIB


def sum_devices(devices: Sequence[Mapping[str, Any]], key: str) -> float | None:
    """The sum over ``devices`` (a phase record's per-device dicts) of ``key`` (bytes), in
    GiB; None when there is no device or one lacks the value
    (``llmbench.record.cell.summed_device_bytes``)."""
    return gib(summed_device_bytes(devices, key))


MEMORY_VIEWS = (
    ("allocated", "allocated_bytes"),
    ("reserved", "reserved_bytes"),
    ("peak_allocated", "peak_allocated_bytes"),
    ("peak_reserved", "peak_reserved_bytes"),
    ("nvml_device_used", "nvml_device_used_bytes"),
    ("nvml_process_used", "nvml_process_used_bytes"),
)
"""(column view, phase-record device key) of every memory column, in bytes in the JSON."""


def memory_columns(result: Mapping[str, Any]) -> dict[str, float | None]:
    """``{phase}_{view}_gib`` for load, prefill and decode: state at the end of the phase
    (allocated, reserved, NVML), peaks within it, and host RSS; GiB, summed over devices.

    The phase a failed cell stopped in (``measure.failures.stopped_in``) did not end: its
    columns stay empty, and what it held when it failed goes to ``failed_phase_{view}_gib``
    (peaks since that phase began, until the failure), so that no ``*_peak_*`` column holds a
    partial peak.
    """
    columns: dict[str, float | None] = {}
    failed = stopped_in(result)
    for phase in ("load", "prefill", "decode", "generate_prefill"):
        record = {} if phase == failed else phase_record(result, phase) or {}
        devices = record.get("devices") or []
        columns.update(_view_columns(phase, devices))
        # What torch.cuda.memory_reserved() reads without a device argument, as the seed
        # notebook did: the first device only, however many the model spans.
        columns[f"{phase}_reserved_cuda0_gib"] = sum_devices(devices[:1], "reserved_bytes")
        host = record.get("host") or {}
        columns[f"{phase}_host_rss_gib"] = gib(host.get("rss_bytes"))
        columns[f"{phase}_host_peak_rss_gib"] = gib(host.get("peak_rss_bytes"))
    record = (phase_record(result, failed) if failed else None) or {}
    columns.update(_view_columns("failed_phase", record.get("devices") or []))
    host = record.get("host") or {}
    columns["failed_phase_host_peak_rss_gib"] = gib(host.get("peak_rss_bytes"))
    return columns


def _view_columns(prefix: str, devices: Sequence[Mapping[str, Any]]) -> dict[str, float | None]:
    """``{prefix}_{view}_gib`` of every :data:`MEMORY_VIEWS` view, summed over ``devices``."""
    return {f"{prefix}_{view}_gib": sum_devices(devices, key) for view, key in MEMORY_VIEWS}


def _p90(stats: Mapping[str, Any]) -> float | None:
    """The p90 of a record's raw samples (``measure.timing.tail_percentile``: None with too
    few; records written before that rule kept an interpolated one in ``p90``)."""
    return tail_percentile(stats["raw"], 90) if stats.get("raw") else None


def latency_columns(result: Mapping[str, Any]) -> dict[str, float | None]:
    latency = result.get("latency") or {}
    prefill = latency.get("prefill") or {}
    decode = latency.get("decode_per_token") or {}
    return {
        "prefill_ms_p50": prefill.get("p50"),
        "prefill_ms_p90": _p90(prefill),
        "prefill_ms_min": prefill.get("min"),
        "prefill_ms_std": prefill.get("std"),
        "prefill_repeats": prefill.get("count"),
        "decode_ms_per_token_p50": decode.get("p50"),
        "decode_ms_per_token_p90": _p90(decode),
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


def efficiency_columns(result: Mapping[str, Any]) -> dict[str, Any]:
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


def model_columns(result: Mapping[str, Any]) -> dict[str, Any]:
    """The loaded model (checkpoint, parameters, weight bytes) and the truth checks'
    columns (``checkcolumns``)."""
    model = result.get("model") or {}
    weights = model.get("weights") or {}
    modules = weights.get("modules") or {}
    return {
        "checkpoint_kind": model.get("checkpoint_kind"),
        "n_parameters": model.get("n_parameters"),
        "weight_gib": gib(weights.get("weight_bytes_total")),
        "weight_bytes_by_dtype": json.dumps(weights.get("weight_bytes_by_dtype"))
        if weights
        else None,
        "bnb_linear_layers": (modules.get("linear_4bit", 0) + modules.get("linear_8bit", 0))
        if modules
        else None,
        **check_columns(result),
    }


def timing_columns(result: Mapping[str, Any]) -> dict[str, Any]:
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
