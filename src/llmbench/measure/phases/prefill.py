"""The prefill phase: one tracked memory pass, then warm-up and timed passes.

Owns: ``PrefillPass``/``memory_pass`` (peak memory of the seed's forward, attention calls,
the SDPA backend chosen), ``time_prefill`` (latency and energy of repeated passes),
``latency_record`` and ``PrefillResult``.
May import: ``llmbench.grid``, ``llmbench.measure`` (attention, memory, timing) and
``llmbench.measure.phases`` (load, setup).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from llmbench.grid.spec import Cell
from llmbench.measure import attention
from llmbench.measure.memory import MemoryTracker
from llmbench.measure.phases.load import Loaded
from llmbench.measure.phases.setup import Session
from llmbench.measure.timing import LatencyStats, Stopwatch


@dataclass(frozen=True)
class PrefillPass:
    """What the memory pass saw (its memory is in the tracker's ``prefill`` phase)."""

    attention_calls: int
    """Calls that reached the requested attention implementation; -1 when not countable."""
    sdpa_choice: dict[str, str] | None
    """The SDPA backend PyTorch picked (``{"prefill": ...}``) for sdpa cells, else None."""
    logits_dtype: str

    def evidence(self, expected_calls: int, config_passed: bool) -> dict[str, Any]:
        """What the pass adds to the attention check: it passes when the config named the
        requested implementation and every decoder layer called it once."""
        return {
            "calls_in_one_forward": self.attention_calls,
            "expected_calls": expected_calls,
            "passed": config_passed and self.attention_calls in (-1, expected_calls),
            # which SDPA backend PyTorch picked (prefill here, decode in the decode warm-up)
            "sdpa_backend_chosen": self.sdpa_choice,
        }


def memory_pass(loaded: Loaded, cell: Cell, tracker: MemoryTracker) -> PrefillPass:
    """One forward over the prompt (the seed's) inside the tracker's ``prefill`` phase, into a
    fresh quantized cache for a cell with one (``Loaded.new_cache``).

    Raises what the forward raises, and MemoryBudgetExceeded when it outgrew a CPU budget.
    """
    uses_sdpa = cell.attn_implementation == "sdpa"
    with (
        tracker.phase("prefill"),
        attention.count_attention_calls(loaded.model, cell.attn_implementation) as calls,
        attention.record_sdpa_choice(uses_sdpa) as sdpa_chosen,
    ):
        outputs = loaded.model(input_ids=loaded.input_ids, **loaded.cache_kwargs())
        logits_dtype = str(outputs.logits.dtype).removeprefix("torch.")
        del outputs
    return PrefillPass(calls["calls"], sdpa_chosen if uses_sdpa else None, logits_dtype)


def time_prefill(loaded: Loaded, measurement: Mapping[str, Any], session: Session) -> LatencyStats:
    """``measurement["warmup"]`` untimed passes, then ``measurement["repeats"]`` timed ones
    (ms each) inside the energy meter's ``prefill`` region.

    Raises ValueError for no repeats (LatencyStats of no samples).
    """
    model, input_ids = loaded.model, loaded.input_ids

    def forward() -> None:
        # outputs dropped at once: no two passes alive together; a quantized-cache cell
        # quantizes the prompt's K/V into a fresh cache, as its generation's prefill does
        model(input_ids=input_ids, **loaded.cache_kwargs())

    for _ in range(measurement["warmup"]):
        forward()
    prefill_ms = []
    with session.energy.measure("prefill", session.stopwatch.synchronize):
        for _ in range(measurement["repeats"]):
            prefill_ms.append(session.stopwatch.time(forward)[1])
    return LatencyStats.from_samples(prefill_ms)


def latency_record(
    stats: LatencyStats, logits_dtype: str, cell: Cell, stopwatch: Stopwatch
) -> dict[str, Any]:
    """The ``latency`` record as of prefill: timer, pass latency (ms) and tokens per second."""
    return {
        "timer": stopwatch.method,
        "prefill": stats.to_dict(),
        "prefill_tokens_per_s": cell.batch * cell.seq / (stats.p50 / 1000.0),
        "logits_dtype": logits_dtype,
    }


@dataclass(frozen=True)
class PrefillResult:
    """The prefill phase's result: the memory pass and the timed passes' latency."""

    memory_pass: PrefillPass
    latency: LatencyStats
