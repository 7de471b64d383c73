"""Constants of the memory model, each measured once or read from library code (the source is
in each docstring), and the caching allocator's rounding of one tensor.

The allocator slack (``ALLOCATOR_SLACK_*``) belongs to the fit rule and lives in
``llmbench.predict.fit``. Imports ``llmbench`` (``GIB``, ``MIB``),
``llmbench.measure.efficiency`` and
``llmbench.measure.quantization`` (torch-free at import) for the dtype sizes and the LLM.int8
threshold they define.
"""

from __future__ import annotations

import math

from llmbench import GIB, MIB
from llmbench.measure import efficiency, quantization

DECODE_TOKENS = 32
"""Decode tokens a cell generates when a caller does not pass its run's: the default of
``measurement.decode_tokens`` in config/config.yaml (the prompt's first token plus 31 decode
steps); ``tests/predict/test_predict_constants.py`` holds them equal."""

DECODE_WARMUP_TOKENS = 4
"""Untimed decode steps before the timed ones when a caller does not pass its run's: the
default of ``measurement.decode_warmup_tokens`` in config/config.yaml (a ``graph`` decode's
static cache also holds their positions)."""

ALLOCATOR_GRANULE = 512
"""PyTorch's CUDA caching allocator rounds every request up to 512 bytes (kMinBlockSize); its
``allocated_bytes`` statistic counts the rounded size."""

CUBLAS_WORKSPACE_BYTES = 32 * MIB
"""cuBLAS workspace PyTorch allocates through the caching allocator at the first matmul on a
stream; the default ``CUBLAS_WORKSPACE_CONFIG`` on Hopper is ``:4096:8`` = 32 MiB. Measured:
in every H100 reference cell, allocated after prefill - allocated after load - prompt ids
(``b*s*8``) = 33,554,432 bytes (bf16/fp32, none/nf4; int8 adds its outlier state)."""

GRAPH_CUBLAS_WORKSPACES = 3
"""cuBLAS workspaces (``CUBLAS_WORKSPACE_BYTES`` each, one per stream that ran a matmul,
never freed) alive at a graph decode's peak: the default stream's (prefill, truth-check
steps), the side stream's of the warm-up steps, and the capture stream's
(``torch.cuda.graph``'s own stream), allocated into the graph's pool. A static decode has
the first only. Measured on the H200 decode reference (2026-12-04): graph minus static decode
peak allocated is 64.3 MiB at batch 1 × 512 (sdpa, bf16 and nf4), two workspaces and the
few more cached positions and the float32 logits a graph cell keeps."""


def decode_cublas_workspaces(decode_mode: str) -> int:
    """cuBLAS workspaces alive at the decode peak of a cell of ``decode_mode``:
    :data:`GRAPH_CUBLAS_WORKSPACES` for ``graph``, else the default stream's one."""
    return GRAPH_CUBLAS_WORKSPACES if decode_mode == "graph" else 1


CUDA_CONTEXT_BYTES = 543_162_368
"""CUDA context + kernel images of one process, outside PyTorch's allocator: NVML's
per-process used bytes - torch reserved bytes after load, identical (518 MiB) in all 46 H100
reference cells (torch 2.11, driver 580, transformers 5.17, bitsandbytes 0.50.2)."""

NF4_LOAD_RESIDUAL_BYTES = 4 * MIB
"""Allocated after loading a pre-quantized 4-bit checkpoint beyond the sum of its tensors
(4,194,304 bytes in both H100 4-bit reference loads, bf16 and fp32; int8 and unquantized
loads have none). A load-time buffer whose origin was not traced; kept as a constant."""

FP8_QUANTIZE_FLOAT32_COPIES = 3
"""Float32 ``out x in`` tensors live at once while torchao 0.18 quantizes one weight to fp8
on load (``_quantize_affine_float8``: ``x.to(float32)``, ``/ scale``, ``clamp``; the first
is no copy when the checkpoint is float32). Read from the code: the torch path, taken when
the ``mslk`` package is not installed. Measured against it, unexplained: on the H200 the 16
fp8 and fp8-dyn cells' load peaked 743.94 MiB above their after-load bytes, 40.06 MiB under
the 784 MiB counted for Mistral-7B's 14336 x 4096 weight (``results/reference/h200/quant``);
on a CPU, torchao 0.18's ``quantize_`` of that weight alone raised the peak RSS 840 MiB above
the process holding the bf16 weight, 896 MiB above it once the fp8 weight replaced it (three
runs, within 0.4 MiB): more than either. So the CUDA load does not follow this path as read;
not traced on the GPU."""

INT8_THRESHOLD = quantization.LLM_INT8_DEFAULT_THRESHOLD
"""``BitsAndBytesConfig.llm_int8_threshold`` default (``llmbench.measure.quantization``):
activations with ``|x| >= 6`` make their column an outlier column, computed in 16-bit."""

DTYPE_BYTES = efficiency.DTYPE_BYTES
"""Bytes per element of each model dtype (``llmbench.measure.efficiency``'s table)."""

DEFAULT_INITIALIZER_RANGE = 0.02
"""Std of the random-weight checkpoints' linear layers when a config does not say."""

NF4_BLOCKSIZE = 64
"""Weights per absmax block of a bitsandbytes 4-bit weight (nf4 and fp4): ``Params4bit``'s
default ``blocksize`` (``bitsandbytes/nn/modules.py``, ``Params4bit.__new__``, 0.50.2), which
``quantize_4bit`` stores as one float32 absmax per block (uint8 with double quantization)."""

NESTED_BLOCKSIZE = 256
"""Absmax values per block of the double quantization (``compress_statistics``):
``quantize_4bit`` calls ``quantize_blockwise(absmax - offset, blocksize=256)``
(``bitsandbytes/functional.py``, 0.50.2), one float32 absmax of the absmax per block."""

NESTED_CODE_ENTRIES = 256
"""Entries of the float32 code table of the double quantization's 8-bit blockwise state
(``state2.code``: ``create_dynamic_map``, one value per uint8, ``bitsandbytes/functional.py``)."""

FOUR_BIT_CODE_ENTRIES = 16
"""Entries of the float32 NF4 (or FP4) code table every 4-bit layer's ``QuantState.code``
holds: one value per 4-bit code (``get_4bit_type``, ``bitsandbytes/functional.py``)."""

FUSED_MAX_ROWS = 4
"""Rows up to which ``gemm_4bit`` on CUDA always takes the fused kernel (output only, no
dequantized weight): ``_GEMM_4BIT_CUSTOM_FLOOR_M`` in ``bitsandbytes/backends/cuda/ops.py``
(``_gemm_4bit_use_custom_cuda``, 0.50.2)."""


def granule(nbytes: int | float) -> int:
    """Bytes the caching allocator counts for one tensor of ``nbytes`` (rounded up to
    ``ALLOCATOR_GRANULE``; 0 for an empty tensor)."""
    nbytes = int(math.ceil(nbytes))
    return 0 if nbytes <= 0 else -(-nbytes // ALLOCATOR_GRANULE) * ALLOCATOR_GRANULE


def gib(nbytes: int) -> float:
    """Bytes -> GiB (2^30 bytes)."""
    return nbytes / GIB
