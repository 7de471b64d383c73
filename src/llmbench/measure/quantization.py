"""bitsandbytes quantization: the config each cell asks for, and proof that it was applied.

The seed notebook built a BitsAndBytesConfig and never passed it, so its "quantized" case was
the bf16 model again. Every cell here counts the bitsandbytes layers and the weight bytes by
dtype after loading, and reads from the layers themselves the 4-bit type (nf4/fp4), double
quantization, the 4-bit compute dtype and LLM.int8's outlier threshold; a requested
quantization or setting that is not there fails the cell's check.
"""

from __future__ import annotations

import sys
from collections import defaultdict
from typing import Any

from llmbench.grid.spec import BNB_QUANTS

INTENDED_QUANT = {"nf4-not-passed": "nf4"}
"""What a quant label is meant to measure, where that differs from what is passed."""

LLM_INT8_DEFAULT_THRESHOLD = 6.0
"""``BitsAndBytesConfig.llm_int8_threshold``'s default (transformers 5.17), what an int8 cell
at ``int8_threshold: default`` must hold."""


def passes_config(quant: str) -> bool:
    """Whether from_pretrained receives a quantization_config for this quant label."""
    return quant in BNB_QUANTS


def bnb_config_kwargs(
    quant: str, compute_dtype: str, llm_int8_threshold: float | None = None
) -> dict[str, Any] | None:
    """BitsAndBytesConfig arguments for a quant label (None for ``none``).

    ``compute_dtype`` (a torch dtype name) is the 4-bit layers' ``bnb_4bit_compute_dtype``;
    ``llm_int8_threshold`` is passed for int8 when not None (else bitsandbytes' default 6.0
    stays). ``nf4-not-passed`` gets the seed's nf4 arguments: the config is built all the same.
    """
    quant = INTENDED_QUANT.get(quant, quant)
    if quant == "none":
        return None
    if quant == "int8":
        kwargs: dict[str, Any] = {"load_in_8bit": True}
        if llm_int8_threshold is not None:
            kwargs["llm_int8_threshold"] = llm_int8_threshold
        return kwargs
    return {
        "load_in_4bit": True,
        "bnb_4bit_quant_type": quant.removesuffix("-dq"),
        "bnb_4bit_compute_dtype": compute_dtype,
        "bnb_4bit_use_double_quant": quant.endswith("-dq"),
    }


def build_bnb_config(
    quant: str, compute_dtype: str, llm_int8_threshold: float | None = None
) -> Any:
    """A transformers BitsAndBytesConfig for the label (:func:`bnb_config_kwargs`), or None."""
    kwargs = bnb_config_kwargs(quant, compute_dtype, llm_int8_threshold)
    if kwargs is None:
        return None
    import torch
    from transformers import BitsAndBytesConfig

    if "bnb_4bit_compute_dtype" in kwargs:
        kwargs = {
            **kwargs,
            "bnb_4bit_compute_dtype": getattr(torch, kwargs["bnb_4bit_compute_dtype"]),
        }
    return BitsAndBytesConfig(**kwargs)


def _tensor_bytes(tensor: Any) -> int:
    return tensor.numel() * tensor.element_size()


def _quant_state_tensors(weight: Any) -> list[Any]:
    """Tensors a bitsandbytes weight keeps beside itself: 4-bit absmax (and nested state),
    int8 row scales."""
    tensors = []
    state = getattr(weight, "quant_state", None)
    if state is not None:
        tensors += [
            t
            for t in (getattr(state, "absmax", None), getattr(state, "code", None))
            if t is not None
        ]
        nested = getattr(state, "state2", None)
        if nested is not None:
            tensors += [
                t
                for t in (getattr(nested, "absmax", None), getattr(nested, "code", None))
                if t is not None
            ]
    scale = getattr(weight, "SCB", None)
    if scale is not None and hasattr(scale, "numel"):
        tensors.append(scale)
    return tensors


def stored_tensors(tensor: Any) -> list[Any]:
    """The plain tensors that hold a tensor's bytes: itself, or for a wrapper tensor subclass
    (torchao's Float8Tensor: ``qdata`` float8_e4m3fn and ``scale`` float32, named by
    ``__tensor_flatten__``) its inner tensors, which own the storage the wrapper has none of."""
    flatten = getattr(tensor, "__tensor_flatten__", None)
    if flatten is None:
        return [tensor]
    names, _ = flatten()
    return [inner for name in names for inner in stored_tensors(getattr(tensor, name))]


def inspect_model(model: Any) -> dict[str, Any]:
    """What the loaded model really holds: bitsandbytes layers and weight bytes by dtype."""
    import torch

    # A model can hold bitsandbytes layers only if bitsandbytes was imported to build them;
    # not importing it otherwise keeps its start-up cost out of unquantized cells.
    bnb = sys.modules.get("bitsandbytes")
    linear4 = bnb.nn.Linear4bit if bnb is not None else ()
    linear8 = bnb.nn.Linear8bitLt if bnb is not None else ()

    counts = {"linear_4bit": 0, "linear_8bit": 0, "linear_unquantized": 0}
    quant_types: set[str] = set()
    double_quant: set[bool] = set()
    compute_dtypes: set[str] = set()
    thresholds: set[float] = set()
    for module in model.modules():
        if linear4 and isinstance(module, linear4):
            counts["linear_4bit"] += 1
            state = getattr(module.weight, "quant_state", None)
            if state is not None:
                quant_types.add(str(state.quant_type))
                double_quant.add(bool(getattr(state, "nested", False)))
            if getattr(module, "compute_dtype", None) is not None:
                compute_dtypes.add(str(module.compute_dtype).removeprefix("torch."))
        elif linear8 and isinstance(module, linear8):
            counts["linear_8bit"] += 1
            threshold = getattr(getattr(module, "state", None), "threshold", None)
            if threshold is not None:
                thresholds.add(float(threshold))
        elif isinstance(module, torch.nn.Linear):
            counts["linear_unquantized"] += 1

    bytes_by_dtype: dict[str, int] = defaultdict(int)
    seen: set[tuple[int, int]] = set()
    tensors = list(model.parameters()) + list(model.buffers())
    for parameter in list(model.parameters()):
        tensors += _quant_state_tensors(parameter)
    tensors = [stored for tensor in tensors for stored in stored_tensors(tensor)]
    for tensor in tensors:
        key = (tensor.untyped_storage().data_ptr(), tensor.storage_offset())
        if key in seen:  # tied weights (e.g. embeddings and lm_head) count once
            continue
        seen.add(key)
        bytes_by_dtype[str(tensor.dtype).removeprefix("torch.")] += _tensor_bytes(tensor)

    embedding = model.get_input_embeddings()
    return {
        "modules": counts,
        "bnb_4bit_quant_types": sorted(quant_types),
        "bnb_4bit_double_quant": sorted(double_quant),
        "bnb_4bit_compute_dtypes": sorted(compute_dtypes),
        "bnb_int8_thresholds": sorted(thresholds),
        "weight_bytes_by_dtype": dict(sorted(bytes_by_dtype.items())),
        "weight_bytes_total": sum(bytes_by_dtype.values()),
        "embedding_bytes": _tensor_bytes(embedding.weight) if embedding is not None else 0,
        "has_hf_quantizer": getattr(model, "hf_quantizer", None) is not None,
    }


def _applied(inspection: dict[str, Any]) -> str:
    """The quantization the model holds: none, int8, nf4, fp4, nf4-dq, fp4-dq, mixed-4bit."""
    modules = inspection["modules"]
    if modules["linear_8bit"]:
        return "int8"
    if not modules["linear_4bit"]:
        return "none"
    types = inspection["bnb_4bit_quant_types"]
    applied = types[0] if len(types) == 1 else "mixed-4bit"
    if applied in ("nf4", "fp4") and inspection["bnb_4bit_double_quant"] == [True]:
        applied += "-dq"
    return applied


def _setting_check(requested: Any, found: list[Any]) -> dict[str, Any]:
    """One load-time setting: what was asked, the distinct values the layers hold, and whether
    every layer holds the asked value."""
    return {"requested": requested, "found": found, "passed": found == [requested]}


def check_quantization(
    quant: str,
    inspection: dict[str, Any],
    *,
    compute_dtype: str | None = None,
    int8_threshold: float | None = None,
) -> dict[str, Any]:
    """Compare the requested quantization with what the model holds.

    ``compute_dtype``: the 4-bit compute dtype the cell asked for (checked against every
    ``Linear4bit``'s ``compute_dtype`` when the config was passed and the quant is 4-bit);
    ``int8_threshold``: the ``llm_int8_threshold`` asked for (checked against every
    ``Linear8bitLt``'s ``state.threshold`` for int8; None means bitsandbytes' default,
    :data:`LLM_INT8_DEFAULT_THRESHOLD`). Returns ``{"requested", "config_passed", "applied",
    "passed", "reason"}`` plus ``compute_dtype`` / ``int8_threshold`` (``{"requested",
    "found", "passed"}``) where they apply; ``applied`` names what was found (none, int8,
    nf4, fp4, nf4-dq, fp4-dq, or mixed-4bit). ``passed`` is False on any mismatch.
    """
    modules = inspection["modules"]
    applied = _applied(inspection)
    intended = INTENDED_QUANT.get(quant, quant)
    settings: dict[str, dict[str, Any]] = {}
    if passes_config(quant) and intended == "int8":
        requested = LLM_INT8_DEFAULT_THRESHOLD if int8_threshold is None else int8_threshold
        settings["int8_threshold"] = _setting_check(
            requested, inspection.get("bnb_int8_thresholds", [])
        )
    elif passes_config(quant) and compute_dtype is not None:
        settings["compute_dtype"] = _setting_check(
            compute_dtype, inspection["bnb_4bit_compute_dtypes"]
        )
    failed = [
        f"{name} {check['found']} where {check['requested']} was asked"
        for name, check in settings.items()
        if not check["passed"]
    ]
    passed = applied == intended and not failed
    layers = modules["linear_4bit"] + modules["linear_8bit"]
    held_as = "unquantized" if applied == "none" else applied  # "none" is the grid's label
    if passed:
        held = ", ".join(f"{name} {check['requested']}" for name, check in settings.items())
        reason = f"{applied}: {layers} bitsandbytes layers" + (f" ({held})" if held else "")
    elif applied != intended and quant in INTENDED_QUANT and not passes_config(quant):
        reason = (
            f"requested {intended} but the model holds {held_as} weights "
            f"({modules['linear_unquantized']} plain Linear layers, no bitsandbytes layer): the "
            "BitsAndBytesConfig was built but never passed to from_pretrained, as in the seed's "
            "case 2"
        )
    elif applied != intended:
        reason = f"requested {intended} but the model holds {held_as} weights"
    else:
        reason = f"{applied} as requested, but its {layers} bitsandbytes layers hold " + "; ".join(
            failed
        )
    return {
        "requested": intended,
        "config_passed": passes_config(quant),
        "applied": applied,
        "passed": passed,
        "reason": reason,
        **settings,
    }
