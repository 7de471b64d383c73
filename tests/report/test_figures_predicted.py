"""The predicted-vs-measured figure from committed tables: which cells it compares."""

import matplotlib

matplotlib.use("Agg")

import pandas as pd  # noqa: E402
from conftest import REPO  # noqa: E402

from llmbench.report.figures import draw, predicted  # noqa: E402

REFERENCE = REPO / "results" / "reference" / "h100"


def texts(figure):
    return " ".join(t.get_text() for axis in figure.axes for t in axis.texts) + " ".join(
        t.get_text() for t in figure.texts
    )


def test_predicted_vs_measured_compares_one_gpu_cells_only():
    one_gpu = pd.read_csv(REFERENCE / "seed" / "tables" / "cells.csv")
    figure = predicted.predicted_vs_measured(one_gpu)
    assert len(figure.axes) == 2
    assert "8 cells" in figure.axes[1].get_title()  # 7 ok + the check_failed case 2
    two_gpu = pd.read_csv(REFERENCE / "seed-2gpu" / "tables" / "cells.csv")
    # No cell to compare: the figure refuses and draw.figure draws the reason in its place.
    assert "one device" in texts(draw.figure("predicted", two_gpu))


def test_cells_that_share_a_marker_are_counted():
    """Cases 1 and 2 as written (float32, sdpa, no quantization applied) allocate the same:
    one marker size per attention, so the second would hide the first without the count."""
    figure = predicted.predicted_vs_measured(
        pd.read_csv(REFERENCE / "seed" / "tables" / "cells.csv")
    )
    counts = [t.get_text() for axis in figure.axes for t in axis.texts if t.get_gid() == "count"]
    assert counts == ["×2"]  # beside the marker of the measured-vs-predicted panel only
    footnote = "×2 sdpa at 34.29 GiB (nf4-not-passed b2 s3072, none b2 s3072)"
    assert footnote in texts(figure).replace("\u00a0", " ")


def test_many_shared_markers_are_counted_with_what_their_cells_differ_in():
    # the decode reference's eager, static and graph cells prefill alike: 36 shared markers
    decode = REPO / "results" / "reference" / "h200" / "decode" / "tables" / "cells.csv"
    figure = predicted.predicted_vs_measured(pd.read_csv(decode))
    counts = [t.get_text() for axis in figure.axes for t in axis.texts if t.get_gid() == "count"]
    assert len(counts) == 36 > predicted.LISTED
    assert "36 markers (×2–×3), whose cells differ only in decode_mode" in texts(figure)
