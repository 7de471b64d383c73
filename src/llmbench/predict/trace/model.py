"""A transformers model built from its config.json on the ``meta`` device, as a cell loads it:
the cell's dtype and attention implementation, bitsandbytes layers for a quantized cell.

No weights are read or made: every parameter and buffer is a meta tensor with the shape,
dtype and byte size ``from_pretrained`` would give it on the GPU (tied embeddings share one
storage, as in the real model).

Imports torch, transformers, ``llmbench.grid.spec.Cell`` and ``llmbench.predict.trace.cuda``
(the static cache's mask).
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

import torch

from llmbench.grid.spec import Cell
from llmbench.predict.trace.cuda import current_padding_ones


class Untraceable(Exception):
    """A cell the tracer cannot run; the message says why (it becomes the ``unknown`` reason)."""


FLASH_ON_SDPA = "llmbench_fa2_on_sdpa"
"""The attention implementation a ``flash_attention_2`` cell is traced with
(:func:`transformers_attention`); transformers takes a name containing "flash" for a Hub kernel."""


def transformers_attention(cell: Cell) -> str:
    """The ``attn_implementation`` the traced model uses.

    ``flash_attention_2`` needs the flash-attn package and a GPU; it is traced as SDPA's flash
    kernel, which allocates the same tensors (output and float32 logsumexp, no ``s x kv``
    tensor), under ``FLASH_ON_SDPA``: transformers' SDPA attention function with FA2's mask
    function (``masking_utils.flash_attention_mask``: None for an unpadded prompt, so no
    ``(b, 1, q, kv)`` mask is built, not even for a sliding window, which FA2 applies inside
    the kernel; with no mask, SDPA keeps K/V unrepeated, as FA2 does). A static cache's mask
    (zeros after the written positions) sends FA2 down its padded path, whose unpadding of K
    and V is allocated first (:func:`fa2_unpadded_inputs`). float32 is refused: FA2
    casts q/k/v to 16 bits first, which the SDPA flash kernel does not do.
    """
    if cell.attn == "flash_attention_2":
        if cell.dtype == "float32":
            raise Untraceable("flash_attention_2 in float32 (its 16-bit casts) is not traced")
        _register_flash_on_sdpa()
        return FLASH_ON_SDPA
    return cell.attn_implementation


def _register_flash_on_sdpa() -> None:
    """Register ``FLASH_ON_SDPA`` with transformers (idempotent): SDPA's attention function,
    FA2's mask function (an all-ones padding mask on meta read as transformers reads it on
    CUDA: no mask, as ``cuda._ignore_causal_mask_sdpa``'s patch does for SDPA)."""
    from transformers import AttentionInterface
    from transformers.integrations.sdpa_attention import sdpa_attention_forward
    from transformers.masking_utils import AttentionMaskInterface, flash_attention_mask

    def flash_mask(
        batch_size: int,
        q_length: int,
        kv_length: int,
        q_offset: int = 0,
        kv_offset: int = 0,
        mask_function: Any = None,
        attention_mask: torch.Tensor | None = None,
        **kwargs: Any,
    ) -> torch.Tensor | None:
        # A padding mask on meta (models that build an all-ones one when none is passed,
        # e.g. OPT) has no values for ``flash_attention_mask``'s ``.all()``; the prompts of
        # a run and of a trace are never padded, so give its answer for all ones.
        if attention_mask is not None and attention_mask.device.type == "meta":
            sliced = attention_mask[:, -kv_length:]
            ones = current_padding_ones()  # a static cache's mask: zeros after `ones`
            return None if ones is None or ones >= sliced.shape[1] else sliced
        more = {} if mask_function is None else {"mask_function": mask_function}
        return flash_attention_mask(
            batch_size, q_length, kv_length, q_offset, kv_offset,
            attention_mask=attention_mask, **more, **kwargs,
        )  # fmt: skip

    def attention(
        module: Any, query: Any, key: Any, value: Any, attention_mask: Any, **kwargs: Any
    ) -> Any:
        if attention_mask is None or attention_mask.dim() != 2:
            return sdpa_attention_forward(module, query, key, value, attention_mask, **kwargs)
        unpadded = fa2_unpadded_inputs(query, key, value, attention_mask)
        output = sdpa_attention_forward(module, query, key, value, None, **kwargs)
        del unpadded  # freed when _flash_attention_forward returns
        return output

    AttentionInterface.register(FLASH_ON_SDPA, attention)
    AttentionMaskInterface.register(FLASH_ON_SDPA, flash_mask)


def fa2_unpadded_inputs(query: Any, key: Any, value: Any, mask: Any) -> list[Any]:
    """What transformers 5.17's ``_flash_attention_forward`` allocates before its varlen kernel
    for a padded 2-D ``mask`` (``modeling_flash_attention_utils._upad_input``), on meta
    tensors: the int32 sequence lengths and cumulative lengths, the int64 indices of the
    ``batch * ones`` kept positions (``ones``: :func:`cuda.current_padding_ones`), and K and V
    each reshaped from ``(b, kv, h, d)`` - a copy, since they are transposed views - then
    gathered to ``(batch * ones, h, d)``, the copy freed after the gather. For a one-token
    query (decode) the query is a view and its cumulative lengths an ``arange``. Returns what
    stays alive during the kernel. ``query``/``key``/``value``: ``(b, heads, len, head_dim)``.
    Raises ``RuntimeError`` for another query length (a chunked prefill: not traced)."""
    ones = current_padding_ones()
    batch, length = mask.shape
    if ones is None or query.shape[2] != 1:
        raise RuntimeError("FlashAttention-2's padded path is traced for a one-token query only")
    device = query.device
    lengths = torch.empty(batch, dtype=torch.int32, device=device)  # mask.sum(-1)
    indices = torch.empty(batch * ones, dtype=torch.long, device=device)  # nonzero
    cumulative = torch.empty(batch + 1, dtype=torch.int32, device=device)  # F.pad(cumsum)
    del lengths
    kept = [indices, cumulative]
    for states in (key, value):
        states = states.transpose(1, 2)[:, :length]
        flat = states.reshape(-1, *states.shape[2:])
        kept.append(flat[indices])
        del flat
    kept.append(torch.arange(batch + 1, dtype=torch.int32, device=device))
    return kept


def forced_sdpa_backend(cell: Cell) -> str | None:
    """The SDPA backend a cell forces (``sdpa-<backend>``; flash for ``flash_attention_2``)."""
    return "flash" if cell.attn == "flash_attention_2" else cell.sdpa_backend


def build_meta_model(config: Mapping[str, Any], cell: Cell) -> Any:
    """``AutoModelForCausalLM.from_config`` on ``meta`` in the cell's dtype, in eval mode.

    Raises ``Untraceable`` for a config transformers cannot build (unknown ``model_type``,
    missing keys), naming the transformers error.
    """
    from transformers import AutoConfig, AutoModelForCausalLM

    try:
        hf_config = AutoConfig.for_model(**dict(config))
        with torch.device("meta"):
            model = AutoModelForCausalLM.from_config(
                hf_config,
                dtype=getattr(torch, cell.dtype),
                attn_implementation=transformers_attention(cell),
            )
    except Untraceable:
        raise
    except Exception as exc:  # transformers' own refusal is the reason
        raise Untraceable(f"transformers cannot build it: {type(exc).__name__}: {exc}") from exc
    model.eval()
    return model


def unique_storages(model: Any) -> list[torch.Tensor]:
    """One tensor per distinct storage among the parameters and buffers (tied weights once)."""
    seen: set[int] = set()
    tensors = []
    for tensor in [*model.parameters(), *model.buffers()]:
        key = id(tensor.untyped_storage())
        if key not in seen:
            seen.add(key)
            tensors.append(tensor)
    return tensors


def converted_parameter_bytes(model: Any) -> int:
    """Bytes of the largest parameter ``from_pretrained`` builds from several checkpoint
    tensors (0 if none): transformers 5.17's checkpoint conversions
    (``conversion_mapping.get_model_conversion_mapping``: a ``WeightConverter`` that merges a
    module list or concatenates, e.g. a mixture of experts' per-expert ``gate_proj`` and
    ``up_proj`` into one 3-D ``gate_up_proj``), for a checkpoint in the original per-tensor
    layout (Hub checkpoints, and the random-weight ones ``save_pretrained`` writes). While one
    is built, its source tensors are alive beside it: the load's transient peak is the
    after-load bytes plus about this much. Measured: Qwen1.5-MoE-A2.7B's load peaked
    660.0 MiB (less 1 KiB) above its after-load bytes on 3 of 5 H200 cells (``gate_up_proj``,
    60 x 2816 x 2048 bf16 = 660 MiB; 631.7 and 635.5 MiB on the other two, whose load order
    differed)."""
    return max(converted_parameters(model).values(), default=0)


def converted_parameters(model: Any) -> dict[str, int]:
    """Name -> bytes of each parameter ``from_pretrained`` builds from several checkpoint
    tensors (:func:`converted_parameter_bytes`)."""
    from transformers.conversion_mapping import get_model_conversion_mapping
    from transformers.core_model_loading import WeightConverter

    targets = [
        (converted_target(pattern), transform.scope_prefix)
        for transform in get_model_conversion_mapping(model)
        if isinstance(transform, WeightConverter)
        and any(
            type(op).__name__ in ("MergeModulelist", "Concatenate") for op in transform.operations
        )
        for pattern in _as_list(transform.target_patterns)
    ]
    return {
        name: p.numel() * p.element_size()
        for name, p in model.named_parameters()
        if any(t.search(name) and (not scope or f"{scope}." in name) for t, scope in targets)
    }


def converted_target(pattern: str) -> re.Pattern[str]:
    """A regex matching the parameter names a conversion's target ``pattern`` names, read as
    transformers reads targets (``core_model_loading.process_target_pattern``: anchors and
    lookarounds dropped, ``\\.`` a literal dot); ``*`` and a captured group's backreference
    match one name component; the match ends the name."""
    from transformers.core_model_loading import process_target_pattern

    processed, _ = process_target_pattern(pattern)
    regex = re.escape(processed).replace(r"\*", r"[^.]+").replace(r"\\1", r"[^.]+")
    return re.compile(r"(^|\.)" + regex.lstrip(r"\.") + "$")


def _as_list(patterns: str | list[str]) -> list[str]:
    return [patterns] if isinstance(patterns, str) else list(patterns)


def quantized_weight_elements(model: Any) -> int:
    """Elements of the largest weight a bitsandbytes layer of ``model`` holds quantized (0
    for none): quantizing on load (a checkpoint not pre-quantized) holds that weight on the
    GPU, in the dtype it loads in (the cell's), while bitsandbytes converts it."""
    return max(
        (
            module.in_features * module.out_features
            for module in model.modules()
            if type(module).__name__ in ("Linear4bit", "Linear8bitLt")
        ),
        default=0,
    )
