"""The out-of-memory frontier of a ``frontier`` section on devices of given sizes, predicted
without a GPU (issue 14; ``llmbench predict --frontier``): each search's probes decided by
tracing the probe cell and simulating PyTorch's caching allocator on the device's capacity
(:mod:`.simulated`), for the section's allocator modes (``expandable_segments`` simulated in
that mode), with the probes' own measurement settings (:func:`.probes.probe_settings`).

A device is its total memory as NVML reports it (``nvidia-smi``'s total, bytes); the
capacity the simulation gets is that less the driver's unreported memory
(``llmbench.host.devicesize.nvml_unreported_bytes``, measured per GPU model) and the memory a
probe holds outside PyTorch's allocator (:data:`.prediction.OUTSIDE_ALLOCATOR_BYTES`, measured
on the H100 and H200 with torch 2.11). Named GPUs are only those whose totals committed
records hold (``llmbench.host.devicesize.GPUS``). A search that cannot be simulated is
``unknown`` with the reason, never a number.

Checked: the simulated frontier equals the measured one on all 24 searches of
``results/reference/h100/frontier`` and the 10 of ``results/reference/h200/frontier``
(``tests/frontier/test_simulated.py``). Imports ``llmbench`` (MIB), :mod:`.planning`,
:mod:`.prediction`, :mod:`.probes`, :mod:`.search`, :mod:`.simulated`,
``llmbench.host.devicesize``; the tracer (torch,
transformers) when a search runs.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, replace
from functools import lru_cache
from typing import Any

from llmbench import MIB
from llmbench.frontier.planning import Search, plan, search_values
from llmbench.frontier.prediction import model_config, simulator_capacity
from llmbench.frontier.probes import probe_settings
from llmbench.frontier.search import DECIDED_STATUSES
from llmbench.frontier.simulated import simulated_frontier, simulator_decide
from llmbench.host.devicesize import DeviceSize, nvml_unreported_bytes

HELP = """\
--frontier: one row per search of the config's frontier: section (--configfile F merged over
it), one column per device (--gpu NAME, a GPU whose NVML total committed records hold;
--gpu-mem, the device's total as NVML and nvidia-smi report it): the largest sequence length
(or batch) that runs and the first that fails, by simulating PyTorch's caching allocator on
each probe cell's traced allocations (the search's allocator mode; no GPU). The capacity
given to the allocator is the total less the driver's unreported memory (measured per GPU
model; the largest measured where the model is not) and the memory a probe holds outside
PyTorch (measured on H100 and H200, torch 2.11). unknown: the search cannot be simulated (the
reason follows).
"""
"""What ``llmbench predict --help`` says of ``--frontier``."""


@dataclass(frozen=True)
class PredictedSearch:
    """One search's predicted frontier on one device.

    ``status``: ``found`` (``largest_ok`` runs, ``first_fail`` the next step does not),
    ``above_max`` (the largest value searched runs), ``below_min`` (the smallest fails) or
    ``unknown`` (``reason`` says why); ``simulated``: how many probe cells were traced;
    ``capacity``: the bytes the simulation gave PyTorch's segments; ``device_total``: the
    device's NVML total; ``unreported_measured``: whether the driver's unreported memory was
    measured on this GPU model (else the largest measured was assumed).
    """

    search: Search
    device_total: int
    status: str
    largest_ok: int | None = None
    first_fail: int | None = None
    simulated: int = 0
    capacity: int | None = None
    unreported_measured: bool = False
    reason: str | None = None


def predict_frontier(
    config: Mapping[str, Any], device_totals: Sequence[int]
) -> list[PredictedSearch]:
    """Every search of ``config["frontier"]`` on each device of NVML total in
    ``device_totals`` (bytes). ``config`` is the whole Snakemake config (``models``, the
    measurement settings the probes inherit). The trace of a probe cell is reused across
    devices and searches (it does not depend on the capacity). Raises ``ValueError`` for a
    section naming an undefined model (:func:`.planning.plan`)."""
    section = config["frontier"]
    settings = probe_settings(config, section)
    measurement = dict(settings["measurement"])
    compute_dtype = settings.get("bnb_4bit_compute_dtype") or "bfloat16"
    results = []
    for search in plan(section, config["models"]):
        values = search_values(search, section)
        architecture = model_config(config["models"][search.model])
        for total in device_totals:
            results.append(
                _predict_one(search, values, architecture, measurement, compute_dtype, total)
            )
    return results


def _predict_one(
    search: Search,
    values: list[int],
    architecture: Mapping[str, Any] | None,
    measurement: Mapping[str, Any],
    compute_dtype: str,
    total: int,
) -> PredictedSearch:
    unreported, measured = nvml_unreported_bytes(total)
    unknown = PredictedSearch(search, total, "unknown", unreported_measured=measured)
    if architecture is None:
        reason = f"model {search.model!r}: no architecture config.json to trace"
        return replace(unknown, reason=reason)
    if search.kv_cache != "model":
        reason = f"kv_cache {search.kv_cache}: a quantized KV cache's allocations are not traced"
        return replace(unknown, reason=reason)
    capacity = simulator_capacity(total, search.attn)
    if capacity <= 0:
        reason = (
            f"a device of {total} bytes has nothing left for PyTorch once the driver and the "
            "CUDA context have taken theirs"
        )
        return replace(unknown, reason=reason)
    refusals: list[str] = []
    decide = simulator_decide(
        architecture,
        measurement,
        capacity,
        bnb_4bit_compute_dtype=compute_dtype,
        trace=_cached_trace(refusals),
    )
    try:
        outcome, simulated = simulated_frontier(search, values, decide)
    except Exception as exc:  # noqa: BLE001 - one search's failure is its row, never a crash
        return replace(unknown, capacity=capacity, reason=f"{type(exc).__name__}: {exc}"[:300])
    if outcome.status not in DECIDED_STATUSES:
        reason = (
            f"not traceable: {refusals[-1]}"
            if refusals
            else ("the simulation could not decide every probe")
        )
        return replace(unknown, capacity=capacity, simulated=len(simulated), reason=reason)
    return PredictedSearch(
        search,
        total,
        outcome.status,
        largest_ok=outcome.largest_ok,
        first_fail=outcome.first_fail,
        simulated=len(simulated),
        capacity=capacity,
        unreported_measured=measured,
    )


def _cached_trace(refusals: list[str]) -> Callable[..., Any]:
    """A ``trace`` for :func:`.simulated.simulator_decide` that reuses :func:`_events` (one
    trace per probe cell for every device and search of the run) and appends the tracer's
    reason to ``refusals`` where it refuses a cell. Raises ``Untraceable`` as the tracer."""
    from llmbench.predict.trace.model import Untraceable

    def trace(config: Any, cell: Any, measurement: Any, *, bnb_4bit_compute_dtype: str) -> Any:
        try:
            return _events(_freeze(config), cell, _freeze(measurement), bnb_4bit_compute_dtype)
        except Untraceable as exc:
            refusals.append(str(exc))
            raise

    return trace


def _freeze(mapping: Mapping[str, Any]) -> Any:
    """A hashable copy of a JSON-like mapping (for the trace cache)."""
    import json

    return json.dumps(mapping, sort_keys=True)


@lru_cache(maxsize=256)
def _events(architecture_json: str, cell: Any, measurement_json: str, compute_dtype: str) -> Any:
    """The traced allocator events of ``cell`` (``trace.events.trace_cell_events``), kept
    for the other devices and searches of this run. Raises ``Untraceable``."""
    import json

    from llmbench.predict.trace.events import trace_cell_events

    return trace_cell_events(
        json.loads(architecture_json),
        cell,
        json.loads(measurement_json),
        bnb_4bit_compute_dtype=compute_dtype,
    )


def device_label(total: int, labels: Mapping[int, str] | None = None) -> str:
    """A device's column name: ``labels[total]`` (the device as the user named it: ``24GB``,
    ``h200``), else the named GPU of that NVML total, else that total as nvidia-smi prints it
    (``46068MiB``, not the capacity)."""
    if labels and total in labels:
        return labels[total]
    return DeviceSize(f"{total / MIB:.0f}MiB", total).label


def answer(result: PredictedSearch) -> str:
    """One cell of the table: the largest value that runs and the first that fails."""
    if result.status == "found":
        return f"{result.largest_ok} ({result.first_fail} fails)"
    if result.status == "above_max":
        return f">= {result.largest_ok} (max searched)"
    if result.status == "below_min":
        return f"none ({result.first_fail} fails)"
    return "unknown"


def _search_label(search: Search) -> list[str]:
    what = f"length at batch {search.fixed}" if search.axis == "seq" else f"batch at {search.fixed}"
    return [search.model, search.quant, search.attn, search.dtype, search.kv_cache,
            search.allocator, what]  # fmt: skip


TITLE = (
    "PREDICTED out-of-memory frontier (caching-allocator simulation of traced allocations; "
    "nothing was run or measured)"
)
"""First line of :func:`format_table`: these numbers are predictions."""


def format_table(
    results: Sequence[PredictedSearch],
    notes: Sequence[str] = (),
    labels: Mapping[int, str] | None = None,
) -> str:
    """A table for a person: a title saying it is predicted, one row per search, one column
    per device, then the capacity each device's simulation used (per attention: the memory
    outside PyTorch's allocator differs), ``notes``, and the reasons of every ``unknown``
    (one line per reason and device). ``labels``: each device's name by NVML total, as the
    user gave it (:func:`device_label`)."""
    totals = list(dict.fromkeys(r.device_total for r in results))
    by_search: dict[Search, dict[int, PredictedSearch]] = {}
    for result in results:
        by_search.setdefault(result.search, {})[result.device_total] = result
    header = ["model", "quant", "attn", "dtype", "kv_cache", "allocator", "search"]
    header += [device_label(t, labels) for t in totals]
    rows = [header]
    for search, per_device in by_search.items():
        rows.append(_search_label(search) + [answer(per_device[t]) for t in totals])
    widths = [max(len(row[i]) for row in rows) for i in range(len(header))]
    lines = [
        "  ".join(cell.ljust(w) for cell, w in zip(row, widths, strict=True)).rstrip()
        for row in rows
    ]
    lines.insert(1, "  ".join("-" * w for w in widths))
    lines.insert(0, TITLE)
    lines.append("")
    for total in totals:
        mine = [r for r in results if r.device_total == total]
        by_attn = {r.search.attn: r.capacity for r in mine if r.capacity}
        capacity = ", ".join(f"{attn} {c}" for attn, c in sorted(by_attn.items())) or "-"
        named = DeviceSize(device_label(total, labels), total)  # "assumed" if unmeasured
        lines.append(
            f"{named.describe()}; simulated capacity (bytes PyTorch's segments may take: "
            f"less what a probe holds outside them) {capacity}"
        )
    lines.extend(notes)
    reasons: dict[tuple[str, str], list[str]] = {}
    for result in results:
        if result.status == "unknown":
            device = device_label(result.device_total, labels)
            name = " ".join(_search_label(result.search))
            reasons.setdefault((device, result.reason or ""), []).append(name)
    for (device, reason), names in reasons.items():
        what = names[0] if len(names) == 1 else f"{len(names)} searches"
        lines.append(f"unknown on {device} ({what}): {reason}")
    return "\n".join(lines)


CSV_FIELDS = (
    "method", "model", "quant", "attn", "dtype", "kv_cache", "allocator", "search", "fixed",
    "device", "device_total_bytes", "capacity_bytes", "unreported_measured",
    "predicted_status", "predicted_largest_ok", "predicted_first_fail", "simulated_cells",
    "reason",
)  # fmt: skip
"""Columns of :func:`format_csv`. ``method``: always ``allocator simulation`` (a prediction,
never a measurement); ``search``: ``seq`` (the largest length at batch ``fixed``) or
``batch`` (the largest batch at length ``fixed``); ``device``: the GPU name, else the NVML
total in nvidia-smi's MiB (``46068MiB``, as ``--gpu-mem`` reads it);
``capacity_bytes``: what the simulation gave PyTorch's segments; ``unreported_measured``:
whether the driver's unreported memory was measured on this GPU model (else the largest
measured was assumed); ``predicted_status``: found, above_max, below_min or unknown
(``reason``); ``simulated_cells``: probe cells traced."""


def format_csv(results: Sequence[PredictedSearch], labels: Mapping[int, str] | None = None) -> str:
    """Every search on every device, one row each, with a header (:data:`CSV_FIELDS`);
    ``labels`` as :func:`format_table` takes them."""
    import csv
    import io

    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(CSV_FIELDS)
    for r in results:
        s = r.search
        writer.writerow(
            [
                "allocator simulation",
                s.model,
                s.quant,
                s.attn,
                s.dtype,
                s.kv_cache,
                s.allocator,
                s.axis,
                s.fixed,
                device_label(r.device_total, labels),
                r.device_total,
                r.capacity,
                r.unreported_measured,
                r.status,
                r.largest_ok,
                r.first_fail,
                r.simulated,
                r.reason,
            ]  # fmt: skip
        )
    return out.getvalue()
