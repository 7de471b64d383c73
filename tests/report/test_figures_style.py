"""Saving a figure: the same table gives the same bytes."""

import matplotlib

matplotlib.use("Agg")

import pandas as pd  # noqa: E402
from conftest import REPO  # noqa: E402

from llmbench.report.figures import seed, style  # noqa: E402

REFERENCE = REPO / "results" / "reference" / "h100"


def test_redrawing_a_figure_gives_the_same_bytes(tmp_path):
    cells = pd.read_csv(REFERENCE / "seed" / "tables" / "cells.csv")
    drawn = []
    for attempt in ("first", "second"):
        png, svg = tmp_path / f"{attempt}.png", tmp_path / f"{attempt}.svg"
        style.save(seed.seed_comparison(cells), str(png), str(svg))
        drawn.append((png.read_bytes(), svg.read_bytes()))
    assert drawn[0] == drawn[1]
    assert b"<dc:date>" not in drawn[0][1]
