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


SDPA_BACKEND_NAMES = {
    -1: "error",
    0: "math",
    1: "flash",
    2: "efficient",
    3: "cudnn",
    4: "overrideable",
}
"""``torch.nn.attention.SDPBackend`` values, named as the ``sdpa-<backend>`` attention axis."""


@contextmanager
def record_sdpa_choice(enabled: bool) -> Iterator[dict[str, str]]:
    """Record the backend PyTorch's SDPA dispatcher picks for the calls made in the body.

    The first call with a one-token query is recorded as ``decode``, the first longer one as
    ``prefill``. The choice is asked of ``torch._fused_sdp_choice`` with the call's own
    tensors and flags (it honours a forced backend and allocates nothing); where PyTorch lacks
    it or the call cannot be read, the value says so instead of guessing.
    """
    record: dict[str, str] = {}
    if not enabled:
        yield record
        return
    import torch
    import torch.nn.functional as functional

    original = functional.scaled_dot_product_attention
    choose = getattr(torch, "_fused_sdp_choice", None)

    def recorded(query: Any, key: Any, value: Any, *args: Any, **kwargs: Any) -> Any:
        phase = "decode" if query.shape[-2] == 1 else "prefill"
        if phase not in record:
            record[phase] = _sdpa_choice(choose, query, key, value, args, kwargs)
        return original(query, key, value, *args, **kwargs)

    functional.scaled_dot_product_attention = recorded
    try:
        yield record
    finally:
        functional.scaled_dot_product_attention = original


def _sdpa_choice(
    choose: Any, query: Any, key: Any, value: Any, args: tuple, kwargs: dict[str, Any]
) -> str:
    if choose is None:
        return "unknown (torch has no _fused_sdp_choice)"
    if args:
        return "unknown (positional SDPA arguments)"
    try:
        index = choose(
            query,
            key,
            value,
            kwargs.get("attn_mask"),
            kwargs.get("dropout_p", 0.0),
            kwargs.get("is_causal", False),
            scale=kwargs.get("scale"),
            enable_gqa=kwargs.get("enable_gqa", False),
        )
    except Exception as exc:  # noqa: BLE001 - a record, never a reason to fail the cell
        return f"unknown ({type(exc).__name__}: {exc})"[:200]
    return SDPA_BACKEND_NAMES.get(int(index), f"unknown ({index})")


def flash_attn_info() -> dict[str, Any] | None:
    """Version and location of the flash-attn package if importable, else None."""
    try:
        import flash_attn
    except Exception:
        return None
    return {"version": getattr(flash_attn, "__version__", None), "path": flash_attn.__file__}
