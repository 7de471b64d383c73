"""Cells that cannot run whatever the memory, known before a run: the pipeline's own rule
(``llmbench.grid.support.static_unsupported``) and the library refusals the predictor knows
from GPU runs (``cannot_run``); ``flag_cannot_run`` marks a prediction row ``unsupported``.

Imports ``llmbench.grid`` and ``llmbench.predict.architecture``.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from llmbench.grid.spec import Cell
from llmbench.grid.support import positions_needed, static_unsupported
from llmbench.measure.efficiency import config_sliding_window

_FLOAT32_REFUSED = {
    "flash_attention_2": "flash-attn's kernels take",
    "sdpa-flash": "PyTorch's flash SDPA kernel takes",
    "sdpa-cudnn": "PyTorch's cuDNN SDPA kernel takes",
}


_DECODE_REFUSED = {
    ("flash_attention_2", "graph"): (
        "decode_mode graph with flash_attention_2: the decode step cannot be captured as a CUDA "
        "graph (transformers' flash-attention path under a StaticCache's padding mask reads "
        "sequence lengths on the host: 'operation not permitted when stream is capturing'; all "
        "16 such cells (bf16 and nf4) of results/reference/h200/decode are unsupported)"
    ),
    ("sdpa-flash", "static"): (
        "PyTorch's flash SDPA kernel takes no attention mask, and a StaticCache decode step "
        "passes one (its unwritten positions masked): 'No available kernel' in decode "
        "(results/reference/h200/decode, 4 cells)"
    ),
}
_DECODE_REFUSED["sdpa-flash", "graph"] = _DECODE_REFUSED["sdpa-flash", "static"]


HYBRID_MODEL_TYPES = ("gemma2", "gemma3", "gemma3_text", "cohere2")
"""Families whose layers mix sliding-window and full attention (transformers 5.17
``layer_types``): their full-attention layers take no mask at any length."""


def _window(config: Mapping[str, Any]) -> tuple[int | None, bool]:
    """(sliding window in tokens or None: ``measure.efficiency.config_sliding_window``, whether some
    layers attend fully anyway)."""
    window = config_sliding_window(config)
    kinds = set(config.get("layer_types") or ())
    hybrid = config.get("model_type") in HYBRID_MODEL_TYPES or len(kinds) > 1
    return window, hybrid


LEARNED_POSITION_MODEL_TYPES = ("opt",)
"""Families with a learned absolute position embedding of ``max_position_embeddings`` rows
(OPT's ``OPTLearnedPositionalEmbedding``): a position past it indexes out of the table."""


def _positions_exceeded(
    cell: Cell, config: Mapping[str, Any] | None, decode_tokens: int
) -> str | None:
    """Why a learned-position model cannot run this length, or None: the positions the run
    feeds (``grid.support.positions_needed``, the worker's count) past the table. Measured:
    the four OPT-6.7B cells of 2048 tokens (its ``max_position_embeddings``) with 32 decode
    tokens in results/reference/h200/families failed in decode ('CUDA error: device-side
    assert triggered', or cuDNN's error after it)."""
    if not config or config.get("model_type") not in LEARNED_POSITION_MODEL_TYPES:
        return None
    limit = config.get("max_position_embeddings")
    positions = positions_needed(cell, decode_tokens)
    if not isinstance(limit, int) or positions <= limit:
        return None
    return (
        f"{config['model_type']}'s learned position embedding has {limit} rows "
        f"(max_position_embeddings); {cell.seq} prompt tokens and {decode_tokens} decoded need "
        f"{positions} positions (a run fails with a CUDA device-side assert)"
    )


def _efficient_refuses_gqa(cell: Cell, config: Mapping[str, Any] | None) -> str | None:
    """Why forced memory-efficient SDPA cannot run this model's prefill, or None: a model
    with grouped-query attention gets ``enable_gqa=True`` (no repeated K/V) whenever a layer's
    prefill has no mask (transformers 5.17 ``use_gqa_in_sdpa``; ``_ignore_causal_mask_sdpa``
    builds a sliding-window mask only once ``kv_length >= sliding_window``, and never for a
    hybrid family's full-attention layers), and PyTorch's efficient kernel refuses unequal
    head counts (``sdp_utils.cpp``; measured: 'No available kernel' in prefill, 4 cells of
    results/reference/h200/decode)."""
    if cell.attn != "sdpa-efficient" or not config:
        return None
    heads = config.get("num_attention_heads")
    kv_heads = config.get("num_key_value_heads") or heads
    window, hybrid = _window(config)
    if not heads or kv_heads == heads or (window and cell.seq >= window and not hybrid):
        return None
    return (
        f"PyTorch's memory-efficient SDPA kernel refuses grouped-query attention "
        f"({heads} query heads, {kv_heads} key/value heads), which transformers passes "
        "unrepeated to a mask-free prefill: 'No available kernel' (a run records the cell "
        "as unsupported)"
    )


def _flash_refuses_window_mask(
    cell: Cell, config: Mapping[str, Any] | None, decode_tokens: int
) -> str | None:
    """Why forced flash SDPA cannot run this cell, or None: PyTorch's flash kernel takes no
    mask, and a sliding-window layer gets one once its keys reach the window
    (``kv_length >= sliding_window``: in prefill at ``seq >= window``, in decode at the last
    step, ``seq + decode_tokens - 1 >= window``)."""
    if cell.attn != "sdpa-flash" or not config:
        return None
    window, _ = _window(config)
    if not window or cell.seq + max(decode_tokens - 1, 0) < window:
        return None
    phase = "prefill" if cell.seq >= window else "decode"
    return (
        f"PyTorch's flash SDPA kernel takes no attention mask, and the {window}-token sliding "
        f"window is reached in {phase} (transformers then passes a mask): 'No available "
        "kernel' (a run records the cell as unsupported)"
    )


def cannot_run(
    cell: Cell,
    device: str = "cuda",
    config: Mapping[str, Any] | None = None,
    decode_tokens: int = 0,
    device_map: str | None = None,
) -> str | None:
    """Why ``cell`` cannot run on ``device`` ("cuda" or "cpu") whatever the memory, or None.
    ``config``: the model's config.json, where known (head counts and sliding window);
    ``decode_tokens``: how many tokens the run decodes (whether decode reaches the window);
    ``device_map``: the device_map it loads with (None: the cell's, ``auto`` at ``config``).

    The pipeline's own rule first (``llmbench.grid.support.static_unsupported``: flash-attn on
    the CPU); then rules of the predictor only, each a refusal the libraries made on a GPU:
    flash and cuDNN attention kernels refuse float32 (the H100 reference's
    nf4/flash_attention_2/float32 cell: "FlashAttention only support fp16 and bf16 data
    type"); a flash_attention_2 decode step cannot be captured as a CUDA graph; forced flash
    SDPA cannot run a StaticCache decode, nor past a sliding window; forced memory-efficient
    SDPA cannot run a grouped-query model's mask-free prefill; a learned-position model (OPT)
    cannot run past its ``max_position_embeddings``. The pipeline still attempts
    such a cell and records it ``unsupported`` from the library's error; the predictor says so
    before it runs."""
    reason = static_unsupported(cell, device, device_map=device_map)
    if reason is None and cell.dtype == "float32" and cell.attn in _FLOAT32_REFUSED:
        reason = (
            f"{_FLOAT32_REFUSED[cell.attn]} only float16 or bfloat16 (a run records the cell "
            "as unsupported)"
        )
    if reason is None:
        reason = _DECODE_REFUSED.get((cell.attn, cell.decode_mode))
    return (
        reason
        or _efficient_refuses_gqa(cell, config)
        or _flash_refuses_window_mask(cell, config, decode_tokens)
        or _positions_exceeded(cell, config, decode_tokens)
    )


def flag_cannot_run(
    row: dict[str, Any],
    device: str = "cuda",
    config: Mapping[str, Any] | None = None,
    decode_tokens: int = 0,
    configured_device_map: str = "auto",
) -> dict[str, Any]:
    """``row`` with ``fits: unsupported`` and the ``reason`` when its cell cannot run, its
    memory numbers (every ``*_gib``) and peak description blanked (the table prints "-"):
    they would describe a run that does not happen (the measured seed cell failed at 5.30
    GiB, before any predicted peak). ``config``, ``decode_tokens``: as :func:`cannot_run`'s;
    ``configured_device_map``: the config's ``device_map``."""
    cell = Cell.from_mapping(row)
    device_map = cell.device_map_policy(configured_device_map)
    reason = cannot_run(cell, device, config, decode_tokens, device_map)
    if reason is not None:
        for key in [k for k in row if k.endswith("_gib")]:
            row[key] = None
        for key in ("peak_phase", "peak_stage", "dominant_term"):
            if key in row:
                row[key] = ""
        row.update(fits="unsupported", reason=reason)
    row.setdefault("reason", "")  # a stable CSV column
    return row
