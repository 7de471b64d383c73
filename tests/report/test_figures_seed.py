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


def test_a_prefill_that_did_not_run_draws_no_bar():
    """Case 3 as written: unsupported in prefill. Its load bars stay, its prefill bars go."""
    for run in ("seed", "seed-2gpu"):
        cells = pd.read_csv(REFERENCE / run / "tables" / "cells.csv")
        failed = cells[cells["status"] == "unsupported"].iloc[0]
        figure = seed.seed_comparison(cells)
        written = figure.axes[1]  # as written: 3 cases × 4 readings, less 2 prefill bars
        heights = [patch.get_height() for patch in written.patches]
        assert len(heights) == 10
        assert failed["prefill_peak_allocated_gib"] not in heights
        assert failed["load_allocated_gib"] in heights
        notes = [t.get_text() for t in written.texts if t.get_gid() == "did-not-run"]
        assert len(notes) == 1 and notes[0].startswith("unsupported in prefill:")
        assert "FlashAttention only support fp16 and bf16" in notes[0].replace("\n", " ")
        prefill_cuda0 = [
            c
            for c in written.collections
            if c.get_label() == "here: reserved after prefill, cuda:0 only"
        ]
        for collection in prefill_cuda0:  # seed-2gpu: no cuda:0 prefill reading at case 3
            assert 2 not in collection.get_offsets()[:, 0]
