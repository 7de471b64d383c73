"""The quantized KV cache of a cell's ``kv_cache`` axis: building it, its stored bytes, its check.

Owns: ``check_backend`` (is the cell's backend package importable), ``cache_factory`` (a fresh
transformers ``QuantizedCache`` per generation), ``stored_bytes`` (what the cache holds) and
``check_kv_cache`` (the ``kv_cache`` truth check).
May import: ``llmbench.grid``. torch, transformers and the backend package are imported only
when a quantized cache is built or inspected.

What transformers 5.17 stores (``cache_utils.QuantizedLayer.update``): the first update (the
prefill) quantizes the prompt's K and V of the layer and keeps no model-dtype copy; each decode
step dequantizes the layer's whole quantized K and V, concatenates them with the residual
(``keys``/``values``, model dtype) and the new token, and appends the token to the residual;
when the residual reaches ``residual_length - 1`` tokens the concatenation is requantized and
the residual emptied. quanto keeps a ``WeightQBitsTensor`` (packed ``uint8`` data, ``_scale``
and ``_shift`` per group); HQQ a ``(packed uint8, meta)`` pair with ``scale`` and ``zero`` per
group in ``meta``.
"""

from __future__ import annotations

import importlib.util
from collections.abc import Callable
from typing import Any

from llmbench.grid.spec import Cell

BACKEND_PACKAGES = {"quanto": "optimum.quanto", "hqq": "hqq"}
"""The module each ``QuantizedCache`` backend imports (``cache_utils.QuantoQuantizedLayer`` /
``HQQQuantizedLayer`` in transformers 5.17); optional extras of this project."""

Q_GROUP_SIZE = 64
"""Values per quantization group: ``QuantizedCache``'s default ``q_group_size`` (5.17)."""

RESIDUAL_LENGTH = 128
"""Tokens kept in the model dtype before requantizing: ``QuantizedCache``'s default."""

AXIS = 0
"""``axis_key`` and ``axis_value``: ``QuantizedCache``'s default (5.17), taken by both
backends."""


def check_backend(cell: Cell) -> str | None:
    """Why the cell's quantized-cache backend cannot be imported (the cell is then
    ``unavailable``), or None: also None for ``kv_cache: model``."""
    quantization = cell.kv_quantization
    if quantization is None:
        return None
    module = BACKEND_PACKAGES[quantization[0]]
    try:
        found = importlib.util.find_spec(module) is not None
    except ModuleNotFoundError:  # a parent package (``optimum``) is missing
        found = False
    if found:
        return None
    return (
        f"kv_cache {cell.kv_cache} needs the Python package {module!r}, which is not "
        "installed (the optional extra 'kvcache')"
    )


def prepare_backend(cell: Cell, device: str) -> str | None:
    """Build (or load the already built) C++/CUDA extension of optimum-quanto that dequantizing
    a quanto cache calls (``quanto::unpack``: ``quanto_cuda`` on ``cuda``, ``quanto_cpp`` on
    the CPU), so that its JIT compilation with ninja (and nvcc on CUDA; minutes at the first
    use, cached in the package's ``build`` folder afterwards) happens during the cell's
    start-up and not in its timed decode. Returns why it cannot be built (the cell is then
    ``unavailable``), or None: also None for HQQ (pure PyTorch) and ``kv_cache: model``."""
    quantization = cell.kv_quantization
    if quantization is None or quantization[0] != "quanto":
        return None
    from optimum.quanto.library.extensions import get_extension, is_extension_available

    name = "quanto_cuda" if device == "cuda" else "quanto_cpp"
    if not is_extension_available(name):  # quanto then dequantizes with PyTorch ops
        return None
    try:
        _ = get_extension(name).lib  # the property builds or loads it
    except Exception as exc:  # noqa: BLE001 - a compiler or header missing: the cell's reason
        first = str(exc).strip().splitlines()[:1] or [type(exc).__name__]
        return (
            f"kv_cache {cell.kv_cache}: optimum-quanto's extension {name} (its unpack kernel, "
            f"built with ninja{' and nvcc' if device == 'cuda' else ''} at first use) could "
            f"not be built: {type(exc).__name__}: {first[0][:300]}"
        )
    return None


def cache_factory(model: Any, cell: Cell) -> Callable[[], Any] | None:
    """A function building a fresh empty ``QuantizedCache`` for the cell's backend and nbits
    (defaults ``q_group_size`` 64, ``residual_length`` 128, axis 0), or None for
    ``kv_cache: model`` (the model then builds its DynamicCache itself).

    Raises ImportError (transformers' own) when the backend is missing."""
    quantization = cell.kv_quantization
    if quantization is None:
        return None
    from transformers import QuantizedCache

    backend, nbits = quantization

    def build() -> Any:
        return QuantizedCache(
            backend=backend,
            config=model.config,
            nbits=nbits,
            axis_key=AXIS,
            axis_value=AXIS,
            q_group_size=Q_GROUP_SIZE,
            residual_length=RESIDUAL_LENGTH,
        )

    return build


def _quantized_tensors(stored: Any) -> list[Any]:
    """The plain tensors a layer's quantized K (or V) holds: quanto's subclass flattened
    (recursively: its packed data is itself a subclass), HQQ's packed data and its meta's
    tensors."""
    import torch

    if isinstance(stored, tuple):  # HQQ: (packed, meta)
        packed, meta = stored
        return [packed, *(v for v in meta.values() if isinstance(v, torch.Tensor))]
    if hasattr(stored, "__tensor_flatten__"):
        names, _ = stored.__tensor_flatten__()
        return [t for name in names for t in _quantized_tensors(getattr(stored, name))]
    return [stored]


def _bytes(tensor: Any) -> int:
    return int(tensor.numel()) * int(tensor.element_size())


def stored_bytes(cache: Any) -> dict[str, Any]:
    """What a ``QuantizedCache`` holds, summed over layers (bytes): ``quantized`` (packed data
    plus scales and zero points), ``residual`` (model-dtype tokens not yet quantized),
    ``total``; and ``tensors``: ``[dtype, shape]`` of layer 0's quantized K parts."""
    quantized = residual = 0
    for layer in cache.layers:
        for stored in (layer._quantized_keys, layer._quantized_values):
            quantized += sum(_bytes(t) for t in _quantized_tensors(stored))
        residual += _bytes(layer.keys) + _bytes(layer.values)
    first = _quantized_tensors(cache.layers[0]._quantized_keys)
    return {
        "quantized": quantized,
        "residual": residual,
        "total": quantized + residual,
        "tensors": [[str(t.dtype).removeprefix("torch."), list(t.shape)] for t in first],
    }


def check_kv_cache(cache: Any, cell: Cell) -> dict[str, Any]:
    """The ``kv_cache`` truth check of a cell with a quantized cache: passes when the cache is
    a ``QuantizedCache`` whose every layer is the backend's layer class with the cell's nbits,
    and each layer's packed data is ``uint8`` of ``numel * nbits / 8`` bytes (the logical K
    shape's numel)."""
    quantization = cell.kv_quantization
    if quantization is None:
        raise ValueError(f"cell {cell.relpath} has no quantized KV cache")
    backend, nbits = quantization
    layer_class = {"quanto": "QuantoQuantizedLayer", "hqq": "HQQQuantizedLayer"}[backend]
    layers = list(getattr(cache, "layers", []))
    problems = []
    if type(cache).__name__ != "QuantizedCache":
        problems.append(f"cache is {type(cache).__name__}, not QuantizedCache")
    for index, layer in enumerate(layers):
        if type(layer).__name__ != layer_class or getattr(layer, "nbits", None) != nbits:
            problems.append(
                f"layer {index} is {type(layer).__name__} with nbits "
                f"{getattr(layer, 'nbits', None)}, not {layer_class} with {nbits}"
            )
            continue
        for name in ("_quantized_keys", "_quantized_values"):
            problems.extend(_packed_problems(getattr(layer, name), nbits, f"layer {index} {name}"))
    return {
        "expected": {"class": "QuantizedCache", "layer_class": layer_class, "nbits": nbits},
        "layers": len(layers),
        "problems": problems[:10],
        "passed": bool(layers) and not problems,
        **({"reason": "; ".join(problems[:3])} if problems else {}),
    }


def _packed_problems(stored: Any, nbits: int, where: str) -> list[str]:
    """Why one quantized K (or V) does not hold ``nbits``-bit packed ``uint8`` data."""
    if isinstance(stored, tuple):
        packed, meta = stored
        logical = 1
        for size in meta["shape"]:
            logical *= int(size)
    else:
        packed = _quantized_tensors(stored)[0]
        logical = int(stored.numel())
    expected = logical * nbits // 8
    actual = _bytes(packed)
    if str(packed.dtype) != "torch.uint8" or actual != expected:
        return [f"{where}: packed {packed.dtype} of {actual} B, expected uint8 of {expected} B"]
    return []
