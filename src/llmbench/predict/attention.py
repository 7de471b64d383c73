"""Replay of the attention kernel of one decoder layer: which kernel a cell runs
(``attention_path``), and the tensors each kernel allocates on rotated q and cached K/V:
transformers' eager attention, PyTorch's SDPA math fallback, and the fused kernels (SDPA
flash, cuDNN, memory-efficient; FlashAttention-2) that keep no s x kv tensor.

Imports ``llmbench.grid.spec.Cell`` and ``llmbench.predict.architecture`` / ``replay``.
"""

from __future__ import annotations

from typing import NamedTuple

from llmbench.grid.spec import Cell
from llmbench.predict.architecture import Architecture
from llmbench.predict.replay import _Context, _Replay


def attention_path(cell: Cell, arch: Architecture, q_len: int) -> str:
    """Which kernel computes attention: eager, math, flash, efficient, cudnn or fa2.

    ``sdpa`` (no backend forced): transformers passes no mask for causal inputs without
    padding and ``enable_gqa=True`` for GQA; PyTorch then takes flash for fp16/bf16 (head_dim
    <= 256), and for float32 (which flash and cuDNN refuse) the memory-efficient kernel when
    there is no GQA, else the math fallback (the efficient kernel does not take
    ``enable_gqa``) - the H100 fp32 reference cell indeed materialises the scores.
    """
    if cell.attn == "eager":
        return "eager"
    if cell.attn == "flash_attention_2":
        return "fa2"
    backend = cell.sdpa_backend
    if backend is not None:
        return backend
    if cell.dtype != "float32" and arch.shape.head_dim <= 256:
        return "flash"
    return "efficient" if arch.n_rep == 1 else "math"


class _Sizes(NamedTuple):
    """Element counts of the attention tensors (``b`` = batch, ``h`` = heads)."""

    q_elems: int  # q and the output: b * h * q_len * head_dim
    kv_elems: int  # K or V as cached: b * kv_heads * kv_len * head_dim
    expanded: int  # K or V repeated to every query head: b * h * kv_len * head_dim
    scores: int  # b * h * q_len * kv_len


def _sizes(ctx: _Context, q_len: int, kv_len: int) -> _Sizes:
    s = ctx.arch.shape
    b = ctx.cell.batch
    return _Sizes(
        q_elems=b * s.num_heads * q_len * s.head_dim,
        kv_elems=b * s.num_kv_heads * kv_len * s.head_dim,
        expanded=b * s.num_heads * kv_len * s.head_dim,
        scores=b * s.num_heads * q_len * kv_len,
    )


def _attention(
    r: _Replay, ctx: _Context, q_len: int, kv_len: int, path: str
) -> tuple[str, str | None]:
    """The attention kernel on rotated q and cached K/V; returns (output, kept probabilities).

    The output is ``(b, q, heads*head_dim)`` in the model dtype. Eager returns its
    probabilities, which the decoder layer keeps (as ``_``) until it returns.
    """
    sizes = _sizes(ctx, q_len, kv_len)
    if path == "eager":
        return _eager_attention(r, ctx, sizes)
    if path == "math":
        return _math_attention(r, ctx, sizes, q_len, kv_len), None
    return _fused_attention(r, ctx, sizes, q_len, path), None


def _eager_attention(r: _Replay, ctx: _Context, sizes: _Sizes) -> tuple[str, str]:
    """transformers' ``eager_attention_forward``: ``repeat_kv`` (GQA), ``q @ k^T``,
    ``* scaling``, ``+ mask``, float32 softmax and the cast back, ``probs @ v``, transpose.
    Returns (output, probabilities)."""
    a = ctx.a
    scores, expanded = sizes.scores, sizes.expanded
    k_rep = r.alloc("attention_qkv", expanded * a) if ctx.arch.n_rep > 1 else None
    v_rep = r.alloc("attention_qkv", expanded * a) if ctx.arch.n_rep > 1 else None
    raw = r.alloc("attention_scores", scores * a)
    scaled = r.alloc("attention_scores", scores * a)
    r.free(raw)
    masked = r.alloc("attention_scores", scores * a)
    r.free(scaled)
    converted = None
    if ctx.cell.dtype == "bfloat16":  # softmax(dtype=float32): toType copy, then _softmax
        converted = r.alloc("attention_scores", scores * 4)
    probs32 = r.alloc("attention_scores", scores * 4)
    r.free(converted)
    if a != 4:
        probs = r.alloc("attention_scores", scores * a)
        r.free(probs32)
    else:
        probs = probs32
    r.free(masked)
    context = r.alloc("attention_output", sizes.q_elems * a)
    out = r.alloc("attention_output", sizes.q_elems * a)  # transpose(1, 2).contiguous()
    r.free(context, k_rep, v_rep)
    return out, probs


def _math_causal_mask(r: _Replay, q_len: int, kv_len: int) -> str | None:
    """The math path's causal mask ``(q, kv)``: bool ``ones``, ``tril``, float32 mask and the
    inverted bool; only the float32 mask stays (None for one query row: no mask)."""
    if q_len <= 1:
        return None
    ones = r.alloc("attention_mask", q_len * kv_len)
    tril = r.alloc("attention_mask", q_len * kv_len)
    r.free(ones)
    causal = r.alloc("attention_mask", q_len * kv_len * 4)
    inverted = r.alloc("attention_mask", q_len * kv_len)
    r.free(inverted, tril)
    return causal


def _math_attention(r: _Replay, ctx: _Context, sizes: _Sizes, q_len: int, kv_len: int) -> str:
    """PyTorch's ``_scaled_dot_product_attention_math``: float32 copies (16-bit inputs), scaled
    q and k, ``repeat_interleave``-expanded K/V (GQA), float32 scores, ``_safe_softmax``
    (output and ``isneginf`` mask), the context, the probabilities cast back, transpose."""
    a = ctx.a
    q_elems, kv_elems, expanded, scores = sizes
    upcast = a != 4
    q_acc = r.alloc("attention_qkv", q_elems * 4) if upcast else None
    k_acc = r.alloc("attention_qkv", kv_elems * 4) if upcast else None
    v_acc = r.alloc("attention_qkv", kv_elems * 4) if upcast else None
    q_scaled = r.alloc("attention_qkv", q_elems * 4)
    causal = _math_causal_mask(r, q_len, kv_len)
    k_exp = r.alloc("attention_qkv", expanded * 4) if ctx.arch.n_rep > 1 else None
    v_exp = r.alloc("attention_qkv", expanded * 4) if ctx.arch.n_rep > 1 else None
    k_scaled = r.alloc("attention_qkv", expanded * 4)
    attn = r.alloc("attention_scores", scores * 4)
    r.free(k_scaled)
    soft = r.alloc("attention_scores", scores * 4)
    neg_inf = r.alloc("attention_scores", scores)
    r.free(neg_inf, attn)  # where_out reuses the softmax output
    context32 = r.alloc("attention_output", q_elems * 4)
    context = r.alloc("attention_output", q_elems * a) if upcast else context32
    probs_cast = r.alloc("attention_scores", scores * a) if upcast else None
    if upcast:
        r.free(context32)
    r.free(probs_cast, soft, q_acc, k_acc, v_acc, q_scaled, causal, k_exp, v_exp)
    out = r.alloc("attention_output", q_elems * a)  # transpose(1, 2).contiguous()
    r.free(context)
    return out


def _fused_attention(r: _Replay, ctx: _Context, sizes: _Sizes, q_len: int, path: str) -> str:
    """flash / cudnn / efficient (PyTorch SDPA) and FlashAttention-2: no s x kv tensor, only
    a ``b*heads*q`` float32 logsumexp and the output (FA2 in float32: 16-bit casts)."""
    s = ctx.arch.shape
    b, a = ctx.cell.batch, ctx.a
    q_elems, kv_elems = sizes.q_elems, sizes.kv_elems
    casts: list[str | None] = []
    if path == "fa2" and a == 4:  # FA2 casts float32 q/k/v to the 16-bit weight dtype
        casts = [
            r.alloc("attention_qkv", q_elems * 2),
            r.alloc("attention_qkv", kv_elems * 2),
            r.alloc("attention_qkv", kv_elems * 2),
        ]
    lse = r.alloc("attention_output", b * s.num_heads * q_len * 4)
    out = r.alloc("attention_output", q_elems * (2 if casts else a))
    r.free(lse, *casts)
    if casts:
        cast_back = r.alloc("attention_output", q_elems * a)
        r.free(out)
        out = cast_back
    return out
