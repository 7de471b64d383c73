"""The prediction of one cell: load, prefill and decode replayed on the cell's architecture
(``predict``), each phase's breakdown at its peak (``PhasePrediction``), and the whole cell
with its fit-rule quantities (``Prediction``).

Phases are those of ``worker.py``:

- **load**: ``from_pretrained`` (pre-quantized checkpoints, as ``prequantize: true`` makes
  them): the weights in their storage format.
- **prefill**: ONE ``model(input_ids)`` with defaults under ``torch.inference_mode``: a
  DynamicCache with K/V of every layer is built, logits are computed for ALL positions.
- **decode**: 31 greedy steps (``decode_tokens - 1``) through the KV cache after a prefill with
  ``logits_to_keep=1``; the prompt's cache is resident, its peak is over the steps only.

Which method answers a cell (this hand replay, or the tracer's cached result) is
``llmbench.predict.method``'s choice; ``Prediction.method`` says which one did.

Imports ``llmbench.grid.spec.Cell`` and the modules of ``llmbench.predict`` below it
(architecture, weights, replay, forward, outliers, fit, constants).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from llmbench.grid.spec import TORCHAO_QUANTS, Cell, quantizes_on_load
from llmbench.predict.architecture import Architecture
from llmbench.predict.constants import (
    CUBLAS_WORKSPACE_BYTES,
    CUDA_CONTEXT_BYTES,
    DECODE_TOKENS,
    DTYPE_BYTES,
    FP8_QUANTIZE_FLOAT32_COPIES,
)
from llmbench.predict.fit import allocator_slack, fit_verdict
from llmbench.predict.forward import _forward
from llmbench.predict.outliers import int8_outlier_fraction
from llmbench.predict.replay import Terms, _Context, _Replay
from llmbench.predict.weights import WeightBreakdown, weight_breakdown


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

    @property
    def allocated_after(self) -> int:
        """Bytes still allocated once the phase is over: the peak less its ``load_staging``
        (what the load holds only while one weight is converted: the weight being quantized
        on load and torchao's float32 copies, or a checkpoint conversion's sources). For the
        load phase this is what a cell records as
        ``memory.phases.load.devices[i].allocated_bytes``."""
        return self.peak.total - self.peak.load_staging


@dataclass(frozen=True)
class Prediction:
    """The prediction for one cell: three phases, the weights, and the fit rule's inputs."""

    cell: Cell
    weights: WeightBreakdown | None
    """The weights by storage format (hand replay); None for a traced prediction."""
    load: PhasePrediction
    prefill: PhasePrediction
    decode: PhasePrediction
    cuda_context: int = CUDA_CONTEXT_BYTES
    method: str = "hand replay"
    """``hand replay`` (this module) or ``tracer`` (``llmbench.predict.trace``)."""
    cross_check: tuple[int, int, int] | None = None
    """The other method's load, prefill and decode peak allocated bytes, where it applies."""
    generate_prefill: PhasePrediction | None = None
    """``model.generate``'s prefill (``max_new_tokens=1``, ``phases.hf_generate``; hand replay
    only); not one of ``phases``: the fit rule and the frontier read load, prefill, decode."""
    quantized_on_load: bool = False
    """Whether the load quantizes the weights (``grid.spec.quantizes_on_load``): then its
    peak holds a weight at checkpoint precision besides the quantized ones."""

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
        """Predicted reserved - allocated at the peak (see ``llmbench.predict.fit``)."""
        return allocator_slack(self.peak_phase.peak.transient)

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
        fragmentation decides (``llmbench.predict.fit.fit_verdict`` tells the H100 case)."""
        return fit_verdict(
            peak_allocated=self.peak_allocated,
            device_need=self.device_need,
            cuda_context=self.cuda_context,
            capacity_bytes=capacity_bytes,
        )

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
    decode_tokens: int = DECODE_TOKENS,
    prequantized: bool = True,
) -> Prediction:
    """Predict load, prefill and decode peaks of one cell from its architecture config.

    ``decode_tokens`` is the config's ``measurement.decode_tokens`` (the decode phase runs
    ``decode_tokens - 1`` steps); ``prequantized=False`` adds the on-load quantization
    transient to the load phase.
    """
    ctx, weights = _context(model_config, cell, bnb_4bit_compute_dtype)
    return Prediction(
        cell=cell,
        weights=weights,
        load=_load_phase(ctx, weights, prequantized=prequantized),
        prefill=_prefill_phase(ctx, weights),
        decode=_decode_phase(ctx, weights, decode_tokens),
        generate_prefill=_generate_prefill_phase(ctx, weights),
        quantized_on_load=quantizes_on_load(cell.quant, prequantized),
    )


def _context(
    model_config: Mapping[str, Any], cell: Cell, bnb_4bit_compute_dtype: str
) -> tuple[_Context, WeightBreakdown]:
    """What every phase's replay needs: the cell's context and its weights."""
    arch = Architecture.from_config(model_config)
    weights = weight_breakdown(
        arch, cell.quant if cell.quant != "nf4-not-passed" else "none", cell.dtype
    )
    ctx = _Context(
        arch=arch,
        cell=cell,
        a=DTYPE_BYTES[cell.dtype],
        # the cell's bnb_compute, or the config key at bnb_compute: config
        compute_dtype=cell.compute_dtype_4bit(bnb_4bit_compute_dtype) or bnb_4bit_compute_dtype,
    )
    return ctx, weights


def _load_phase(ctx: _Context, weights: WeightBreakdown, *, prequantized: bool) -> PhasePrediction:
    """The weights; quantizing on load adds the largest weight at checkpoint precision (and
    for fp8 the float32 copies torchao makes of it: :data:`FP8_QUANTIZE_FLOAT32_COPIES`)."""
    return _phase("load", _load_replay(ctx, weights, prequantized=prequantized))


def _load_replay(ctx: _Context, weights: WeightBreakdown, *, prequantized: bool) -> _Replay:
    load = _Replay()
    _base(load, weights, workspace=False, inputs=0)
    if ctx.quant in TORCHAO_QUANTS:  # always quantized on load (no fp8 checkpoint)
        largest = max(o * i for o, i in ctx.arch.projection_shapes().values())
        load.stage = "quantize on load"
        # the weight at checkpoint precision and the float32 copies; its fp8 result is counted
        copies = FP8_QUANTIZE_FLOAT32_COPIES - (ctx.cell.dtype == "float32")
        load.alloc("load_staging", largest * (ctx.a + 4 * copies))
    elif not prequantized and ctx.quant != "none":
        largest = max(o * i for o, i in ctx.arch.projection_shapes().values())
        load.stage = "quantize on load"
        load.alloc("load_staging", largest * DTYPE_BYTES[ctx.cell.dtype])
    return load


def _prefill_phase(ctx: _Context, weights: WeightBreakdown) -> PhasePrediction:
    """One full forward, logits for every position."""
    return _phase("prefill", _prefill_replay(ctx, weights))


def _prefill_replay(
    ctx: _Context, weights: WeightBreakdown, *, through_generate: bool = False
) -> _Replay:
    """The prompt's forward: the seed's (logits for every position), or ``generate``'s
    (``through_generate``: the last position's logits, the all-ones mask resident)."""
    cell = ctx.cell
    prefill = _Replay()
    _base(prefill, weights, workspace=True, inputs=cell.batch * cell.seq * 8)
    if through_generate:
        prefill.alloc("inputs", cell.batch * cell.seq * 8, name="attention_mask")
    logits_positions = 1 if through_generate else cell.seq
    _forward(prefill, ctx, q_len=cell.seq, past=0, logits_positions=logits_positions)
    return prefill


def _generate_prefill_phase(ctx: _Context, weights: WeightBreakdown) -> PhasePrediction:
    """``generate``'s prefill: the prompt's forward keeping the last position's logits only
    (``logits_to_keep=1``), with the all-ones attention mask ``(batch, seq)`` int64 the cell
    passes resident. Checked on the 16 eager cells of the H200 decode reference: measured
    within +0.00 … +0.17 % of this (generate's own small int64 tensors are not modelled)."""
    return _phase("generate_prefill", _prefill_replay(ctx, weights, through_generate=True))


def _decode_phase(ctx: _Context, weights: WeightBreakdown, decode_tokens: int) -> PhasePrediction:
    """Steps through the cache; the peak is at the last step (largest cache) unless the first
    step's leftovers (int8 outlier state of the prompt's forward) weigh more."""
    decode_peaks = [_phase("decode", r) for r in _decode_replays(ctx, weights, decode_tokens)]
    return max(decode_peaks, key=lambda phase: phase.peak_allocated)


def _decode_replays(ctx: _Context, weights: WeightBreakdown, decode_tokens: int) -> list[_Replay]:
    """The first and the last decode step."""
    cell = ctx.cell
    steps = max(decode_tokens - 1, 1)
    replays = []
    for step in sorted({1, steps}):
        r = _Replay()
        _base(r, weights, workspace=True, inputs=cell.batch * cell.seq * 8)
        r.alloc("inputs", cell.batch * 8, name="token")
        previous_rows = cell.batch * (cell.seq if step == 1 else 1)
        _decode_step(r, ctx, past=cell.seq + step - 1, previous_rows=previous_rows)
        replays.append(r)
    return replays


def _decode_step(r: _Replay, ctx: _Context, past: int, previous_rows: int) -> None:
    """One greedy step with ``past`` cached tokens (see ``forward._forward``).

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
