"""The decode-vs-floor figure from the committed H200 decode reference."""

import matplotlib

matplotlib.use("Agg")

import pandas as pd  # noqa: E402
import pytest  # noqa: E402
from conftest import REPO  # noqa: E402

from llmbench.report.figures import decode, draw  # noqa: E402
from llmbench.report.figures.marks import NotDrawn  # noqa: E402

DECODE = REPO / "results" / "reference" / "h200" / "decode" / "tables" / "cells.csv"


def test_one_marker_per_measured_cell_a_panel_per_quant_and_length():
    cells = pd.read_csv(DECODE)
    figure = decode.decode_vs_floor(cells)
    assert len(figure.axes) == 4  # nf4 / none x prompt 512 / 4096
    measured = cells["status"].isin(["ok", "check_failed"]) & cells["decode_over_floor"].notna()
    # every line is one (mode, attention) series; two reference lines per axis (floor, 1.6x)
    lines = [line for axis in figure.axes for line in axis.get_lines() if line.get_gid() is None]
    assert sum(len(line.get_xdata()) for line in lines) == measured.sum()


def test_tables_without_a_floor_refuse():
    h100 = pd.read_csv(REPO / "results" / "reference" / "h100" / "seed" / "tables" / "cells.csv")
    with pytest.raises(NotDrawn, match="decode floor|decode_floor_ms"):
        decode.decode_vs_floor(h100)
    assert draw.figure("decode", h100) is not None  # drawn as the reason instead
