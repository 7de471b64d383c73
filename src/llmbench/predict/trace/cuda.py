"""CUDA semantics for a model traced on the ``meta`` device: the choices PyTorch's CUDA code
makes by device type, made here explicitly, so that the traced ops are those a GPU runs.

Why ``meta`` and not fake CUDA tensors: any C++ path that opens a device guard for a CUDA
tensor (Python indexing ``t[None]``, ``Tensor.to(device=...)``) needs the CUDA guard
implementation; a CPU build of torch has none ("PyTorch is not linked with support for cuda
devices") and a CUDA build without a GPU asks the driver ("Found no NVIDIA driver"), which is
why ``FakeTensorMode`` with ``device="cuda"`` fails inside ``DynamicCache.update`` and the
rotary embedding. Meta tensors have shapes, dtypes and storages with byte sizes, and no guard.

What differs between CUDA and ``meta`` and is therefore patched while tracing:

- ``torch.nn.functional.scaled_dot_product_attention``: on CUDA, ``sdp_utils.cpp`` picks a
  fused kernel; on ``meta`` the composite takes the math fallback. ``sdpa_backend`` mirrors
  the CUDA choice (PyTorch 2.13 ``sdp::select_sdp_backend``, priority flash > efficient >
  math; cuDNN only when forced): flash for float16/bfloat16 with head_dim <= 256 and no
  explicit mask (GQA handled by the kernel); memory-efficient when there is no GQA
  (``enable_gqa`` with unequal heads is refused) and head_dim <= 256 (a mask allowed); else
  math. A boolean mask is first made additive in the query's dtype, as CUDA's
  ``scaled_dot_product_attention`` does (``additive_mask``). The chosen ATen op is then
  called: its outputs (``(b, h, q, d)`` output stored
  ``(b, q, h, d)``, float32 logsumexp) are what the GPU kernel allocates. (The flash meta
  kernel also puts its two philox scalars on the device, which CUDA keeps on the host without
  dropout: 1 KiB too many while the kernel's outputs are alive.)
- ``torch.nn.functional.softmax`` of a float16 input with ``dtype=float32``: ATen's
  ``softmax`` (SoftMax.cpp) runs ``_softmax(x, dim, half_to_float=True)`` on CUDA (no float32
  copy of the input); any other input/dtype pair is converted first (``toType``), on every
  device. Only the float16 case is rerouted.
- ``transformers.masking_utils._ignore_causal_mask_sdpa`` for a padding mask on ``meta``
  (models that build an all-ones mask when none is passed, e.g. OPT): on CUDA it reads the
  mask's values (``fast_all`` -> ``.item()``), which meta tensors do not have. The prompts of
  a run and of a trace are never padded, so the mask is all ones and the answer is the one
  transformers gives for no mask: skip the causal mask (SDPA ``is_causal``) when
  ``q_length == 1`` or ``kv_length == q_length`` and no local window covers ``kv_length``.
  Any other shape (a chunked prefill) needs the values: the trace fails with that reason.
  A ``StaticCache`` run passes a 2-D mask of ``max_cache_len`` positions whose first ones are
  the written positions and the rest zeros (``measure.phases.static``); under
  :func:`padding_ones` (how many leading ones) the answer is transformers 5.17's for that
  mask: no skip for a one-token step (the mask has zeros), and the prefill skip
  (``q_offset == 0``, ones exactly over the query) for the prompt.

Imports torch (and transformers' masking_utils, to patch it).
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from typing import Any

import torch
import torch.nn.functional as F

SDPA_BACKENDS = ("flash", "efficient", "math", "cudnn")
"""Backends of ``scaled_dot_product_attention`` a trace can take (``Cell.sdpa_backend``)."""

_HALF = (torch.float16, torch.bfloat16)


def sdpa_backend(
    query: torch.Tensor,
    key: torch.Tensor,
    attn_mask: torch.Tensor | None,
    enable_gqa: bool,
    forced: str | None = None,
) -> str:
    """The SDPA backend CUDA PyTorch takes for these inputs (module docstring), or ``forced``.

    ``query``/``key``: ``(b, heads, len, head_dim)``. Raises ValueError for an unknown
    ``forced`` backend.
    """
    if forced is not None:
        if forced not in SDPA_BACKENDS:
            raise ValueError(f"unknown SDPA backend {forced!r} (known: {SDPA_BACKENDS})")
        return forced
    head_dim = query.shape[-1]
    gqa = enable_gqa and query.shape[-3] != key.shape[-3]
    if query.dtype in _HALF and head_dim <= 256 and attn_mask is None:
        return "flash"
    if not gqa and head_dim <= 256:
        return "efficient"
    return "math"


def additive_mask(attn_mask: torch.Tensor | None, dtype: torch.dtype) -> torch.Tensor | None:
    """The mask a fused SDPA kernel gets: a boolean ``attn_mask`` becomes an additive one of
    the query's ``dtype`` and the mask's shape (0 where True, -inf where False), a new tensor
    alive during the kernel (e.g. 2 GiB at ``(1, 1, 32768, 32768)`` in bfloat16, beside the
    1 GiB boolean mask); a float mask or None passes through. PyTorch 2.11-2.13
    ``attention.cpp``: ``scaled_dot_product_attention`` calls ``convert_boolean_attn_mask``
    (``at::where(mask, 0.0, scalar_tensor(-inf, dtype))``) before dispatching to any backend."""
    if attn_mask is None or attn_mask.dtype != torch.bool:
        return attn_mask
    neg_inf = torch.full((), float("-inf"), dtype=dtype, device=attn_mask.device)
    return torch.where(attn_mask, 0.0, neg_inf)


def _call_backend(backend: str, q: Any, k: Any, v: Any, **kw: Any) -> torch.Tensor:
    aten = torch.ops.aten
    mask, dropout, causal, scale = kw["attn_mask"], kw["dropout_p"], kw["is_causal"], kw["scale"]
    if backend != "flash":  # flash takes no mask
        mask = additive_mask(mask, q.dtype)
    if backend == "flash":
        return aten._scaled_dot_product_flash_attention(
            q, k, v, dropout, causal, False, scale=scale
        )[0]
    if backend == "efficient":
        return aten._scaled_dot_product_efficient_attention(
            q, k, v, mask, False, dropout, causal, scale=scale
        )[0]
    if backend == "cudnn":
        return aten._scaled_dot_product_cudnn_attention(
            q, k, v, mask, False, dropout, causal, False, scale=scale
        )[0]
    return aten._scaled_dot_product_attention_math(
        q, k, v, mask, dropout, causal, None, scale=scale, enable_gqa=kw["enable_gqa"]
    )[0]


class _Choices:
    """The SDPA backends taken while tracing, by query length (prefill vs decode); a model
    with sliding-window layers can take two (a mask for the windowed layers only)."""

    def __init__(self) -> None:
        self.sdpa: dict[int, set[str]] = {}


_PADDING_ONES: ContextVar[int | None] = ContextVar("padding_ones", default=None)
"""How many leading positions of the 2-D attention mask hold ones (the rest zeros) while a
static cache runs; None: the mask is all ones (an unpadded prompt)."""


def current_padding_ones() -> int | None:
    """The leading ones of the 2-D masks now (:func:`padding_ones`), or None (all ones)."""
    return _PADDING_ONES.get()


@contextmanager
def padding_ones(ones: int) -> Iterator[None]:
    """While the block runs, the 2-D attention masks the model gets hold ones in their first
    ``ones`` positions and zeros after (a ``StaticGeneration``'s mask)."""
    token = _PADDING_ONES.set(ones)
    try:
        yield
    finally:
        _PADDING_ONES.reset(token)


@contextmanager
def cuda_semantics(forced_sdpa: str | None = None) -> Iterator[_Choices]:
    """Patch SDPA and float16 softmax to their CUDA behaviour (module docstring) for the
    duration; yields the record of SDPA backends taken (query length -> backend)."""
    choices = _Choices()
    original_sdpa, original_softmax = F.scaled_dot_product_attention, F.softmax

    def sdpa(query, key, value, attn_mask=None, dropout_p=0.0, is_causal=False, scale=None,
             enable_gqa=False):  # fmt: skip
        backend = sdpa_backend(query, key, attn_mask, enable_gqa, forced_sdpa)
        choices.sdpa.setdefault(query.shape[-2], set()).add(backend)
        return _call_backend(
            backend, query, key, value, attn_mask=attn_mask, dropout_p=dropout_p,
            is_causal=is_causal, scale=scale, enable_gqa=enable_gqa,
        )  # fmt: skip

    def softmax(input, dim=None, _stacklevel=3, dtype=None):  # noqa: A002 - F.softmax's names
        if input.dtype == torch.float16 and dtype == torch.float32 and dim is not None:
            return torch.ops.aten._softmax(input, dim, True)
        return original_softmax(input, dim=dim, _stacklevel=_stacklevel, dtype=dtype)

    from transformers import masking_utils

    original_ignore = masking_utils._ignore_causal_mask_sdpa

    def ignore_causal_mask(padding_mask, q_length, kv_length, q_offset, kv_offset,
                           local_attention_size=None):  # fmt: skip
        if padding_mask is None or padding_mask.device.type != "meta":
            return original_ignore(
                padding_mask, q_length, kv_length, q_offset, kv_offset, local_attention_size
            )
        if local_attention_size is not None and kv_length >= local_attention_size:
            return False
        ones = _PADDING_ONES.get()
        if ones is not None:  # a static cache's mask: `ones` leading ones, then zeros
            if kv_offset != 0 or padding_mask.shape[-1] < kv_length:
                raise RuntimeError("a static cache's mask at a kv offset is not traced")
            if (q_length == 1 or kv_length == q_length) and ones >= kv_length:
                return True
            return q_offset == 0 and ones == q_length
        if q_length == 1 or kv_length == q_length:
            return True  # an unpadded (all-ones) mask: transformers' answer for no mask
        raise RuntimeError(
            f"the SDPA causal-mask skip for q_length {q_length}, kv_length {kv_length} "
            "reads the padding mask's values (data-dependent: meta tensors have no values)"
        )

    F.scaled_dot_product_attention = sdpa
    F.softmax = softmax
    masking_utils._ignore_causal_mask_sdpa = ignore_causal_mask
    try:
        yield choices
    finally:
        F.scaled_dot_product_attention = original_sdpa
        F.softmax = original_softmax
        masking_utils._ignore_causal_mask_sdpa = original_ignore
