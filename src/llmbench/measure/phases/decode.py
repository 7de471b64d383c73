"""The decode phase: untimed warm-up steps, then time to first token and timed steps.

Owns: ``warm_up`` (finds the SDPA backend chosen for decode), ``DecodeResult``/
``time_decode`` (latency of each step inside the tracker's and the energy meter's ``decode``
region, in the cell's ``decode_mode``) and ``latency_record``.
May import: ``llmbench.grid``, ``llmbench.measure`` (attention, kvcache, timing) and
``llmbench.measure.phases`` (generation, load, setup, static).

decode_mode ``eager`` grows a DynamicCache (``generation.Generation``); ``static`` and
``graph`` decode into a ``StaticCache`` (``static.StaticGeneration``). A cell with a
quantized ``kv_cache`` (eager only) prefills into transformers' ``QuantizedCache`` and decodes
from it; its stored bytes and check are taken after the last timed step. ``graph`` captures one
step, then for ``TRUTH_STEPS`` cache states compares a replay's logits with an eager step's
from the same state (``static.truth_steps``; the ``decode_truth`` check), then times further
replays.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from llmbench.grid.spec import Cell
from llmbench.measure import attention, kvcache
from llmbench.measure.phases.generation import Generation
from llmbench.measure.phases.load import Loaded
from llmbench.measure.phases.setup import Session
from llmbench.measure.phases.static import StaticGeneration, logits_agree, truth_steps
from llmbench.measure.timing import LatencyStats

TRUTH_STEPS = 4
"""Graph replays whose logits are compared with eager static-cache steps."""

TRUTH_RTOL = {"bfloat16": 1.6e-2, "float16": 1e-3, "float32": 1.3e-6}
"""Largest |graph - eager| logit over the step's largest |eager| logit, per logits dtype:
the default ``rtol`` of ``torch.testing.assert_close`` for that dtype (PyTorch's own bar for
"the same computation in this dtype"); twice eager's difference from itself when larger."""

TRUTH_RTOL_OTHER = TRUTH_RTOL["bfloat16"]
"""The bar for a logits dtype :data:`TRUTH_RTOL` does not list (none of the grid's dtypes):
the loosest of them, bfloat16's, so an unlisted dtype is never held to a stricter bar than
the 8-bit-mantissa one."""


def _generation(
    loaded: Loaded, prefill_kwargs: dict[str, Any], decode_mode: str, max_new_tokens: int
) -> Generation | StaticGeneration:
    """A fresh greedy generation from the prompt: for ``eager`` a DynamicCache, or the cell's
    quantized cache (``Loaded.new_cache``), else a StaticCache of prompt + ``max_new_tokens``
    positions."""
    if decode_mode == "eager":  # a quantized cell's prefill fills a fresh quantized cache
        return Generation(
            loaded.model, loaded.input_ids, {**prefill_kwargs, **loaded.cache_kwargs()}
        )
    return StaticGeneration(loaded.model, loaded.input_ids, prefill_kwargs, max_new_tokens)


def warm_up(
    loaded: Loaded,
    prefill_kwargs: dict[str, Any],
    tokens: int,
    uses_sdpa: bool,
    on_sdpa_choice: Callable[[dict[str, str]], None],
    decode_mode: str = "eager",
) -> None:
    """Generate ``tokens`` tokens untimed (nothing for 0), through the cache of
    ``decode_mode`` (a static cache for ``static`` and ``graph``), eagerly.

    For sdpa cells, ``on_sdpa_choice`` gets the backend PyTorch picks for a one-token query
    as soon as the first step has run, so a later failing step still leaves it recorded.
    """
    if not tokens:
        return
    warm = _generation(loaded, prefill_kwargs, decode_mode, tokens)
    warm.prefill()
    with attention.record_sdpa_choice(uses_sdpa) as decode_chosen:
        warm.step()  # untimed: the decode choice is recorded here, not in timed steps
    if uses_sdpa:
        on_sdpa_choice(decode_chosen)
    for _ in range(tokens - 1):
        warm.step()
    del warm  # its cache is freed before the timed generation builds its own


@dataclass(frozen=True)
class DecodeResult:
    """Time to first token and each later step (ms), and the dtype the cache held (a quantized
    cache: its residual's, the model dtype).

    Graph mode adds the capture time (s) and the truth check's record."""

    ttft_ms: float
    step_ms: list[float]
    kv_dtype: str
    capture_s: float | None = None
    truth: dict[str, Any] | None = None
    kv_cache: dict[str, Any] | None = None
    """A quantized cache's stored bytes and check after the last timed step (``kvcache``)."""

    @property
    def steps(self) -> int:
        """Timed decode steps (the first token comes from the prefill)."""
        return len(self.step_ms)


def time_decode(
    loaded: Loaded,
    prefill_kwargs: dict[str, Any],
    measurement: Mapping[str, Any],
    cell: Cell,
    session: Session,
) -> DecodeResult:
    """Time the prefill of a fresh generation (TTFT), then ``measurement["decode_tokens"] - 1``
    steps inside the tracker's and the energy meter's ``decode`` region.

    In ``graph`` mode the capture (with its warm-up steps) and the truth-check replays run
    inside the ``decode`` memory phase but outside the timed steps and the energy region.

    Raises what the model raises, CaptureUnsupported for a step that cannot be captured, and
    MemoryBudgetExceeded when decode outgrew a CPU budget.
    """
    if cell.decode_mode == "graph":
        return _time_graph_decode(loaded, prefill_kwargs, measurement, cell, session)
    tracker, stopwatch, energy = session.tracker, session.stopwatch, session.energy
    steps = measurement["decode_tokens"] - 1
    generation = _generation(loaded, prefill_kwargs, cell.decode_mode, steps + 1)
    ttft_ms = stopwatch.time(generation.prefill)[1]
    step_ms = []
    with tracker.phase("decode"), energy.measure("decode", stopwatch.synchronize):
        for _ in range(steps):
            step_ms.append(stopwatch.time(generation.step)[1])
    kv_dtype = generation.kv_dtype() or cell.dtype
    kv_cache = None
    if cell.kv_quantization is not None:
        kv_cache = {
            "stored_bytes": kvcache.stored_bytes(generation.cache),
            "check": kvcache.check_kv_cache(generation.cache, cell),
        }
    del generation
    return DecodeResult(ttft_ms, step_ms, kv_dtype, kv_cache=kv_cache)


def _time_graph_decode(
    loaded: Loaded,
    prefill_kwargs: dict[str, Any],
    measurement: Mapping[str, Any],
    cell: Cell,
    session: Session,
) -> DecodeResult:
    """Prefill (TTFT), capture, truth-check steps, timed replays."""
    tracker, stopwatch, energy = session.tracker, session.stopwatch, session.energy
    warmup = max(1, measurement["decode_warmup_tokens"])
    steps = measurement["decode_tokens"] - 1
    generation = StaticGeneration(
        loaded.model,
        loaded.input_ids,
        prefill_kwargs,
        warmup + TRUTH_STEPS + steps + 1,  # eager truth steps are rewound
        keep_logits=True,
    )
    ttft_ms = stopwatch.time(generation.prefill)[1]
    step_ms = []
    with tracker.phase("decode"):
        generation.capture(warmup)
        runs = truth_steps(generation, TRUTH_STEPS)
        logits_dtype = str(loaded.model.dtype).removeprefix("torch.")
        rtol = TRUTH_RTOL.get(logits_dtype, TRUTH_RTOL_OTHER)
        truth = logits_agree(runs["eager"], runs["eager_repeat"], runs["graph"], rtol)
        with energy.measure("decode", stopwatch.synchronize):
            for _ in range(steps):
                step_ms.append(stopwatch.time(generation.step)[1])
    kv_dtype = generation.kv_dtype() or cell.dtype
    capture_s = generation.capture_s
    del generation
    return DecodeResult(ttft_ms, step_ms, kv_dtype, capture_s, truth)


def latency_record(
    decoded: DecodeResult, stats: LatencyStats, cell: Cell, measurement: Mapping[str, Any]
) -> dict[str, Any]:
    """What decode adds to the ``latency`` record: TTFT, per-token latency (ms), tokens/s."""
    return {
        "decode_mode": cell.decode_mode,
        "graph_capture_s": decoded.capture_s,
        "ttft_ms": decoded.ttft_ms,
        "decode_per_token": stats.to_dict(),
        "decode_tokens": measurement["decode_tokens"],
        "decode_tokens_per_s": cell.batch * decoded.steps / (sum(decoded.step_ms) / 1000.0),
        "kv_cache_dtype": decoded.kv_dtype,
    }
