"""Predicted peak *reserved* bytes: each phase's allocation replay (``_Replay.log``, program
order) run through the caching-allocator simulator (``llmbench.predict.allocator``).

The replay is what ``predict`` replays for peak allocated: one phase from an empty cache, its
resident tensors first (the weights as one tensor - the recorded H200 runs also load them with
one request, one 13,824 MiB segment for Mistral-7B in bf16 - and the KV cache of the earlier
layers), then the last decoder layer allocation by allocation. So the simulated reserved bytes
carry the replay's simplifications: the earlier layers' transients (freed, but leaving cached
segments of their sizes) and the phases before this one (memory pass, warm-up; the cache is
not emptied between them) are not simulated. Against the 84 ``ok`` H100 reference prefills (default
allocator) the simulated prefill peak reserved is, by quantization and attention:
none sdpa/flash -1.0..-0.1 % (the fit rule's reserved need: +3.0..+5.4 %), nf4 sdpa/flash
-1.7..+2.1 %, int8 sdpa/flash -12.4..+1.7 %, eager -20.1..+0.5 %. The shortfall is the
collapsed layers: fed the full recorded sequence, the simulator gives eager's peak exactly
(tests/predict/test_allocator_replayfile.py); the recorded eager b2/s8192 run reaches it at
allocator event 585 of 246,628, early in the first forward. So this is not yet a safe
(upper) bound and is not used by ``llmbench predict`` or the frontier.

Imports ``llmbench.grid.spec.Cell`` and ``llmbench.predict.allocator``, ``constants``,
``prediction``, ``replay``.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from llmbench.grid.spec import Cell
from llmbench.predict.allocator import Alloc, AllocatorConfig, Event, Free, simulate
from llmbench.predict.constants import DECODE_TOKENS
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
    decode_tokens: int = DECODE_TOKENS,
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
