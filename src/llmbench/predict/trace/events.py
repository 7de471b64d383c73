"""The ordered allocation events of one measured cell, traced on the real model code: what
the CUDA caching allocator is asked for (bytes as requested; the simulator rounds) and when
each request is freed, on one stream, in the order the worker (``llmbench.measure.worker``)
runs its phases on one device without ``empty_cache`` between them:

1. **set-up**: an 8-byte tensor made and freed (the recorded H200 runs' first two events;
   it leaves one 2 MiB small-pool segment cached);
2. **load**: transformers' ``caching_allocator_warmup`` (``modeling_utils``, 5.17): one
   ``float16`` tensor of ``(bytes of every parameter - reserved unused bytes) // 2`` elements,
   freed at once, then every parameter, buffer and quantization-state storage of the model;
   a 4-bit load adds ``NF4_LOAD_RESIDUAL_BYTES``;
3. the prompt ``(batch, seq)`` int64 ids (``measure.phases.load.make_prompt``);
4. **prefill**: the memory pass (one ``model(input_ids=...)``, full logits), then
   ``warmup + repeats`` passes (``measure.phases.prefill.time_prefill``), outputs dropped;
5. **decode**: the warm-up generation if ``decode_warmup_tokens`` (prefill with
   ``logits_to_keep=1`` and its steps), freed; then the timed one: prefill and
   ``decode_tokens - 1`` steps (``measure.phases.decode.time_decode``), freed.

The cuBLAS workspace (``CUBLAS_WORKSPACE_BYTES``) is requested right after the first matmul's
output, as ``getCurrentCUDABlasHandle`` does inside that kernel, and kept. ``generate()``
(``measurement.generate``) and the graph / static decode modes are not traced (``Untraceable``).

Checked: against the recorded H200 run of none/sdpa b2/s8192 (tests/fixtures/allocator) the
set-up and warm-up requests are the recorded ones, but the parameters come in module order
(the run loads them in checkpoint order: the same sizes, filling the same warm-up segment),
and after the load the sequences part within a few events (the run has a 64 KiB temporary at
the start of the forward and no 2 MiB one in the first layer's attention where this has one;
frees of equal-sized blocks come in another order). Against the 48 committed H100 frontier
probes (``predict.oom``) the replayed peaks and out-of-memory points are the measured ones
(unquantized peak reserved to the byte). Imports torch, transformers (through ``trace.model``),
``llmbench.measure.phases.generation``, ``llmbench.predict.allocator`` and the tracer's
``livebytes``, ``cuda``, ``model`` and ``phases`` modules.
"""

from __future__ import annotations

import weakref
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import torch

from llmbench.grid.spec import Cell
from llmbench.measure.phases.generation import Generation, prefill_kwargs
from llmbench.predict.allocator import K_SMALL_BUFFER, Alloc, Event, Free
from llmbench.predict.constants import CUBLAS_WORKSPACE_BYTES
from llmbench.predict.trace.cuda import cuda_semantics
from llmbench.predict.trace.livebytes import LiveBytes
from llmbench.predict.trace.model import Untraceable, build_meta_model, forced_sdpa_backend
from llmbench.predict.trace.phases import _load, _quantize, _quiet_int8, failure_reason

MATMULS = frozenset({"mm", "addmm", "bmm", "baddbmm", "_scaled_mm"})
"""ATen ops whose CUDA kernel calls cuBLAS (the first one allocates its workspace)."""


class AllocationLog(LiveBytes):
    """``LiveBytes`` that also keeps the allocator's view: ``events`` (``Alloc(handle,
    bytes)`` when a storage appears, ``Free(handle)`` when Python frees it) and ``marks``
    (phase name -> index of its first event)."""

    def __init__(self, overrides: Mapping[Any, Any] | None = None) -> None:
        super().__init__("meta", overrides)
        self.events: list[Event] = []
        self.marks: dict[str, int] = {}
        self.workspace = False
        self._serial = 0

    def mark(self, phase: str) -> None:
        """``phase`` starts at the next event."""
        self.marks[phase] = len(self.events)

    def request(self, nbytes: int) -> int:
        """An allocation that no tensor here owns (kept for the rest of the run); its handle."""
        self._serial += 1
        self.events.append(Alloc(self._serial, nbytes))
        return self._serial

    def track(self, tensor: torch.Tensor, where: str = "track") -> None:
        new = self.new_storage(tensor)
        if new is None:
            return
        key, storage, nbytes = new
        raw = storage.nbytes()
        handle = None
        if raw > 0:  # a 0-byte storage never reaches the allocator
            handle = self.request(raw)
        self._refs[key] = weakref.ref(storage, self._freed_event(key, nbytes, handle))
        self.live += nbytes
        self._update_peak(where)
        if not self.workspace and where.removeprefix("aten.").split(".")[0] in MATMULS:
            self.workspace = True
            self.request(CUBLAS_WORKSPACE_BYTES)

    def _freed_event(self, key: int, nbytes: int, handle: int | None) -> Any:
        def callback(ref: weakref.ref) -> None:
            if self._refs.get(key) is ref:
                del self._refs[key]
            self.live -= nbytes
            if handle is not None:
                self.events.append(Free(handle))

        return callback


@dataclass(frozen=True)
class CellEvents:
    """A cell's allocator events in run order and where each phase starts (event index):
    ``load``, ``prompt``, ``prefill`` (memory pass), ``prefill_timed``, ``decode_warmup``,
    ``decode``, ``end``."""

    events: tuple[Event, ...]
    marks: dict[str, int]

    def phase_of(self, index: int) -> str:
        """The phase the event ``index`` belongs to."""
        phase = "setup"
        for name, start in sorted(self.marks.items(), key=lambda item: item[1]):
            if start <= index:
                phase = name
        return phase


def trace_cell_events(
    config: Mapping[str, Any],
    cell: Cell,
    measurement: Mapping[str, Any],
    *,
    bnb_4bit_compute_dtype: str = "bfloat16",
) -> CellEvents:
    """The allocator events of ``cell`` on the model of ``config`` (a config.json dict) under
    ``measurement`` (warmup, repeats, decode_tokens, decode_warmup_tokens, generate).
    Raises ``Untraceable`` when the cell cannot be traced or runs a phase not traced."""
    if measurement.get("generate") or cell.decode_mode != "eager":
        raise Untraceable("allocator events: generate() and static/graph decode are not traced")
    model = build_meta_model(config, cell)
    overrides = _quantize(model, config, cell, bnb_4bit_compute_dtype)
    log = AllocationLog(overrides)
    try:
        with _quiet_int8(), log, torch.inference_mode(), cuda_semantics(forced_sdpa_backend(cell)):
            _run(log, model, cell, measurement)
    except Untraceable:
        raise
    except Exception as exc:  # the model code's own failure on meta tensors is the reason
        raise Untraceable(failure_reason(exc)) from exc
    return CellEvents(tuple(log.events), dict(log.marks))


def _run(log: AllocationLog, model: Any, cell: Cell, measurement: Mapping[str, Any]) -> None:
    """The worker's phases (module docstring), appending to ``log``."""
    log.mark("setup")
    log.events.append(Free(log.request(8)))
    log.mark("load")
    warm = _warmup_bytes(model) // 2 * 2
    if warm:
        log.events.append(Free(log.request(warm)))
    _, resident = _load(log, model, cell)
    log.mark("prompt")
    prompt = torch.zeros(cell.batch, cell.seq, dtype=torch.long, device="meta")
    log.track(prompt)
    log.mark("prefill")
    outputs = model(input_ids=prompt)
    del outputs
    log.mark("prefill_timed")
    for _ in range(measurement["warmup"] + measurement["repeats"]):
        model(input_ids=prompt)
    keep_last = prefill_kwargs(model)
    log.mark("decode_warmup")
    if measurement["decode_warmup_tokens"]:
        _generate(model, prompt, keep_last, measurement["decode_warmup_tokens"] - 1)
    log.mark("decode")
    _generate(model, prompt, keep_last, measurement["decode_tokens"] - 1)
    log.mark("end")
    del resident


def _generate(model: Any, prompt: torch.Tensor, keep_last: dict[str, Any], steps: int) -> None:
    """A ``Generation``'s prefill and ``steps`` steps; freed on return."""
    generation = Generation(model, prompt, keep_last)
    generation.prefill()
    for _ in range(steps):
        generation.step()
    del generation


def _warmup_bytes(model: Any) -> int:
    """``caching_allocator_warmup``'s request: the bytes of every parameter (each storage
    once; a packed 4-bit weight's storage is its half byte per value, as the bnb quantizer's
    ``param_element_size`` counts it) less the reserved-but-unused bytes then (the set-up's
    2 MiB small segment) where ``byte_count - unused > unused``, else 0 (nothing to warm up
    below 1.5 GiB). Its cap at the device's total - 1.2 GiB is not applied: a model that
    large does not fit one device anyway."""
    seen: dict[int, int] = {}
    for param in model.parameters():
        storage = param.untyped_storage()
        seen[id(storage)] = storage.nbytes()
    total = sum(seen.values())
    return total - K_SMALL_BUFFER if total - K_SMALL_BUFFER > K_SMALL_BUFFER else 0
