"""Attention: forcing one SDPA backend, and proving which implementation ran.

transformers dispatches every attention layer through ``ALL_ATTENTION_FUNCTIONS`` (eager is
the modeling file's own default). Counting the calls that reach the requested implementation
during a forward shows it really ran, layer by layer, instead of trusting a config field.
"""

from __future__ import annotations

import sys
from collections.abc import Iterator
from contextlib import contextmanager, nullcontext
from typing import Any

SDPA_BACKENDS = {
    "flash": "FLASH_ATTENTION",
    "cudnn": "CUDNN_ATTENTION",
    "efficient": "EFFICIENT_ATTENTION",
    "math": "MATH",
}


def sdpa_context(backend: str | None) -> Any:
    """Context that restricts PyTorch SDPA to one backend (no-op for None)."""
    if backend is None:
        return nullcontext()
    from torch.nn.attention import SDPBackend, sdpa_kernel

    return sdpa_kernel(getattr(SDPBackend, SDPA_BACKENDS[backend]))


def _attention_module(model: Any) -> Any:
    for module in model.modules():
        if type(module).__name__.endswith("Attention") and hasattr(module, "layer_idx"):
            return module
    return None


@contextmanager
def count_attention_calls(model: Any, implementation: str) -> Iterator[dict[str, int]]:
    """Count calls that reach ``implementation`` through transformers' attention dispatch.

    Yields a dict whose ``calls`` grows during the body; one forward should make one call
    per decoder layer.
    """
    from transformers.modeling_utils import AttentionInterface

    mapping = AttentionInterface._global_mapping
    counter = {"calls": 0}
    had_entry = implementation in mapping
    original = mapping.get(implementation)
    if original is None and implementation == "eager":
        module = _attention_module(model)
        original = getattr(sys.modules[type(module).__module__], "eager_attention_forward", None)
    if original is None:  # unknown dispatch: report no count rather than a wrong one
        counter["calls"] = -1
        yield counter
        return

    def counted(*args: Any, **kwargs: Any) -> Any:
        counter["calls"] += 1
        return original(*args, **kwargs)

    mapping[implementation] = counted
    try:
        yield counter
    finally:
        if had_entry:
            mapping[implementation] = original
        else:
            del mapping[implementation]


def flash_attn_info() -> dict[str, Any] | None:
    """Version and location of the flash-attn package if importable, else None."""
    try:
        import flash_attn
    except Exception:
        return None
    return {"version": getattr(flash_attn, "__version__", None), "path": flash_attn.__file__}
