"""The benchmark grid: named grid files, their validation, and expansion into cells.

A grid file (``config/grids/<name>.yaml``) is a list of blocks; each block is a cartesian
product over models × quant × attn × dtype × batch × seq. The grid is the union of its blocks.
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

from llmbench.grid.files import read_yaml
from llmbench.grid.schemas import validate_document

QUANTS: tuple[str, ...] = ("none", "int8", "nf4", "nf4-dq", "nf4-not-passed")
"""Quantization axis. ``nf4-not-passed`` reproduces the seed's case 2 as written: a
BitsAndBytesConfig is built but never passed to ``from_pretrained``."""

BNB_QUANTS: frozenset[str] = frozenset({"int8", "nf4", "nf4-dq"})
"""Quantizations that really pass a BitsAndBytesConfig."""

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

NAME_PATTERN = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*$")
"""Model and grid names become path components: no slashes, no leading dot."""

AXES: tuple[str, ...] = ("models", "quant", "attn", "dtype", "batch", "seq")


@dataclass(frozen=True, order=True)
class Cell:
    """One point of the grid: one isolated measurement process, one JSON file."""

    model: str
    quant: str
    attn: str
    dtype: str
    batch: int
    seq: int

    def __post_init__(self) -> None:
        if not NAME_PATTERN.match(self.model):
            raise ValueError(f"model name {self.model!r} must match {NAME_PATTERN.pattern}")
        for axis, value, allowed in (
            ("quant", self.quant, QUANTS),
            ("attn", self.attn, ATTNS),
            ("dtype", self.dtype, DTYPES),
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

    @property
    def relpath(self) -> str:
        """Path of this cell's JSON below the cells directory; one level per axis."""
        return f"{self.model}/{self.quant}/{self.attn}/{self.dtype}/b{self.batch}_s{self.seq}.json"

    @classmethod
    def from_mapping(cls, values: Mapping[str, Any]) -> Cell:
        """Build a cell from wildcards or a JSON ``cell`` block (strings are coerced)."""
        return cls(
            model=str(values["model"]),
            quant=str(values["quant"]),
            attn=str(values["attn"]),
            dtype=str(values["dtype"]),
            batch=int(values["batch"]),
            seq=int(values["seq"]),
        )

    def to_dict(self) -> dict[str, Any]:
        """Plain dict with the derived attention fields, as written into cell JSONs."""
        return {
            **asdict(self),
            "attn_implementation": self.attn_implementation,
            "sdpa_backend": self.sdpa_backend,
        }


def grid_path(grid: str, config_dir: Path) -> Path:
    """Resolve a grid name (``seed``) or a path to a grid YAML file."""
    if NAME_PATTERN.match(grid) and not grid.endswith((".yaml", ".yml")):
        return config_dir / "grids" / f"{grid}.yaml"
    return Path(grid)


def load_grid(grid: str, config_dir: Path, models: Mapping[str, Any]) -> dict[str, Any]:
    """Read and validate a grid file; every model it names must be defined in ``models``.
    Errors name the file (and, for YAML syntax, the line and column)."""
    path = grid_path(grid, config_dir)
    if not path.is_file():
        available = sorted(p.stem for p in (config_dir / "grids").glob("*.yaml"))
        raise ValueError(f"grid {grid!r}: no file {path} (named grids: {', '.join(available)})")
    document = read_yaml(path) or {}
    validate_document(document, "grid.schema.yaml", where=str(path))
    for index, block in enumerate(document["blocks"]):
        for model in block["models"]:
            if model not in models:
                raise ValueError(
                    f"{path}: blocks[{index}].models: model {model!r} is not defined under "
                    f"'models' in the config (defined: {', '.join(sorted(models))})"
                )
    return document


def expand_blocks(blocks: Iterable[Mapping[str, Any]]) -> list[Cell]:
    """Union of the cartesian products of all blocks, sorted, without duplicates."""
    cells: set[Cell] = set()
    for block in blocks:
        for model, quant, attn, dtype, batch, seq in itertools.product(
            *(block[axis] for axis in AXES)
        ):
            cells.add(Cell(model, quant, attn, dtype, batch, seq))
    return sorted(cells)


def expand_grid(grid: Mapping[str, Any]) -> list[Cell]:
    """All cells of a loaded grid document."""
    return expand_blocks(grid["blocks"])


def wildcard_constraints() -> dict[str, str]:
    """Regexes for the Snakemake wildcards, so a malformed path never matches a rule."""

    def alternation(values: Iterable[str]) -> str:
        return "|".join(re.escape(v) for v in values)

    return {
        "model": NAME_PATTERN.pattern.strip("^$"),
        "quant": alternation(QUANTS),
        "attn": alternation(ATTNS),
        "dtype": alternation(DTYPES),
        "batch": r"[1-9][0-9]*",
        "seq": r"[1-9][0-9]*",
    }
