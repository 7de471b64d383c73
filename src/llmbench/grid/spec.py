"""The benchmark grid: named grid files, their validation, and expansion into cells.

A grid file (``config/grids/<name>.yaml``) is a list of blocks; each block is a cartesian
product over models × quant × attn × dtype × batch × seq, and over the optional axes
decode_mode × allocator × bnb_compute × int8_threshold × kv_cache × device_map ×
max_memory (:data:`OPTIONAL_AXES`; a block that omits one takes its default). The grid
is the union of its blocks.
Every combination becomes a cell, including ones that cannot run: those end as cells whose
JSON says ``unsupported`` or ``unavailable`` rather than being dropped.
"""

from __future__ import annotations

import itertools
import re
from collections.abc import Iterable, Mapping
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from llmbench.grid.files import GridError, read_yaml
from llmbench.grid.schemas import validate_document

QUANTS: tuple[str, ...] = (
    "none",
    "int8",
    "nf4",
    "nf4-dq",
    "nf4-not-passed",
    "fp4",
    "fp4-dq",
    "fp8",
    "fp8-dyn",
)
"""Quantization axis: bitsandbytes LLM.int8 (``int8``), 4-bit NormalFloat (``nf4``) or 4-bit
float (``fp4``, bitsandbytes' own default 4-bit type), ``-dq`` with double quantization of the
absmax. ``nf4-not-passed`` reproduces the seed's case 2 as written: a BitsAndBytesConfig is
built but never passed to ``from_pretrained``. ``fp8`` (torchao ``Float8WeightOnlyConfig``:
weights float8_e4m3fn with a float32 scale per output row, compute in the model dtype) and
``fp8-dyn`` (torchao ``Float8DynamicActivationFloat8WeightConfig``, PerRow: activations
quantized per row at run time, fp8 x fp8 matmul through ``torch._scaled_mm``) quantize on
load through transformers' ``TorchAoConfig``; they need CUDA compute capability >= 8.9."""

FOUR_BIT_QUANTS: frozenset[str] = frozenset({"nf4", "nf4-dq", "fp4", "fp4-dq"})
"""Quantizations that load bitsandbytes ``Linear4bit`` layers."""

BNB_QUANTS: frozenset[str] = frozenset({"int8", *FOUR_BIT_QUANTS})
"""Quantizations that really pass a BitsAndBytesConfig."""

TORCHAO_QUANTS: frozenset[str] = frozenset({"fp8", "fp8-dyn"})
"""Quantizations that pass a transformers ``TorchAoConfig`` (torchao, an optional extra)."""

QUANTIZED_QUANTS: frozenset[str] = BNB_QUANTS | TORCHAO_QUANTS
"""Quantizations that really quantize the weights (``none`` does not, nor ``nf4-not-passed``,
whose config never reaches the model)."""


def recorded_prequantized(checkpoint_kind: str | None) -> bool:
    """Whether a measured cell loaded a pre-quantized checkpoint, from its recorded
    ``model.checkpoint_kind``; a record without one predates the field and is read as
    pre-quantized (``prequantize: true`` made every quantized reference cell's checkpoint
    then); ``base`` and ``pretrained`` are not."""
    return (checkpoint_kind or "prequantized") == "prequantized"


def quantizes_on_load(quant: str, prequantized: bool) -> bool:
    """Whether a cell of quantization ``quant`` quantizes its weights as they load: torchao's
    always (no fp8 checkpoint is made), bitsandbytes' when the checkpoint it loads is not
    pre-quantized (``prequantized``: ``grid.plan.uses_prequantized``, or the cell's recorded
    ``model.checkpoint_kind == "prequantized"``)."""
    return quant in TORCHAO_QUANTS or (quant in BNB_QUANTS and not prequantized)


ATTNS: tuple[str, ...] = (
    "eager",
    "sdpa",
    "sdpa-flash",
    "sdpa-cudnn",
    "sdpa-efficient",
    "sdpa-math",
    "flash_attention_2",
)
"""Attention axis: a transformers ``attn_implementation``, or ``sdpa-<backend>`` to force
one PyTorch SDPA backend."""

DTYPES: tuple[str, ...] = ("bfloat16", "float16", "float32")

DECODE_MODES: tuple[str, ...] = ("eager", "static", "graph")
"""How the decode steps run: ``eager`` (a DynamicCache grown by ``torch.cat``, eager kernel
launches: the loop ``generate`` runs by default), ``static`` (a preallocated ``StaticCache``,
eager launches) or ``graph`` (the static cache, one decode step captured once as a CUDA graph
and replayed; CUDA only)."""

ALLOCATORS: tuple[str, ...] = ("default", "expandable_segments")
"""PyTorch CUDA caching-allocator mode of the cell's process: ``default``, or
``expandable_segments`` (``PYTORCH_CUDA_ALLOC_CONF=expandable_segments:True``)."""

BNB_COMPUTES: tuple[str, ...] = ("config", "bfloat16", "float16", "float32")
"""Compute dtype of a 4-bit cell's ``Linear4bit`` layers (``bnb_4bit_compute_dtype``):
``config`` takes the config key ``bnb_4bit_compute_dtype`` (what every cell did before this
axis existed), the others name it. Only 4-bit quantizations have it: another cell with a
value other than ``config`` is ``unsupported`` before it loads (``grid.support``)."""

INT8_THRESHOLDS: tuple[str, ...] = ("default", "0", "1", "2", "3", "4", "5", "8", "10", "16")
"""LLM.int8's outlier threshold (``llm_int8_threshold``) of an int8 cell: ``default`` leaves
bitsandbytes' default (6.0), a number passes it (``0`` = no outlier decomposition: every
column in int8). Only ``int8`` has it: another cell with a value other than ``default`` is
``unsupported`` before it loads (``grid.support``)."""

KV_CACHES: tuple[str, ...] = ("model", "quanto-int4", "quanto-int2", "hqq-int4", "hqq-int2")
"""Format of the KV cache: ``model`` (the model dtype: a DynamicCache, what every cell did
before this axis existed), or ``<backend>-int<nbits>``: transformers' ``QuantizedCache``
(backend ``quanto`` = optimum-quanto, ``hqq`` = HQQ) at ``nbits`` bits, groups of
``q_group_size`` 64 and a ``residual_length`` of 128 tokens kept in the model dtype (its
defaults in transformers 5.17's ``cache_utils.QuantizedCache``). quanto takes nbits 2 and 4
only (``QuantoQuantizedLayer.__init__``). Only decode_mode ``eager`` builds a cache per
forward: a quantized cache with another decode_mode is ``unsupported`` (``grid.support``)."""

DEVICE_MAPS: tuple[str, ...] = (
    "config",
    "single",
    "auto",
    "balanced",
    "balanced_low_0",
    "sequential",
)
"""``device_map`` passed to ``from_pretrained``: ``config`` takes the config key ``device_map``
(what every cell did before this axis existed), ``single`` puts the whole model on the first
GPU (``{"": 0}``), the others are transformers' planners over every visible GPU (``auto`` and
``balanced`` are the same plan; ``balanced_low_0`` keeps GPU 0 light; ``sequential`` fills
GPU 0 first). Another value than ``config`` on the CPU is ``unsupported`` (``grid.support``)."""

MAX_MEMORIES: tuple[str, ...] = (
    "none",
    "8GiB",
    "16GiB",
    "24GiB",
    "32GiB",
    "40GiB",
    "48GiB",
    "60GiB",
    "70GiB",
    "80GiB",
    "120GiB",
)
"""Per-GPU cap of the device_map planner (``max_memory={i: value}`` for every visible GPU;
GiB = 2^30 bytes): ``none`` passes no ``max_memory`` (transformers uses each GPU's free
memory). Only a planned device_map reads it: with ``single`` it is ``unsupported``."""

OPTIONAL_AXES: dict[str, tuple[str, ...]] = {
    "decode_mode": DECODE_MODES,
    "allocator": ALLOCATORS,
    "bnb_compute": BNB_COMPUTES,
    "int8_threshold": INT8_THRESHOLDS,
    "kv_cache": KV_CACHES,
    "device_map": DEVICE_MAPS,
    "max_memory": MAX_MEMORIES,
}
"""Axes a grid block may omit; the first value is the default. A cell at every default has
the path it had before these axes existed; other values add a suffix (:attr:`Cell.variant`)."""

_VARIANT_TAGS: dict[str, dict[str, str]] = {
    "decode_mode": {"static": "_decode-static", "graph": "_decode-graph"},
    "allocator": {"expandable_segments": "_alloc-expandable"},
    "bnb_compute": {"bfloat16": "_c-bf16", "float16": "_c-fp16", "float32": "_c-fp32"},
    "int8_threshold": {value: f"_t{value}" for value in INT8_THRESHOLDS[1:]},
    "kv_cache": {value: f"_kv-{value}" for value in KV_CACHES[1:]},
    "device_map": {value: f"_dm-{value}" for value in DEVICE_MAPS[1:]},
    "max_memory": {value: f"_mm{value}" for value in MAX_MEMORIES[1:]},
}
"""Path suffix of each non-default optional-axis value, in path order."""

NAME_PATTERN = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*$")
"""Model and grid names become path components: no slashes, no leading dot."""

AXES: tuple[str, ...] = ("models", "quant", "attn", "dtype", "batch", "seq", *OPTIONAL_AXES)


@dataclass(frozen=True, order=True)
class Cell:
    """One point of the grid: one isolated measurement process, one JSON file."""

    model: str
    quant: str
    attn: str
    dtype: str
    batch: int
    seq: int
    decode_mode: str = DECODE_MODES[0]
    allocator: str = ALLOCATORS[0]
    bnb_compute: str = BNB_COMPUTES[0]
    int8_threshold: str = INT8_THRESHOLDS[0]
    kv_cache: str = KV_CACHES[0]
    device_map: str = DEVICE_MAPS[0]
    max_memory: str = MAX_MEMORIES[0]

    def __post_init__(self) -> None:
        if not NAME_PATTERN.match(self.model):
            raise ValueError(f"model name {self.model!r} must match {NAME_PATTERN.pattern}")
        for axis, value, allowed in (
            ("quant", self.quant, QUANTS),
            ("attn", self.attn, ATTNS),
            ("dtype", self.dtype, DTYPES),
            *((axis, getattr(self, axis), values) for axis, values in OPTIONAL_AXES.items()),
        ):
            if value not in allowed:
                raise ValueError(f"{axis} {value!r} is not one of {', '.join(allowed)}")
        for axis, value in (("batch", self.batch), ("seq", self.seq)):
            if not isinstance(value, int) or isinstance(value, bool) or value <= 0:
                raise ValueError(f"{axis} must be a positive integer, got {value!r}")

    @property
    def attn_implementation(self) -> str:
        """The value passed as ``attn_implementation=`` to transformers."""
        return "sdpa" if self.attn.startswith("sdpa") else self.attn

    @property
    def sdpa_backend(self) -> str | None:
        """The forced PyTorch SDPA backend, or None when PyTorch chooses."""
        return self.attn.split("-", 1)[1] if self.attn.startswith("sdpa-") else None

    def compute_dtype_4bit(self, configured: str) -> str | None:
        """The 4-bit layers' compute dtype: this cell's ``bnb_compute``, or ``configured`` (the
        config key ``bnb_4bit_compute_dtype``) at ``config``; None for a cell that is not
        4-bit."""
        if self.quant not in FOUR_BIT_QUANTS:
            return None
        return configured if self.bnb_compute == "config" else self.bnb_compute

    @property
    def llm_int8_threshold(self) -> float | None:
        """The ``llm_int8_threshold`` this cell passes, or None to leave bitsandbytes' default
        (``int8_threshold: default``)."""
        return None if self.int8_threshold == "default" else float(self.int8_threshold)

    def device_map_policy(self, configured: str) -> str:
        """The device_map this cell loads with: its ``device_map``, or ``configured`` (the
        config key ``device_map``) at ``config``."""
        return configured if self.device_map == "config" else self.device_map

    @property
    def max_memory_bytes(self) -> int | None:
        """The per-GPU cap in bytes (``60GiB`` -> 60 * 2^30), or None at ``none``."""
        if self.max_memory == "none":
            return None
        return int(self.max_memory.removesuffix("GiB")) * 2**30

    @property
    def kv_quantization(self) -> tuple[str, int] | None:
        """The quantized KV cache's ``(backend, nbits)``, e.g. ``("quanto", 4)``; None for a
        cache in the model dtype (``kv_cache: model``)."""
        if self.kv_cache == "model":
            return None
        backend, bits = self.kv_cache.split("-int")
        return backend, int(bits)

    @property
    def variant(self) -> str:
        """The optional axes' path suffix: ``""`` at their defaults, else e.g.
        ``"_decode-graph_alloc-expandable"``."""
        return "".join(tags.get(getattr(self, axis), "") for axis, tags in _VARIANT_TAGS.items())

    @property
    def relpath(self) -> str:
        """Path of this cell's JSON below the cells directory; one level per axis, the
        optional axes as a suffix of the file name."""
        stem = f"b{self.batch}_s{self.seq}{self.variant}"
        return f"{self.model}/{self.quant}/{self.attn}/{self.dtype}/{stem}.json"

    @classmethod
    def from_mapping(cls, values: Mapping[str, Any]) -> Cell:
        """Build a cell from wildcards (``variant`` parsed by :func:`parse_variant`) or a JSON
        ``cell`` block (strings are coerced; an optional axis absent, as in cells written
        before it existed, takes its default). Raises ValueError for an invalid value."""
        optional = parse_variant(str(values.get("variant", "")))
        for axis, allowed in OPTIONAL_AXES.items():
            optional.setdefault(axis, str(values.get(axis, allowed[0])))
        return cls(
            model=str(values["model"]),
            quant=str(values["quant"]),
            attn=str(values["attn"]),
            dtype=str(values["dtype"]),
            batch=int(values["batch"]),
            seq=int(values["seq"]),
            **optional,
        )

    def to_dict(self) -> dict[str, Any]:
        """Plain dict with the derived attention fields, as written into cell JSONs."""
        return {
            **asdict(self),
            "attn_implementation": self.attn_implementation,
            "sdpa_backend": self.sdpa_backend,
        }


def parse_variant(variant: str) -> dict[str, str]:
    """The optional-axis values a path suffix names (``"_decode-graph"`` →
    ``{"decode_mode": "graph"}``); axes it does not name are absent. Raises ValueError for a
    suffix that is not a concatenation of known tags in path order."""
    values: dict[str, str] = {}
    rest = variant
    for axis, tags in _VARIANT_TAGS.items():
        # longest tag first: ``_t10`` is not ``_t1`` followed by ``0``
        for value, tag in sorted(tags.items(), key=lambda item: -len(item[1])):
            if rest.startswith(tag):
                values[axis] = value
                rest = rest[len(tag) :]
                break
    if rest:
        raise ValueError(f"cell path suffix {variant!r}: {rest!r} is not a known tag")
    return values


def grid_path(grid: str, config_dir: Path) -> Path:
    """Resolve a grid name (``seed``) or a path to a grid YAML file."""
    if NAME_PATTERN.match(grid) and not grid.endswith((".yaml", ".yml")):
        return config_dir / "grids" / f"{grid}.yaml"
    return Path(grid)


def load_grid(grid: str, config_dir: Path, models: Mapping[str, Any]) -> dict[str, Any]:
    """Read and validate a grid file; every model it names must be defined in ``models``.
    Raises GridError, SchemaError or ConfigFileError, naming the file (and, for YAML syntax,
    the line and column)."""
    path = grid_path(grid, config_dir)
    if not path.is_file():
        available = sorted(p.stem for p in (config_dir / "grids").glob("*.yaml"))
        raise GridError(f"grid {grid!r}: no file {path} (named grids: {', '.join(available)})")
    document = read_yaml(path) or {}
    validate_document(document, "grid.schema.yaml", where=str(path))
    for index, block in enumerate(document["blocks"]):
        for axis in OPTIONAL_AXES:  # the schema's enum takes 4.0 for 4; a path needs "4"
            if floats := [v for v in block.get(axis) or () if isinstance(v, float)]:
                where = f"{path}: blocks[{index}].{axis}"
                raise GridError(f"{where}: write {int(floats[0])}, not {floats[0]}")
        for model in block["models"]:
            if model not in models:
                raise GridError(
                    f"{path}: blocks[{index}].models: model {model!r} is not defined under "
                    f"'models' in the config (defined: {', '.join(sorted(models))})"
                )
    _check_seed_cases(document, path)
    return document


def _check_seed_cases(document: Mapping[str, Any], path: Path) -> None:
    """Every ``seed_cases`` entry must be a cell of the grid's blocks (at the optional axes'
    defaults): the seed figure draws that cell's measurement, so a case naming no cell (a
    misspelt model or shape) would silently drop out of it. Raises GridError naming it."""
    cases = document.get("seed_cases") or []
    if not cases:
        return
    cells = {
        (c.model, c.quant, c.attn, c.dtype, c.batch, c.seq)
        for c in expand_blocks(document["blocks"])
        if not c.variant
    }
    for index, case in enumerate(cases):
        key = tuple(case[axis] for axis in ("model", "quant", "attn", "dtype", "batch", "seq"))
        if key not in cells:
            raise GridError(
                f"{path}: seed_cases[{index}] ({case['case']!r}, {case['variant']}): no cell "
                f"of the grid's blocks is {key[0]} {key[1]} {key[2]} {key[3]} b{key[4]} "
                f"s{key[5]}"
            )


def expand_blocks(blocks: Iterable[Mapping[str, Any]]) -> list[Cell]:
    """Union of the cartesian products of all blocks, sorted, without duplicates."""
    cells: set[Cell] = set()
    for block in blocks:
        axes = [block[axis] if axis in block else OPTIONAL_AXES[axis][:1] for axis in AXES]
        for model, quant, attn, dtype, batch, seq, *optional in itertools.product(*axes):
            # YAML reads a threshold 4 as a number; the axis' values are its spellings
            cells.add(Cell(model, quant, attn, dtype, batch, seq, *(str(v) for v in optional)))
    return sorted(cells)


def expand_grid(grid: Mapping[str, Any]) -> list[Cell]:
    """All cells of a loaded grid document."""
    return expand_blocks(grid["blocks"])


def wildcard_constraints() -> dict[str, str]:
    """Regexes for the Snakemake wildcards, so a malformed path never matches a rule."""

    def alternation(values: Iterable[str]) -> str:
        return "|".join(re.escape(v) for v in sorted(values, key=len, reverse=True))

    return {
        "model": NAME_PATTERN.pattern.strip("^$"),
        "quant": alternation(QUANTS),
        "attn": alternation(ATTNS),
        "dtype": alternation(DTYPES),
        "batch": r"[1-9][0-9]*",
        "seq": r"[1-9][0-9]*",
        # empty at every default: the path cells had before the optional axes existed
        "variant": "".join(f"({alternation(tags.values())})?" for tags in _VARIANT_TAGS.values()),
    }
