"""Where ``from_pretrained(device_map=...)`` puts a model's weights over several GPUs,
computed by transformers' own code on the ``meta`` model: ``_get_device_map`` (5.17:
``get_balanced_memory`` for ``auto`` / ``balanced`` / ``balanced_low_0``, then
accelerate-style ``infer_auto_device_map`` over ``compute_module_sizes`` with the model's
``_no_split_modules``), given each GPU's free bytes. Returns the module ranges and the
parameter bytes per device, the quantities a cell JSON records under ``model.placement``
(``llmbench.measure.models.placement``).

A run without ``max_memory`` lets transformers read each GPU's free memory
(``get_max_memory(None)``), and on ONE GPU it then plans with 90 % of it
(``get_balanced_memory``'s ``user_not_set_max_memory``). :func:`plan_device_map` answers that
call with the predicted free bytes instead of the host's devices, so the same branch is taken;
a cell's ``max_memory`` is passed as the run passes it. No ``cpu`` entry is given: modules that
fit no GPU land on ``disk`` (a run would put them on ``cpu``: either way they do not fit).

Unquantized models only: a bitsandbytes model's sizes go through transformers' quantizer,
which is not set up here (``Untraceable``).

Imports torch, transformers, ``llmbench.grid.spec.Cell``, ``llmbench.measure.models``
(``placement``) and ``llmbench.predict.trace.model``.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from typing import Any

from llmbench.grid.spec import Cell
from llmbench.measure.models import placement
from llmbench.predict.trace.model import Untraceable, build_meta_model

PLANNED_POLICIES = ("auto", "balanced", "balanced_low_0", "sequential")
"""device_map strings transformers plans (``check_and_set_device_map``); ``single`` is
``{"": 0}``."""


def check_placeable(cell: Cell) -> None:
    """Raise ``Untraceable`` for a cell whose placement is not predicted (quantized)."""
    if cell.quant not in ("none", "nf4-not-passed"):
        raise Untraceable(f"placement of {cell.quant!r} weights is not predicted")


def plan_device_map(
    model: Any, policy: str, free_bytes: list[int], cap_bytes: int | None = None
) -> dict[str, Any]:
    """The ``hf_device_map`` transformers computes for ``model`` (on ``meta``) under
    ``policy`` (``single`` or one of :data:`PLANNED_POLICIES`) on GPUs with ``free_bytes``
    each (bytes free when the model loads: total minus the CUDA context), with ``max_memory``
    = ``cap_bytes`` per GPU when the cell passes one. Values are GPU indices or ``disk``.
    Raises ValueError for a ``policy`` other than ``single`` and
    :data:`PLANNED_POLICIES`; what transformers' planner raises propagates."""
    if policy == "single":
        return {"": 0}
    if policy not in PLANNED_POLICIES:
        raise ValueError(
            f"device_map {policy!r} is not one of single, {', '.join(PLANNED_POLICIES)}"
        )
    from transformers.integrations.accelerate import _get_device_map

    max_memory = None if cap_bytes is None else dict.fromkeys(range(len(free_bytes)), cap_bytes)
    with _free_memory(free_bytes):
        return dict(_get_device_map(model, policy, max_memory, None))


@contextmanager
def _free_memory(free_bytes: list[int]) -> Iterator[None]:
    """Make transformers' ``get_max_memory`` see ``free_bytes`` as the GPUs' free memory (a
    passed ``max_memory`` is still the smaller of the two, as in transformers; accelerate's own
    reader would drop GPU indices this host does not have)."""
    import transformers.integrations.accelerate as hf_accelerate
    from accelerate.utils import convert_file_size_to_int

    original = hf_accelerate.get_max_memory

    def predicted(max_memory: Mapping[Any, Any] | None = None) -> dict[Any, Any]:
        free: dict[Any, int] = dict(enumerate(free_bytes))
        for key, value in (max_memory or {}).items():
            size = convert_file_size_to_int(value) if isinstance(value, str) else int(value)
            free[key] = min(size, free[key]) if key in free else size
        return free

    hf_accelerate.get_max_memory = predicted
    try:
        yield
    finally:
        hf_accelerate.get_max_memory = original


def predict_placement(
    config: Mapping[str, Any],
    cell: Cell,
    free_bytes: list[int],
    *,
    device_map: str = "auto",
) -> dict[str, Any]:
    """``{"parameter_bytes_per_device": {"cuda:0": ...}, "hf_device_map_modules": {...}}``
    for ``cell`` on GPUs with ``free_bytes`` each under ``device_map``, with the cell's
    ``max_memory``. Raises ``Untraceable`` for a quantized cell or a model transformers
    cannot build."""
    check_placeable(cell)
    model = build_meta_model(config, cell)
    hf_map = plan_device_map(model, device_map, free_bytes, cell.max_memory_bytes)
    model.hf_device_map = hf_map
    where = {name: device_of(name, hf_map) for name, _ in model.named_parameters()}
    return placement(_Placed(model, where))


def module_ranges(hf_map: Mapping[str, Any]) -> dict[str, list[str]]:
    """The map's modules per device, decoder layers as ranges (``model.layers.0-39``), as a
    cell JSON records them (``measure.models.placement``)."""
    return placement(_MapOnly(hf_map))["hf_device_map_modules"] or {}


class _MapOnly:
    def __init__(self, hf_map: Mapping[str, Any]) -> None:
        self.hf_device_map = dict(hf_map)

    def parameters(self) -> list[Any]:
        return []


def device_of(name: str, hf_map: Mapping[str, Any]) -> str:
    """The device of parameter, buffer or module ``name``: its longest module prefix in the
    device map (``cuda:<i>``, ``cpu`` or ``disk``)."""
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
