"""The phases of one cell traced on the real model code: load, prefill and decode peak
allocated bytes, as ``llmbench.measure`` records them (``torch.cuda.max_memory_allocated``
after ``reset_peak_memory_stats`` at the start of each phase).

- **load**: every parameter and buffer storage once, rounded to 512 bytes (a 4-bit load adds
  ``NF4_LOAD_RESIDUAL_BYTES``); for its transient peak, the largest parameter a checkpoint
  conversion builds and the largest weight bitsandbytes quantizes (``TracedPeaks``; which
  applies is the cell's checkpoint's question, ``method.traced_prediction``).
- **prefill**: the prompt ``(batch, seq)`` int64 ids are resident; ONE ``model(input_ids=...)``
  under ``torch.inference_mode`` (``measure.phases.prefill.memory_pass``); the cuBLAS
  workspace (``CUBLAS_WORKSPACE_BYTES``, allocated inside the first matmul, unseen by the
  tracer) is added.
- **decode**: ``measure.phases.generation.Generation`` as ``measure.phases.decode.time_decode``
  runs it: a prefill with ``logits_to_keep=1``, peaks reset, then ``decode_tokens - 1`` steps.
  Only the first and the last step are traced: the last one after a prefill of ``seq + steps -
  2`` tokens and one step (the same cache tensors the earlier steps' ``torch.cat`` would have
  left) while the real prompt stays resident; a step's peak grows with its cache, so the steps
  between cannot exceed the larger of the two. The workspace is added. decode_mode ``static``
  and ``graph`` are traced in ``trace.static`` (``graph`` adds a workspace per stream).
- **int8**: how many input columns hold an LLM.int8 outlier depends on the activations'
  values, which meta tensors lack: ``llmbench.predict.outliers`` gives the fraction
  (random-weight checkpoints: ``down_proj``'s input only), as for the hand replay.

Imports torch, ``llmbench.measure.phases.generation`` and ``llmbench.predict`` (constants,
architecture, outliers, trace.livebytes, trace.cuda, trace.model, trace.bnb).
"""

from __future__ import annotations

import logging
import traceback
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from llmbench.grid.spec import Cell
from llmbench.grid.support import positions_needed
from llmbench.measure.phases.generation import Generation, prefill_kwargs
from llmbench.measure.phases.load import position_overflow
from llmbench.predict.architecture import Architecture
from llmbench.predict.constants import (
    CUBLAS_WORKSPACE_BYTES,
    DECODE_TOKENS,
    DECODE_WARMUP_TOKENS,
    INT8_THRESHOLD,
    NF4_LOAD_RESIDUAL_BYTES,
    decode_cublas_workspaces,
)
from llmbench.predict.outliers import int8_outlier_fraction
from llmbench.predict.trace.bnb import (
    gemm_4bit_overrides,
    int8_overrides,
    int8_scale_tensors,
    quant_state_tensors,
    quantize_meta_model,
    quantize_meta_model_int8,
)
from llmbench.predict.trace.cuda import cuda_semantics
from llmbench.predict.trace.livebytes import LiveBytes
from llmbench.predict.trace.model import (
    Untraceable,
    build_meta_model,
    converted_parameter_bytes,
    forced_sdpa_backend,
    quantized_weight_elements,
    unique_storages,
)
from llmbench.predict.trace.static import cache_bytes, graph_decode, static_decode


@dataclass(frozen=True)
class TracedPeaks:
    """Peak allocated bytes of load, prefill and decode, and where each was reached.

    ``prefill_at``/``decode_at``: the ATen op after which the peak was reached;
    ``prefill_kv``/``decode_kv``: the cache's bytes, the part of each peak that persists;
    ``sdpa``: the SDPA backends taken per query length, e.g. ``{1: "flash", 1024: "flash"}``
    (``"efficient+flash"`` where layers differ; empty without SDPA).
    """

    load: int
    prefill: int
    decode: int
    prefill_at: str
    decode_at: str
    sdpa: dict[int, str] = field(default_factory=dict)
    prefill_kv: int = 0
    """KV cache bytes the prefill returns (every layer's K/V, 512-byte rounded)."""
    decode_kv: int = 0
    """KV cache bytes after the decode step with the larger peak."""
    load_converted: int = 0
    """Bytes of the largest parameter the load builds from several checkpoint tensors
    (``trace.model.converted_parameter_bytes``): the load's transient above ``load``."""
    load_quantized_elements: int = 0
    """Elements of the largest weight bitsandbytes quantizes (``trace.model.
    quantized_weight_elements``): quantizing on load holds it in the dtype it loads in."""


def trace_cell(
    config: Mapping[str, Any],
    cell: Cell,
    *,
    decode_tokens: int = DECODE_TOKENS,
    bnb_4bit_compute_dtype: str = "bfloat16",
    decode_warmup_tokens: int = DECODE_WARMUP_TOKENS,
) -> TracedPeaks:
    """Trace load, prefill and decode of ``cell`` on the model of ``config`` (a config.json
    dict). Bytes. ``decode_warmup_tokens``: the measurement's, read for decode_mode ``graph``
    only (its cache holds the warm-up steps' positions). Raises ``Untraceable`` when the cell
    cannot be traced, saying why."""
    if cell.decode_mode == "graph" and cell.attn == "flash_attention_2":
        # measured on the H200 decode reference: every FA2 graph cell is `unsupported`
        raise Untraceable(
            "decode_mode graph with flash_attention_2: the step cannot be captured "
            "(FlashAttention-2's padded path reads the longest sequence on the host, "
            "`.item()`), so the run records it unsupported"
        )
    model = build_meta_model(config, cell)
    overflow = position_overflow(model, positions_needed(cell, decode_tokens))
    if overflow is not None:
        raise Untraceable(f"the run makes this cell unsupported after load: {overflow}")
    overrides = _quantize(model, config, cell, bnb_4bit_compute_dtype)
    live = LiveBytes("meta", overrides)
    forced = forced_sdpa_backend(cell)
    try:
        with _quiet_int8(), live, torch.inference_mode(), cuda_semantics(forced) as choices:
            load, resident = _load(live, model, cell)
            prompt = torch.zeros(cell.batch, cell.seq, dtype=torch.long, device="meta")
            live.track(prompt)
            prefill, prefill_at, prefill_kv = prefill_pass(live, model, prompt)
            if cell.decode_mode == "static":
                decode, decode_at, decode_kv = static_decode(live, model, prompt, decode_tokens)
            elif cell.decode_mode == "graph":
                decode, decode_at, decode_kv = graph_decode(
                    live, model, prompt, decode_tokens, decode_warmup_tokens
                )
            else:
                decode, decode_at, decode_kv = _decode(live, model, prompt, cell, decode_tokens - 1)
    except Untraceable:
        raise
    except Exception as exc:  # the model code's own failure on meta tensors is the reason
        raise Untraceable(failure_reason(exc)) from exc
    workspaces = decode_cublas_workspaces(cell.decode_mode)
    return TracedPeaks(
        load=load,
        prefill=prefill + CUBLAS_WORKSPACE_BYTES,
        decode=decode + CUBLAS_WORKSPACE_BYTES * workspaces,
        prefill_at=prefill_at,
        decode_at=decode_at,
        sdpa={q: "+".join(sorted(b)) for q, b in sorted(choices.sdpa.items())},
        prefill_kv=prefill_kv,
        decode_kv=decode_kv,
        load_converted=converted_parameter_bytes(model),
        load_quantized_elements=quantized_weight_elements(model),
    )


@contextmanager
def _quiet_int8() -> Iterator[None]:
    """Silence bitsandbytes' "inputs will be cast to float16" warning, which MatMul8bitLt
    logs at every call (7 per layer per forward), for the duration."""
    bnb_log = logging.getLogger("bitsandbytes.autograd._functions")
    level = bnb_log.level
    bnb_log.setLevel(logging.ERROR)
    try:
        yield
    finally:
        bnb_log.setLevel(level)


def _quantize(
    model: Any, config: Mapping[str, Any], cell: Cell, compute_dtype: str
) -> dict[Any, Any]:
    """Load ``model`` as the cell's pre-quantized checkpoint; the op overrides it needs.
    ``compute_dtype``: the configured 4-bit compute dtype, which the cell's ``bnb_compute``
    overrides (``Cell.compute_dtype_4bit``)."""
    dtype = getattr(torch, cell.dtype)
    if cell.quant in ("nf4", "nf4-dq"):
        compute_dtype = cell.compute_dtype_4bit(compute_dtype) or compute_dtype
        quantize_meta_model(model, cell.quant, compute_dtype, dtype)
        return gemm_4bit_overrides()
    if cell.quant == "int8":
        quantize_meta_model_int8(model, dtype, cell.llm_int8_threshold)
        return int8_overrides(_outlier_columns(config, cell.llm_int8_threshold))
    if cell.quant not in ("none", "nf4-not-passed"):
        raise Untraceable(f"quantization {cell.quant!r} is not traced")
    return {}


def _outlier_columns(config: Mapping[str, Any], threshold: float | None = None) -> Any:
    """LLM.int8 outlier columns of a ``rows x cols`` input at ``threshold`` (None:
    bitsandbytes' default): ``predict.outliers``' model of random-weight checkpoints (only
    ``down_proj``'s input, ``cols == intermediate_size``, reaches the threshold; at 0 the
    kernels ask nothing). Raises ``Untraceable`` for a config the model cannot read."""
    try:
        arch = Architecture.from_config(config)
        width = arch.shape.intermediate_size
    except (KeyError, TypeError, ValueError) as exc:
        raise Untraceable(f"the LLM.int8 outlier model cannot read this config: {exc!r}") from exc

    def columns(rows: int, cols: int) -> int:
        if cols != width:
            return 0
        fraction = int8_outlier_fraction(
            arch, rows, "down_proj", INT8_THRESHOLD if threshold is None else threshold
        )
        return round(fraction * cols)

    return columns


def failure_reason(exc: BaseException) -> str:
    """One line: the exception, where in transformers (or bitsandbytes) it was raised, and
    for a data-dependent step (``.item()``, a copy out of a meta tensor, ``nonzero``) why
    meta tensors cannot run it: their values are unknown (e.g. mixture-of-experts routing,
    which expert gets which token)."""
    where = ""
    for frame in reversed(traceback.extract_tb(exc.__traceback__)):
        path = Path(frame.filename)
        if "transformers" in path.parts or "bitsandbytes" in path.parts:
            parts = path.parts
            top = max(i for i, p in enumerate(parts) if p in ("transformers", "bitsandbytes"))
            where = f" at {'/'.join(parts[top:])}:{frame.lineno} ({frame.name})"
            break
    text = str(exc).splitlines()[0] if str(exc) else ""
    reason = f"tracing failed: {type(exc).__name__}: {text}{where}"
    if any(s in text for s in ("meta tensor", "item()", "data-dependent", "nonzero")):
        reason += " - a data-dependent step: meta tensors have shapes but no values"
    return reason


def _load(live: LiveBytes, model: Any, cell: Cell) -> tuple[int, list[torch.Tensor]]:
    """Bytes after load, and the tensors to keep alive for the cell (the 4-bit residual)."""
    resident = [*unique_storages(model), *quant_state_tensors(model), *int8_scale_tensors(model)]
    if cell.quant in ("nf4", "nf4-dq"):  # measured, origin not traced: a resident constant
        resident.append(torch.empty(NF4_LOAD_RESIDUAL_BYTES, dtype=torch.uint8, device="meta"))
    for tensor in resident:
        live.track(tensor)
    return live.live, resident


def prefill_pass(live: LiveBytes, model: Any, prompt: torch.Tensor) -> tuple[int, str, int]:
    """The prefill: peaks reset, one forward of ``prompt``; (peak, op at the peak, KV bytes)."""
    live.reset_peak()
    outputs = model(input_ids=prompt)
    kv = cache_bytes(outputs.past_key_values)
    del outputs
    return live.peak, live.peak_at, kv


def _decode(
    live: LiveBytes, model: Any, prompt: torch.Tensor, cell: Cell, steps: int
) -> tuple[int, str, int]:
    """The larger peak of the first and the last of ``steps`` decode steps
    (:func:`decode_passes`)."""
    return max(
        (live.peak, live.peak_at, kv) for kv in decode_passes(live, model, prompt, cell, steps)
    )


def decode_passes(
    live: LiveBytes, model: Any, prompt: torch.Tensor, cell: Cell, steps: int
) -> Iterator[int]:
    """Run the first and the last of ``steps`` decode steps, pausing after each with
    ``live``'s peak being that step's; yields the cache's bytes then. The last one follows a
    prefill of ``seq + steps - 2`` tokens and one untracked step, so that what a step leaves
    behind (LLM.int8's outlier columns) is a one-token step's, as in the run."""
    for past in sorted({cell.seq, cell.seq + max(steps, 1) - 1}):
        longer = None
        if past != cell.seq:
            longer = torch.zeros(cell.batch, past - 1, dtype=torch.long, device="meta")
        generation = Generation(model, prompt if longer is None else longer, prefill_kwargs(model))
        generation.prefill()
        del longer
        generation.input_ids = None
        if past != cell.seq:
            generation.step()
        live.reset_peak()
        if steps > 0:
            generation.step()
        yield cache_bytes(generation.cache)
        del generation
