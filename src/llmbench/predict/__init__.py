"""GPU memory model: predicted peak allocated bytes of load, prefill and decode, by one of two
methods (``method``): the tracer (``trace``: the real transformers code run on meta tensors,
any decoder family transformers builds; its results read from a cache) or the hand replay.

Hand replay - no torch, no GPU: the prediction replays, tensor by tensor, the allocations and
frees of the code paths a cell runs (transformers 5.x Mistral/Llama/Qwen2 decoder, PyTorch SDPA
backends, bitsandbytes 0.50 LLM.int8 and 4-bit layers) and keeps the largest sum of live bytes.
Every live tensor belongs to one named *term*; a phase's prediction is the breakdown by term at
the instant of its peak, so a reader can see what fills memory when it peaks.

The peak of a forward is reached inside the last decoder layer (every earlier layer's K/V is
then resident) or at the logits; it is the maximum over the replayed sequence, never a sum of
independent maxima. Earlier layers are identical but hold less cache, so they are not replayed.

Accuracy: on the 41 ``ok`` H100 reference cells (Mistral-7B-v0.3; none/int8/nf4; eager, sdpa,
FlashAttention-2; bf16 and fp32) the prefill peak is within 0.09 % of measured (median 0.00 %),
decode within 0.03 %, load exact (tests/predict/test_predict_prediction.py). Paths the
reference does not cover are derived the same way but unmeasured: fp16, nf4-dq, fp4 and
fp4-dq (the same storage and kernels as nf4/nf4-dq in bitsandbytes 0.50), a 4-bit compute
dtype other than the configured one (grid axis ``bnb_compute``), forced SDPA
backends (math in bf16, efficient, cuDNN), int8 with fp16, Llama/Qwen2 shapes, and 4-bit
layers at 5-1536 rows (e.g. decode with batch > 4), where the dequantize fallback is assumed
although bitsandbytes may pick its fused kernel on some GPUs (over-prediction of at most one
dequantized weight). LLM.int8's outlier columns are those of a random-weight checkpoint at
the cell's ``int8_threshold`` (``outliers``; none at 0). One device is assumed
(``device_map`` that places the whole model on one GPU), except by ``multigpu``.

Modules, each importing only those above it in this list:

- ``constants``: measured constants (with their source), the allocator's 512-byte rounding.
- ``architecture``: what a config.json says (``Architecture``); a registry entry's config.json.
- ``weights``: the weights after load, by storage format (``WeightBreakdown``).
- ``outliers``: LLM.int8's outlier columns in random-weight checkpoints.
- ``replay``: the allocation replay and the terms (``Terms``: what each term holds).
- ``linear``, ``attention``, ``forward``: replay of projections, attention kernels, and one
  ``model(input_ids)``.
- ``fit``: allocator slack, device need and the fit verdict (the fit rule).
- ``prediction``: the phases load / prefill / decode of one cell (``predict``, ``Prediction``).
- ``trace`` (subpackage): the tracer, its cache (``trace.cache``, torch-free) and
  ``python -m llmbench.predict.trace.fill`` / ``.check``; see its ``__init__``.
- ``kvcache``: a quantized KV cache (grid axis ``kv_cache``): stored bytes, decode transient,
  the hand replay's phases with its KV terms replaced.
- ``method``: which method answers a cell (``predict_cell``, ``Unpredictable``).
- ``refusals``: cells that cannot run whatever the memory (``cannot_run``), known before a
  run.
- ``checked``: which predictions a committed reference cell backs (``llmbench predict``'s
  ``checked`` column).
- ``output``: rows, text table and CSV for ``llmbench predict`` and Snakemake.
- ``multigpu``: per-device peaks and fits on N GPUs, and the GPUs a cell needs (runs
  ``trace.devices``: torch, only when called).
- ``devicesoutput``: rows and table of ``llmbench predict --gpus N``.
- ``columns``: predicted and measured / predicted columns of a cells table.
- ``reserved``: predicted peak reserved bytes: each phase's replay run through ``allocator``
  (close for sdpa/flash, short by up to 20 % for eager: see its docstring); not yet used by
  ``llmbench predict`` or the frontier.
- ``oom``: ok / oom, peak reserved and the failing request of a cell: its traced allocator
  events (``trace.events``: the worker's phases in order) replayed through ``allocator`` on
  a device capacity; every one of the 48 committed H100 frontier probes gets its measured
  status, unquantized peaks reserved to the byte (runs ``trace``: torch, only when called).
- ``allocator`` (subpackage, imports nothing else from llmbench): a simulator of PyTorch's CUDA
  caching allocator (segments, reserved bytes, the OOM point for a given capacity) and a
  reader of ``torch.cuda.memory._snapshot()`` traces to check it against.

May import: ``llmbench`` itself (REPO_ROOT) and the stages below it that it needs:
``llmbench.host``, ``llmbench.grid`` (``Cell``, grids), ``llmbench.record``,
``llmbench.measure`` (``measure.efficiency.Shape``; the tracer: ``measure.phases.generation``
and ``measure.quantization``). Never torch or pandas at import time (``llmbench predict``
runs without them): only the modules of ``trace`` that run a trace import torch,
transformers and bitsandbytes, and nothing imports them unless a trace runs. This
``__init__`` re-exports every name used outside the package.
"""

from llmbench.host.devicesize import parse_bytes
from llmbench.predict.architecture import Architecture, model_config_for
from llmbench.predict.attention import attention_path
from llmbench.predict.columns import PREDICTED_COLUMNS, table_columns
from llmbench.predict.constants import (
    ALLOCATOR_GRANULE,
    CUBLAS_WORKSPACE_BYTES,
    CUDA_CONTEXT_BYTES,
    DECODE_TOKENS,
    DEFAULT_INITIALIZER_RANGE,
    DTYPE_BYTES,
    GIB,
    INT8_THRESHOLD,
    MIB,
    NF4_LOAD_RESIDUAL_BYTES,
)
from llmbench.predict.fit import ALLOCATOR_SLACK_FIXED_BYTES, ALLOCATOR_SLACK_FRACTION
from llmbench.predict.method import Unpredictable, hand_replay_reason, predict_cell
from llmbench.predict.outliers import int8_outlier_fraction
from llmbench.predict.output import (
    format_csv,
    format_report,
    format_table,
    grid_prediction_rows,
    iter_predictions,
    prediction_row,
)
from llmbench.predict.prediction import (
    PhasePrediction,
    Prediction,
    predict,
    predicted_peak_bytes,
)
from llmbench.predict.refusals import cannot_run
from llmbench.predict.replay import TERM_NAMES, Terms
from llmbench.predict.weights import WeightBreakdown, weight_breakdown

__all__ = [
    "ALLOCATOR_GRANULE",
    "ALLOCATOR_SLACK_FIXED_BYTES",
    "ALLOCATOR_SLACK_FRACTION",
    "CUBLAS_WORKSPACE_BYTES",
    "CUDA_CONTEXT_BYTES",
    "DECODE_TOKENS",
    "DEFAULT_INITIALIZER_RANGE",
    "DTYPE_BYTES",
    "GIB",
    "INT8_THRESHOLD",
    "MIB",
    "NF4_LOAD_RESIDUAL_BYTES",
    "PREDICTED_COLUMNS",
    "TERM_NAMES",
    "Architecture",
    "PhasePrediction",
    "Prediction",
    "Terms",
    "Unpredictable",
    "WeightBreakdown",
    "attention_path",
    "cannot_run",
    "format_csv",
    "format_report",
    "format_table",
    "grid_prediction_rows",
    "hand_replay_reason",
    "int8_outlier_fraction",
    "iter_predictions",
    "model_config_for",
    "parse_bytes",
    "predict",
    "predict_cell",
    "predicted_peak_bytes",
    "prediction_row",
    "table_columns",
    "weight_breakdown",
]
