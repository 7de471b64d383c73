"""The seed comparison figure from committed tables: which readings it marks."""

import matplotlib

matplotlib.use("Agg")

import pandas as pd  # noqa: E402
from conftest import REPO  # noqa: E402

from llmbench.report.figures import seed  # noqa: E402

REFERENCE = REPO / "results" / "reference" / "h100"


def test_seed_comparison_marks_cuda0_only_where_a_model_spans_gpus():
    def labels(run):
        figure = seed.seed_comparison(pd.read_csv(REFERENCE / run / "tables" / "cells.csv"))
        return {text.get_text() for legend in figure.legends for text in legend.get_texts()}

    assert "here: reserved after load, cuda:0 only" in labels("seed-2gpu")
    assert "here: reserved after load, cuda:0 only" not in labels("seed")
    assert "notebook: reserved after load (cuda:0)" in labels("seed")
