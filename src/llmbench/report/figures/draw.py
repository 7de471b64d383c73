"""The figure registry and the entry points the Snakemake scripts call: read a table, set the
theme, draw, write PNG + SVG. A figure that refuses (``marks.NotDrawn``) is replaced by one
that says why, so the rule always writes its outputs; a table of CPU cells gets the CPU banner.

May import the other ``llmbench.report.figures`` modules, pandas and seaborn.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import pandas as pd
import seaborn as sns

from llmbench.report.figures.crossgpu import crossgpu_figure
from llmbench.report.figures.decode import decode_vs_floor
from llmbench.report.figures.frontier import frontier_figure
from llmbench.report.figures.marks import NotDrawn
from llmbench.report.figures.predicted import predicted_vs_measured
from llmbench.report.figures.scaling import latency_vs_seq, memory_vs_seq
from llmbench.report.figures.seed import seed_comparison
from llmbench.report.figures.status import status_map
from llmbench.report.figures.style import (
    add_cpu_note,
    empty,
    has_cuda_memory,
    is_cpu_run,
    save,
)

FIGURES = {
    "seed": seed_comparison,
    "memory": memory_vs_seq,
    "latency": latency_vs_seq,
    "status": status_map,
    "predicted": predicted_vs_measured,
    "decode": decode_vs_floor,
}
"""Figure per key of the ``{key}_png``/``{key}_svg`` outputs, drawn in this order."""
TITLES = {
    "seed": "Seed notebook comparison",
    "memory": "Memory at the prefill peak vs sequence length",
    "latency": "Prefill latency vs sequence length",
    "status": "Status of every cell",
    "predicted": "Analytic memory model vs measurement",
    "decode": "Decode against its memory-bandwidth floor",
    "frontier": "Out-of-memory frontier",
    "crossgpu": "The same cells on two GPUs",
}
"""Title of the notice drawn in a figure's place when it refuses."""
CUDA_ONLY = ("memory", "predicted")
"""Figures that draw only the CUDA cells of a table that has any (CPU cells: host RSS)."""


def figure(key: str, table: pd.DataFrame, draw: Callable[[pd.DataFrame], Any] | None = None) -> Any:
    """One figure from its table: the drawing, or the reason it is not drawn; the CPU banner
    over either where the cells it draws include CPU cells."""
    draw = draw or FIGURES[key]
    try:
        drawn = draw(table)
    except NotDrawn as refusal:
        drawn = empty(str(refusal), title=TITLES[key])
    if is_cpu_run(table) and not (key in CUDA_ONLY and has_cuda_memory(table)):
        add_cpu_note(drawn)
    return drawn


def draw_all(cells_csv: str | Path, outputs: Mapping[str, Any]) -> None:
    """Draw every figure; ``outputs`` maps ``{key}_png``/``{key}_svg`` to paths."""
    cells = pd.read_csv(cells_csv)
    sns.set_theme(style="whitegrid", context="notebook")
    for key in FIGURES:
        save(figure(key, cells), outputs[f"{key}_png"], outputs[f"{key}_svg"])


def draw_frontier(frontier_csv: str | Path, png: str, svg: str) -> None:
    """Draw the frontier figure from results/tables/frontier.csv."""
    searches = pd.read_csv(frontier_csv)
    sns.set_theme(style="whitegrid", context="notebook")
    save(figure("frontier", searches, frontier_figure), png, svg)


def draw_crossgpu(table: pd.DataFrame, names: Sequence[str], png: str, svg: str) -> None:
    """Draw the two-GPU comparison from :func:`llmbench.report.compare.compare`'s table."""
    sns.set_theme(style="whitegrid", context="notebook")
    save(figure("crossgpu", table, lambda t: crossgpu_figure(t, names)), png, svg)
