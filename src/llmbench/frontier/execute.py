"""Running one search: probes chosen by bisection from the prediction, and the search JSON.

Owns :func:`run_search`, in named steps: where the probes run (:func:`_device_and_settings`),
the predicted frontier or why there is none (:func:`_prediction`), recalibration after each
probe (:func:`_recalibrator`), the log lines before and after (:func:`_start_message`,
:func:`_end_message`), and the search-result JSON (:func:`_search_document`, schema
:data:`SEARCH_SCHEMA_VERSION`: the :class:`~llmbench.frontier.planning.Search`, the
:class:`~llmbench.frontier.search.SearchOutcome` fields, device, budget, capacity, prediction,
probe settings and wall time). May import: :mod:`.search`, :mod:`.planning`, :mod:`.probes`,
:mod:`.prediction`, ``llmbench.grid``, ``llmbench.record``.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from llmbench.frontier.planning import Search, search_values
from llmbench.frontier.prediction import (
    Prediction,
    Predictor,
    capacity_bytes,
    default_predictor,
    model_config,
    simulated_prediction,
    simulator_capacity,
    visible_device_totals,
)
from llmbench.frontier.probes import budget_peak_bytes, make_probe, probe_device
from llmbench.frontier.search import (
    EXTRA_PROBES,
    ProbeRecord,
    SearchOutcome,
    bisect_frontier,
    max_probes,
)

SEARCH_SCHEMA_VERSION = 1


def run_search(
    search: Search,
    *,
    section: Mapping[str, Any],
    settings: Mapping[str, Any],
    model_entry: Mapping[str, Any],
    base_dir: str | None,
    prequantized_dir: str | None,
    probes_dir: Path | str,
    out_path: Path | str,
    logs_dir: Path | str | None = None,
    timeout_s: float | None = None,
    has_cuda: bool | None = None,
    predictor: Predictor | None | str = "default",
    runner: Callable[..., dict[str, Any]] | None = None,
    log: Callable[[str], None] = print,
) -> dict[str, Any]:
    """Run one search (probes in their own processes), write and return its result JSON.

    ``predictor``: "default" = :func:`default_predictor`; None = no prediction (bisection
    from the middle). Prediction is skipped when ``section['use_prediction']`` is false or no
    capacity is known (CPU without a budget). Raises ValueError for a CPU search without a
    memory budget (:func:`_device_and_settings`) or a bad grid (:func:`search_values`).
    """
    from llmbench.record.cell import write_json_atomic

    started = time.perf_counter()
    values = search_values(search, section)
    device, settings = _device_and_settings(settings, has_cuda)
    start = _prediction(search, values, section, settings, model_entry, device, predictor)
    extra_probes = int(section.get("extra_probes", EXTRA_PROBES))
    log(_start_message(search, values, extra_probes, start))
    full: dict[int, dict[str, Any]] = {}
    probe = make_probe(
        search,
        settings=settings,
        model_entry=model_entry,
        base_dir=base_dir,
        prequantized_dir=prequantized_dir,
        probes_dir=probes_dir,
        logs_dir=logs_dir,
        timeout_s=float(settings["cell_timeout_s"] if timeout_s is None else timeout_s),
        runner=runner,
        log=log,
        results=full,
    )
    outcome = bisect_frontier(
        values,
        probe,
        predicted=start.frontier,
        recalibrate=_recalibrator(start.prediction, section, full),
        extra_probes=extra_probes,
    )
    document = _search_document(search, outcome, probes_dir, device, settings, start, started)
    write_json_atomic(out_path, document)
    log(_end_message(search, outcome, document["wall_s"]))
    return document


@dataclass(frozen=True)
class _Start:
    """What a search starts from: the capacity a probe's peak must stay under (bytes; None:
    unknown), the prediction (None: plain bisection) and, without one, a note saying why
    (with a simulated one: what it simulated)."""

    capacity: float | None
    prediction: Prediction | None
    note: str | None

    @property
    def frontier(self) -> int | None:
        """The predicted frontier value (None: no prediction)."""
        return None if self.prediction is None else self.prediction.frontier


def _device_and_settings(
    settings: Mapping[str, Any], has_cuda: bool | None
) -> tuple[str, Mapping[str, Any]]:
    """Where the probes run ("cpu" or "cuda"; ``has_cuda`` None: ask the host) and the settings
    they run with (GPU probes without the probe environment).

    Raises ValueError for a CPU search without a memory budget.
    """
    from llmbench.grid.plan import host_has_cuda

    has_cuda = host_has_cuda() if has_cuda is None else has_cuda
    device = probe_device(settings, has_cuda)
    if device != "cpu":  # the malloc threshold steadies CPU RSS; GPU probes keep warm starts
        settings = {**settings, "probe_environment": {}}
    if device == "cpu" and settings.get("memory_budget_gib") is None:
        raise ValueError(
            "a frontier search on the CPU needs a memory budget (frontier.memory_budget_gib or "
            "memory_budget_gib); without one probes would grow until the host runs out of "
            "memory. Use --configfile config/frontier-tiny.yaml for the CPU frontier."
        )
    return device, settings


def _prediction(
    search: Search,
    values: list[int],
    section: Mapping[str, Any],
    settings: Mapping[str, Any],
    model_entry: Mapping[str, Any],
    device: str,
    predictor: Predictor | None | str,
) -> _Start:
    """The capacity and the predicted frontier, or no prediction and a note saying why the
    search falls back to plain bisection. ``predictor`` "default": :func:`default_predictor`.
    A predictor that raises is such a fallback, never an error."""
    simulated = None
    if predictor == "default":
        predictor = default_predictor(device, settings["measurement"].get("decode_tokens"))
        simulated = _simulated_start(search, values, section, settings, model_entry, device)
        if simulated is not None and simulated.prediction is not None:
            return simulated
    capacity = capacity_bytes(settings, device)
    architecture = model_config(model_entry)
    if not section.get("use_prediction", True):
        return _Start(capacity, None, "disabled (frontier.use_prediction: false)")
    if predictor is None:
        note = "no predictor (llmbench.predict not available): plain bisection"
        return _Start(capacity, None, note)
    if capacity is None:
        note = "no capacity known (no budget, no GPU memory total): plain bisection"
        return _Start(capacity, None, note)
    if architecture is None:
        note = "no architecture config.json for this model: plain bisection"
        return _Start(capacity, None, note)
    if simulated is not None:  # the simulation failed: say so beside the analytic start
        note = simulated.note
    else:
        note = None
    try:
        prediction = Prediction.make(
            search,
            values,
            predictor=predictor,
            config=architecture,
            capacity=capacity,
            compute_dtype=settings["bnb_4bit_compute_dtype"],
        )
    except Exception as exc:  # noqa: BLE001 - a broken prediction must not stop the search
        note = f"prediction failed ({type(exc).__name__}: {exc}): plain bisection"
        return _Start(capacity, None, note)
    return _Start(capacity, prediction, note)


def _simulated_start(
    search: Search,
    values: list[int],
    section: Mapping[str, Any],
    settings: Mapping[str, Any],
    model_entry: Mapping[str, Any],
    device: str,
) -> _Start | None:
    """The allocator-simulated prediction (:func:`simulated_prediction`) for a search on one
    visible CUDA device without a memory budget, in either allocator mode, a KV cache in the
    model dtype (the tracer runs a DynamicCache) and prediction on; None where it does not
    apply; a ``_Start`` without prediction and with the reason where it failed (the analytic
    prediction is used then)."""
    first = search.cell(values[0])
    if (
        device != "cuda"
        or not section.get("use_prediction", True)
        or settings.get("memory_budget_gib") is not None
        or first.kv_cache != "model"
    ):
        return None
    architecture = model_config(model_entry)
    totals = visible_device_totals()
    if architecture is None or len(totals) != 1:
        return None
    capacity = simulator_capacity(totals[0], search.attn)
    try:
        prediction = simulated_prediction(
            search,
            values,
            config=architecture,
            measurement=settings["measurement"],
            capacity=capacity,
            compute_dtype=settings["bnb_4bit_compute_dtype"],
        )
    except Exception as exc:  # noqa: BLE001 - a failed simulation falls back, never stops
        return _Start(None, None, f"allocator simulation failed ({type(exc).__name__}: {exc})")
    note = f"allocator simulation (llmbench.predict.oom) on {capacity} bytes"
    return _Start(float(capacity), prediction, note)


def _recalibrator(
    prediction: Prediction | None,
    section: Mapping[str, Any],
    full: Mapping[int, Mapping[str, Any]],
) -> Callable[[ProbeRecord], float | None] | None:
    """``recalibrate(record)`` for :func:`bisect_frontier`: the prediction corrected with the
    probe's full result in ``full`` (value -> cell JSON, filled as probes run), or None without
    a prediction or with ``section['recalibrate']`` false."""
    if prediction is None or not section.get("recalibrate", True):
        return None

    def recalibrate(record: ProbeRecord) -> float | None:
        _, exact = budget_peak_bytes(full.get(record.value) or {})
        return prediction.recalibrate(record, exact)

    return recalibrate


def _search_document(
    search: Search,
    outcome: SearchOutcome,
    probes_dir: Path | str,
    device: str,
    settings: Mapping[str, Any],
    start: _Start,
    started: float,
) -> dict[str, Any]:
    """The search-result JSON; ``wall_s``: seconds since ``started`` (``time.perf_counter``)."""
    return {
        "schema_version": SEARCH_SCHEMA_VERSION,
        "search": search.to_dict(),
        **outcome.to_dict(),
        "probes_dir": str(probes_dir),
        "device": device,
        "memory_budget_gib": settings.get("memory_budget_gib"),
        "capacity_bytes": start.capacity,
        "prediction": {
            "frontier": start.frontier,
            "note": start.note,
            "calibrations": [] if start.prediction is None else start.prediction.calibrations,
        },
        "settings": dict(settings),
        "wall_s": time.perf_counter() - started,
    }


def _start_message(search: Search, values: list[int], extra_probes: int, start: _Start) -> str:
    """The log line before the first probe: the grid, the probe budget, the prediction."""
    return (
        f"search {search.relpath}: {len(values)} values {values[0]}..{values[-1]} "
        f"step {values[1] - values[0] if len(values) > 1 else '-'}, at most "
        f"{max_probes(len(values), extra_probes)} probes, "
        f"predicted frontier "
        f"{start.frontier} ({start.note or 'llmbench.predict'})"
    )


def _end_message(search: Search, outcome: SearchOutcome, wall_s: float) -> str:
    """The log line after the last probe: the outcome, probes used, wall time."""
    return (
        f"search {search.relpath}: {outcome.status}, frontier {outcome.frontier}, first fail "
        f"{outcome.first_fail}, {outcome.n_probes} probes (brute force {outcome.brute_force}, "
        f"at most {outcome.max_probes}) in {wall_s:.0f} s"
    )
