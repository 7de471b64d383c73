"""Planning: which frontier searches a config asks for, and which ``frontier`` section a run uses.

Owns :class:`Search` (one configuration and the axis it moves along; its cell at a value, its
file names), the step grid of a search (:func:`search_values`), the plan of a section
(:func:`plan`) and the CPU fallback to config/frontier-tiny.yaml (:func:`choose_section`).
May import: :mod:`.search`, ``llmbench.grid`` (and yaml, lazily).
"""

from __future__ import annotations

import itertools
import re
from collections.abc import Mapping
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from llmbench.frontier.search import grid_values
from llmbench.grid.files import InputError
from llmbench.grid.spec import ALLOCATORS, KV_CACHES, Cell, parse_variant

AXES: tuple[str, ...] = ("seq", "batch")
"""Axis a search moves along; the other one is held fixed."""

_SEARCH_NAME = re.compile(r"(seq_b|batch_s)([1-9][0-9]*)(.*)")
"""A search's file stem: axis, fixed value, the probes' path suffix (``Cell.variant``)."""


@dataclass(frozen=True, order=True)
class Search:
    """One frontier search: a configuration and the axis it moves along.

    ``axis`` "seq": the largest sequence length at batch ``fixed``; "batch": the largest batch
    at sequence length ``fixed``. ``kv_cache``: the probes' KV cache format (grid axis
    ``kv_cache``; default ``model``, the name and paths searches had before it existed);
    ``allocator``: their CUDA caching-allocator mode (grid axis ``allocator``; default
    ``default``, likewise).
    """

    model: str
    quant: str
    attn: str
    dtype: str
    axis: str
    fixed: int
    kv_cache: str = KV_CACHES[0]
    allocator: str = ALLOCATORS[0]

    def __post_init__(self) -> None:
        if self.axis not in AXES:
            raise ValueError(f"axis must be one of {', '.join(AXES)}, got {self.axis!r}")
        self.cell(1)  # validates model/quant/attn/dtype/fixed like a cell

    @property
    def name(self) -> str:
        """File stem: ``seq_b{batch}`` or ``batch_s{seq}``, then the probes' path suffix for a
        non-default allocator or KV cache (e.g. ``seq_b1_alloc-expandable``,
        ``seq_b1_kv-quanto-int4``)."""
        stem = f"seq_b{self.fixed}" if self.axis == "seq" else f"batch_s{self.fixed}"
        return stem + self.cell(1).variant

    @property
    def relpath(self) -> str:
        """Path of the search-result JSON below the searches directory."""
        return f"{self.model}/{self.quant}/{self.attn}/{self.dtype}/{self.name}.json"

    def cell(self, value: int) -> Cell:
        """The cell a probe at ``value`` measures."""
        batch, seq = (self.fixed, value) if self.axis == "seq" else (value, self.fixed)
        return Cell(
            self.model,
            self.quant,
            self.attn,
            self.dtype,
            batch,
            seq,
            allocator=self.allocator,
            kv_cache=self.kv_cache,
        )

    @classmethod
    def from_wildcards(cls, values: Mapping[str, Any]) -> Search:
        """Build from Snakemake wildcards (model, quant, attn, dtype, search=<name>, the name
        as :attr:`name` writes it). Raises KeyError for a missing wildcard, ValueError for a
        search name that is not ``seq_b<batch>`` / ``batch_s<seq>`` with known suffixes, or a
        field a :class:`~llmbench.grid.spec.Cell` rejects."""
        name = str(values["search"])
        match = _SEARCH_NAME.fullmatch(name)
        optional = parse_variant(match.group(3)) if match else None
        if match is None or set(optional) - {"kv_cache", "allocator"}:
            raise ValueError(
                f"search name {name!r} is not seq_b<batch> or batch_s<seq>, with optional "
                "_alloc-expandable and _kv-<kv_cache> suffixes"
            )
        return cls(
            str(values["model"]),
            str(values["quant"]),
            str(values["attn"]),
            str(values["dtype"]),
            "seq" if match.group(1) == "seq_b" else "batch",
            int(match.group(2)),
            **optional,
        )

    def to_dict(self) -> dict[str, Any]:
        """JSON form, with the fixed axis named."""
        return {**asdict(self), "name": self.name}


def search_values(search: Search, section: Mapping[str, Any]) -> list[int]:
    """The step grid a search walks, from the config's ``frontier`` section."""
    if search.axis == "seq":
        return grid_values(section["seq_min"], section["seq_max"], section["step"])
    return grid_values(section["batch_min"], section["batch_max"], section["batch_step"])


def plan(section: Mapping[str, Any], models: Mapping[str, Any] | None = None) -> list[Search]:
    """Every search a ``frontier`` section asks for: per model × quant × attn × dtype ×
    kv_cache (optional key, default ``[model]``) × allocator (optional key, default
    ``[default]``), one seq search per batch in ``batch`` and one batch search per sequence
    length in ``seq``; sorted, without duplicates. Raises ValueError for a model not in
    ``models`` (when given) or a combination a :class:`~llmbench.grid.spec.Cell` rejects,
    KeyError for a required key missing from ``section``."""
    searches = []
    for model in section["models"]:
        if models is not None and model not in models:
            raise ValueError(
                f"frontier.models: model {model!r} is not defined under 'models' "
                f"(defined: {', '.join(sorted(models))})"
            )
        for quant in section["quant"]:
            for attn in section["attn"]:
                for dtype, kv, alloc in itertools.product(
                    section["dtype"],
                    section.get("kv_cache", KV_CACHES[:1]),
                    section.get("allocator", ALLOCATORS[:1]),
                ):
                    for batch in section["batch"]:
                        searches.append(Search(model, quant, attn, dtype, "seq", batch, kv, alloc))
                    for seq in section["seq"]:
                        searches.append(Search(model, quant, attn, dtype, "batch", seq, kv, alloc))
    return sorted(set(searches))


TINY_FRONTIER = "frontier-tiny.yaml"
"""config/<this>: the CPU frontier (tiny models, artificial budget); a config file whose
``frontier`` section replaces the configured one (``--configfile config/frontier-tiny.yaml``)."""


@dataclass(frozen=True)
class FrontierChoice:
    """The frontier section a run uses, and why (a message when it was replaced)."""

    section: Mapping[str, Any]
    message: str | None


def choose_section(config: Mapping[str, Any], has_cuda: bool, config_dir: Path) -> FrontierChoice:
    """The configured ``frontier`` section, or on a host without CUDA (``on_missing_gpu:
    smoke``) the tiny CPU one read from ``config_dir``, unless the configured one is CPU-ready
    (has a memory budget). Raises InputError (``llmbench.grid.files``) when the config has no
    ``frontier`` section or the tiny section would be taken but ``on_missing_gpu`` is ``fail``,
    KeyError for a config without ``device`` / ``on_missing_gpu``, OSError when the tiny
    config cannot be read."""
    import yaml

    section = config.get("frontier")
    if section is None:
        raise InputError("the config has no 'frontier' section (see config/config.yaml)")
    budget = section.get("memory_budget_gib", config.get("memory_budget_gib"))
    if budget is None:
        budget = config.get("memory_budget_gib")
    wants_gpu = config["device"] in ("auto", "cuda")
    if has_cuda or not wants_gpu or budget is not None or config["on_missing_gpu"] == "ignore":
        return FrontierChoice(section, None)
    if config["on_missing_gpu"] == "fail":
        raise InputError(
            "No CUDA GPU was found on this host, and the frontier needs one (on_missing_gpu: "
            f"fail). Run on a GPU host, or pass --configfile config/{TINY_FRONTIER}."
        )
    tiny = yaml.safe_load((config_dir / TINY_FRONTIER).read_text())["frontier"]
    return FrontierChoice(
        tiny,
        "No CUDA GPU was found on this host: running the tiny CPU frontier "
        f"(config/{TINY_FRONTIER}, artificial memory budget) instead of the configured one. "
        f"Pass --configfile config/{TINY_FRONTIER} to silence this.",
    )
