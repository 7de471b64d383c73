"""The load phase: which checkpoint, loaded how, and what the loaded model really holds.

Owns: ``LoadPlan``/``plan_load`` (checkpoint and from_pretrained arguments), ``load_model``
(the tracked load), ``ModelFacts``/``inspect_model`` (shape, weights, placement),
``attention_check``, ``make_inputs``/``make_prompt`` (the prompt token ids) and ``Loaded``
(what the later phases use).
May import: ``llmbench.grid``, ``llmbench.measure`` (models, quantization, attention,
efficiency, memory) and ``llmbench.measure.phases.spec``.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from llmbench.grid.spec import Cell
from llmbench.measure import attention, models, quantization
from llmbench.measure.efficiency import Shape
from llmbench.measure.memory import MemoryTracker
from llmbench.measure.phases.spec import CellSpec


@dataclass(frozen=True)
class LoadPlan:
    """What to load and how: a checkpoint (path or hub id), its kind, from_pretrained kwargs."""

    checkpoint: str
    kind: str
    """``base``, ``prequantized`` or ``pretrained``."""
    kwargs: dict[str, Any]

    def describe(self) -> dict[str, Any]:
        """JSON form, recorded under ``model`` before the load starts."""
        return {
            "checkpoint": self.checkpoint,
            "checkpoint_kind": self.kind,
            "from_pretrained_kwargs": models.describe_kwargs(self.kwargs),
        }


def plan_load(spec: CellSpec, device: str) -> LoadPlan:
    """Choose the checkpoint and build the from_pretrained arguments for ``device``.

    Raises KeyError when the spec has no ``model_entry`` (as reading it did before).
    """
    if spec.model_entry is None:
        raise KeyError("model_entry")
    configured = spec.settings["bnb_4bit_compute_dtype"]
    cell = spec.cell
    checkpoint, kind = models.choose_checkpoint(
        spec.model_entry, spec.base_dir, spec.prequantized_dir, quant=cell.quant
    )
    kwargs = models.load_kwargs(
        quant=cell.quant,
        attn_implementation=cell.attn_implementation,
        dtype=cell.dtype,
        device_map=models.resolve_device_map(
            cell.device_map_policy(spec.settings["device_map"]), device
        ),
        compute_dtype=cell.compute_dtype_4bit(configured) or configured,
        llm_int8_threshold=cell.llm_int8_threshold,
    )
    max_memory = models.resolve_max_memory(cell.max_memory_bytes, device)
    if max_memory is not None:
        kwargs["max_memory"] = max_memory
    config = models.loading_config(checkpoint, kwargs.get("quantization_config"))
    if config is not None:
        kwargs["config"] = config
    return LoadPlan(checkpoint, kind, kwargs)


def load_model(plan: LoadPlan, tracker: MemoryTracker) -> tuple[Any, float]:
    """Load through from_pretrained inside the tracker's ``load`` phase; (model, seconds).

    Raises what from_pretrained raises, and MemoryBudgetExceeded when the load outgrew a CPU
    budget (the tracker keeps the phase's memory record either way).
    """
    tracker.mark_before_load()
    with tracker.phase("load"):
        model, seconds = models.load(plan.checkpoint, plan.kwargs)
    return model, seconds


@dataclass(frozen=True)
class ModelFacts:
    """What the loaded model holds, read from the model itself (not from what was asked)."""

    shape: Shape
    model_type: str | None
    n_parameters: int
    dtype_loaded: str
    placement: dict[str, Any]
    """Parameter bytes per device and device_map module ranges (``models.placement``)."""
    inspection: dict[str, Any]
    """bitsandbytes layers and weight bytes by dtype (``quantization.inspect_model``)."""
    attn_in_config: str | None
    """The attention implementation the model's config says it uses."""
    experts: tuple[int, int, int] | None = None
    """A mixture-of-experts model's ``(experts, experts per token, bytes of the expert
    weights)``; None for a dense model (``expert_weights``)."""

    def describe(self) -> dict[str, Any]:
        """JSON form, added to ``model`` after the load."""
        return {
            "model_type": self.model_type,
            "n_parameters": self.n_parameters,
            "dtype_loaded": self.dtype_loaded,
            "placement": self.placement,
            "weights": self.inspection,
        }


def _routing(config: Mapping[str, Any]) -> tuple[int | None, int | None]:
    """(experts, experts per token) of a mixture-of-experts config, else (None, None)."""
    experts = config.get("num_experts") or config.get("num_local_experts")
    top_k = config.get("num_experts_per_tok")
    return (int(experts), int(top_k)) if experts and top_k else (None, None)


def expert_weights(model: Any, config: Mapping[str, Any]) -> tuple[int, int, int] | None:
    """``(experts, experts per token, bytes)`` of a mixture-of-experts model's routed expert
    weights (its 3-D ``(experts, out, in)`` parameters, as stored: bitsandbytes leaves them
    unquantized); None for a dense model."""
    experts, top_k = _routing(config)
    if experts is None or top_k is None:
        return None
    stored = 0
    for module in model.modules():
        for param in module.parameters(recurse=False):
            if param.dim() == 3 and param.shape[0] == experts:
                stored += param.numel() * param.element_size()
    return experts, top_k, stored


def position_limit(model: Any) -> tuple[int, str] | None:
    """``(positions, module name)`` of a model with learned absolute position embeddings (an
    ``nn.Embedding`` named ``embed_positions``, ``wpe`` or ``position_embeddings``; OPT's
    keeps ``offset`` = 2 rows in front): a prompt plus its decoded tokens longer than
    ``positions`` indexes past the table (a device-side assert on CUDA). None for rotary or
    other relative positions, which have no such table."""
    import torch

    for name, module in model.named_modules():
        if isinstance(module, torch.nn.Embedding) and name.rsplit(".", 1)[-1] in (
            "embed_positions",
            "wpe",
            "position_embeddings",
        ):
            return module.num_embeddings - int(getattr(module, "offset", 0)), name
    return None


def matmul_params_per_token(model: Any, config: Mapping[str, Any]) -> int:
    """Weights one token multiplies through (``measure.efficiency`` conventions): every
    ``nn.Linear``'s ``in_features x out_features`` (bitsandbytes' layers keep those of the
    unquantized layer); in a mixture-of-experts model (``num_experts`` or
    ``num_local_experts`` and ``num_experts_per_tok`` in the config) also each router
    (transformers 5 keeps it as a bare ``(experts, hidden)`` parameter, every token goes
    through it) and the 3-D expert weights (``(experts, out, in)``) at
    ``num_experts_per_tok / experts`` of their elements."""
    import torch

    experts, top_k = _routing(config)
    total = 0
    for module in model.modules():
        if isinstance(module, torch.nn.Linear):
            total += module.in_features * module.out_features
        elif experts and top_k:
            for param in module.parameters(recurse=False):
                if param.dim() == 3 and param.shape[0] == experts:
                    total += param.numel() * top_k // experts
                elif param.dim() == 2 and param.shape[0] == experts:
                    total += param.numel()
    return total


def position_overflow(model: Any, positions: int) -> str | None:
    """Why ``positions`` (prompt + decoded tokens) cannot run on ``model``: past its learned
    position embeddings (``position_limit``); None where they fit or it has no such table."""
    limit = position_limit(model)
    if limit is None or positions <= limit[0]:
        return None
    return (
        f"the prompt and its decoded tokens need {positions} positions; the model's learned "
        f"position embeddings ({limit[1]}) hold {limit[0]}"
    )


def inspect_model(model: Any) -> ModelFacts:
    """Shape, parameter count, loaded dtype, placement and weights of a loaded model."""
    config = model.config.to_dict()
    shape = Shape.from_config(config, counted=matmul_params_per_token(model, config))
    inspection = quantization.inspect_model(model)
    return ModelFacts(
        shape=shape,
        model_type=config.get("model_type"),
        n_parameters=sum(p.numel() for p in model.parameters()),
        dtype_loaded=str(model.dtype).removeprefix("torch."),
        placement=models.placement(model),
        inspection=inspection,
        attn_in_config=getattr(model.config, "_attn_implementation", None),
        experts=expert_weights(model, config),
    )


def attention_check(cell: Cell, attn_in_config: str | None) -> dict[str, Any]:
    """The attention check as far as the config tells; prefill adds the counted calls."""
    return {
        "requested": cell.attn_implementation,
        "config_attn_implementation": attn_in_config,
        "sdpa_backend_forced": cell.sdpa_backend,
        "flash_attn": attention.flash_attn_info(),
        "passed": attn_in_config == cell.attn_implementation,
    }


def make_inputs(kind: str, batch: int, seq: int, vocab_size: int, seed: int, torch: Any) -> Any:
    """Prompt token ids of shape (batch, seq): random (default) or zeros (the seed's input)."""
    if kind == "zeros":
        return torch.zeros(batch, seq, dtype=torch.long)
    generator = torch.Generator().manual_seed(seed)
    return torch.randint(0, vocab_size, (batch, seq), generator=generator, dtype=torch.long)


def make_prompt(model: Any, spec: CellSpec, vocab_size: int, torch: Any) -> Any:
    """The cell's prompt token ids, on the device of the model's input embeddings."""
    input_device = model.get_input_embeddings().weight.device
    return make_inputs(
        spec.measurement["input_tokens"],
        spec.cell.batch,
        spec.cell.seq,
        vocab_size,
        spec.measurement["seed"],
        torch,
    ).to(input_device)


@dataclass(frozen=True)
class Loaded:
    """The load phase's result: the model, its prompt and facts, for prefill and decode.

    Holds the model and the prompt for the rest of the cell, as the worker always did.
    """

    model: Any
    input_ids: Any
    facts: ModelFacts
    measure_started: float
    """time.perf_counter() right after the load: ``timing_breakdown.measure_s`` starts here."""
    new_cache: Callable[[], Any] | None = None
    """Builds a fresh empty KV cache for one forward over the prompt (the cell's quantized
    cache, ``measure.kvcache.cache_factory``); None: the model builds its DynamicCache."""

    def cache_kwargs(self) -> dict[str, Any]:
        """``{"past_key_values": <fresh cache>}`` for a prompt forward, or ``{}``."""
        return {} if self.new_cache is None else {"past_key_values": self.new_cache()}
