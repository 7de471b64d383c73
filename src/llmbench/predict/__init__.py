"""Analytic GPU memory model: predicted peak allocated bytes of load, prefill and decode.

No torch, no GPU: the prediction replays, tensor by tensor, the allocations and frees of the
code paths a cell runs (transformers 5.x Mistral/Llama/Qwen2 decoder, PyTorch SDPA backends,
bitsandbytes 0.50 LLM.int8 and 4-bit layers) and keeps the largest sum of live bytes. Every
live tensor belongs to one named *term*; a phase's prediction is the breakdown by term at the
instant of its peak, so a reader can see what fills memory when it peaks.

Phases are those of ``worker.py``:

- **load**: ``from_pretrained`` (pre-quantized checkpoints, as ``prequantize: true`` makes
  them): the weights in their storage format.
- **prefill**: ONE ``model(input_ids)`` with defaults under ``torch.inference_mode``: a
  DynamicCache with K/V of every layer is built, logits are computed for ALL positions.
- **decode**: 31 greedy steps (``decode_tokens - 1``) through the KV cache after a prefill with
  ``logits_to_keep=1``; the prompt's cache is resident, its peak is over the steps only.

The peak of a forward is reached inside the last decoder layer (every earlier layer's K/V is
then resident) or at the logits; it is the maximum over the replayed sequence, never a sum of
independent maxima. Earlier layers are identical but hold less cache, so they are not replayed.

Accuracy: on the 41 ``ok`` H100 reference cells (Mistral-7B-v0.3; none/int8/nf4; eager, sdpa,
FlashAttention-2; bf16 and fp32) the prefill peak is within 0.09 % of measured (median 0.00 %),
decode within 0.03 %, load exact (tests/test_predict.py). Paths the reference does not cover
are derived the same way but unmeasured: fp16, nf4-dq, forced SDPA backends (math in bf16,
efficient, cuDNN), int8 with fp16, Llama/Qwen2 shapes, and 4-bit layers at 5-1536 rows (e.g.
decode with batch > 4), where the dequantize fallback is assumed although bitsandbytes may pick
its fused kernel on some GPUs (over-prediction of at most one dequantized weight). One device
is assumed (``device_map`` that places the whole model on one GPU).

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
- ``load_staging``: quantizing on load instead of from a pre-quantized checkpoint (not what the
  pipeline does by default): the largest quantized weight at checkpoint precision.

Fit rule (``Prediction.fits``): the driver-level need = predicted peak allocated + allocator
slack + CUDA context must not exceed the device's capacity. The CUDA context is measured
(``CUDA_CONTEXT_BYTES``). The slack is the caching allocator's reserved-but-unallocated memory
at the peak (block rounding, split blocks, fragmentation); it grows with the transient
activations, so it is modelled as ``ALLOCATOR_SLACK_FRACTION`` of the peak's transient bytes
(everything but weights, workspace, inputs and KV cache) plus ``ALLOCATOR_SLACK_FIXED_BYTES``,
an envelope of the H100 reference cells (see the constants). It is deliberately conservative:
a cell predicted not to fit may still run when fragmentation is mild (eager cells typically
reserve only 0.4-0.6x their transients), one predicted to fit should.
"""

from __future__ import annotations

import functools
import json
import math
from collections.abc import Iterable, Mapping
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any

from llmbench.grid.spec import Cell
from llmbench.measure.efficiency import Shape

GIB = 2**30
MIB = 2**20

# ---- constants, each measured once or read from library code ----------------------------

ALLOCATOR_GRANULE = 512
"""PyTorch's CUDA caching allocator rounds every request up to 512 bytes (kMinBlockSize); its
``allocated_bytes`` statistic counts the rounded size."""

CUBLAS_WORKSPACE_BYTES = 32 * MIB
"""cuBLAS workspace PyTorch allocates through the caching allocator at the first matmul on a
stream; the default ``CUBLAS_WORKSPACE_CONFIG`` on Hopper is ``:4096:8`` = 32 MiB. Measured:
in every H100 reference cell, allocated after prefill - allocated after load - prompt ids
(``b*s*8``) = 33,554,432 bytes (bf16/fp32, none/nf4; int8 adds its outlier state)."""

CUDA_CONTEXT_BYTES = 543_162_368
"""CUDA context + kernel images of one process, outside PyTorch's allocator: NVML's
per-process used bytes - torch reserved bytes after load, identical (518 MiB) in all 46 H100
reference cells (torch 2.11, driver 580, transformers 5.17, bitsandbytes 0.50.2)."""

NF4_LOAD_RESIDUAL_BYTES = 4 * MIB
"""Allocated after loading a pre-quantized 4-bit checkpoint beyond the sum of its tensors
(4,194,304 bytes in both H100 4-bit reference loads, bf16 and fp32; int8 and unquantized
loads have none). A load-time buffer whose origin was not traced; kept as a constant."""

INT8_THRESHOLD = 6.0
"""``BitsAndBytesConfig.llm_int8_threshold`` default: activations with ``|x| >= 6`` make
their column an outlier column, computed in 16-bit."""

DEFAULT_INITIALIZER_RANGE = 0.02
"""Std of the random-weight checkpoints' linear layers when a config does not say."""

ALLOCATOR_SLACK_FRACTION = 1.0
"""Reserved - allocated at a prefill peak, per byte of the peak's transient bytes. In the H100
reference prefills ``peak_reserved - peak_allocated`` is 1.00-1.07x the transients for
sdpa/flash (bf16), 0.30-0.59x for eager, 0.08x for the fp32 math path and 0.42-2.05x for int8
(many differently sized temporaries). The OOM cell none/eager/b2/s8192 failed asking 16 GiB
with 15.9 GiB cached but fragmented, i.e. needed more than allocated + 0.4x transients. 1.0 is
the envelope: with the fixed part it bounds every reference prefill's peak reserved and
classifies all 46 reference cells right (tests/test_predict.py)."""

ALLOCATOR_SLACK_FIXED_BYTES = 768 * MIB
"""Fixed part of the slack, sized so that fraction x transients + fixed bounds the largest
reference excess (int8 eager, b1 s1024: 1365 MiB reserved-but-free over 656 MiB transients,
709 MiB beyond them; 89 single-GPU H100 reference cells)."""

DTYPE_BYTES = {"bfloat16": 2, "float16": 2, "float32": 4}

QUANTIZED_PROJECTIONS = (
    "q_proj",
    "k_proj",
    "v_proj",
    "o_proj",
    "gate_proj",
    "up_proj",
    "down_proj",
)
"""Linear layers bitsandbytes replaces in a decoder layer. Left in the model dtype:
``embed_tokens`` (not a Linear), ``lm_head`` (transformers' ``get_keys_to_not_convert`` keeps
the output embedding), the RMSNorm weights, biases (bitsandbytes keeps them in 16/32-bit)."""


def _granule(nbytes: int | float) -> int:
    """Bytes the caching allocator counts for one tensor of ``nbytes``."""
    nbytes = int(math.ceil(nbytes))
    return 0 if nbytes <= 0 else -(-nbytes // ALLOCATOR_GRANULE) * ALLOCATOR_GRANULE


# ---- architecture -----------------------------------------------------------------------


@dataclass(frozen=True)
class Architecture:
    """What the memory model needs from a config.json: the shape and a few flags."""

    shape: Shape
    model_type: str
    attention_bias: bool
    initializer_range: float

    @classmethod
    def from_config(cls, config: Mapping[str, Any]) -> Architecture:
        """Read a transformers config.json dict (Mistral, Llama, Qwen2 families)."""
        model_type = str(config.get("model_type") or "")
        return cls(
            shape=Shape.from_config(config),
            model_type=model_type,
            # Qwen2 hard-codes bias=True on q/k/v; Llama reads attention_bias; Mistral has none.
            attention_bias=bool(config.get("attention_bias", model_type == "qwen2")),
            initializer_range=float(config.get("initializer_range", DEFAULT_INITIALIZER_RANGE)),
        )

    @property
    def n_rep(self) -> int:
        """Query heads per key/value head (GQA group size)."""
        return self.shape.num_heads // self.shape.num_kv_heads

    def projection_shapes(self) -> dict[str, tuple[int, int]]:
        """(out_features, in_features) of each quantizable projection of one decoder layer."""
        s = self.shape
        q, kv = s.num_heads * s.head_dim, s.num_kv_heads * s.head_dim
        return {
            "q_proj": (q, s.hidden_size),
            "k_proj": (kv, s.hidden_size),
            "v_proj": (kv, s.hidden_size),
            "o_proj": (s.hidden_size, q),
            "gate_proj": (s.intermediate_size, s.hidden_size),
            "up_proj": (s.intermediate_size, s.hidden_size),
            "down_proj": (s.hidden_size, s.intermediate_size),
        }

    def kv_bytes(self, batch: int, tokens: int, dtype_bytes: int) -> int:
        """K and V of ONE layer for ``tokens`` positions (two allocations)."""
        s = self.shape
        return 2 * _granule(batch * s.num_kv_heads * tokens * s.head_dim * dtype_bytes)


# ---- weights ------------------------------------------------------------------------------


@dataclass(frozen=True)
class WeightBreakdown:
    """What the model holds after load, by storage format (bytes).

    - ``dense``: parameters kept in the model dtype: embeddings, lm_head (unless tied),
      RMSNorm weights, biases, and every projection when not quantized.
    - ``quantized``: int8 weights (1 byte each, LLM.int8 ``CB``) or 4-bit weights packed two
      per uint8 (``ceil(n/2)`` bytes).
    - ``quant_scales``: int8: float32 per-output-row scale ``SCB`` (4 bytes x out_features);
      nf4: float32 absmax per 64-weight block (``4*ceil(n/64)``); nf4 with double
      quantization: the absmax quantized to uint8 (``ceil(n/64)`` bytes).
    - ``quant_nested``: double quantization only: float32 absmax of the absmax per 256 blocks
      (``4*ceil(n/64/256)``), its 256-entry float32 code and the float32 offset, per layer.
    - ``quant_code``: the 16-entry float32 NF4 code table each 4-bit layer carries.
    - ``buffers``: rotary ``inv_freq`` and ``original_inv_freq`` (float32, head_dim/2 each).
    - ``load_residual``: ``NF4_LOAD_RESIDUAL_BYTES`` for 4-bit loads.

    ``allocated`` rounds every tensor to the allocator granule (what ``memory_allocated``
    counts); ``by_dtype`` holds exact tensor bytes, comparable with the cell JSONs'
    ``model.weights.weight_bytes_by_dtype``.
    """

    dense: int
    quantized: int
    quant_scales: int
    quant_nested: int
    quant_code: int
    buffers: int
    load_residual: int
    allocated: int
    by_dtype: dict[str, int] = field(compare=False)

    @property
    def total(self) -> int:
        """Exact tensor bytes (no rounding, no residual)."""
        return sum(self.by_dtype.values())


def weight_breakdown(arch: Architecture, quant: str, dtype: str) -> WeightBreakdown:
    """Weights as loaded for a quant label (``nf4-not-passed`` loads unquantized weights)."""
    s = arch.shape
    a = DTYPE_BYTES[dtype]
    by_dtype: dict[str, int] = {}
    allocated = 0

    def add(kind: str, nbytes: int, count: int = 1) -> None:
        nonlocal allocated
        by_dtype[kind] = by_dtype.get(kind, 0) + nbytes * count
        allocated += _granule(nbytes) * count

    dense = quantized = scales = nested = code = 0
    embedding = s.vocab_size * s.hidden_size * a
    add(dtype, embedding)
    dense += embedding
    if not s.tie_word_embeddings:
        add(dtype, embedding)
        dense += embedding
    norms = (2 * s.num_layers + 1) * s.hidden_size * a
    for _ in range(2 * s.num_layers + 1):
        add(dtype, s.hidden_size * a)
    dense += norms
    if arch.attention_bias:
        q, kv = s.num_heads * s.head_dim, s.num_kv_heads * s.head_dim
        for width in (q, kv, kv):
            add(dtype, width * a, s.num_layers)
            dense += width * a * s.num_layers
    for out_features, in_features in arch.projection_shapes().values():
        n = out_features * in_features
        L = s.num_layers
        if quant == "int8":
            add("int8", n, L)
            add("float32", 4 * out_features, L)
            quantized += n * L
            scales += 4 * out_features * L
        elif quant in ("nf4", "nf4-dq"):
            blocks = -(-n // 64)
            add("uint8", -(-n // 2), L)
            quantized += -(-n // 2) * L
            add("float32", 16 * 4, L)  # NF4 code table
            code += 16 * 4 * L
            if quant == "nf4":
                add("float32", 4 * blocks, L)
                scales += 4 * blocks * L
            else:
                add("uint8", blocks, L)
                scales += blocks * L
                outer = -(-blocks // 256)
                add("float32", 4 * outer, L)  # state2.absmax
                add("float32", 256 * 4, L)  # state2.code
                add("float32", 4, L)  # offset
                nested += (4 * outer + 256 * 4 + 4) * L
        else:
            add(dtype, n * a, L)
            dense += n * a * L
    inv_freq = (s.head_dim // 2) * 4
    add("float32", inv_freq, 2)
    residual = NF4_LOAD_RESIDUAL_BYTES if quant in ("nf4", "nf4-dq") else 0
    return WeightBreakdown(
        dense=dense,
        quantized=quantized,
        quant_scales=scales,
        quant_nested=nested,
        quant_code=code,
        buffers=2 * inv_freq,
        load_residual=residual,
        allocated=allocated + residual,
        by_dtype=dict(sorted(by_dtype.items())),
    )


# ---- LLM.int8 outlier columns -------------------------------------------------------------


@functools.lru_cache(maxsize=64)
def _down_proj_outlier_probability(hidden_size: int, initializer_range: float) -> float:
    """P(|silu(g) * u| >= 6) for g, u ~ N(0, hidden * std^2) independent.

    In a random-weight checkpoint the input of ``down_proj`` is ``silu(gate) * up`` with
    ``gate = W_g x``, ``up = W_u x``, ``x`` the RMS-normalised hidden state (RMS 1, norm
    weight 1) and ``W ~ N(0, initializer_range^2)``: each is Gaussian with variance
    ``hidden * initializer_range^2`` (1.64 for a 4096-wide model at 0.02). The product is
    heavy-tailed enough that ~0.3 % of its entries reach the 6.0 threshold. Every other
    projection's input (normed hidden state, attention output) stays below it (P < 1e-8).
    """
    sigma = math.sqrt(hidden_size) * initializer_range
    steps, low, high = 4000, -10.0, 10.0
    width = (high - low) / steps
    probability = 0.0
    for i in range(steps):
        z = low + (i + 0.5) * width
        g = sigma * z
        silu = abs(g / (1.0 + math.exp(-g)))
        if silu > 0.0:
            tail = math.erfc(INT8_THRESHOLD / (silu * sigma) / math.sqrt(2.0))  # P(|u| >= 6/silu)
            probability += math.exp(-z * z / 2.0) / math.sqrt(2.0 * math.pi) * tail * width
    return probability


def int8_outlier_fraction(arch: Architecture, rows: int, projection: str) -> float:
    """Fraction of a projection's input columns LLM.int8 treats as outliers for ``rows`` rows.

    A column is an outlier column when ANY of its ``rows`` entries reaches the threshold:
    ``1 - (1 - p)^rows``. Only ``down_proj`` has non-negligible ``p`` (see
    ``_down_proj_outlier_probability``); its fraction is 97 % at 1024 rows (measured: 95 %,
    from the int8 outlier state left after the H100 reference prefills) and ~100 % beyond.
    This describes random-weight checkpoints; trained models have a few systematic outlier
    dimensions instead, so this is an upper bound for them.
    """
    if projection != "down_proj":
        return 0.0
    p = _down_proj_outlier_probability(arch.shape.hidden_size, arch.initializer_range)
    return 1.0 - (1.0 - p) ** rows


# ---- terms and the allocation replay ---------------------------------------------------------


@dataclass(frozen=True)
class Terms:
    """Live bytes by term at one instant (see the module docstring for each term)."""

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
        self.best_total = -1
        self.best: dict[str, int] = {}
        self.best_stage = ""
        self.stage = ""
        self._counter = 0

    def alloc(self, term: str, nbytes: int | float, name: str | None = None) -> str:
        """A new tensor of ``nbytes`` counted under ``term``; returns its handle."""
        if name is None:
            self._counter += 1
            name = f"t{self._counter}"
        assert term in TERM_NAMES, term
        self.live[name] = (term, _granule(nbytes))
        self._check()
        return name

    def free(self, *names: str | None) -> None:
        """Release tensors (``None`` handles are ignored: views and no-op casts)."""
        for name in names:
            if name is not None:
                self.live.pop(name, None)

    def _check(self) -> None:
        total = sum(nbytes for _, nbytes in self.live.values())
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
        return self.cell.quant if self.cell.quant in ("int8", "nf4", "nf4-dq") else "none"


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


def _linear(r: _Replay, ctx: _Context, rows: int, projection: str, term: str) -> str:
    """One projection of ``rows`` tokens; returns its output handle (model dtype)."""
    if ctx.quant == "none":
        out_features, _ = ctx.arch.projection_shapes()[projection]
        return r.alloc(term, rows * out_features * ctx.a)
    if ctx.quant == "int8":
        return _linear_int8(r, ctx, rows, projection, term)
    return _linear_4bit(r, ctx, rows, projection, term)


def _linear_4bit(r: _Replay, ctx: _Context, rows: int, projection: str, term: str) -> str:
    """bitsandbytes ``Linear4bit.forward`` -> ``matmul_4bit`` -> ``gemm_4bit`` (CUDA).

    ``x.to(compute_dtype)`` (a copy when it differs from the model dtype); up to 4 rows the
    fused kernel reads the packed weight (no transient); above, the conservative assumption is
    the dequantize + ``F.linear`` fallback bitsandbytes always takes beyond 1536 rows (and on
    Hopper beyond 32-512 rows for 7B-sized weights): a dequantized ``out x in`` weight in the
    compute dtype, plus two float32 absmax copies with double quantization. The result is cast
    back to the model dtype (``.to(inp_dtype)``).
    """
    out_f, in_f = ctx.arch.projection_shapes()[projection]
    cb = DTYPE_BYTES[ctx.compute_dtype]
    cast = ctx.compute_dtype != ctx.cell.dtype
    x_c = r.alloc("quant_scratch", rows * in_f * cb) if cast else None
    scratch: list[str | None] = []
    if rows > 4:
        if ctx.quant == "nf4-dq":
            blocks = -(-out_f * in_f // 64)
            scratch.append(r.alloc("quant_scratch", 4 * blocks))
            scratch.append(r.alloc("quant_scratch", 4 * blocks))
        scratch.append(r.alloc("quant_scratch", out_f * in_f * cb))
    out = r.alloc("quant_scratch" if cast else term, rows * out_f * cb)
    r.free(*scratch)
    if cast:
        final = r.alloc(term, rows * out_f * ctx.a)
        r.free(out, x_c)
        return final
    return out


def _linear_int8(r: _Replay, ctx: _Context, rows: int, projection: str, term: str) -> str:
    """bitsandbytes ``MatMul8bitLt.forward`` (inference), LLM.int8 with threshold 6.0.

    1. ``A.to(float16)`` (a copy unless fp16); ``int8_vectorwise_quant``: row stats, int8
       ``CA``, ``A.abs()`` and the ``>= 6`` mask (bool), outlier columns (int64, kept as
       ``state.idx`` until the next forward).
    2. ``int8_mixed_scaled_mm``: outlier input columns ``A[:, cols]``; weight columns
       ``CB[:, cols]`` (int8) dequantized as ``CB * SCB * (1/127)`` (two float32 tensors) and
       cast to the dtype; ``int8_linear_matmul`` into int32 ``rows x out``;
       ``int8_mm_dequant`` to fp16 and ``.to(dtype)``; ``addmm`` of the outlier part.
    """
    out_f, in_f = ctx.arch.projection_shapes()[projection]
    a = ctx.a
    fp16 = ctx.cell.dtype == "float16"
    a16 = None if fp16 else r.alloc("quant_scratch", rows * in_f * 2)
    row_stats = r.alloc("quant_scratch", rows * 4)
    ca = r.alloc("quant_scratch", rows * in_f)
    absolute = r.alloc("quant_scratch", rows * in_f * 2)
    mask = r.alloc("quant_scratch", rows * in_f)
    r.free(absolute)
    n_out = round(int8_outlier_fraction(ctx.arch, rows, projection) * in_f)
    r.free(mask, a16)
    idx_name = f"int8_idx_{projection}"
    r.free(idx_name)
    r.alloc("int8_outlier_state", n_out * 8, name=idx_name)
    sub_a = sub_b = None
    if n_out:
        sub_a = r.alloc("quant_scratch", rows * n_out * a)
        cb_cols = r.alloc("quant_scratch", out_f * n_out)
        product = r.alloc("quant_scratch", out_f * n_out * 4)
        scaled = r.alloc("quant_scratch", out_f * n_out * 4)
        r.free(product, cb_cols)
        if a != 4:
            sub_b = r.alloc("quant_scratch", out_f * n_out * a)
            r.free(scaled)
        else:
            sub_b = scaled
    acc = r.alloc("quant_scratch", rows * out_f * 4)
    half = r.alloc("quant_scratch", rows * out_f * 2)
    if fp16:
        out = half
    else:
        out = r.alloc(term, rows * out_f * a)
        r.free(half)
    r.free(acc)
    if n_out:
        added = r.alloc(term, rows * out_f * a)
        r.free(out, sub_a, sub_b)
        out = added
    elif fp16:  # the fp16 result is the output: re-label it
        r.free(out)
        out = r.alloc(term, rows * out_f * a)
    r.free(ca, row_stats)
    return out


def _rms_norm(r: _Replay, ctx: _Context, rows: int, term: str = "hidden_states") -> str:
    """``MistralRMSNorm``: ``x.to(float32)``, ``pow(2).mean``, ``x * rsqrt``, ``.to(dtype)``,
    ``weight * x``. In float32 the casts are no-ops."""
    width = ctx.arch.shape.hidden_size
    upcast = ctx.a != 4
    h32 = r.alloc("norm_scratch", rows * width * 4) if upcast else None
    square = r.alloc("norm_scratch", rows * width * 4)
    variance = r.alloc("norm_scratch", rows * 4)
    r.free(square)
    scaled = r.alloc("norm_scratch", rows * width * 4)
    r.free(h32, variance)
    down = r.alloc("norm_scratch", rows * width * ctx.a) if upcast else None
    out = r.alloc(term, rows * width * ctx.a)
    r.free(scaled, down)
    return out


def _rotary(r: _Replay, size: int, a: int) -> str:
    """``(t * cos) + (rotate_half(t) * sin)``: returns the rotated tensor's handle."""
    t_cos = r.alloc("attention_qkv", size * a)
    negated = r.alloc("attention_qkv", size * a / 2)
    rotated = r.alloc("attention_qkv", size * a)
    r.free(negated)
    t_sin = r.alloc("attention_qkv", size * a)
    r.free(rotated)
    out = r.alloc("attention_qkv", size * a)
    r.free(t_cos, t_sin)
    return out


def _attention(
    r: _Replay, ctx: _Context, q_len: int, kv_len: int, path: str
) -> tuple[str, str | None]:
    """The attention kernel on rotated q and cached K/V; returns (output, kept probabilities).

    The output is ``(b, q, heads*head_dim)`` in the model dtype. Eager returns its
    probabilities, which the decoder layer keeps (as ``_``) until it returns.
    """
    s = ctx.arch.shape
    b, a = ctx.cell.batch, ctx.a
    q_elems = b * s.num_heads * q_len * s.head_dim
    kv_elems = b * s.num_kv_heads * kv_len * s.head_dim
    expanded = b * s.num_heads * kv_len * s.head_dim
    scores = b * s.num_heads * q_len * kv_len
    if path == "eager":
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
        context = r.alloc("attention_output", q_elems * a)
        out = r.alloc("attention_output", q_elems * a)  # transpose(1, 2).contiguous()
        r.free(context, k_rep, v_rep)
        return out, probs
    if path == "math":
        upcast = a != 4
        q_acc = r.alloc("attention_qkv", q_elems * 4) if upcast else None
        k_acc = r.alloc("attention_qkv", kv_elems * 4) if upcast else None
        v_acc = r.alloc("attention_qkv", kv_elems * 4) if upcast else None
        q_scaled = r.alloc("attention_qkv", q_elems * 4)
        causal = None
        if q_len > 1:
            ones = r.alloc("attention_mask", q_len * kv_len)
            tril = r.alloc("attention_mask", q_len * kv_len)
            r.free(ones)
            causal = r.alloc("attention_mask", q_len * kv_len * 4)
            inverted = r.alloc("attention_mask", q_len * kv_len)
            r.free(inverted, tril)
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
        return out, None
    # flash / cudnn / efficient (PyTorch SDPA) and FlashAttention-2: no s x kv tensor.
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
    return out, None


def _forward(
    r: _Replay,
    ctx: _Context,
    *,
    q_len: int,
    past: int,
    logits_positions: int,
) -> None:
    """Replay one ``model(input_ids)`` of ``q_len`` new tokens on ``past`` cached ones.

    Layers before the last are summarised by their resident K/V (and int8 outlier state);
    the last layer, the final norm and lm_head are replayed allocation by allocation. The
    DynamicCache (all layers) is left live, as the caller holds it.
    """
    arch, cell, a = ctx.arch, ctx.cell, ctx.a
    s = arch.shape
    b = cell.batch
    rows = b * q_len
    kv_len = past + q_len
    hidden = rows * s.hidden_size * a
    path = attention_path(cell, arch, q_len)

    r.stage = "embedding"
    embeds = r.alloc("hidden_states", hidden)
    position_ids = r.alloc("inputs", q_len * 8)
    mask = None
    if path == "eager":
        r.stage = "attention mask"
        causal = r.alloc("attention_mask", q_len * kv_len)
        mask = r.alloc("attention_mask", b * q_len * kv_len * a)
        r.free(causal)
    r.stage = "rotary embedding"
    freqs = r.alloc("rope", q_len * s.head_dim // 2 * 4)
    emb = r.alloc("rope", q_len * s.head_dim * 4)
    cos32 = r.alloc("rope", q_len * s.head_dim * 4)
    sin32 = r.alloc("rope", q_len * s.head_dim * 4)
    if a != 4:
        cos = r.alloc("rope", q_len * s.head_dim * a)
        sin = r.alloc("rope", q_len * s.head_dim * a)
        r.free(cos32, sin32)
    else:
        cos, sin = cos32, sin32
    r.free(freqs, emb)

    # Earlier layers: their cache is resident (int8: their outlier state too).
    # Decode: every layer held `past` tokens; layers 0..n-2 have grown to kv_len already.
    r.alloc("kv_cache", (s.num_layers - 1) * arch.kv_bytes(b, kv_len, a), name="kv_earlier")
    if ctx.quant == "int8":
        n_out = round(int8_outlier_fraction(arch, rows, "down_proj") * s.intermediate_size)
        r.alloc("int8_outlier_state", (s.num_layers - 1) * _granule(n_out * 8), name="idx_earlier")
    if s.num_layers > 1:
        layer_input = r.alloc("hidden_states", hidden)  # the previous layer's output
    else:
        layer_input = embeds

    # ---- last decoder layer -------------------------------------------------------------
    r.stage = f"layer {s.num_layers - 1} input norm"
    normed = _rms_norm(r, ctx, rows)
    r.stage = f"layer {s.num_layers - 1} q/k/v projections"
    q = _linear(r, ctx, rows, "q_proj", "attention_qkv")
    k = _linear(r, ctx, rows, "k_proj", "attention_qkv")
    v = _linear(r, ctx, rows, "v_proj", "attention_qkv")  # a bias is fused: no extra tensor
    r.stage = f"layer {s.num_layers - 1} rotary"
    q_rot = _rotary(r, rows * s.num_heads * s.head_dim, a)
    k_rot = _rotary(r, rows * s.num_kv_heads * s.head_dim, a)
    r.free(q, k)
    r.stage = f"layer {s.num_layers - 1} cache update"
    half_kv_new = b * s.num_kv_heads * kv_len * s.head_dim * a
    half_kv_old = b * s.num_kv_heads * past * s.head_dim * a
    old_k = r.alloc("kv_cache_growth", half_kv_old) if past else None
    old_v = r.alloc("kv_cache_growth", half_kv_old) if past else None
    r.alloc("kv_cache", half_kv_new)  # torch.cat([old_k, k]) (prefill: a copy of k)
    r.free(old_k)
    r.alloc("kv_cache", half_kv_new)
    r.free(old_v)
    r.free(k_rot, v)
    r.stage = f"layer {s.num_layers - 1} attention ({path})"
    attn_out, probs = _attention(r, ctx, q_len, kv_len, path)
    r.free(q_rot)
    r.stage = f"layer {s.num_layers - 1} o_proj"
    projected = _linear(r, ctx, rows, "o_proj", "attention_output")
    r.free(attn_out, normed)
    residual = r.alloc("hidden_states", hidden)
    r.free(projected)
    r.stage = f"layer {s.num_layers - 1} post-attention norm"
    normed2 = _rms_norm(r, ctx, rows)
    r.stage = f"layer {s.num_layers - 1} MLP"
    gate = _linear(r, ctx, rows, "gate_proj", "mlp_activations")
    act = r.alloc("mlp_activations", rows * s.intermediate_size * a)
    r.free(gate)
    up = _linear(r, ctx, rows, "up_proj", "mlp_activations")
    product = r.alloc("mlp_activations", rows * s.intermediate_size * a)
    r.free(act, up)
    r.stage = f"layer {s.num_layers - 1} down_proj"
    down = _linear(r, ctx, rows, "down_proj", "mlp_activations")
    r.free(product, normed2)
    layer_out = r.alloc("hidden_states", hidden)
    r.free(down, residual, probs)
    if layer_input != embeds:
        r.free(layer_input)

    # ---- final norm, lm_head ----------------------------------------------------------------
    r.stage = "final norm"
    last_hidden = _rms_norm(r, ctx, rows)
    r.free(layer_out, embeds, mask, cos, sin, position_ids)
    r.stage = "lm_head (logits)"
    sliced = None
    if logits_positions < q_len and b > 1:  # hidden[:, -k:, :] cannot be flattened as a view
        sliced = r.alloc("hidden_states", b * logits_positions * s.hidden_size * a)
    logits = r.alloc("logits", b * logits_positions * s.vocab_size * a)
    r.free(sliced, last_hidden)
    del logits  # returned to the caller, which drops it


# ---- predictions ----------------------------------------------------------------------------


@dataclass(frozen=True)
class PhasePrediction:
    """One phase: the breakdown at its predicted peak, and where in the replay it occurs."""

    phase: str
    peak: Terms
    stage: str

    @property
    def peak_allocated(self) -> int:
        """Predicted peak allocated bytes of the phase."""
        return self.peak.total


@dataclass(frozen=True)
class Prediction:
    """The prediction for one cell: three phases, the weights, and the fit rule's inputs."""

    cell: Cell
    weights: WeightBreakdown
    load: PhasePrediction
    prefill: PhasePrediction
    decode: PhasePrediction
    cuda_context: int = CUDA_CONTEXT_BYTES

    @property
    def phases(self) -> tuple[PhasePrediction, ...]:
        """load, prefill, decode."""
        return (self.load, self.prefill, self.decode)

    @property
    def peak_phase(self) -> PhasePrediction:
        """The phase with the largest peak."""
        return max(self.phases, key=lambda phase: phase.peak_allocated)

    @property
    def peak_allocated(self) -> int:
        """Predicted max over phases of peak allocated bytes."""
        return self.peak_phase.peak_allocated

    @property
    def allocator_slack(self) -> int:
        """Predicted reserved - allocated at the peak (see the module docstring)."""
        phase = self.peak_phase
        return int(ALLOCATOR_SLACK_FRACTION * phase.peak.transient) + ALLOCATOR_SLACK_FIXED_BYTES

    @property
    def reserved_need(self) -> int:
        """Predicted peak reserved bytes of the caching allocator."""
        return self.peak_allocated + self.allocator_slack

    @property
    def device_need(self) -> int:
        """Predicted device memory the process needs: reserved + CUDA context."""
        return self.reserved_need + self.cuda_context

    def fits(self, capacity_bytes: int) -> bool:
        """Whether the cell is predicted to run within ``capacity_bytes`` of device memory,
        allocator slack included (the conservative verdict)."""
        return self.device_need <= capacity_bytes

    def fit_verdict(self, capacity_bytes: int) -> str:
        """``yes``: fits with the allocator's slack; ``no``: the allocations alone (plus the
        CUDA context) exceed the device; ``maybe``: in between, where the caching allocator's
        fragmentation decides. On the H100 none/eager/b2/s8192 is such a cell: out of memory
        with 31.8 GiB reserved but unallocated, yet it ran at 56.7 GiB peak reserved with
        ``PYTORCH_CUDA_ALLOC_CONF=expandable_segments:True`` (results/reference/h100/
        diagnostics), while nf4/eager/b2/s8192 ran with the default allocator."""
        if self.fits(capacity_bytes):
            return "yes"
        if self.peak_allocated + self.cuda_context > capacity_bytes:
            return "no"
        return "maybe"

    def dominant_term(self) -> str:
        """Largest term at the overall peak."""
        return self.peak_phase.peak.dominant()


def _base(r: _Replay, weights: WeightBreakdown, *, workspace: bool, inputs: int) -> None:
    r.stage = "resident"
    r.alloc("weights", weights.allocated, name="weights")
    if workspace:
        r.alloc("cuda_workspace", CUBLAS_WORKSPACE_BYTES, name="workspace")
    if inputs:
        r.alloc("inputs", inputs, name="input_ids")


def _phase(name: str, r: _Replay) -> PhasePrediction:
    return PhasePrediction(phase=name, peak=r.peak(), stage=r.best_stage)


def predict(
    model_config: Mapping[str, Any],
    cell: Cell,
    *,
    bnb_4bit_compute_dtype: str = "bfloat16",
    decode_tokens: int = 32,
    prequantized: bool = True,
) -> Prediction:
    """Predict load, prefill and decode peaks of one cell from its architecture config.

    ``decode_tokens`` is the config's ``measurement.decode_tokens`` (the decode phase runs
    ``decode_tokens - 1`` steps); ``prequantized=False`` adds the on-load quantization
    transient to the load phase.
    """
    arch = Architecture.from_config(model_config)
    weights = weight_breakdown(
        arch, cell.quant if cell.quant != "nf4-not-passed" else "none", cell.dtype
    )
    ctx = _Context(
        arch=arch, cell=cell, a=DTYPE_BYTES[cell.dtype], compute_dtype=bnb_4bit_compute_dtype
    )
    prompt_ids = cell.batch * cell.seq * 8

    # load
    load = _Replay()
    _base(load, weights, workspace=False, inputs=0)
    if not prequantized and ctx.quant != "none":
        largest = max(o * i for o, i in arch.projection_shapes().values())
        load.stage = "quantize on load"
        load.alloc("load_staging", largest * DTYPE_BYTES[cell.dtype])

    # prefill: one full forward, logits for every position
    prefill = _Replay()
    _base(prefill, weights, workspace=True, inputs=prompt_ids)
    _forward(prefill, ctx, q_len=cell.seq, past=0, logits_positions=cell.seq)

    # decode: steps through the cache; the peak is at the last step (largest cache) unless
    # the first step's leftovers (int8 outlier state of the prompt's forward) weigh more.
    steps = max(decode_tokens - 1, 1)
    decode_peaks = []
    for step in sorted({1, steps}):
        r = _Replay()
        _base(r, weights, workspace=True, inputs=prompt_ids)
        r.alloc("inputs", cell.batch * 8, name="token")
        previous_rows = cell.batch * (cell.seq if step == 1 else 1)
        _decode_step(r, ctx, past=cell.seq + step - 1, previous_rows=previous_rows)
        decode_peaks.append(_phase("decode", r))
    decode = max(decode_peaks, key=lambda phase: phase.peak_allocated)
    return Prediction(
        cell=cell,
        weights=weights,
        load=_phase("load", load),
        prefill=_phase("prefill", prefill),
        decode=decode,
    )


def _decode_step(r: _Replay, ctx: _Context, past: int, previous_rows: int) -> None:
    """One greedy step with ``past`` cached tokens (see ``_forward``).

    int8: the last layer still holds the outlier state of the previous forward
    (``previous_rows`` rows: the prompt's for the first step) until its down_proj replaces it.
    """
    if ctx.quant == "int8":
        n_out = round(
            int8_outlier_fraction(ctx.arch, previous_rows, "down_proj")
            * ctx.arch.shape.intermediate_size
        )
        r.alloc("int8_outlier_state", n_out * 8, name="int8_idx_down_proj")
    _forward(r, ctx, q_len=1, past=past, logits_positions=1)


def predicted_peak_bytes(
    model_config: Mapping[str, Any], cell: Cell, *, bnb_4bit_compute_dtype: str = "bfloat16"
) -> int:
    """Predicted max over load, prefill and decode of peak *allocated* device bytes."""
    return predict(model_config, cell, bnb_4bit_compute_dtype=bnb_4bit_compute_dtype).peak_allocated


# ---- model registry --------------------------------------------------------------------------


@functools.lru_cache(maxsize=32)
def _read_json(path: str) -> dict[str, Any]:
    return json.loads(Path(path).read_text())


def model_config_for(
    model: str, models: Mapping[str, Any], repo_root: Path
) -> dict[str, Any] | None:
    """The architecture config.json of a registry entry, or None (pretrained without a local
    config.json, or unknown model)."""
    entry = models.get(model)
    if not entry:
        return None
    if entry.get("architecture"):
        path = repo_root / entry["architecture"]
        return _read_json(str(path)) if path.is_file() else None
    pretrained = entry.get("pretrained")
    if pretrained:
        local = Path(pretrained)
        local = local if local.is_absolute() else repo_root / local
        if (local / "config.json").is_file():
            return _read_json(str(local / "config.json"))
    return None


def iter_predictions(
    cells: Iterable[Cell],
    models: Mapping[str, Any],
    repo_root: Path,
    *,
    bnb_4bit_compute_dtype: str = "bfloat16",
    decode_tokens: int = 32,
) -> Iterable[tuple[Cell, Prediction | None]]:
    """(cell, prediction or None when the model has no architecture config)."""
    for cell in cells:
        config = model_config_for(cell.model, models, repo_root)
        if config is None:
            yield cell, None
            continue
        yield (
            cell,
            predict(
                config,
                cell,
                bnb_4bit_compute_dtype=bnb_4bit_compute_dtype,
                decode_tokens=decode_tokens,
            ),
        )


# ---- reports (CLI and Snakemake) -------------------------------------------------------------

_UNITS = {
    "": GIB,
    "b": 1,
    "kb": 10**3,
    "mb": 10**6,
    "gb": 10**9,
    "tb": 10**12,
    "kib": 2**10,
    "mib": 2**20,
    "gib": 2**30,
    "tib": 2**40,
}


def parse_bytes(text: str) -> int:
    """``80GiB``, ``79.18 GiB``, ``85GB``, ``81920MiB`` or a bare number of GiB -> bytes."""
    cleaned = text.strip().replace(" ", "").lower()
    number = cleaned.rstrip("kmgtib")
    unit = cleaned[len(number) :]
    if unit not in _UNITS or not number:
        raise ValueError(f"cannot read a memory size from {text!r} (e.g. 80GiB, 85GB, 81920MiB)")
    return int(float(number) * _UNITS[unit])


def _gib(nbytes: int) -> float:
    return nbytes / GIB


def prediction_row(
    cell: Cell, prediction: Prediction | None, capacity_bytes: int | None, *, terms: bool
) -> dict[str, Any]:
    """One row of the prediction table (GiB = 2^30 bytes)."""
    row: dict[str, Any] = asdict(cell)
    if prediction is None:
        row["note"] = "no architecture config"
        return row
    peak = prediction.peak_phase
    row.update(
        load_peak_allocated_gib=_gib(prediction.load.peak_allocated),
        prefill_peak_allocated_gib=_gib(prediction.prefill.peak_allocated),
        decode_peak_allocated_gib=_gib(prediction.decode.peak_allocated),
        peak_phase=peak.phase,
        peak_stage=peak.stage,
        dominant_term=prediction.dominant_term(),
        allocator_slack_gib=_gib(prediction.allocator_slack),
        cuda_context_gib=_gib(prediction.cuda_context),
        device_need_gib=_gib(prediction.device_need),
        gpu_mem_gib=None if capacity_bytes is None else _gib(capacity_bytes),
        fits=None if capacity_bytes is None else prediction.fit_verdict(capacity_bytes),
        note="",
    )
    if terms:
        for name, nbytes in peak.peak.to_dict().items():
            row[f"{name}_gib"] = _gib(nbytes)
    return row


_TABLE_COLUMNS = (
    ("model", "model", "{}"),
    ("quant", "quant", "{}"),
    ("attn", "attn", "{}"),
    ("dtype", "dtype", "{}"),
    ("batch", "b", "{}"),
    ("seq", "seq", "{}"),
    ("load_peak_allocated_gib", "load", "{:.2f}"),
    ("prefill_peak_allocated_gib", "prefill", "{:.2f}"),
    ("decode_peak_allocated_gib", "decode", "{:.2f}"),
    ("device_need_gib", "need", "{:.2f}"),
    ("fits", "fits", "{}"),
    ("dominant_term", "dominant", "{}"),
)


def format_table(rows: list[dict[str, Any]], *, terms: bool) -> str:
    """Fixed-width text table: peaks per phase (GiB), device need, fits, dominant term; with
    ``terms``, the breakdown (GiB) at the overall peak, non-zero terms only."""
    columns = list(_TABLE_COLUMNS)
    if rows and rows[0].get("fits") is None:
        columns = [c for c in columns if c[0] != "fits"]
    if terms:
        columns.append(("peak_stage", "peak at", "{}"))
        used = [n for n in TERM_NAMES if any(row.get(f"{n}_gib") for row in rows)]
        columns += [(f"{n}_gib", n, "{:.2f}") for n in used]

    def cell_text(row: dict[str, Any], key: str, fmt: str) -> str:
        value = row.get(key)
        if value is None or value == "":
            return row.get("note", "") if key == "load_peak_allocated_gib" else ""
        return fmt.format(value)

    body = [[cell_text(row, key, fmt) for key, _, fmt in columns] for row in rows]
    header = [title for _, title, _ in columns]
    widths = [max(len(x) for x in column) for column in zip(header, *body, strict=False)]
    lines = ["  ".join(h.ljust(w) for h, w in zip(header, widths, strict=True)).rstrip()]
    for line in body:
        lines.append("  ".join(x.ljust(w) for x, w in zip(line, widths, strict=True)).rstrip())
    return "\n".join(lines)


def format_csv(rows: list[dict[str, Any]]) -> str:
    """CSV of the rows (union of their keys, in first-seen order)."""
    import csv
    import io

    keys: list[str] = []
    for row in rows:
        keys += [k for k in row if k not in keys]
    out = io.StringIO()
    writer = csv.DictWriter(out, fieldnames=keys, lineterminator="\n")
    writer.writeheader()
    writer.writerows(rows)
    return out.getvalue()


def grid_prediction_rows(
    grid: str | None,
    *,
    repo_root: Path,
    gpu_mem: str | None = "80GiB",
    terms: bool = False,
) -> list[dict[str, Any]]:
    """Rows for every cell of a grid (default: the config's), reading config/config.yaml for
    the model registry, ``bnb_4bit_compute_dtype`` and ``measurement.decode_tokens``."""
    import yaml

    from llmbench.grid.spec import expand_grid, load_grid

    config = yaml.safe_load((repo_root / "config" / "config.yaml").read_text())
    grid = grid or str(config["grid"])
    models = config["models"]
    cells = expand_grid(load_grid(grid, repo_root / "config", models))
    capacity = None if gpu_mem is None else parse_bytes(gpu_mem)
    measurement = config.get("measurement") or {}
    return [
        prediction_row(cell, prediction, capacity, terms=terms)
        for cell, prediction in iter_predictions(
            cells,
            models,
            repo_root,
            bnb_4bit_compute_dtype=config.get("bnb_4bit_compute_dtype", "bfloat16"),
            decode_tokens=int(measurement.get("decode_tokens", 32)),
        )
    ]


# ---- measured vs predicted (cells tables) --------------------------------------------------

PREDICTED_COLUMNS = (
    "predicted_load_allocated_gib",
    "predicted_prefill_peak_allocated_gib",
    "predicted_decode_peak_allocated_gib",
    "prefill_measured_over_predicted",
    "decode_measured_over_predicted",
)
"""Columns ``table_columns`` adds to a cells table row."""


@functools.lru_cache(maxsize=4)
def _registry(repo_root: str) -> dict[str, Any]:
    import yaml

    path = Path(repo_root) / "config" / "config.yaml"
    if not path.is_file():
        return {}
    return (yaml.safe_load(path.read_text()) or {}).get("models") or {}


def _measured_peak(result: Mapping[str, Any], phase: str) -> int | None:
    """Peak allocated bytes of a phase, summed over CUDA devices (as in cells.csv)."""
    record = ((result.get("memory") or {}).get("phases") or {}).get(phase) or {}
    values = [d.get("peak_allocated_bytes") for d in record.get("devices") or []]
    if not values or any(v is None for v in values):
        return None
    return int(sum(values))


def table_columns(result: Mapping[str, Any], repo_root: Path | None = None) -> dict[str, Any]:
    """Predicted peaks (GiB) and measured / predicted ratios for one cell result.

    The architecture comes from the model registry in ``config/config.yaml`` by the cell's
    model name; the compute dtype and decode length from the settings the cell recorded.
    Unknown models, pretrained ones without a local config.json, and phases that were not
    measured (CPU cells, failures) give None. The model predicts one device: a cell spread
    over several GPUs keeps the one-GPU prediction ("would it fit on one?") but gets no ratio,
    since per-device peaks reached at different moments do not add up to a one-device peak.
    """
    from llmbench import REPO_ROOT

    columns: dict[str, Any] = dict.fromkeys(PREDICTED_COLUMNS)
    root = REPO_ROOT if repo_root is None else repo_root
    try:
        cell = Cell.from_mapping(result["cell"])
    except (KeyError, TypeError, ValueError):
        return columns
    config = model_config_for(cell.model, _registry(str(root)), root)
    if config is None:
        return columns
    settings = result.get("settings") or {}
    measurement = settings.get("measurement") or {}
    prediction = predict(
        config,
        cell,
        bnb_4bit_compute_dtype=settings.get("bnb_4bit_compute_dtype") or "bfloat16",
        decode_tokens=int(measurement.get("decode_tokens") or 32),
    )
    columns.update(
        predicted_load_allocated_gib=_gib(prediction.load.peak_allocated),
        predicted_prefill_peak_allocated_gib=_gib(prediction.prefill.peak_allocated),
        predicted_decode_peak_allocated_gib=_gib(prediction.decode.peak_allocated),
    )
    # A phase that failed (OOM, error) recorded the peak reached before failing: no ratio.
    failed = result.get("phase") if result.get("status") not in ("ok", "check_failed") else None
    load = ((result.get("memory") or {}).get("phases") or {}).get("load") or {}
    if len(load.get("devices") or []) > 1:
        return columns
    for phase, predicted in (("prefill", prediction.prefill), ("decode", prediction.decode)):
        measured = _measured_peak(result, phase)
        if measured is not None and phase != failed:
            columns[f"{phase}_measured_over_predicted"] = measured / predicted.peak_allocated
    return columns
