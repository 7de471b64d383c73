"""The allocation replay: live tensors by *term*, and the largest sum seen.

Every live tensor belongs to one named term; a phase's prediction is the breakdown by term at
the instant of its peak (``Terms``), so a reader can see what fills memory when it peaks.
``_Replay`` records allocations and frees in program order and keeps the breakdown and the
stage of the largest total; ``_Context`` is what one replay needs about the cell.

Terms (bytes; ``Terms`` has one field each):

- ``weights``: parameters and buffers as stored (see ``WeightBreakdown``), each tensor rounded
  up to the caching allocator's 512-byte granule; plus ``NF4_LOAD_RESIDUAL_BYTES`` for 4-bit.
- ``cuda_workspace``: the cuBLAS workspace PyTorch allocates through its caching allocator at
  the first matmul (``CUBLAS_WORKSPACE_BYTES``).
- ``inputs``: prompt ids ``b*s*8`` (int64, resident on the device for the whole cell), decode
  token ids.
- ``int8_outlier_state``: LLM.int8 keeps each layer's outlier column indices
  (``state.idx``, int64) between forwards.
- ``kv_cache``: ``2 * layers * b * kv_heads * tokens * head_dim * dtype_bytes``; the layer being
  updated is counted as far as ``torch.cat`` has got.
- ``kv_cache_growth``: DynamicCache grows by ``torch.cat([old, new])``: while one layer's K (or
  V) is concatenated the old tensor is still alive (decode only; at prefill the rotated key is
  copied, counted in ``attention_qkv``).
- ``hidden_states``: ``b*s*hidden*dtype`` tensors of the residual stream that stay alive: the
  embedding output (held by the model's ``inputs_embeds`` variable through every layer), the
  layer's input (held by the caller's loop variable), the normed input, the post-attention
  residual, the final normed hidden state.
- ``rope``: cos and sin ``(1, s, head_dim)`` (float32 intermediates while they are made).
- ``norm_scratch``: RMSNorm's float32 upcast, square and scaled copies (transient).
- ``attention_qkv``: q/k/v projections, rotary temporaries (``q*cos``, ``rotate_half`` and its
  ``torch.cat``, ``*sin``), the rotated q; eager's ``repeat_kv`` copies of K and V (GQA); the
  math path's float32 copies, scaled q/k and ``repeat_interleave``-expanded K/V.
- ``attention_mask``: eager's materialized additive mask ``(b, 1, q, kv)`` in the model dtype;
  the math path's causal mask ``(q, kv)`` (bool ``tril`` then float32).
- ``attention_scores``: the s x kv tensors. Eager (``eager_attention_forward``):
  ``matmul(q, k^T)``, ``* scaling``, ``+ mask``, then ``softmax(x, dtype=float32)`` (bf16 input
  on CUDA is first converted to a float32 copy, then softmaxed into another float32 tensor;
  fp16 uses the fused half-to-float kernel; fp32 needs no copy) and ``.to(dtype)`` - peak 10
  bytes per score in bf16, 8 in fp16/fp32; the returned probabilities stay alive in the
  decoder layer's ``_`` until the layer returns. Math (``_scaled_dot_product_attention_math``):
  float32 scores, ``_safe_softmax`` output and its ``isneginf`` bool mask (9 bytes per score),
  then the probabilities cast back. Flash, cuDNN, memory-efficient and FlashAttention-2 keep
  no s x kv tensor (only a ``b*heads*s`` float32 logsumexp, under ``attention_output``).
- ``attention_output``: the attention output ``(b, s, heads*head_dim)`` (and its transposed
  copy where one is made), o_proj's output.
- ``mlp_activations``: ``gate``, ``silu(gate)``, ``up``, their product, ``down``:
  ``b*s*intermediate*dtype`` each, at most three alive (``silu(gate)``, ``up``, product).
- ``quant_scratch``: bitsandbytes transients. 4-bit: the input cast to the compute dtype, and
  for more than 4 rows the dequantized weight ``out x in`` (compute dtype) plus, with double
  quantization, two float32 copies of the dequantized absmax; the output cast back. LLM.int8:
  the fp16 copy of the input, its int8 quantization, ``abs()`` and the ``>= 6.0`` outlier mask,
  the int32 GEMM output and its fp16 and dtype casts, and the outlier decomposition (input
  columns, weight columns in int8, two float32 products, dtype copy) - see
  ``int8_outlier_fraction``.
- ``logits``: ``b * positions * vocab * dtype`` (logits are not upcast in transformers 5).
- ``traced``: a traced prediction (``llmbench.predict.trace``) splits its peak into weights,
  workspace, inputs and the KV cache the phase leaves; everything else live at the traced
  peak (the forward's temporaries, not split by term) is this one, transient for the fit rule.
- ``quant_scratch`` of fp8 / fp8-dyn (torchao 0.18 ``Float8Tensor``, ``llmbench.predict.linear``):
  weight-only: the weight dequantized (float32 copy, float32 product, model-dtype result);
  fp8-dyn: the activation's per-row quantization (``abs``, float32 copy, quotient, clamp,
  float8 result and float32 row scales).
- ``load_staging``: what the load holds only while it converts one weight: quantizing on load
  instead of from a pre-quantized checkpoint (the largest quantized weight in the dtype it
  loads in; torchao's fp8 always, with float32 copies), or, traced, a checkpoint conversion's
  fused parameter (a mixture of experts' ``gate_up_proj``; ``method.traced_prediction``).

Imports ``llmbench.grid.spec.Cell`` and ``llmbench.predict.architecture`` / ``constants``.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, fields

from llmbench.grid.spec import QUANTIZED_QUANTS, Cell
from llmbench.predict.architecture import Architecture
from llmbench.predict.constants import granule


@dataclass(frozen=True)
class Terms:
    """Live bytes by term at one instant (see this module's docstring for each term)."""

    weights: int = 0
    load_staging: int = 0
    cuda_workspace: int = 0
    inputs: int = 0
    int8_outlier_state: int = 0
    kv_cache: int = 0
    kv_cache_growth: int = 0
    hidden_states: int = 0
    rope: int = 0
    norm_scratch: int = 0
    attention_qkv: int = 0
    attention_mask: int = 0
    attention_scores: int = 0
    attention_output: int = 0
    mlp_activations: int = 0
    quant_scratch: int = 0
    logits: int = 0
    traced: int = 0

    @property
    def total(self) -> int:
        """Sum of the terms: predicted allocated bytes at this instant."""
        return sum(getattr(self, f.name) for f in fields(self))

    @property
    def persistent(self) -> int:
        """Bytes that outlive one forward: weights, workspace, inputs, int8 state, KV cache."""
        return (
            self.weights
            + self.load_staging
            + self.cuda_workspace
            + self.inputs
            + self.int8_outlier_state
            + self.kv_cache
        )

    @property
    def transient(self) -> int:
        """Bytes of one forward's temporaries (what fragments the allocator's cache)."""
        return self.total - self.persistent

    def dominant(self) -> str:
        """Name of the largest term."""
        return max((f.name for f in fields(self)), key=lambda name: getattr(self, name))

    def to_dict(self) -> dict[str, int]:
        """Plain dict of the terms."""
        return asdict(self)


TERM_NAMES: tuple[str, ...] = tuple(f.name for f in fields(Terms))


class _Replay:
    """Live tensors of one phase and the largest total seen, with its breakdown and stage."""

    def __init__(self) -> None:
        self.live: dict[str, tuple[str, int]] = {}
        self.total = 0
        """Sum of the live tensors' bytes, kept as they come and go (not re-summed per
        allocation: a cells table replays about a hundred allocations per phase and cell)."""
        self.best_total = -1
        self.best: dict[str, int] = {}
        self.best_stage = ""
        self.stage = ""
        self._counter = 0
        self.log: list[tuple[str, int]] = []
        """Program order of the replay: ``(handle, bytes)`` per allocation, ``(handle, -1)``
        per free of a live tensor (``llmbench.predict.reserved`` feeds it to the allocator
        simulator)."""

    def alloc(self, term: str, nbytes: int | float, name: str | None = None) -> str:
        """A new tensor of ``nbytes`` counted under ``term``; returns its handle."""
        if name is None:
            self._counter += 1
            name = f"t{self._counter}"
        assert term in TERM_NAMES, term
        previous = self.live.get(name)
        if previous is not None:  # a named handle allocated again replaces its tensor
            self.total -= previous[1]
        self.live[name] = (term, granule(nbytes))
        self.total += self.live[name][1]
        self.log.append((name, self.live[name][1]))
        self._check()
        return name

    def free(self, *names: str | None) -> None:
        """Release tensors (``None`` handles are ignored: views and no-op casts)."""
        for name in names:
            freed = None if name is None else self.live.pop(name, None)
            if freed is not None:
                self.total -= freed[1]
                self.log.append((name, -1))

    def _check(self) -> None:
        total = self.total
        if total > self.best_total:
            self.best_total = total
            self.best_stage = self.stage
            breakdown: dict[str, int] = {}
            for term, nbytes in self.live.values():
                breakdown[term] = breakdown.get(term, 0) + nbytes
            self.best = breakdown

    def peak(self) -> Terms:
        """Breakdown at the peak."""
        return Terms(**self.best)


@dataclass(frozen=True)
class _Context:
    """Everything one replay needs about the cell."""

    arch: Architecture
    cell: Cell
    a: int  # activation (model dtype) bytes
    compute_dtype: str  # bitsandbytes 4-bit compute dtype

    @property
    def quant(self) -> str:
        """The cell's quantization: bitsandbytes int8, nf4, nf4-dq, fp4, fp4-dq, torchao fp8,
        fp8-dyn, else none."""
        return self.cell.quant if self.cell.quant in QUANTIZED_QUANTS else "none"
