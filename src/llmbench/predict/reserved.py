"""Predicted peak *reserved* bytes: each phase's allocation replay (``_Replay.log``, program
order) run through the caching-allocator simulator (``llmbench.predict.allocator``).

The replay is what ``predict`` replays for peak allocated: one phase from an empty cache, its
resident tensors first (the weights as one tensor, the KV cache of the earlier layers as one
tensor per layer and K/V), then the last decoder layer allocation by allocation. So the
simulated reserved bytes carry the replay's simplifications: the segments the weights really
occupy (one per tensor), the earlier layers' transients (freed, but leaving cached segments of
their sizes) and the phases before this one (memory pass, warm-up; the cache is not emptied
between them) are not simulated. On the H200 traces of Mistral-7B-v0.3 (b2/b4, 8192 tokens)
this gives the prefill peak reserved within -1.0 % for sdpa and FlashAttention-2 but -18 % for
eager, whose 31 earlier layers fragment the cache (see the report of issue 14).

Imports ``llmbench.grid.spec.Cell`` and ``llmbench.predict.allocator``, ``prediction``,
``replay``.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from llmbench.grid.spec import Cell
from llmbench.predict.allocator import Alloc, AllocatorConfig, Event, Free, simulate
from llmbench.predict.prediction import (
    _context,
    _decode_replays,
    _load_replay,
    _prefill_replay,
)


@dataclass(frozen=True)
class ReservedPrediction:
    """One phase under the simulated allocator: its peak reserved bytes (segments) and peak
    allocated bytes as torch counts them (whole blocks, so at least the replay's peak)."""

    phase: str
    peak_reserved: int
    peak_allocated: int


def allocator_events(log: list[tuple[str, int]]) -> list[Event]:
    """Simulator events of a ``_Replay.log``: ``(handle, bytes)`` allocates, ``(handle, -1)``
    frees. Re-allocating a live handle (``x = f(x)``) allocates the new tensor before freeing
    the old one, as Python does."""
    live: dict[str, tuple[str, int]] = {}
    events: list[Event] = []
    for serial, (name, nbytes) in enumerate(log):
        if nbytes >= 0:
            events.append(Alloc((name, serial), nbytes))
            if name in live:
                events.append(Free(live[name]))
            live[name] = (name, serial)
        elif name in live:
            events.append(Free(live.pop(name)))
    return events


def simulated_reserved(
    model_config: Mapping[str, Any],
    cell: Cell,
    *,
    config: AllocatorConfig | None = None,
    bnb_4bit_compute_dtype: str = "bfloat16",
    decode_tokens: int = 32,
    prequantized: bool = True,
) -> tuple[ReservedPrediction, ...]:
    """load, prefill, decode: each phase's replay through the simulator under ``config``
    (default: the default allocator), unlimited memory. Decode is the larger of its first
    and last step. Arguments as ``llmbench.predict.predict``."""
    ctx, weights = _context(model_config, cell, bnb_4bit_compute_dtype)
    phases = {
        "load": [_load_replay(ctx, weights, prequantized=prequantized)],
        "prefill": [_prefill_replay(ctx, weights)],
        "decode": _decode_replays(ctx, weights, decode_tokens),
    }
    predictions = []
    for phase, replays in phases.items():
        results = [simulate(allocator_events(r.log), config) for r in replays]
        predictions.append(
            ReservedPrediction(
                phase=phase,
                peak_reserved=max(r.peak_reserved for r in results),
                peak_allocated=max(r.peak_allocated for r in results),
            )
        )
    return tuple(predictions)


def predicted_peak_reserved(
    model_config: Mapping[str, Any], cell: Cell, *, config: AllocatorConfig | None = None
) -> int:
    """Largest simulated peak reserved bytes over the phases (``simulated_reserved``)."""
    return max(p.peak_reserved for p in simulated_reserved(model_config, cell, config=config))
