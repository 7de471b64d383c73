"""Static-cache decode traced as the worker runs it: ``decode_mode`` ``static`` (eager
launches) and ``graph`` (one step captured as a CUDA graph and replayed), and the bytes a
cache holds.

- **static**: ``measure.phases.decode.time_decode``'s ``StaticGeneration`` of ``prompt +
  decode_tokens`` positions: its prefill, peaks reset, then the steps. Every step holds the
  same tensors (the cache and the mask never grow), so two are traced.
- **graph**: ``measure.phases.decode._time_graph_decode``: a ``StaticGeneration`` of
  ``warmup + TRUTH_STEPS + decode_tokens`` positions that keeps the last step's logits in
  float32 (``keep_logits``), its prefill, peaks reset, then warm-up steps on a side stream, the
  captured step, and the truth check's eager steps (each rewound) between replays. A replay
  allocates nothing, and the captured step allocates what an eager step does (into the
  graph's private pool, which the allocated bytes count), so the phase's peak is one eager
  step's with the truth check's saved input token alive; the caller adds one cuBLAS workspace
  per stream that ran a matmul (``constants.decode_cublas_workspaces``).

Imports torch, ``llmbench.measure.phases`` (generation, static, decode) and
``llmbench.predict`` (constants, trace.livebytes, trace.cuda).
"""

from __future__ import annotations

from typing import Any

import torch

from llmbench.measure.phases.decode import TRUTH_STEPS
from llmbench.measure.phases.generation import prefill_kwargs
from llmbench.predict.constants import granule
from llmbench.predict.trace.cuda import padding_ones
from llmbench.predict.trace.livebytes import LiveBytes


def cache_bytes(cache: Any) -> int:
    """Bytes of a transformers cache's tensors (each layer's ``keys`` / ``values`` and any
    other tensor it holds), each storage once, 512-byte rounded; 0 for no cache."""
    storages: dict[int, int] = {}
    for layer in getattr(cache, "layers", None) or []:
        for value in vars(layer).values():
            if isinstance(value, torch.Tensor) and value.device.type == "meta":
                storage = value.untyped_storage()
                storages[id(storage)] = granule(storage.nbytes())
    return sum(storages.values())


def static_decode(
    live: LiveBytes, model: Any, prompt: torch.Tensor, decode_tokens: int
) -> tuple[int, str, int]:
    """decode_mode ``static`` (module docstring): (peak bytes without the cuBLAS workspace,
    op at the peak, cache bytes)."""
    from llmbench.measure.phases.static import StaticGeneration

    return _two_steps(
        live,
        StaticGeneration(model, prompt, prefill_kwargs(model), decode_tokens),
        prompt.shape[1],
        hold_token=False,
    )


def graph_decode(
    live: LiveBytes, model: Any, prompt: torch.Tensor, decode_tokens: int, warmup_tokens: int
) -> tuple[int, str, int]:
    """decode_mode ``graph`` (module docstring) with ``warmup_tokens`` warm-up steps (the
    measurement's ``decode_warmup_tokens``; at least one runs): (peak bytes without the cuBLAS
    workspaces, op at the peak, cache bytes)."""
    from llmbench.measure.phases.static import StaticGeneration

    positions = max(1, warmup_tokens) + TRUTH_STEPS + decode_tokens
    # the first step stands for a warm-up step (side stream) and the captured one; the second
    # for a truth-check step, whose saved input token truth_steps holds for its rewind
    return _two_steps(
        live,
        StaticGeneration(model, prompt, prefill_kwargs(model), positions, keep_logits=True),
        prompt.shape[1],
        hold_token=True,
    )


def _two_steps(
    live: LiveBytes, generation: Any, seq: int, *, hold_token: bool
) -> tuple[int, str, int]:
    """A ``StaticGeneration``'s prefill of ``seq`` tokens, peaks reset, then two eager steps
    (the second with a copy of its input token alive when ``hold_token``): (peak, op at the
    peak, cache bytes). Every step holds the same tensors, so two stand for all."""
    with padding_ones(seq):
        generation.prefill()
    live.reset_peak()
    saved = None
    for written in (seq + 1, seq + 2):  # the step marks its position before the forward
        if hold_token and written == seq + 2:
            saved = generation.token.clone()
        with padding_ones(written):
            generation.eager_step()
    kv = cache_bytes(generation.cache)
    peak, at = live.peak, live.peak_at
    del saved, generation
    return peak, at, kv
