"""``model.generate``'s own numbers, beside the manual decode loop's.

Owns: ``measure_generate``. May import: ``llmbench.grid`` and ``llmbench.measure.phases``
(load, setup).

A user who calls ``generate`` pays its per-step overhead (logits processors, stopping
criteria, cache bookkeeping) on top of the forward passes the manual loop times
(``phases.decode``). Two greedy calls from the cell's prompt, each in its own memory phase:

- ``generate_prefill``: ``max_new_tokens=1``, the prefill alone as ``generate`` runs it (it
  keeps the last position's logits only, ``logits_to_keep=1``): its peak allocated bytes and
  its wall time (time to first token through ``generate``);
- ``generate``: ``max_new_tokens=decode_tokens`` (``min_new_tokens`` the same, so an end-of-
  sequence token never stops it early): total time; per-token latency is
  ``(total - ttft) / (decode_tokens - 1)`` ms.

One untimed ``max_new_tokens=2`` call runs first (lazy initialisation). Decode mode is
``generate``'s default (a DynamicCache, eager launches): the out-of-the-box number.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from llmbench.grid.spec import Cell
from llmbench.measure.phases.load import Loaded
from llmbench.measure.phases.setup import Session


def measure_generate(
    loaded: Loaded, cell: Cell, measurement: Mapping[str, Any], session: Session
) -> dict[str, Any]:
    """Time ``model.generate`` (ms) in the tracker's ``generate_prefill`` and ``generate``
    phases; return the ``latency["generate"]`` record.

    Raises what ``generate`` raises (OutOfMemoryError included).
    """
    torch, tracker, stopwatch = session.torch, session.tracker, session.stopwatch
    model, input_ids = loaded.model, loaded.input_ids
    attention_mask = torch.ones_like(input_ids)
    pad = getattr(model.generation_config, "eos_token_id", None)
    pad = pad[0] if isinstance(pad, list) else pad

    def generate(tokens: int) -> None:
        model.generate(
            input_ids=input_ids,
            attention_mask=attention_mask,
            max_new_tokens=tokens,
            min_new_tokens=tokens,
            do_sample=False,
            pad_token_id=0 if pad is None else pad,
        )

    generate(2)
    with tracker.phase("generate_prefill"):
        ttft_ms = stopwatch.time(lambda: generate(1))[1]
    tokens = measurement["decode_tokens"]
    with tracker.phase("generate"):
        total_ms = stopwatch.time(lambda: generate(tokens))[1]
    return {
        "new_tokens": tokens,
        "ttft_ms": ttft_ms,
        "total_ms": total_ms,
        "ms_per_token": (total_ms - ttft_ms) / (tokens - 1) if tokens > 1 else None,
        "tokens_per_s": cell.batch * (tokens - 1) / ((total_ms - ttft_ms) / 1000.0)
        if tokens > 1 and total_ms > ttft_ms
        else None,
        "cache": "DynamicCache (generate's default)",
    }
