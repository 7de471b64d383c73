"""Measured vs predicted columns of a cells table (``llmbench.report.aggregate``): the
predicted peaks (GiB = 2^30 bytes) of a measured cell and the measured / predicted ratios.

Imports ``llmbench`` (REPO_ROOT, lazily), ``llmbench.grid.spec.Cell`` and ``llmbench.predict``'s
prediction and constants modules, and the phase-record readers of ``llmbench.record.cell``;
yaml, lazily.
"""

from __future__ import annotations

import functools
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from llmbench.grid.spec import Cell, recorded_prequantized
from llmbench.measure.failures import stopped_in
from llmbench.predict.constants import DECODE_TOKENS, gib
from llmbench.predict.method import Unpredictable, predict_cell
from llmbench.record.cell import phase_record, summed_device_bytes

PREDICTED_COLUMNS = (
    "predicted_load_allocated_gib",
    "load_measured_over_predicted",
    "predicted_load_peak_allocated_gib",
    "load_peak_measured_over_predicted",
    "predicted_prefill_peak_allocated_gib",
    "predicted_decode_peak_allocated_gib",
    "prefill_measured_over_predicted",
    "decode_measured_over_predicted",
    "predicted_generate_prefill_peak_allocated_gib",
    "generate_prefill_measured_over_predicted",
    "predicted_method",
)
"""Columns ``table_columns`` adds to every cells table row (``load``: what stays allocated
after the load; ``load_peak``: the peak during it, with the load's transient, a checkpoint
conversion's or quantizing on load, ``Prediction.load``; ``predicted_method``: which
method answered load, prefill and decode, ``Prediction.method``: the tracer, the hand replay,
or the hand replay with a quantized KV cache; generate()'s prefill is always the hand
replay's, where it applies, as the tracer does not trace it)."""

PREDICTED_ERROR = "predicted_error"
"""Column ``table_columns`` adds, besides ``PREDICTED_COLUMNS``, to the row of a cell whose
model the memory model could not handle: why (so a table has it when some row has one)."""


@functools.lru_cache(maxsize=4)
def _registry(repo_root: str) -> dict[str, Any]:
    import yaml

    path = Path(repo_root) / "config" / "config.yaml"
    if not path.is_file():
        return {}
    return (yaml.safe_load(path.read_text()) or {}).get("models") or {}


def _measured_peak(
    result: Mapping[str, Any], phase: str, key: str = "peak_allocated_bytes"
) -> int | None:
    """Peak allocated bytes of a phase (or another ``key`` of its device records, e.g.
    ``allocated_bytes`` after it), summed over CUDA devices (as in cells.csv)."""
    devices = (phase_record(result, phase) or {}).get("devices") or []
    return summed_device_bytes(devices, key)


def table_columns(
    result: Mapping[str, Any],
    repo_root: Path | None = None,
    models: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    """Predicted peaks (GiB) and measured / predicted ratios for one cell result.

    The architecture comes from the model registry ``models`` (the run's config; None: the
    one in ``config/config.yaml``) by the cell's model name; the compute dtype and decode
    length from the settings the cell recorded.
    Unknown models, pretrained ones without a local config.json, and phases that were not
    measured (CPU cells, failures) give None. A model the memory model cannot handle (its
    config lacks a key the model reads, or is not valid JSON) gives None and the reason in
    one more column, ``PREDICTED_ERROR``; this never raises for one cell. The model predicts
    one device: a cell spread over several GPUs keeps the one-GPU prediction ("would it fit
    on one?") but gets no ratio, since per-device peaks reached at different moments do not
    add up to a one-device peak.
    """
    from llmbench import REPO_ROOT

    columns: dict[str, Any] = dict.fromkeys(PREDICTED_COLUMNS)
    root = REPO_ROOT if repo_root is None else repo_root
    try:
        cell = Cell.from_mapping(result["cell"])
    except (KeyError, TypeError, ValueError):
        return columns
    settings = result.get("settings") or {}
    measurement = settings.get("measurement") or {}
    prediction = predict_cell(
        cell,
        _registry(str(root)) if models is None else models,
        root,
        bnb_4bit_compute_dtype=settings.get("bnb_4bit_compute_dtype") or "bfloat16",
        decode_tokens=int(measurement.get("decode_tokens") or DECODE_TOKENS),
        decode_warmup_tokens=int(measurement.get("decode_warmup_tokens") or 0),
        # quantized on load unless the cell read a pre-quantized checkpoint (a `pretrained`
        # one is taken as unquantized, as a Hub model's bf16 weights)
        prequantized=recorded_prequantized((result.get("model") or {}).get("checkpoint_kind")),
    )
    if prediction is None:
        return columns
    if isinstance(prediction, Unpredictable):
        columns[PREDICTED_ERROR] = prediction.reason
        return columns
    generate = prediction.generate_prefill
    columns.update(
        predicted_load_allocated_gib=gib(prediction.load.allocated_after),
        predicted_load_peak_allocated_gib=gib(prediction.load.peak_allocated),
        predicted_prefill_peak_allocated_gib=gib(prediction.prefill.peak_allocated),
        predicted_decode_peak_allocated_gib=gib(prediction.decode.peak_allocated),
        predicted_generate_prefill_peak_allocated_gib=None
        if generate is None
        else gib(generate.peak_allocated),
        predicted_method=prediction.method,
    )
    # A phase that failed (OOM, error) recorded the peak reached before failing: no ratio.
    failed = stopped_in(result)
    load = phase_record(result, "load") or {}
    if len(load.get("devices") or []) > 1:
        return columns
    # load: what stays allocated after it, and its peak (the transient of loading)
    after_load = _measured_peak(result, "load", "allocated_bytes")
    if after_load is not None and failed != "load":
        columns["load_measured_over_predicted"] = after_load / prediction.load.allocated_after
    load_peak = _measured_peak(result, "load")
    if load_peak is not None and failed != "load":
        columns["load_peak_measured_over_predicted"] = load_peak / prediction.load.peak_allocated
    phases = [("prefill", prediction.prefill), ("decode", prediction.decode)]
    if generate is not None:
        phases.append(("generate_prefill", generate))
    for phase, predicted in phases:
        measured = _measured_peak(result, phase)
        # a cell that failed in generate stopped in generate_prefill or after it: no ratio
        if measured is not None and not (failed and phase.startswith(failed)):
            columns[f"{phase}_measured_over_predicted"] = measured / predicted.peak_allocated
    return columns
