"""Prediction: the frontier a search starts from, and its corrections from measured probes.

Owns the predictor glue: the memory model (:func:`default_predictor`, from
``llmbench.predict``; any callable in tests), the capacity a probe's peak must stay under
(:func:`capacity_bytes`, :func:`visible_device_totals`, :func:`cuda_context_bytes`), a model's
architecture config.json (:func:`model_config`) and :class:`Prediction` (the predicted
frontier, recalibrated after each probe; or, on one CUDA device without a budget,
:func:`simulated_prediction`: every grid value decided by the allocator simulator, exact to
the step on the committed H100 frontier). May import: :mod:`.search`, :mod:`.planning`,
:mod:`.simulated`, ``llmbench.host`` (NVML, device sizes), ``llmbench.predict`` (lazily,
inside the functions that use it: a frontier plan that never predicts does not import the
memory model).
"""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from llmbench import GIB
from llmbench.frontier.planning import Search
from llmbench.frontier.search import ProbeRecord, predicted_index
from llmbench.host.devicesize import torch_total

Predictor = Callable[..., int]
"""``predicted_peak_bytes(model_config, cell, *, bnb_4bit_compute_dtype) -> int``."""


def default_predictor(device: str = "cpu", decode_tokens: int | None = None) -> Predictor:
    """The prediction of what the budget is checked against, from :mod:`llmbench.predict`.

    CPU: the predicted peak allocated (compared with the RSS-growth budget). CUDA:
    the predicted peak *reserved* bytes (``predict(...).reserved_need``: allocated + allocator
    slack), which is what ``set_per_process_memory_fraction`` and the device's capacity
    limit. Both are the hand replay's: for a cell it does not replay (another family than
    Mistral / Llama / Qwen2, a sliding window the cell reaches:
    ``llmbench.predict.method.hand_replay_reason``) the predictor raises ``ValueError`` with
    that reason, and the search bisects without a prediction (:meth:`Prediction.make`
    raises; the search's note says why), never from another family's formula.
    ``decode_tokens``: the decode steps the probes run (None: ``predict.DECODE_TOKENS``).
    """
    from llmbench import predict as model

    tokens = decode_tokens if decode_tokens is not None else model.DECODE_TOKENS

    def predicted(model_config, cell, *, bnb_4bit_compute_dtype="bfloat16"):
        reason = model.hand_replay_reason(model_config, cell, tokens)
        if reason is not None:
            raise ValueError(f"the hand replay does not apply: {reason}")
        prediction = model.predict(
            model_config, cell, bnb_4bit_compute_dtype=bnb_4bit_compute_dtype, decode_tokens=tokens
        )
        return int(prediction.reserved_need if device == "cuda" else prediction.peak_allocated)

    return predicted


OUTSIDE_ALLOCATOR_BYTES = {"sdpa": 728_563_712}
"""Device memory a probe process holds outside PyTorch's allocator from its prefill on (CUDA
context, kernel images, cuBLAS handle), by attention implementation: NVML used - reserved -
the driver's unreported memory (``llmbench.host.devicesize.NVML_UNREPORTED_BYTES``) in every
committed H100 and H200 probe's prefill phase (torch 2.11, driver 580; the same on both):
728,563,712 with sdpa, :data:`OUTSIDE_ALLOCATOR_DEFAULT_BYTES` otherwise."""

OUTSIDE_ALLOCATOR_DEFAULT_BYTES = 720_175_104
"""As :data:`OUTSIDE_ALLOCATOR_BYTES`, for eager and flash_attention_2 (687 MiB)."""


def simulator_capacity(nvml_total: int, attn: str) -> int:
    """Bytes PyTorch's segments may take on a device of NVML total ``nvml_total`` in a probe
    of attention ``attn``: torch's total (``llmbench.host.devicesize.torch_total``: NVML's less
    the memory the driver keeps) less the memory outside the allocator."""
    outside = OUTSIDE_ALLOCATOR_BYTES.get(attn, OUTSIDE_ALLOCATOR_DEFAULT_BYTES)
    return torch_total(nvml_total) - outside


def simulated_prediction(
    search: Search,
    values: list[int],
    *,
    config: Mapping[str, Any],
    measurement: Mapping[str, Any],
    capacity: int,
    compute_dtype: str,
) -> Prediction:
    """The frontier found by :func:`llmbench.frontier.simulated.simulated_frontier` (each
    value decided by tracing the probe cell under ``measurement`` and simulating the caching
    allocator on ``capacity`` bytes), computed in a child process that sees no GPU
    (:func:`~llmbench.frontier.simulated.frontier_in_child`); not recalibrated by probes (it
    predicts outcomes, not a scaled peak). Raises ``RuntimeError`` when the child fails
    (e.g. torch or transformers missing) or cannot decide every value."""
    from llmbench.frontier import simulated

    spec = {
        "search": search.to_dict(),
        "values": list(values),
        "config": dict(config),
        "measurement": dict(measurement),
        "capacity": int(capacity),
        "compute_dtype": compute_dtype,
    }
    outcome = simulated.frontier_in_child(spec)
    if outcome["status"] not in ("found", "above_max", "below_min"):
        raise RuntimeError(f"the simulation could not decide every value ({outcome['status']})")

    def unavailable(value: int) -> float:
        raise NotImplementedError("a simulated prediction has no peak per value")

    largest_ok = outcome["largest_ok"]
    frontier = largest_ok if largest_ok is not None else values[0] - 1
    return Prediction(values, unavailable, float(capacity), frontier, method="simulated")


def cuda_context_bytes() -> int:
    """Device memory (bytes) a process holds outside PyTorch's allocator (CUDA context,
    kernels): ``llmbench.predict.CUDA_CONTEXT_BYTES``, measured on the H100."""
    from llmbench.predict import CUDA_CONTEXT_BYTES

    return int(CUDA_CONTEXT_BYTES)


def model_config(model_entry: Mapping[str, Any], base: Path | None = None) -> dict | None:
    """The architecture config.json of a model entry (random-weight or local pretrained)."""
    import json

    from llmbench import REPO_ROOT

    if "architecture" in model_entry:
        candidates = [Path(model_entry["architecture"])]
    else:
        candidates = [Path(model_entry.get("pretrained", "")) / "config.json"]
    for candidate in list(candidates):
        if not candidate.is_absolute():
            candidates.append((base or REPO_ROOT) / candidate)
    for candidate in candidates:
        if candidate.is_file():
            return json.loads(candidate.read_text())
    return None


def visible_device_totals() -> list[int]:
    """Total memory (bytes) of each CUDA device this process may use, read through NVML
    (the parent never initialises CUDA); empty where NVML sees none."""
    from llmbench.host import nvml

    visible = os.environ.get("CUDA_VISIBLE_DEVICES")
    if visible is None:
        handles = [nvml._call("nvmlDeviceGetHandleByIndex", i) for i in range(nvml.device_count())]
    else:
        handles = []
        for token in (t.strip() for t in visible.split(",") if t.strip()):
            if token.isdigit():
                handles.append(nvml._call("nvmlDeviceGetHandleByIndex", int(token)))
            else:
                handles.append(nvml.handle_for_uuid(token))
    totals = [nvml.device_total_bytes(h) for h in handles if h is not None]
    return [t for t in totals if t]


def capacity_bytes(settings: Mapping[str, Any], device: str) -> float | None:
    """What a probe's peak must stay under: the memory budget (per device, times the devices
    the model is spread over; on CUDA it caps the allocator's reserved bytes) or, on CUDA
    without one, the devices' total memory less a CUDA context each."""
    budget = settings.get("memory_budget_gib")
    if device == "cpu":
        return None if budget is None else budget * GIB
    totals = visible_device_totals()
    if settings.get("device_map") == "single":
        totals = totals[:1]
    if budget is not None:
        return budget * GIB * max(len(totals), 1)
    return float(sum(totals) - len(totals) * cuda_context_bytes()) if totals else None


@dataclass
class Prediction:
    """The predicted frontier of one search, and the pieces to correct it after each probe."""

    values: list[int]
    predict_bytes: Callable[[int], float]
    capacity_bytes: float
    frontier: int | None = None
    calibrations: list[dict[str, Any]] = field(default_factory=list)
    method: str = "analytic"
    """``analytic`` (peak bytes against the capacity, recalibrated) or ``simulated``."""

    @classmethod
    def make(
        cls,
        search: Search,
        values: list[int],
        *,
        predictor: Predictor,
        config: Mapping[str, Any],
        capacity: float,
        compute_dtype: str,
    ) -> Prediction:
        """Predict the frontier: the largest grid value whose predicted peak fits. Raises what
        the predictor raises at the smallest or the largest value (a cell the memory model
        refuses: ``default_predictor``), so that a search never starts from a prediction
        that cannot follow its probes (a length search past a sliding window)."""

        def predict_bytes(value: int) -> float:
            return float(
                predictor(config, search.cell(value), bnb_4bit_compute_dtype=compute_dtype)
            )

        for end in (values[0], values[-1]):  # raises before any probe
            predict_bytes(end)
        prediction = cls(values, predict_bytes, capacity)
        index = predicted_index(values, predict_bytes, capacity)
        prediction.frontier = values[index] if index >= 0 else values[0] - 1
        return prediction

    def recalibrate(self, record: ProbeRecord, exact: bool = True) -> float | None:
        """Correct the prediction with a measured probe and predict the frontier again.

        The measured peak is the quantity the budget is checked against, so allocator slack
        and host overheads are folded in. With one measurement the prediction is scaled by
        measured / predicted; with two or more, measured = a + b * predicted is fitted through
        the two measurements nearest the capacity (this also absorbs a constant offset, such
        as a CPU process's start-up growth). Only complete measurements are used (not the
        reading of a CUDA out-of-memory, which stops at the failed allocation).
        """
        if self.method == "simulated":
            return None
        if record.peak_bytes is None or not exact or record.status not in ("ok", "oom"):
            return None
        try:
            predicted = self.predict_bytes(record.value)
        except ValueError:  # the memory model refuses this value: the probe alone decides
            return None
        record.predicted_bytes = predicted
        if predicted <= 0 or record.peak_bytes <= 0:
            return None
        points = {c["value"]: c for c in self.calibrations}
        points[record.value] = {
            "value": record.value,
            "predicted_bytes": predicted,
            "measured_bytes": float(record.peak_bytes),
        }
        nearest = sorted(
            points.values(), key=lambda c: abs(c["measured_bytes"] - self.capacity_bytes)
        )[:2]
        fit = "ratio"
        scale, offset = record.peak_bytes / predicted, 0.0
        if len(nearest) == 2 and nearest[0]["predicted_bytes"] != nearest[1]["predicted_bytes"]:
            (x0, y0), (x1, y1) = ((c["predicted_bytes"], c["measured_bytes"]) for c in nearest)
            slope = (y1 - y0) / (x1 - x0)
            if slope > 0:
                fit, scale, offset = "affine", slope, y0 - slope * x0
        try:
            index = predicted_index(
                self.values, self.predict_bytes, (self.capacity_bytes - offset) / scale
            )
        except ValueError:  # refused at a value the bisection reached: no new frontier
            return None
        frontier = self.values[index] if index >= 0 else self.values[0] - 1
        points[record.value].update(fit=fit, scale=scale, offset_bytes=offset, frontier=frontier)
        self.calibrations = sorted(points.values(), key=lambda c: c["value"])
        return frontier
