"""bitsandbytes 4-bit layers on ``meta``: the model as a pre-quantized NF4 checkpoint loads
(``quantize_meta_model``), and the CUDA path of ``bitsandbytes::gemm_4bit`` for the tracer
(``GEMM_4BIT_OVERRIDES``).

Loading: transformers' own ``replace_with_bnb_linear`` swaps the linear layers (all but the
modules ``HfQuantizer.get_modules_to_not_convert`` keeps: output embeddings, tied weights)
for ``bnb.nn.Linear4bit``; each gets the tensors ``QuantState.from_dict`` restores from a
pre-quantized checkpoint (bitsandbytes 0.50): the packed weight ``uint8 (ceil(n/2), 1)``, a
float32 absmax per 64-weight block (double quantization: uint8 absmax, plus the nested
float32 absmax per 256 blocks, its 256-entry float32 code and a float32 offset) and the
16-entry float32 NF4 code; biases stay in the model dtype.

``gemm_4bit`` on CUDA (``bitsandbytes/backends/cuda/ops.py``, 0.50.2) runs a fused kernel that
allocates only its output (and a contiguous copy of the input) for ``M <= 4`` rows, and for
``M > 1536`` the fallback ``_dequant_linear_fallback``: with double quantization a float32
absmax (``empty_like``) and ``absmax + offset``, then the dequantized weight ``(N, K)`` in the
input dtype and ``F.linear``. Between 5 and 1536 rows the choice is a per-GPU heuristic
(``_gemm_4bit_use_custom_cuda``, tight on H100/H200); the fallback is assumed, as the hand
replay does (its H100 reference cells at 1024+ rows confirm it; other sizes are unverified and
over-predict by at most one dequantized weight where the fused kernel is taken).

Imports torch, bitsandbytes, transformers, ``llmbench.measure.quantization`` and
``llmbench.predict.constants`` (the bitsandbytes block sizes, shared with the hand replay).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch

from llmbench.measure.quantization import build_bnb_config
from llmbench.predict.constants import (
    FOUR_BIT_CODE_ENTRIES,
    FUSED_MAX_ROWS,
    NESTED_BLOCKSIZE,
    NESTED_CODE_ENTRIES,
    NF4_BLOCKSIZE,
)


def quantize_meta_model(model: Any, quant: str, compute_dtype: str, dtype: torch.dtype) -> None:
    """Make ``model`` (on ``meta``) what a pre-quantized ``quant`` checkpoint loads as (module
    docstring). ``quant``: nf4 or nf4-dq; raises ValueError for another."""
    import bitsandbytes as bnb
    from transformers.integrations.bitsandbytes import replace_with_bnb_linear
    from transformers.quantizers.base import HfQuantizer

    if quant not in ("nf4", "nf4-dq"):
        raise ValueError(f"not a 4-bit quantization: {quant!r}")
    config = build_bnb_config(quant, compute_dtype)
    skip = HfQuantizer.get_modules_to_not_convert(
        model, config.llm_int8_skip_modules, getattr(model, "_keep_in_fp32_modules", None)
    )
    replace_with_bnb_linear(
        model, modules_to_not_convert=skip, quantization_config=config, pre_quantized=True
    )
    for module in model.modules():
        if isinstance(module, bnb.nn.Linear4bit):
            _load_4bit(module, nested=quant == "nf4-dq", dtype=dtype)


def _meta(shape: tuple[int, ...], dtype: torch.dtype) -> torch.Tensor:
    return torch.empty(shape, dtype=dtype, device="meta")


def _load_4bit(module: Any, *, nested: bool, dtype: torch.dtype) -> None:
    from bitsandbytes.functional import QuantState
    from bitsandbytes.nn import Params4bit

    out_features, in_features = module.out_features, module.in_features
    n = out_features * in_features
    blocks = -(-n // NF4_BLOCKSIZE)
    state2, offset = None, None
    if nested:
        state2 = QuantState(
            absmax=_meta((-(-blocks // NESTED_BLOCKSIZE),), torch.float32),
            code=_meta((NESTED_CODE_ENTRIES,), torch.float32),
            blocksize=NESTED_BLOCKSIZE,
            dtype=torch.float32,
        )
        offset = _meta((), torch.float32)
    state = QuantState(
        absmax=_meta((blocks,), torch.uint8 if nested else torch.float32),
        shape=torch.Size([out_features, in_features]),
        code=_meta((FOUR_BIT_CODE_ENTRIES,), torch.float32),
        blocksize=NF4_BLOCKSIZE,
        quant_type="nf4",
        dtype=dtype,
        offset=offset,
        state2=state2,
    )
    module.weight = Params4bit(
        _meta((-(-n // 2), 1), torch.uint8),
        requires_grad=False,
        quant_state=state,
        blocksize=NF4_BLOCKSIZE,
        compress_statistics=nested,
        quant_type="nf4",
        quant_storage=torch.uint8,
        module=module,
        bnb_quantized=True,
    )
    if module.bias is not None:
        module.bias = torch.nn.Parameter(_meta((out_features,), dtype), requires_grad=False)


def gemm_4bit_cuda(
    A: torch.Tensor,
    B: torch.Tensor,
    shapeB: Any,
    absmax: torch.Tensor,
    blocksize: int,
    quant_type: str,
    bias: torch.Tensor | None = None,
    absmax_8bit: torch.Tensor | None = None,
    absmax_code: torch.Tensor | None = None,
    absmax_offset: torch.Tensor | None = None,
) -> torch.Tensor:
    """The allocations of bitsandbytes' CUDA ``gemm_4bit`` (module docstring), on meta."""
    K = A.shape[-1]
    M, N = A.numel() // K, shapeB[0]
    if M <= FUSED_MAX_ROWS and K % blocksize == 0:
        A = A.contiguous()
        out = torch.empty((*A.shape[:-1], N), dtype=A.dtype, device=A.device)
        # the kernel's float32 copy of the offset, a local until the return
        offset32 = None if absmax_offset is None else absmax_offset.to(dtype=torch.float32)
        del offset32
        return out
    # locals stay alive until the return, as in bitsandbytes' _dequant_linear_fallback
    absmax_dq = None
    if absmax_8bit is not None:
        absmax_dq = torch.empty_like(absmax_8bit, dtype=torch.float32)
        absmax = absmax_dq + absmax_offset
    B_dq = torch.empty(tuple(shapeB), dtype=A.dtype, device=A.device)
    out = torch.nn.functional.linear(A, B_dq, bias)
    del absmax, absmax_dq  # alive through the linear, like bitsandbytes' locals
    return out


def gemm_4bit_overrides() -> dict[Any, Callable[..., Any]]:
    """``{torch.ops.bitsandbytes.gemm_4bit.default: gemm_4bit_cuda}`` once bitsandbytes is
    imported (its ops are registered on import)."""
    import bitsandbytes  # noqa: F401 - registers torch.ops.bitsandbytes

    return {torch.ops.bitsandbytes.gemm_4bit.default: gemm_4bit_cuda}


def quant_state_tensors(model: Any) -> list[torch.Tensor]:
    """The tensors of every 4-bit layer's ``QuantState`` (absmax, code, offset and the nested
    state's): device memory that is neither a parameter nor a buffer."""
    tensors = []
    for module in model.modules():
        state = getattr(getattr(module, "weight", None), "quant_state", None)
        while state is not None:
            for name in ("absmax", "code", "offset"):
                value = getattr(state, name, None)
                if isinstance(value, torch.Tensor):
                    tensors.append(value)
            state = getattr(state, "state2", None)
    return tensors


def quantize_meta_model_int8(
    model: Any, dtype: torch.dtype, llm_int8_threshold: float | None = None
) -> None:
    """Make ``model`` (on ``meta``) what a pre-quantized LLM.int8 checkpoint loads as:
    ``bnb.nn.Linear8bitLt`` layers (transformers' ``replace_with_bnb_linear``, same skipped
    modules as 4-bit) holding ``Int8Params`` - int8 ``CB (out, in)`` and float32 ``SCB (out,)``
    - and biases in the model dtype; each layer's outlier threshold ``llm_int8_threshold``
    (None: bitsandbytes' default)."""
    import bitsandbytes as bnb
    from transformers.integrations.bitsandbytes import replace_with_bnb_linear
    from transformers.quantizers.base import HfQuantizer

    config = build_bnb_config("int8", "bfloat16", llm_int8_threshold)
    skip = HfQuantizer.get_modules_to_not_convert(
        model, config.llm_int8_skip_modules, getattr(model, "_keep_in_fp32_modules", None)
    )
    replace_with_bnb_linear(
        model, modules_to_not_convert=skip, quantization_config=config, pre_quantized=True
    )
    for module in model.modules():
        if isinstance(module, bnb.nn.Linear8bitLt):
            data = _meta((module.out_features, module.in_features), torch.int8)
            module.weight = bnb.nn.Int8Params(
                data,
                requires_grad=False,
                has_fp16_weights=False,
                CB=data,
                SCB=_meta((module.out_features,), torch.float32),
            )
            if module.bias is not None:
                module.bias = torch.nn.Parameter(_meta((module.out_features,), dtype), False)


def int8_scale_tensors(model: Any) -> list[torch.Tensor]:
    """The float32 ``SCB`` row scales of every LLM.int8 layer (not parameters or buffers)."""
    return [
        scb
        for module in model.modules()
        if isinstance(scb := getattr(getattr(module, "weight", None), "SCB", None), torch.Tensor)
    ]


def int8_overrides(outliers: Callable[[int, int], int]) -> dict[Any, Callable[..., Any]]:
    """The allocations of bitsandbytes' CUDA LLM.int8 kernels (``backends/cuda/ops.py``,
    0.50.2), for the ops the tracer cannot run on ``meta``:

    - ``int8_vectorwise_quant``: float32 row stats, the int8 rows, ``A.abs() >= threshold``
      (a float16 then a bool tensor), its ``any`` per column and the outlier columns
      (``argwhere``: int64). How many columns hold an outlier depends on the activations'
      values: ``outliers(rows, cols)`` says (an assumption: ``llmbench.predict.outliers``).
    - ``int8_linear_matmul``: the int32 ``(rows, out)`` result of cuBLASLt.
    - ``int8_mm_dequant``: a float16 result, cast to the dtype asked.

    ``int8_mixed_scaled_mm`` and the rest run bitsandbytes' own default composites.
    """
    ops = torch.ops.bitsandbytes

    def vectorwise_quant(A: torch.Tensor, threshold: float = 0.0) -> Any:
        rows, cols = A.numel() // A.shape[-1], A.shape[-1]
        row_stats = torch.empty(rows, device=A.device, dtype=torch.float32)
        out_row = torch.empty(A.shape, device=A.device, dtype=torch.int8)
        outlier_cols = None
        if threshold > 0.0:
            mask = A.abs() >= threshold
            found = mask.any()
            per_column = mask.any(dim=0)
            n = outliers(rows, cols)
            outlier_cols = torch.empty((n, 1), device=A.device, dtype=torch.int64).view(-1)
            del found, per_column, mask
        return out_row, row_stats, outlier_cols

    def linear_matmul(A: torch.Tensor, B: torch.Tensor) -> torch.Tensor:
        return torch.empty((*A.shape[:-1], B.shape[0]), device=A.device, dtype=torch.int32)

    def mm_dequant(A: Any, row_stats: Any, col_stats: Any, dtype: Any = None, bias: Any = None):  # noqa: ANN202
        out = torch.empty_like(A, dtype=torch.float16)
        if bias is not None and bias.dtype != torch.float16:
            out.add_(bias)
        return out.to(dtype or torch.float16)

    return {
        ops.int8_vectorwise_quant.default: vectorwise_quant,
        ops.int8_linear_matmul.default: linear_matmul,
        ops.int8_mm_dequant.default: mm_dequant,
    }
