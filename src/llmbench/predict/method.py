"""Which method answers a cell: the tracer's cached result (``llmbench.predict.trace``: the
real transformers code run on meta tensors), the hand replay (``llmbench.predict.prediction``:
transformers 5.17's Mistral / Llama / Qwen2 code replayed by hand), or neither - then the
cell is ``Unpredictable`` with the reason of each, never a number from another family's
formula and never a crash of the other cells.

- The tracer answers when ``trace_cache`` holds the cell's trace (``llmbench predict`` never
  imports torch: it only reads the cache; ``python -m llmbench.predict.trace.fill`` fills it).
  Where the hand replay also applies, its peaks are kept in ``Prediction.cross_check``.
- The hand replay answers where it applies (``hand_replay_reason`` is None): the families it
  replays, without a sliding window the cell's tokens reach.

- A quantized-KV-cache cell (``kv_cache`` other than ``model``) gets the hand replay of its
  model-dtype twin with the KV terms replaced (``llmbench.predict.kvcache``; method
  ``hand replay + quantized KV cache (predict.kvcache)``), or ``Unpredictable`` where the
  hand replay does not apply.

Imports ``llmbench.grid.spec.Cell`` and ``llmbench.predict`` (architecture, constants,
kvcache, prediction, replay, trace.cache).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from llmbench.grid.spec import BNB_QUANTS, Cell, quantizes_on_load
from llmbench.measure.efficiency import config_sliding_window
from llmbench.predict.architecture import Architecture, model_config_for
from llmbench.predict.constants import (
    CUBLAS_WORKSPACE_BYTES,
    DECODE_TOKENS,
    DECODE_WARMUP_TOKENS,
    DTYPE_BYTES,
    decode_cublas_workspaces,
    granule,
)
from llmbench.predict.kvcache import with_quantized_cache
from llmbench.predict.prediction import PhasePrediction, Prediction, predict
from llmbench.predict.replay import Terms
from llmbench.predict.trace.cache import FILL_COMMAND, TRACE_CACHE, cached_trace

REPLAY_ERRORS: tuple[type[Exception], ...] = (
    OSError,
    ValueError,
    KeyError,
    TypeError,
    ZeroDivisionError,
)
"""What reading a model's config and replaying it may raise on bad data, each one model's
failure and its cells' ``Unpredictable`` reason: ``OSError`` (config or trace-cache file
unreadable), ``ValueError`` (not JSON, ``json.JSONDecodeError``; ``kvcache`` asked about a
model-dtype cache), ``KeyError`` (a config key ``Shape.from_config`` needs, a dtype
``DTYPE_BYTES`` lacks), ``TypeError`` (a config value of the wrong type: ``hidden_size:
null``), ``ZeroDivisionError`` (a config with 0 attention or KV heads). Any other exception
(``AttributeError``, ...) is a programming error and propagates."""

HAND_REPLAY_FAMILIES = ("mistral", "llama", "qwen2")
"""``model_type``s whose transformers 5.17 code the hand replay replays."""


@dataclass(frozen=True)
class Unpredictable:
    """A cell no method could predict, and why (``reason``, one line naming the model, the
    config file and each method's reason)."""

    cell: Cell
    reason: str


def hand_replay_reason(config: Mapping[str, Any], cell: Cell, decode_tokens: int) -> str | None:
    """Why the hand replay does not apply to ``cell`` of this config.json, or None."""
    if cell.decode_mode != "eager":
        return f"decode_mode {cell.decode_mode}: the hand replay follows DynamicCache decode"
    model_type = config.get("model_type")
    if model_type not in HAND_REPLAY_FAMILIES:
        return (
            f"the hand replay replays only the {', '.join(HAND_REPLAY_FAMILIES)} code of "
            f"transformers 5.17 (model_type {model_type!r})"
        )
    window = config_sliding_window(config)
    tokens = cell.seq + max(decode_tokens - 1, 0)
    if window and tokens > window:
        return (
            f"its sliding window ({window} tokens) is reached ({tokens} tokens): the windowed "
            "cache and mask are not replayed"
        )
    return None


def traced_prediction(
    cell: Cell, entry: Mapping[str, Any], *, prequantized: bool = True
) -> Prediction:
    """A ``Prediction`` from a trace cache entry (bytes): weights, workspace, inputs (prompt
    ids ``b*s*8``, decode token ``b*8``) and the KV cache the phase leaves by term, the rest
    of each peak ``traced`` (the forward's temporaries); a graph decode has one workspace per
    stream (``constants.decode_cublas_workspaces``). The load's peak adds its transient as
    ``load_staging``: the larger of the largest parameter a checkpoint conversion builds
    and, when the checkpoint is not pre-quantized (``prequantized`` False), the largest
    weight bitsandbytes quantizes at the cell's dtype."""
    load = int(entry["load"])
    staging = int(entry.get("load_converted", 0))
    if not prequantized and cell.quant in BNB_QUANTS:
        quantized = int(entry.get("load_quantized_elements", 0)) * DTYPE_BYTES[cell.dtype]
        staging = max(staging, quantized)
    prompt = granule(cell.batch * cell.seq * 8)

    def phase(name: str, inputs: int) -> PhasePrediction:
        peak = int(entry[name])
        workspaces = decode_cublas_workspaces(cell.decode_mode) if name == "decode" else 1
        workspace = CUBLAS_WORKSPACE_BYTES * workspaces
        rest = max(peak - load - workspace - inputs, 0)
        kv = min(int(entry.get(f"{name}_kv", 0)), rest)
        terms = Terms(
            weights=load,
            cuda_workspace=workspace,
            inputs=inputs,
            kv_cache=kv,
            traced=rest - kv,
        )
        return PhasePrediction(name, terms, f"traced: after {entry[name + '_at']}")

    return Prediction(
        cell=cell,
        weights=None,
        load=PhasePrediction(
            "load",
            Terms(weights=load, load_staging=staging),
            "traced: loading its largest converted or quantized weight" if staging else "resident",
        ),
        prefill=phase("prefill", prompt),
        decode=phase("decode", prompt + granule(cell.batch * 8)),
        method="tracer",
        quantized_on_load=quantizes_on_load(cell.quant, prequantized),
    )


def predict_cell(
    cell: Cell,
    models: Mapping[str, Any],
    repo_root: Path,
    *,
    bnb_4bit_compute_dtype: str = "bfloat16",
    decode_tokens: int = DECODE_TOKENS,
    trace_cache: Path | None = None,
    decode_warmup_tokens: int = DECODE_WARMUP_TOKENS,
    prequantized: bool = True,
) -> Prediction | Unpredictable | None:
    """The prediction for a cell of the model registry ``models`` (config.yaml's ``models``):
    None when its model has no local architecture config; ``Unpredictable`` when no method
    applies or reading the config raised. ``trace_cache``: default ``repo_root /
    TRACE_CACHE``. A static-cache or CUDA-graph decode is the tracer's only (the hand replay
    follows DynamicCache decode; ``decode_warmup_tokens``, the measurement's, sizes a graph
    decode's cache). An int8 cell's
    ``int8_threshold`` is modelled (outlier columns at that threshold,
    ``llmbench.predict.outliers``; none at 0). A 4-bit cell's ``bnb_compute`` is modelled
    (``llmbench.predict.linear``). ``prequantized``: whether the cell loads a pre-quantized
    checkpoint (``grid.plan.uses_prequantized``, or the cell's recorded checkpoint kind);
    False adds quantizing on load to the load's peak. A config or trace the model cannot be
    read from (:data:`REPLAY_ERRORS`) is ``Unpredictable``; anything else raised is a bug
    and propagates."""
    if cell.kv_quantization is not None:
        return _quantized_cache_cell(
            cell,
            models,
            repo_root,
            bnb_4bit_compute_dtype,
            decode_tokens,
            trace_cache,
            prequantized,
        )
    entry = models.get(cell.model) or {}
    source = entry.get("architecture") or entry.get("pretrained") or "its config"
    try:
        config = model_config_for(cell.model, models, repo_root)
        if config is None:
            return None
        hand_reason = hand_replay_reason(config, cell, decode_tokens)
        hand = None
        if hand_reason is None:
            hand = predict(
                config,
                cell,
                bnb_4bit_compute_dtype=bnb_4bit_compute_dtype,
                decode_tokens=decode_tokens,
                prequantized=prequantized,
            )
        traced = cached_trace(
            config,
            cell,
            decode_tokens=decode_tokens,
            compute_dtype=bnb_4bit_compute_dtype,
            cache_dir=repo_root / TRACE_CACHE if trace_cache is None else trace_cache,
            decode_warmup_tokens=decode_warmup_tokens,
        )
    except REPLAY_ERRORS as exc:  # one model's failure is its cells' data, not everyone's crash
        return Unpredictable(cell, f"cannot predict {cell.model} from {source}: {exc!r}")
    if traced is not None and "untraceable" not in traced:
        cross = None if hand is None else tuple(p.peak_allocated for p in hand.phases)
        generate = None  # the tracer does not trace generate()'s prefill; the replay does
        if hand is not None and hand.generate_prefill is not None:
            generate = replace(
                hand.generate_prefill, stage=f"hand replay: {hand.generate_prefill.stage}"
            )
        return replace(
            traced_prediction(cell, traced, prequantized=prequantized),
            cross_check=cross,
            generate_prefill=generate,
        )
    if hand is not None:
        return hand
    tracer = traced["untraceable"] if traced else f"not traced yet ({FILL_COMMAND})"
    return Unpredictable(
        cell, f"cannot predict {cell.model} from {source}: {hand_reason}; tracer: {tracer}"
    )


def _quantized_cache_cell(
    cell: Cell,
    models: Mapping[str, Any],
    repo_root: Path,
    bnb_4bit_compute_dtype: str,
    decode_tokens: int,
    trace_cache: Path | None,
    prequantized: bool = True,
) -> Prediction | Unpredictable | None:
    """A quantized-KV-cache cell: the hand replay of the same cell with a model-dtype cache,
    its KV terms replaced (``llmbench.predict.kvcache``); the tracer's cached traces are of
    DynamicCache runs and are not used."""
    model_dtype = predict_cell(
        replace(cell, kv_cache="model"),
        models,
        repo_root,
        bnb_4bit_compute_dtype=bnb_4bit_compute_dtype,
        decode_tokens=decode_tokens,
        trace_cache=trace_cache,
        prequantized=prequantized,
    )
    if model_dtype is None:
        return None
    if isinstance(model_dtype, Unpredictable):
        return Unpredictable(cell, f"kv_cache {cell.kv_cache}: {model_dtype.reason}")
    if model_dtype.method != "hand replay" and model_dtype.cross_check is None:
        return Unpredictable(
            cell,
            f"kv_cache {cell.kv_cache}: only the hand replay's terms are adjusted for a "
            f"quantized cache; {cell.model} is predicted by the {model_dtype.method}",
        )
    try:
        config = model_config_for(cell.model, models, repo_root) or {}
        if model_dtype.method != "hand replay":  # the tracer answered; the hand replay applies
            model_dtype = predict(
                config,
                replace(cell, kv_cache="model"),
                bnb_4bit_compute_dtype=bnb_4bit_compute_dtype,
                decode_tokens=decode_tokens,
                prequantized=prequantized,
            )
        arch = Architecture.from_config(config)
        adjusted = with_quantized_cache(model_dtype, arch, cell, decode_tokens)
    except REPLAY_ERRORS as exc:  # one model's failure is its cells' data, not everyone's crash
        return Unpredictable(cell, f"kv_cache {cell.kv_cache}: cannot predict: {exc!r}")
    return Unpredictable(cell, adjusted) if isinstance(adjusted, str) else adjusted
