"""The figure registry and the entry points the Snakemake scripts call: read a table, set the
theme, draw, write PNG + SVG.

May import the other ``llmbench.report.figures`` modules, pandas and seaborn.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

import pandas as pd
import seaborn as sns

from llmbench.report.figures.frontier import frontier_figure
from llmbench.report.figures.predicted import predicted_vs_measured
from llmbench.report.figures.scaling import latency_vs_seq, memory_vs_seq
from llmbench.report.figures.seed import seed_comparison
from llmbench.report.figures.status import status_map
from llmbench.report.figures.style import save

FIGURES = {
    "seed": seed_comparison,
    "memory": memory_vs_seq,
    "latency": latency_vs_seq,
    "status": status_map,
    "predicted": predicted_vs_measured,
}
"""Figure per key of the ``{key}_png``/``{key}_svg`` outputs, drawn in this order."""


def draw_all(cells_csv: str | Path, outputs: Mapping[str, Any]) -> None:
    """Draw every figure; ``outputs`` maps ``{key}_png``/``{key}_svg`` to paths."""
    cells = pd.read_csv(cells_csv)
    sns.set_theme(style="whitegrid", context="notebook")
    for key, draw in FIGURES.items():
        save(draw(cells), outputs[f"{key}_png"], outputs[f"{key}_svg"])


def draw_frontier(frontier_csv: str | Path, png: str, svg: str) -> None:
    """Draw the frontier figure from results/tables/frontier.csv."""
    searches = pd.read_csv(frontier_csv)
    sns.set_theme(style="whitegrid", context="notebook")
    save(frontier_figure(searches), png, svg)
