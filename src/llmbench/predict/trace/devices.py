"""Per-device peaks of a cell whose model ``from_pretrained(device_map=...)`` spreads over
several GPUs: the device map comes from transformers' own planner (``trace.placement``), then
load, prefill and decode are traced as for one GPU (``trace.phases``) while every new storage
is charged to the device it would live on.

Attribution (bytes, 512-byte rounded as ``LiveBytes`` rounds them):

- **weights**: each parameter and buffer storage on the device of its longest module prefix
  in the map (tied embeddings once, where the map puts the tying owner).
- **activations and KV cache**: a storage made while a module of the map runs belongs to that
  module's device (a forward pre-hook per mapped module sets it; the KV cache grows inside the
  attention of its layer, so each layer's K/V land with the layer). A storage made outside
  every mapped module (the causal mask, ``position_ids``) belongs to the main device: the
  first GPU of the map, where ``measure.phases.load.make_prompt`` puts the prompt.
- **copies between devices**: accelerate's ``AlignDevicesHook`` (added by ``dispatch_model``)
  sends every tensor argument of a mapped module to that module's device before it runs
  (``send_to_device``, a no-op for one already there), and the root module's outputs back to
  the input device (``io_same_device=True``; ``past_key_values`` skipped). Both are replayed:
  an argument on another device is cloned onto the module's device, and the logits of an
  ``lm_head`` off the main device are cloned onto it.
- **cuBLAS workspace** (``CUBLAS_WORKSPACE_BYTES``, allocated by the first matmul of each
  device, unseen by the tracer) is added to the prefill and decode peaks of every device that
  holds an ``nn.Linear``.

Unquantized cells only (``placement.check_placeable``); a map that puts a module on ``cpu``
or ``disk`` is returned as is (the model does not fit on the GPUs) without tracing.

Imports torch and ``llmbench.predict`` (constants, trace.livebytes, trace.cuda, trace.model,
trace.phases, trace.placement).
"""

from __future__ import annotations

import weakref
from collections import defaultdict
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import torch
from torch.utils._pytree import tree_map

from llmbench.grid.spec import Cell
from llmbench.predict.constants import CUBLAS_WORKSPACE_BYTES, DECODE_TOKENS
from llmbench.predict.trace.cuda import cuda_semantics
from llmbench.predict.trace.livebytes import LiveBytes
from llmbench.predict.trace.model import (
    Untraceable,
    build_meta_model,
    converted_parameters,
    forced_sdpa_backend,
)
from llmbench.predict.trace.phases import decode_passes, failure_reason, prefill_pass
from llmbench.predict.trace.placement import check_placeable, device_of, plan_device_map


@dataclass(frozen=True)
class DevicePeaks:
    """Peak allocated bytes per device (``cuda:<i>``) of load, prefill and decode, under the
    device map ``hf_device_map`` (module name -> GPU index, ``cpu`` or ``disk``).

    ``offloaded``: modules the map puts off the GPUs; when any, nothing was traced and the
    peaks are empty (the model does not fit the GPUs as given).
    """

    hf_device_map: dict[str, Any]
    load: dict[str, int] = field(default_factory=dict)
    """Bytes allocated after the load, per device."""
    load_transient: dict[str, int] = field(default_factory=dict)
    """The load's transient per device: the largest parameter of that device a checkpoint
    conversion builds (``trace.model.converted_parameters``), alive beside its sources."""
    prefill: dict[str, int] = field(default_factory=dict)
    decode: dict[str, int] = field(default_factory=dict)
    offloaded: tuple[str, ...] = ()

    @property
    def devices(self) -> list[str]:
        """The GPUs that hold part of the model, in index order."""
        return sorted(self.load, key=lambda d: int(d.split(":")[1]))

    def peak(self, device: str) -> int:
        """The largest of the three phases' peaks on ``device`` (the load's with its
        transient)."""
        load = self.load[device] + self.load_transient.get(device, 0)
        return max(load, self.prefill[device], self.decode[device])


class DeviceLiveBytes(LiveBytes):
    """``LiveBytes`` that also charges each storage to a device: the one passed to
    :meth:`track`, else ``current`` (set by the module hooks). ``live_by``/``peak_by``: live
    bytes per device now and their peaks since the last ``reset_peak``."""

    def __init__(self, main: str, overrides: Mapping[Any, Any] | None = None) -> None:
        super().__init__("meta", overrides)
        self.current = main
        self.live_by: dict[str, int] = defaultdict(int)
        self.peak_by: dict[str, int] = defaultdict(int)
        self.owner: dict[int, str] = {}

    def track(self, tensor: torch.Tensor, where: str = "track", device: str | None = None) -> None:
        new = self.new_storage(tensor)
        if new is None:
            return
        key, storage, nbytes = new
        charged = device or self.current
        self._refs[key] = weakref.ref(storage, self._freed_on(key, nbytes, charged))
        self.owner[key] = charged
        self.live += nbytes
        self.live_by[charged] += nbytes
        self._update_peak(where)
        self.peak_by[charged] = max(self.peak_by[charged], self.live_by[charged])

    def _freed_on(self, key: int, nbytes: int, device: str) -> Any:
        def callback(ref: weakref.ref) -> None:
            if self._refs.get(key) is ref:
                del self._refs[key]
                self.owner.pop(key, None)
            self.live -= nbytes
            self.live_by[device] -= nbytes

        return callback

    def device_of(self, tensor: torch.Tensor) -> str | None:
        """The device ``tensor``'s storage was charged to, or None when untracked."""
        return self.owner.get(id(tensor.untyped_storage()))

    def reset_peak(self) -> None:
        super().reset_peak()
        self.peak_by = defaultdict(int, self.live_by)


def trace_devices(
    config: Mapping[str, Any],
    cell: Cell,
    free_bytes: list[int],
    policy: str,
    *,
    decode_tokens: int = DECODE_TOKENS,
) -> DevicePeaks:
    """Plan ``cell``'s device map under ``policy`` on GPUs with ``free_bytes`` each (with the
    cell's ``max_memory``) and trace its per-device peaks. Raises ``Untraceable`` for a cell
    that cannot be placed or traced, saying why."""
    check_placeable(cell)
    model = build_meta_model(config, cell)
    hf_map = plan_device_map(model, policy, free_bytes, cell.max_memory_bytes)
    offloaded = tuple(name for name, where in hf_map.items() if not isinstance(where, int))
    if offloaded:
        return DevicePeaks(hf_map, offloaded=offloaded)
    main = f"cuda:{min(hf_map.values())}"
    live = DeviceLiveBytes(main)
    handles = _align_devices(model, hf_map, live, main)
    try:
        with live, torch.inference_mode(), cuda_semantics(forced_sdpa_backend(cell)):
            resident = _load(live, model, hf_map)
            load = dict(live.live_by)
            prompt = torch.zeros(cell.batch, cell.seq, dtype=torch.long, device="meta")
            live.track(prompt, device=main)
            prefill_pass(live, model, prompt)
            prefill = dict(live.peak_by)
            decode: dict[str, int] = defaultdict(int)
            for _ in decode_passes(live, model, prompt, cell, decode_tokens - 1):
                for device, peak in live.peak_by.items():
                    decode[device] = max(decode[device], peak)
            del resident
    except Untraceable:
        raise
    except Exception as exc:  # the model code's own failure on meta tensors is the reason
        raise Untraceable(failure_reason(exc)) from exc
    finally:
        for handle in handles:
            handle.remove()
    gpus = sorted(load)
    workspace = _matmul_devices(model, hf_map)
    transient: dict[str, int] = defaultdict(int)
    for name, nbytes in converted_parameters(model).items():
        device = device_of(name, hf_map)
        transient[device] = max(transient[device], nbytes)
    return DevicePeaks(
        hf_map,
        load={d: load[d] for d in gpus},
        load_transient={d: transient[d] for d in gpus if transient[d]},
        prefill={d: prefill.get(d, 0) + CUBLAS_WORKSPACE_BYTES * (d in workspace) for d in gpus},
        decode={d: decode.get(d, 0) + CUBLAS_WORKSPACE_BYTES * (d in workspace) for d in gpus},
    )


def _load(live: DeviceLiveBytes, model: Any, hf_map: Mapping[str, Any]) -> list[torch.Tensor]:
    """Charge every parameter and buffer storage (tied ones once) to its mapped device."""
    resident = []
    named = [*model.named_parameters(remove_duplicate=False), *model.named_buffers()]
    for name, tensor in named:
        live.track(tensor, device=device_of(name, hf_map))
        resident.append(tensor)
    return resident


def _matmul_devices(model: Any, hf_map: Mapping[str, Any]) -> set[str]:
    """Devices that hold an ``nn.Linear`` (each gets its own cuBLAS workspace)."""
    return {
        device_of(name, hf_map)
        for name, module in model.named_modules()
        if isinstance(module, torch.nn.Linear)
    }


def _align_devices(
    model: Any, hf_map: Mapping[str, Any], live: DeviceLiveBytes, main: str
) -> list[Any]:
    """Forward hooks replaying accelerate's ``AlignDevicesHook``s on ``model`` (module
    docstring); returns their handles."""
    handles = []
    for name, index in hf_map.items():
        if name == "":
            continue  # one device: dispatch_model moves the model, no hooks
        module = model.get_submodule(name)
        device = f"cuda:{index}"
        handles.append(module.register_forward_pre_hook(_enter(live, device), with_kwargs=True))
        handles.append(module.register_forward_hook(_leave(live)))
    if len(set(hf_map.values())) > 1:
        handles.append(model.register_forward_hook(_to_device(live, main)))
    return handles


def _enter(live: DeviceLiveBytes, device: str) -> Any:
    def hook(module: Any, args: Any, kwargs: Any) -> Any:
        module._llmbench_outer = live.current
        live.current = device
        send = _sender(live, device)
        kwargs = {k: v if k == "past_key_values" else tree_map(send, v) for k, v in kwargs.items()}
        return tree_map(send, args), kwargs

    return hook


def _leave(live: DeviceLiveBytes) -> Any:
    def hook(module: Any, args: Any, output: Any) -> None:
        live.current = module._llmbench_outer

    return hook


def _to_device(live: DeviceLiveBytes, main: str) -> Any:
    """The root's ``io_same_device``: its logits back on the input (main) device."""

    def hook(module: Any, args: Any, output: Any) -> Any:
        logits = getattr(output, "logits", None)
        if isinstance(logits, torch.Tensor) and live.device_of(logits) not in (None, main):
            outer, live.current = live.current, main
            output.logits = logits.clone()
            live.current = outer
        return output

    return hook


def _sender(live: DeviceLiveBytes, device: str) -> Any:
    def send(value: Any) -> Any:
        if isinstance(value, torch.Tensor) and live.device_of(value) not in (None, device):
            return value.clone()  # charged to ``device``: live.current is set
        return value

    return send
