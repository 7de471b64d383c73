"""The weights a model holds after load, by storage format (``WeightBreakdown``): dense
parameters, bitsandbytes LLM.int8 and 4-bit (NF4 or FP4, double-quantized or not) layers,
buffers.

Imports ``llmbench.grid.spec`` (the quant labels), ``llmbench.predict.architecture`` and
``llmbench.predict.constants``.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass, field

from llmbench.grid.spec import FOUR_BIT_QUANTS, TORCHAO_QUANTS
from llmbench.predict.architecture import Architecture
from llmbench.predict.constants import (
    DTYPE_BYTES,
    FOUR_BIT_CODE_ENTRIES,
    NESTED_BLOCKSIZE,
    NESTED_CODE_ENTRIES,
    NF4_BLOCKSIZE,
    NF4_LOAD_RESIDUAL_BYTES,
    granule,
)


@dataclass(frozen=True)
class WeightBreakdown:
    """What the model holds after load, by storage format (bytes).

    - ``dense``: parameters kept in the model dtype: embeddings, lm_head (unless tied),
      RMSNorm weights, biases, and every projection when not quantized.
    - ``quantized``: int8 weights (1 byte each, LLM.int8 ``CB``) or 4-bit weights packed two
      per uint8 (``ceil(n/2)`` bytes).
    - ``quant_scales``: int8: float32 per-output-row scale ``SCB`` (4 bytes x out_features);
      nf4/fp4: float32 absmax per 64-weight block (``4*ceil(n/64)``); with double
      quantization: the absmax quantized to uint8 (``ceil(n/64)`` bytes).
    - ``quant_nested``: double quantization only: float32 absmax of the absmax per 256 blocks
      (``4*ceil(n/64/256)``), its 256-entry float32 code and the float32 offset, per layer.
    - ``quant_code``: the 16-entry float32 NF4 (or FP4) code table each 4-bit layer carries.
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


@dataclass
class _Tally:
    """Running sums while the weights are counted: exact bytes by dtype, allocator-rounded
    bytes, and the bytes of each storage format."""

    by_dtype: dict[str, int] = field(default_factory=dict)
    allocated: int = 0
    dense: int = 0
    quantized: int = 0
    scales: int = 0
    nested: int = 0
    code: int = 0

    def add(self, kind: str, nbytes: int, count: int = 1) -> None:
        """``count`` tensors of ``nbytes`` each, stored as ``kind``."""
        self.by_dtype[kind] = self.by_dtype.get(kind, 0) + nbytes * count
        self.allocated += granule(nbytes) * count


def _dense_parameters(tally: _Tally, arch: Architecture, dtype: str) -> None:
    """Embeddings, lm_head (unless tied), RMSNorm weights and q/k/v biases, in ``dtype``."""
    s = arch.shape
    a = DTYPE_BYTES[dtype]
    embedding = s.vocab_size * s.hidden_size * a
    tally.add(dtype, embedding)
    tally.dense += embedding
    if not s.tie_word_embeddings:
        tally.add(dtype, embedding)
        tally.dense += embedding
    norms = (2 * s.num_layers + 1) * s.hidden_size * a
    for _ in range(2 * s.num_layers + 1):
        tally.add(dtype, s.hidden_size * a)
    tally.dense += norms
    if arch.attention_bias:
        q, kv = s.num_heads * s.head_dim, s.num_kv_heads * s.head_dim
        for width in (q, kv, kv):
            tally.add(dtype, width * a, s.num_layers)
            tally.dense += width * a * s.num_layers


def _projection(tally: _Tally, quant: str, dtype: str, shape: tuple[int, int], layers: int) -> None:
    """One projection (``shape`` = (out_features, in_features)) in each of ``layers`` layers,
    stored as ``quant`` says (int8, nf4/fp4, nf4-dq/fp4-dq, else ``dtype``)."""
    out_features, in_features = shape
    n = out_features * in_features
    L = layers
    if quant == "int8":
        tally.add("int8", n, L)
        tally.add("float32", 4 * out_features, L)
        tally.quantized += n * L
        tally.scales += 4 * out_features * L
    elif quant in FOUR_BIT_QUANTS:
        blocks = -(-n // NF4_BLOCKSIZE)
        tally.add("uint8", -(-n // 2), L)
        tally.quantized += -(-n // 2) * L
        tally.add("float32", FOUR_BIT_CODE_ENTRIES * 4, L)  # NF4 or FP4 code table
        tally.code += FOUR_BIT_CODE_ENTRIES * 4 * L
        if not quant.endswith("-dq"):
            tally.add("float32", 4 * blocks, L)
            tally.scales += 4 * blocks * L
        else:
            tally.add("uint8", blocks, L)
            tally.scales += blocks * L
            outer = -(-blocks // NESTED_BLOCKSIZE)
            tally.add("float32", 4 * outer, L)  # state2.absmax
            tally.add("float32", NESTED_CODE_ENTRIES * 4, L)  # state2.code
            tally.add("float32", 4, L)  # offset
            tally.nested += (4 * outer + NESTED_CODE_ENTRIES * 4 + 4) * L
    elif quant in TORCHAO_QUANTS:  # torchao 0.18 Float8Tensor: qdata + scale (out, 1)
        tally.add("float8_e4m3fn", n, L)
        tally.add("float32", 4 * out_features, L)
        tally.quantized += n * L
        tally.scales += 4 * out_features * L
    else:
        a = DTYPE_BYTES[dtype]
        tally.add(dtype, n * a, L)
        tally.dense += n * a * L


@functools.lru_cache(maxsize=256)
def weight_breakdown(arch: Architecture, quant: str, dtype: str) -> WeightBreakdown:
    """Weights as loaded for a quant label (``nf4-not-passed`` loads unquantized weights).

    Memoized on its arguments (a frozen ``Architecture``, two labels): a grid's cells share
    one breakdown per model, quant and dtype whatever their batch and sequence. The result is
    shared between callers: do not mutate its ``by_dtype``.

    ``quant``: none, int8, nf4, nf4-dq, fp4, fp4-dq, fp8 or fp8-dyn (anything else counts as
    unquantized; fp8 and fp8-dyn store alike: one float8_e4m3fn byte per weight and a float32
    scale per output row, torchao 0.18 ``Float8Tensor`` with PerRow granularity);
    ``dtype``: a key of ``DTYPE_BYTES`` (KeyError otherwise). Bytes throughout. fp4 is stored
    exactly as nf4 (bitsandbytes 0.50 ``quantize_4bit``: the same two-per-byte packing, the
    same float32 absmax per 64-weight block or its uint8 double quantization in blocks of 256,
    a 16-entry float32 code table; only the table's values differ), so fp4/fp4-dq weigh what
    nf4/nf4-dq weigh, load residual included (assumed alike; measured for nf4 only).
    """
    s = arch.shape
    tally = _Tally()
    _dense_parameters(tally, arch, dtype)
    for shape in arch.projection_shapes().values():
        _projection(tally, quant, dtype, shape, s.num_layers)
    inv_freq = (s.head_dim // 2) * 4
    tally.add("float32", inv_freq, 2)
    residual = NF4_LOAD_RESIDUAL_BYTES if quant in FOUR_BIT_QUANTS else 0
    return WeightBreakdown(
        dense=tally.dense,
        quantized=tally.quantized,
        quant_scales=tally.scales,
        quant_nested=tally.nested,
        quant_code=tally.code,
        buffers=2 * inv_freq,
        load_residual=residual,
        allocated=tally.allocated + residual,
        by_dtype=dict(sorted(tally.by_dtype.items())),
    )
