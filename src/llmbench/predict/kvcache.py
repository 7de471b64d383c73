"""A quantized KV cache (grid axis ``kv_cache``): its stored bytes and its decode transient, and
the hand replay's phases with the model-dtype cache replaced by it.

Source: transformers 5.17 ``cache_utils.QuantizedLayer.update`` (the update rule),
``QuantoQuantizedLayer._quantize`` (optimum-quanto 0.2.7 ``quantize_weight``: a
``WeightQBitsTensor`` of packed ``uint8`` data, ``_scale`` and ``_shift`` per group) and
``HQQQuantizedLayer._quantize`` (hqq 0.2.8 ``Quantizer.quantize``: packed ``uint8`` data and
``meta["scale"]``, ``meta["zero"]`` per group), with ``QuantizedCache``'s defaults
(``q_group_size`` 64, ``residual_length`` R = 128, axis 0; ``llmbench.measure.kvcache`` builds
the cache with these).

Stored bytes of one layer's K (V alike) holding ``n = batch * kv_heads * tokens * head_dim``
values, with ``g`` = 64, ``a`` = bytes of the model dtype (scales and zero points are in the
model dtype: quanto's ``MaxOptimizer`` and hqq's ``compute_dtype`` both take the input's)::

    packed = n * nbits / 8            (uint8; quanto packs 8/nbits groups' rows per byte,
                                       hqq 8/nbits rows of each group)
    scale + zero = 2 * (n / g) * a

exact where ``n`` is a multiple of ``g`` and ``n / g`` of ``8 / nbits`` (else ``None``:
unknown, both libraries pad); ``kv_cache_bytes`` checks this on the CPU against the tensors
of a real cache's tensors after a worker run (tests/measure/test_kvcache.py).

Update rule (``QuantizedLayer.update``): the prefill quantizes all ``S`` prompt tokens and
keeps no model-dtype copy; decode step ``k`` (1-based) appends its token to the residual, and
when the residual held ``R - 1`` tokens before the step everything is requantized and the
residual emptied; so after ``k`` steps the residual holds ``k mod R`` tokens and the
quantized part ``S + k - (k mod R)``.

Decode transient of one step in a layer (``update``): the dequantized K and V of the
quantized part (``Q`` tokens each, model dtype), then ``torch.cat`` of dequantized +
residual + new token into the returned K and V (``Q + r + 1`` tokens each, ``r`` the
residual before the step), all four alive together, then the residual's ``torch.cat`` with
the token (new K and V of ``r + 1`` tokens while the old V is alive). Scratch inside the
backends' dequantize (unpacking, the ``(data - shift) * scale`` temporaries) is not modelled:
with quanto on the CPU it is freed before the first ``cat`` (checked with
``predict.trace.livebytes``, tests/predict/test_predict_kvcache.py); on CUDA it depends on the
backend's kernel (unknown), and the phase's ``stage`` says it is left out. A decode that
reaches ``R`` steps requantizes the whole layer, whose scratch is not modelled either: such
cells are not predicted.

Imports ``llmbench.grid.spec.Cell``, ``llmbench.measure.kvcache`` (``Q_GROUP_SIZE``,
``RESIDUAL_LENGTH``: the settings the worker builds the cache with) and ``llmbench.predict``
(architecture, constants, prediction, replay).
"""

from __future__ import annotations

from dataclasses import dataclass, replace

from llmbench.grid.spec import Cell
from llmbench.measure.kvcache import Q_GROUP_SIZE, RESIDUAL_LENGTH
from llmbench.predict.architecture import Architecture
from llmbench.predict.constants import DTYPE_BYTES, granule
from llmbench.predict.prediction import PhasePrediction, Prediction

UNMODELLED = "dequantize scratch inside the backend not modelled (unknown)"
"""What a quantized-cache decode prediction leaves out (see the module docstring)."""


def quantized_tensor_bytes(values: int, nbits: int, dtype_bytes: int) -> int | None:
    """Bytes one quantized K (or V) of ``values`` values stores: packed data plus one scale
    and one zero point (model dtype, ``dtype_bytes``) per group of ``Q_GROUP_SIZE``; None
    where a library would pad (unknown)."""
    per_byte = 8 // nbits
    if values % Q_GROUP_SIZE or (values // Q_GROUP_SIZE) % per_byte:
        return None
    groups = values // Q_GROUP_SIZE
    return values * nbits // 8 + 2 * groups * dtype_bytes


def split_tokens(prompt: int, steps: int) -> tuple[int, int]:
    """``(quantized, residual)`` tokens of a layer after the prefill of ``prompt`` tokens and
    ``steps`` decode steps (``QuantizedLayer.update``)."""
    residual = steps % RESIDUAL_LENGTH
    return prompt + steps - residual, residual


@dataclass(frozen=True)
class KvCacheBytes:
    """What a quantized cache stores, summed over layers (bytes, unrounded: the tensors'
    ``numel * element_size``, what ``measure.kvcache.stored_bytes`` sums)."""

    quantized: int
    residual: int

    @property
    def total(self) -> int:
        """Quantized plus residual bytes."""
        return self.quantized + self.residual


def kv_cache_bytes(
    arch: Architecture, cell: Cell, steps: int, dtype_bytes: int | None = None
) -> KvCacheBytes | None:
    """Stored bytes of the cell's quantized cache after its prefill and ``steps`` decode
    steps (K and V of every layer); None where the packing is not exact (see
    ``quantized_tensor_bytes``). Raises ValueError for a cell with ``kv_cache: model``."""
    quantization = cell.kv_quantization
    if quantization is None:
        raise ValueError(f"cell {cell.relpath} has no quantized KV cache")
    a = DTYPE_BYTES[cell.dtype] if dtype_bytes is None else dtype_bytes
    s = arch.shape
    per_token = cell.batch * s.num_kv_heads * s.head_dim
    quantized_tokens, residual_tokens = split_tokens(cell.seq, steps)
    one = quantized_tensor_bytes(per_token * quantized_tokens, quantization[1], a)
    if one is None:
        return None
    return KvCacheBytes(
        quantized=2 * s.num_layers * one,
        residual=2 * s.num_layers * per_token * residual_tokens * a,
    )


def _allocated(arch: Architecture, cell: Cell, steps: int, a: int) -> int | None:
    """The cache's allocated bytes (each tensor rounded up to the allocator's granule):
    packed data, scale and zero of K and V per layer, plus the residual."""
    bits = cell.kv_quantization[1] if cell.kv_quantization else 0
    s = arch.shape
    per_token = cell.batch * s.num_kv_heads * s.head_dim
    quantized_tokens, residual_tokens = split_tokens(cell.seq, steps)
    values = per_token * quantized_tokens
    if quantized_tensor_bytes(values, bits, a) is None:
        return None
    groups = values // Q_GROUP_SIZE
    one = granule(values * bits // 8) + 2 * granule(groups * a)
    return 2 * s.num_layers * (one + granule(per_token * residual_tokens * a))


def decode_transient_bytes(arch: Architecture, cell: Cell, steps: int, a: int) -> int:
    """The last layer's update at decode step ``steps`` (1-based): dequantized K and V
    (``Q`` tokens each), the returned K and V (``Q + r + 1`` tokens each) and the residual
    grown by ``torch.cat`` to ``r + 1`` tokens (new K and V, the old K dropped), ``Q`` and
    ``r`` as left by step ``steps - 1``; granule-rounded. Dequantize scratch is not included
    (with quanto on the CPU it is freed before the first ``cat``:
    tests/predict/test_predict_kvcache.py); a requantizing step adds only the first two (its
    quantize scratch is not modelled)."""
    s = arch.shape
    per_token = cell.batch * s.num_kv_heads * s.head_dim * a
    quantized_tokens, residual_tokens = split_tokens(cell.seq, steps - 1)
    returned = quantized_tokens + residual_tokens + 1
    dequantized_and_returned = 2 * granule(per_token * quantized_tokens) + 2 * granule(
        per_token * returned
    )
    if residual_tokens + 1 >= RESIDUAL_LENGTH:  # requantized (scratch not modelled), emptied
        return dequantized_and_returned
    # the residual grows by ``torch.cat``: new K and V, the old K already dropped
    grown = 2 * granule(per_token * (residual_tokens + 1)) - granule(per_token * residual_tokens)
    return dequantized_and_returned + grown


def with_quantized_cache(
    model_dtype: Prediction, arch: Architecture, cell: Cell, decode_tokens: int
) -> Prediction | str:
    """The hand replay of the same cell with ``kv_cache: model`` (``model_dtype``), its KV
    terms replaced by the quantized cache's; or why that cannot be done (a str).

    - prefill: every layer the model-dtype replay counted in ``kv_cache`` (whole layers of
      ``S`` tokens; a partial last one stays in the model dtype, alive as the projection's
      output) is quantized instead; at a peak inside the last layer's attention that
      layer's model-dtype K and V are alive as well (``update`` returns them); the quantize
      scratch of the first update (about 1.4 x one layer's K and V with quanto on the CPU)
      is assumed not to be the peak (it is smaller than the last layer's MLP activations).
    - decode: the peak is taken at the last layer's update of the last step
      (``decode_tokens - 1`` steps): ``kv_cache`` = the cache after the previous step,
      ``kv_cache_growth`` = ``decode_transient_bytes``; the other terms as the model-dtype
      replay has them at its peak (one token's activations).
    """
    a = DTYPE_BYTES[cell.dtype]
    steps = max(decode_tokens - 1, 0)
    if steps >= RESIDUAL_LENGTH:
        return (
            f"kv_cache {cell.kv_cache}: {steps} decode steps reach the residual length "
            f"{RESIDUAL_LENGTH}, where the whole layer is requantized: the quantize scratch "
            "is not modelled"
        )
    per_layer_full = arch.kv_bytes(cell.batch, cell.seq, a)
    after_prefill = _allocated(arch, cell, 0, a)
    before_last = _allocated(arch, cell, max(steps - 1, 0), a)
    if after_prefill is None or before_last is None:
        return (
            f"kv_cache {cell.kv_cache}: {cell.batch * arch.shape.num_kv_heads} heads x "
            f"{arch.shape.head_dim} do not fill whole groups of {Q_GROUP_SIZE} for "
            "every token count: the backends pad, not modelled"
        )
    per_layer_quantized = after_prefill // arch.shape.num_layers
    prefill_terms = model_dtype.prefill.peak
    whole, partial = divmod(prefill_terms.kv_cache, per_layer_full)
    if whole and "attention" in model_dtype.prefill.stage:
        # inside the last layer's attention the update has returned the prompt's K and V
        # themselves (model dtype): alive beside their quantized copy until attention ends
        partial += per_layer_full
    prefill = PhasePrediction(
        "prefill",
        replace(prefill_terms, kv_cache=whole * per_layer_quantized + partial),
        f"{model_dtype.prefill.stage}; {whole} layers' K/V quantized ({cell.kv_cache})",
    )
    decode = model_dtype.decode
    if steps:
        decode = PhasePrediction(
            "decode",
            replace(
                decode.peak,
                kv_cache=before_last,
                kv_cache_growth=decode_transient_bytes(arch, cell, steps, a),
            ),
            f"last layer's QuantizedCache update, step {steps} ({cell.kv_cache}); {UNMODELLED}",
        )
    return replace(
        model_dtype,
        cell=cell,
        prefill=prefill,
        decode=decode,
        method=f"{model_dtype.method} + quantized KV cache (predict.kvcache)",
        cross_check=None,
        generate_prefill=None,
    )
