"""Out-of-memory from the config alone: a cell's traced allocator events
(``trace.events.trace_cell_events``) replayed through the caching-allocator simulator
(``llmbench.predict.allocator``) on a device of a given capacity: ``ok`` or ``oom``, the peak
reserved and allocated bytes, and for an ``oom`` the request that failed.

The capacity is what PyTorch's segments may take: the device's total memory as torch reports
it (``torch.cuda.get_device_properties().total_memory``, a probe's
``environment.gpus[i].total_memory_bytes``) less what the process holds outside PyTorch's
allocator while it runs (CUDA context, kernel images, cuBLAS / cuDNN handles), measured as
NVML's device used bytes - torch reserved bytes - (NVML total - torch total) in the probe's
prefill phase (:func:`capacity_from_record`). On the committed H100 probes (torch 2.11,
driver 580) that outside share is 720,175,104 bytes with eager and FlashAttention-2 and
728,563,712 with sdpa (8 MiB more), identical in every probe; 552,402,944 during the load.

Imports ``llmbench.grid.spec.Cell`` and ``llmbench.predict.allocator``; the tracer
(torch, transformers) only when :func:`simulate_cell` runs.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from llmbench.grid.spec import Cell
from llmbench.predict.allocator import AllocatorConfig, simulate


@dataclass(frozen=True)
class SimulatedCell:
    """A cell's outcome under the simulated allocator (bytes).

    ``status``: ``ok`` or ``oom``; ``phase``: where the first failed request was
    (``load``, ``prompt``, ``prefill``, ``prefill_timed``, ``decode_warmup``, ``decode``);
    ``oom_request``: its bytes as asked; ``reserved_at_oom`` / ``allocated_at_oom``: after
    the allocator's release-and-retry path, as torch's OOM message reports them.
    ``phase_peaks``: ``{phase: (peak reserved, peak allocated)}`` of the phases that ran,
    each up to the end of that phase (torch's peaks are not reset between phases here).
    """

    status: str
    peak_reserved: int
    peak_allocated: int
    phase: str | None = None
    oom_request: int | None = None
    reserved_at_oom: int | None = None
    allocated_at_oom: int | None = None
    phase_peaks: dict[str, tuple[int, int]] | None = None


def capacity_from_record(record: Mapping[str, Any], device: int = 0) -> int:
    """Bytes PyTorch's segments may take on ``device`` of a measured cell JSON: torch's
    total memory less the process's memory outside the allocator in its prefill phase
    (module docstring). Raises ``KeyError`` / ``ValueError`` for a record without them."""
    gpu = record["environment"]["gpus"][device]
    total = int(gpu["total_memory_bytes"])
    nvml_total = int(nvml_before(record, device)["total_bytes"])
    phase = record["memory"]["phases"]["prefill"]["devices"][device]
    outside = int(phase["nvml_device_used_bytes"]) - int(phase["reserved_bytes"])
    outside -= nvml_total - total
    if outside <= 0:
        raise ValueError(f"no memory outside PyTorch's allocator measured: {outside} bytes")
    return total - outside


def nvml_before(record: Mapping[str, Any], device: int = 0) -> Mapping[str, Any]:
    """NVML's reading before the process started (``gpu_before``) of the GPU that ``device``
    is (matched by UUID: on a host of several GPUs it need not be NVML index ``device``).
    Raises ``KeyError`` where the record has none."""
    uuid = record["environment"]["gpus"][device]["uuid"]
    return record["gpu_before"][f"GPU-{uuid}"]


def simulate_events(
    events: Any,
    marks: Mapping[str, int],
    capacity: int | None,
    config: AllocatorConfig | None = None,
) -> SimulatedCell:
    """Replay ``events`` (phases starting at ``marks``' indices) with ``capacity`` bytes."""
    result = simulate(events, config, capacity=capacity)
    order = sorted(marks.items(), key=lambda item: item[1])
    ran = len(result.reserved_after)
    peaks: dict[str, tuple[int, int]] = {}
    for position, (name, start) in enumerate(order):
        end = order[position + 1][1] if position + 1 < len(order) else len(events)
        end = min(end, ran)
        if start < end:
            peaks[name] = (
                max(result.reserved_after[:end]),
                max(result.allocated_after[:end]),
            )
    oom = result.first_oom
    if oom is None:
        return SimulatedCell("ok", result.peak_reserved, result.peak_allocated, phase_peaks=peaks)
    phase = next((name for name, start in reversed(order) if start <= oom.event), None)
    return SimulatedCell(
        "oom",
        result.peak_reserved,
        result.peak_allocated,
        phase=phase,
        oom_request=oom.size,
        reserved_at_oom=oom.reserved,
        allocated_at_oom=oom.allocated,
        phase_peaks=peaks,
    )


def simulate_cell(
    model_config: Mapping[str, Any],
    cell: Cell,
    measurement: Mapping[str, Any],
    capacity: int | None,
    *,
    bnb_4bit_compute_dtype: str = "bfloat16",
    trace: Callable[..., Any] | None = None,
) -> SimulatedCell:
    """Trace ``cell`` as the worker runs it under ``measurement`` and replay it with
    ``capacity`` bytes (None: unlimited) in the cell's allocator mode
    (:func:`allocator_config`). ``trace``: what traces it, called like
    ``trace.events.trace_cell_events`` (the default; a caller that simulates one cell on
    several capacities passes a cached one). Raises ``trace.model.Untraceable``."""
    if trace is None:
        from llmbench.predict.trace.events import trace_cell_events as trace

    traced = trace(model_config, cell, measurement, bnb_4bit_compute_dtype=bnb_4bit_compute_dtype)
    return simulate_events(traced.events, traced.marks, capacity, allocator_config(cell))


def allocator_config(cell: Cell) -> AllocatorConfig:
    """The caching-allocator settings of ``cell``'s ``allocator`` axis: the
    ``PYTORCH_CUDA_ALLOC_CONF`` the runner sets for it (``measure.allocator.SETTINGS``), read
    as the allocator reads it."""
    from llmbench.measure.allocator import SETTINGS

    return AllocatorConfig.parse(SETTINGS[cell.allocator])
