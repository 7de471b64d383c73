"""Greedy decoding for the decode phase, without ``generate``'s overhead in the timings.

Owns: ``Generation`` and ``prefill_kwargs``. May import: nothing of llmbench.
"""

from __future__ import annotations

import inspect
from typing import Any


def prefill_kwargs(model: Any) -> dict[str, Any]:
    """``{"logits_to_keep": 1}`` where the model's forward accepts it (see ``Generation``)."""
    accepted = inspect.signature(model.forward).parameters
    return {"logits_to_keep": 1} if "logits_to_keep" in accepted else {}


class Generation:
    """Greedy generation through the KV cache, one token per step, as ``generate`` does it.

    The prefill keeps only the last position's logits when the model allows it
    (``logits_to_keep=1``, as ``generate`` does), so time to first token is not inflated by
    full-sequence logits.
    """

    def __init__(self, model: Any, input_ids: Any, prefill_kwargs: dict[str, Any]) -> None:
        self.model = model
        self.input_ids = input_ids
        self.prefill_kwargs = prefill_kwargs
        self.cache: Any = None
        self.token: Any = None

    def _advance(self, outputs: Any) -> None:
        self.cache = outputs.past_key_values
        self.token = outputs.logits[:, -1, :].argmax(dim=-1, keepdim=True)

    def prefill(self) -> None:
        """Run the prompt, fill the cache, pick the first new token."""
        self._advance(self.model(input_ids=self.input_ids, use_cache=True, **self.prefill_kwargs))

    def step(self) -> None:
        """Decode one token per sequence from the cache."""
        self._advance(self.model(input_ids=self.token, past_key_values=self.cache, use_cache=True))

    def kv_dtype(self) -> str | None:
        """dtype of the cached keys, when the cache exposes its layers."""
        layers = getattr(self.cache, "layers", None)
        keys = getattr(layers[0], "keys", None) if layers else None
        return None if keys is None else str(keys.dtype).removeprefix("torch.")
