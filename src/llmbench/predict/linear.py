"""Replay of one projection (``nn.Linear``, its bitsandbytes replacement or a torchao
``Float8Tensor`` weight) on ``rows`` tokens: the dense matmul, torchao fp8 (weight-only or
with dynamic per-row activation quantization), ``Linear4bit`` (NF4 or FP4, double-quantized
or not: the same kernels and allocations, only the code table's values differ) and
LLM.int8's ``MatMul8bitLt`` with its outlier decomposition, allocation by allocation.

Imports ``llmbench.predict.replay``, ``outliers`` and ``constants``.
"""

from __future__ import annotations

from llmbench.predict.constants import DTYPE_BYTES, FUSED_MAX_ROWS, INT8_THRESHOLD, NF4_BLOCKSIZE
from llmbench.predict.outliers import int8_outlier_fraction
from llmbench.predict.replay import _Context, _Replay


def _linear(r: _Replay, ctx: _Context, rows: int, projection: str, term: str) -> str:
    """One projection of ``rows`` tokens; returns its output handle (model dtype)."""
    if ctx.quant == "none":
        out_features, _ = ctx.arch.projection_shapes()[projection]
        return r.alloc(term, rows * out_features * ctx.a)
    if ctx.quant == "int8":
        return _linear_int8(r, ctx, rows, projection, term)
    if ctx.quant == "fp8":
        return _linear_fp8_weight_only(r, ctx, rows, projection, term)
    if ctx.quant == "fp8-dyn":
        return _linear_fp8_dynamic(r, ctx, rows, projection, term)
    return _linear_4bit(r, ctx, rows, projection, term)


def _linear_fp8_weight_only(
    r: _Replay, ctx: _Context, rows: int, projection: str, term: str
) -> str:
    """torchao 0.18 ``Float8Tensor`` weight-only: ``_float8_addmm_impl`` runs
    ``torch.matmul(x, weight.t().dequantize())``; ``_dequantize_affine_float8`` holds
    ``qdata.to(float32)`` and its product with the row scales (float32, ``out x in`` each)
    while it casts to the model dtype; the model-dtype weight lives through the GEMM."""
    out_f, in_f = ctx.arch.projection_shapes()[projection]
    n = out_f * in_f
    upcast = r.alloc("quant_scratch", 4 * n)
    product = r.alloc("quant_scratch", 4 * n)
    weight = r.alloc("quant_scratch", n * ctx.a)
    r.free(upcast, product)
    out = r.alloc(term, rows * out_f * ctx.a)
    r.free(weight)
    return out


def _linear_fp8_dynamic(r: _Replay, ctx: _Context, rows: int, projection: str, term: str) -> str:
    """torchao 0.18 fp8 x fp8 with PerRow scales, the torch path (no ``mslk`` package):
    ``Float8Tensor.from_hp`` of the activation: ``_choose_scale_float8`` (``x.abs()`` in the
    model dtype, freed after ``amax``; float32 row scales), ``_quantize_affine_float8``
    (``x.to(float32)``, ``/ scale``, ``clamp``: three float32 ``rows x in`` tensors live
    until the float8 result exists); then ``torch._scaled_mm`` into a model-dtype output."""
    out_f, in_f = ctx.arch.projection_shapes()[projection]
    absolute = r.alloc("quant_scratch", rows * in_f * ctx.a)
    amax = r.alloc("quant_scratch", rows * ctx.a)
    r.free(absolute)
    scale = r.alloc("quant_scratch", rows * 4)
    r.free(amax)
    floats = [r.alloc("quant_scratch", rows * in_f * 4) for _ in range(3)]
    qdata = r.alloc("quant_scratch", rows * in_f)
    r.free(*floats)
    out = r.alloc(term, rows * out_f * ctx.a)
    r.free(qdata, scale)
    return out


def _linear_4bit(r: _Replay, ctx: _Context, rows: int, projection: str, term: str) -> str:
    """bitsandbytes ``Linear4bit.forward`` -> ``matmul_4bit`` -> ``gemm_4bit`` (CUDA).

    ``x.to(compute_dtype)`` (a copy when it differs from the model dtype); up to
    ``FUSED_MAX_ROWS`` (4) rows the
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
    if rows > FUSED_MAX_ROWS:
        if ctx.quant.endswith("-dq"):
            blocks = -(-out_f * in_f // NF4_BLOCKSIZE)
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
    """bitsandbytes ``MatMul8bitLt.forward`` (inference), LLM.int8 at the cell's
    ``llm_int8_threshold`` (bitsandbytes' 6.0 unless the cell names one).

    1. ``A.to(float16)`` (a copy unless fp16); ``int8_vectorwise_quant``: row stats, int8
       ``CA``, and with a threshold above 0 ``A.abs()`` and the ``>= threshold`` mask (bool),
       outlier columns (int64, kept as ``state.idx`` until the next forward). At threshold 0
       there is no mask and no ``state.idx``, and step 2 is ``int8_scaled_mm`` alone (no
       outlier part: ``MatMul8bitLt.forward``'s ``state.threshold > 0`` branch).
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
    threshold = ctx.cell.llm_int8_threshold
    threshold = INT8_THRESHOLD if threshold is None else threshold
    n_out = 0
    if threshold > 0:
        absolute = r.alloc("quant_scratch", rows * in_f * 2)
        mask = r.alloc("quant_scratch", rows * in_f)
        r.free(absolute)
        n_out = round(int8_outlier_fraction(ctx.arch, rows, projection, threshold) * in_f)
        r.free(mask)
        idx_name = f"int8_idx_{projection}"
        r.free(a16, idx_name)
        r.alloc("int8_outlier_state", n_out * 8, name=idx_name)
    else:
        r.free(a16)
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
