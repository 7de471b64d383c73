"""Several GPUs: per-device peaks of a cell whose model ``from_pretrained(device_map=...)``
spreads over N GPUs of one size, whether each device fits, and how many GPUs a cell needs.

- ``predict_devices``: transformers' planner on the meta model decides the layer placement
  (``trace.placement``), the tracer charges weights, activations, KV cache, the copies
  accelerate's hooks make between devices and the logits to devices (``trace.devices``).
  ``gpu_mem`` is PyTorch's total of one GPU in bytes (``torch.cuda.mem_get_info()[1]``; the
  CLI reads it with ``llmbench.host.devicesize``).
  Each GPU is taken to have ``gpu_mem - CUDA_CONTEXT_BYTES`` free when the model loads (what
  transformers' ``get_max_memory`` reads: the context of this process is the only other
  user), and the cell's ``max_memory`` caps it.
- Per-device fit: ``fit.fit_verdict`` on each device with its own peak; the allocator slack
  is ``fit.allocator_slack`` of the device's peak minus its weights (activations + KV cache +
  logits: the single-GPU rule's transients plus the KV cache, so at least as conservative).
- ``gpus_needed``: the smallest N (1 .. ``max_gpus``) for which the planner keeps every
  module on a GPU and every device fits (``yes``).

A cell that cannot be placed or traced (quantized, a model transformers cannot build, a
data-dependent step) is ``Unpredictable`` with the reason. Runs torch and transformers (the
tracer): seconds per cell and N on the CPU, unlike the cached single-GPU predictions.

Imports ``llmbench.grid.spec.Cell`` and ``llmbench.predict`` (architecture, constants, fit,
method.Unpredictable); ``trace.devices`` (torch) only when called.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from llmbench.grid.spec import Cell
from llmbench.predict.architecture import model_config_for
from llmbench.predict.constants import CUDA_CONTEXT_BYTES, DECODE_TOKENS
from llmbench.predict.fit import allocator_slack, fit_verdict
from llmbench.predict.method import Unpredictable

MAX_GPUS = 8
"""The most GPUs ``gpus_needed`` (and ``devicesoutput.grid_device_rows``) tries when not told:
the documented default of ``llmbench predict --max-gpus``."""

DEFAULT_POLICY = "auto"
"""The device_map ``llmbench predict --gpus`` plans with when the cell's is ``config``:
transformers' ``auto`` (= ``balanced``), what ``from_pretrained(device_map="auto")`` does."""


@dataclass(frozen=True)
class DeviceFit:
    """One GPU of a multi-GPU prediction. Bytes; ``modules``: the map's modules on it."""

    device: str
    weights: int
    load: int
    prefill: int
    decode: int
    need: int
    """Largest phase peak + allocator slack + CUDA context."""
    fits: str
    """``yes`` / ``maybe`` / ``no`` (``fit.fit_verdict``)."""
    modules: tuple[str, ...]
    """The map's modules on this device, decoder layers as a range (``model.layers.0-39``)."""

    @property
    def peak(self) -> int:
        """The largest of this device's load, prefill and decode peaks: allocated bytes, as
        the phases are (no allocator slack or CUDA context: those are in ``need``)."""
        return max(self.load, self.prefill, self.decode)


@dataclass(frozen=True)
class MultiGpuPrediction:
    """Per-device predictions of one cell on ``gpus`` GPUs of ``gpu_mem`` bytes under the
    device_map ``policy``; ``offloaded``: modules the planner put off the GPUs (then
    ``devices`` is empty and the cell does not fit)."""

    cell: Cell
    policy: str
    gpus: int
    gpu_mem: int
    devices: tuple[DeviceFit, ...]
    offloaded: tuple[str, ...]

    @property
    def fits(self) -> str:
        """``no`` when anything is offloaded or a device says no; else the worst device."""
        if self.offloaded:
            return "no"
        verdicts = {d.fits for d in self.devices}
        return next(v for v in ("no", "maybe", "yes") if v in verdicts)


def resolve_policy(cell: Cell, policy: str | None) -> str:
    """The device_map to plan: ``policy`` when given, else the cell's, else (``config``)
    :data:`DEFAULT_POLICY`."""
    if policy:
        return policy
    return DEFAULT_POLICY if cell.device_map == "config" else cell.device_map


def per_device_unmodelled(cell: Cell) -> str | None:
    """Why the per-device trace cannot answer ``cell``, or None: it traces an eager
    DynamicCache decode in the model dtype (``trace.devices``), so a static or CUDA-graph
    decode, or a quantized KV cache, would get an eager bf16-cache number."""
    if cell.decode_mode != "eager":
        return f"decode_mode {cell.decode_mode} is not traced per device (eager decode only)"
    if cell.kv_cache != "model":
        return f"kv_cache {cell.kv_cache} is not traced per device (model-dtype cache only)"
    return None


def predict_devices(
    cell: Cell,
    models: Mapping[str, Any],
    repo_root: Path,
    *,
    gpus: int,
    gpu_mem: int,
    policy: str | None = None,
    decode_tokens: int = DECODE_TOKENS,
) -> MultiGpuPrediction | Unpredictable:
    """Per-device peaks and fits of ``cell`` on ``gpus`` GPUs of ``gpu_mem`` bytes each."""
    from llmbench.predict.trace.devices import trace_devices
    from llmbench.predict.trace.model import Untraceable
    from llmbench.predict.trace.placement import module_ranges

    config = model_config_for(cell.model, models, repo_root)
    if config is None:
        return Unpredictable(cell, f"{cell.model}: no architecture config.json")
    unmodelled = per_device_unmodelled(cell)
    if unmodelled:
        return Unpredictable(cell, f"per-device placement: {unmodelled}")
    chosen = resolve_policy(cell, policy)
    free = [max(gpu_mem - CUDA_CONTEXT_BYTES, 0)] * gpus
    try:
        traced = trace_devices(config, cell, free, chosen, decode_tokens=decode_tokens)
    except Untraceable as exc:
        return Unpredictable(cell, f"per-device placement: {exc}")
    modules = module_ranges(traced.hf_device_map)
    devices = []
    for device in traced.devices:
        peak = traced.peak(device)
        need = peak + allocator_slack(peak - traced.load[device]) + CUDA_CONTEXT_BYTES
        verdict = fit_verdict(
            peak_allocated=peak,
            device_need=need,
            cuda_context=CUDA_CONTEXT_BYTES,
            capacity_bytes=gpu_mem,
        )
        devices.append(
            DeviceFit(
                device=device,
                weights=traced.load[device],
                load=traced.load[device],
                prefill=traced.prefill[device],
                decode=traced.decode[device],
                need=need,
                fits=verdict,
                modules=tuple(modules.get(device, ())),
            )
        )
    return MultiGpuPrediction(cell, chosen, gpus, gpu_mem, tuple(devices), traced.offloaded)


def gpus_needed(
    cell: Cell,
    models: Mapping[str, Any],
    repo_root: Path,
    *,
    gpu_mem: int,
    policy: str | None = None,
    max_gpus: int = MAX_GPUS,
    decode_tokens: int = DECODE_TOKENS,
) -> MultiGpuPrediction | Unpredictable | None:
    """The prediction at the smallest number of GPUs (1 .. ``max_gpus``) of ``gpu_mem``
    bytes on which every device fits (``yes``); None when even ``max_gpus`` do not (or, for
    ``single``, which uses one GPU whatever N, when one does not)."""
    most = 1 if resolve_policy(cell, policy) == "single" else max_gpus  # one GPU, always
    for gpus in range(1, most + 1):
        answer = predict_devices(
            cell,
            models,
            repo_root,
            gpus=gpus,
            gpu_mem=gpu_mem,
            policy=policy,
            decode_tokens=decode_tokens,
        )
        if isinstance(answer, Unpredictable) or answer.fits == "yes":
            return answer
    return None
