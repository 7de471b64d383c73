"""Where ``from_pretrained(device_map=...)`` puts a model's weights over several GPUs,
computed by transformers' own code on the ``meta`` model: ``_get_device_map`` (5.17:
``get_balanced_memory`` for ``auto`` / ``balanced``, then accelerate-style
``infer_auto_device_map`` with the model's ``_no_split_modules``), given each GPU's free
bytes. Returns the module ranges and the parameter bytes per device, the quantities a cell
JSON records under ``model.placement`` (``llmbench.measure.models.placement``).

Unquantized models only: a bitsandbytes model's sizes go through transformers' quantizer,
which is not set up here (``Untraceable``).

Imports torch, transformers, ``llmbench.grid.spec.Cell``, ``llmbench.measure.models``
(``placement``) and ``llmbench.predict.trace.model``.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from llmbench.grid.spec import Cell
from llmbench.measure.models import placement
from llmbench.predict.trace.model import Untraceable, build_meta_model


def predict_placement(
    config: Mapping[str, Any],
    cell: Cell,
    free_bytes: list[int],
    *,
    device_map: str = "auto",
) -> dict[str, Any]:
    """``{"parameter_bytes_per_device": {"cuda:0": ...}, "hf_device_map_modules": {...}}``
    for ``cell`` on GPUs with ``free_bytes`` each (bytes free when the model loads: total
    minus the CUDA context). Modules that fit no GPU go to ``cpu``/``disk`` as transformers
    would place them. Raises ``Untraceable`` for a quantized cell or a model transformers
    cannot build."""
    from transformers.integrations.accelerate import _get_device_map

    if cell.quant not in ("none", "nf4-not-passed"):
        raise Untraceable(f"placement of {cell.quant!r} weights is not predicted")
    model = build_meta_model(config, cell)
    max_memory: dict[Any, int] = dict(enumerate(free_bytes))
    hf_map = _get_device_map(model, device_map, max_memory, None)
    model.hf_device_map = hf_map
    where: dict[str, Any] = {}
    for name, _ in model.named_parameters():
        where[name] = _device_of(name, hf_map)
    result = placement(_Placed(model, where))
    return result


def _device_of(name: str, hf_map: Mapping[str, Any]) -> str:
    """The device of parameter ``name``: its longest module prefix in the device map."""
    best, device = -1, "cpu"
    for module, value in hf_map.items():
        if (module == "" or name == module or name.startswith(module + ".")) and len(module) > best:
            best, device = len(module), value
    return f"cuda:{device}" if isinstance(device, int) else str(device)


class _Placed:
    """The meta model seen through ``measure.models.placement``: parameters report the
    device the map gives them; ``hf_device_map`` is the map."""

    def __init__(self, model: Any, where: Mapping[str, str]) -> None:
        self.hf_device_map = model.hf_device_map
        self._params = [_PlacedParameter(p, where[name]) for name, p in model.named_parameters()]

    def parameters(self) -> list[Any]:
        return self._params


class _PlacedParameter:
    def __init__(self, parameter: Any, device: str) -> None:
        self.device = device
        self._parameter = parameter

    def numel(self) -> int:
        return self._parameter.numel()

    def element_size(self) -> int:
        return self._parameter.element_size()
