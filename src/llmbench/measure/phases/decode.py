"""The decode phase: untimed warm-up steps, then time to first token and timed steps.

Owns: ``warm_up`` (finds the SDPA backend chosen for decode), ``DecodeResult``/
``time_decode`` (latency of each step inside the tracker's and the energy meter's ``decode``
region) and ``latency_record``.
May import: ``llmbench.grid``, ``llmbench.measure`` (attention, timing) and
``llmbench.measure.phases`` (generation, load, setup).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from llmbench.grid.spec import Cell
from llmbench.measure import attention
from llmbench.measure.phases.generation import Generation
from llmbench.measure.phases.load import Loaded
from llmbench.measure.phases.setup import Session
from llmbench.measure.timing import LatencyStats


def warm_up(
    loaded: Loaded,
    prefill_kwargs: dict[str, Any],
    tokens: int,
    uses_sdpa: bool,
    on_sdpa_choice: Callable[[dict[str, str]], None],
) -> None:
    """Generate ``tokens`` tokens untimed (nothing for 0).

    For sdpa cells, ``on_sdpa_choice`` gets the backend PyTorch picks for a one-token query
    as soon as the first step has run, so a later failing step still leaves it recorded.
    """
    if not tokens:
        return
    warm = Generation(loaded.model, loaded.input_ids, prefill_kwargs)
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
    """Time to first token and each later step (ms), and the dtype the cache held."""

    ttft_ms: float
    step_ms: list[float]
    kv_dtype: str

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

    Raises what the model raises, and MemoryBudgetExceeded when decode outgrew a CPU budget.
    """
    tracker, stopwatch, energy = session.tracker, session.stopwatch, session.energy
    generation = Generation(loaded.model, loaded.input_ids, prefill_kwargs)
    ttft_ms = stopwatch.time(generation.prefill)[1]
    step_ms = []
    with tracker.phase("decode"), energy.measure("decode", stopwatch.synchronize):
        for _ in range(measurement["decode_tokens"] - 1):
            step_ms.append(stopwatch.time(generation.step)[1])
    kv_dtype = generation.kv_dtype() or cell.dtype
    del generation
    return DecodeResult(ttft_ms, step_ms, kv_dtype)


def latency_record(
    decoded: DecodeResult, stats: LatencyStats, cell: Cell, measurement: Mapping[str, Any]
) -> dict[str, Any]:
    """What decode adds to the ``latency`` record: TTFT, per-token latency (ms), tokens/s."""
    return {
        "ttft_ms": decoded.ttft_ms,
        "decode_per_token": stats.to_dict(),
        "decode_tokens": measurement["decode_tokens"],
        "decode_tokens_per_s": cell.batch * decoded.steps / (sum(decoded.step_ms) / 1000.0),
        "kv_cache_dtype": decoded.kv_dtype,
    }
