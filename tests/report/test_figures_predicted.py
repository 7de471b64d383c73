"""The predicted-vs-measured figure from committed tables: which cells it compares."""

import matplotlib

matplotlib.use("Agg")

import pandas as pd  # noqa: E402
from conftest import REPO  # noqa: E402

from llmbench.report.figures import draw, predicted  # noqa: E402

REFERENCE = REPO / "results" / "reference" / "h100"
DECODE = REPO / "results" / "reference" / "h200" / "decode" / "tables" / "cells.csv"


def texts(figure):
    return " ".join(t.get_text() for axis in figure.axes for t in axis.texts) + " ".join(
        t.get_text() for t in figure.texts
    )


def test_predicted_vs_measured_compares_one_gpu_cells_only():
    one_gpu = pd.read_csv(REFERENCE / "seed" / "tables" / "cells.csv")
    figure = predicted.predicted_vs_measured(one_gpu)
    assert len(figure.axes) == 4  # a row for the prefill peak, one for the decode peak
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
    assert counts == ["×2", "×2"]  # beside the measured-vs-predicted markers, prefill and decode
    footnote = "×2 sdpa at 34.29 GiB (nf4-not-passed b2 s3072, none b2 s3072)"
    assert footnote in texts(figure).replace("\u00a0", " ")
    assert "Every marker is one cell" not in texts(figure)  # not next to a shared marker
    assert "a shared marker (×n beside it) is n cells of one attention" in texts(figure)


def decode_figure():
    return predicted.predicted_vs_measured(pd.read_csv(DECODE))


def test_many_shared_markers_are_counted_with_what_their_cells_differ_in():
    # the decode reference's eager, static and graph cells prefill alike: 36 shared markers
    figure = decode_figure()
    text = texts(figure)
    assert "36 markers (×2–×3), whose cells differ only in decode_mode" in text
    assert "Every marker is one cell" not in text


def test_shared_marker_labels_never_print_over_one_another():
    figure = decode_figure()
    renderer = figure.canvas.get_renderer()
    for axis in figure.axes:
        boxes = [t.get_window_extent(renderer) for t in axis.texts if t.get_gid() == "count"]
        for i, box in enumerate(boxes):
            assert not any(box.overlaps(other) for other in boxes[i + 1 :])
    labelled = [t for t in figure.axes[0].texts if t.get_gid() == "count"]
    # one label per point: sdpa's and FA2's shared markers sit one inside the other
    assert labelled and all(t.get_text() in ("×2", "×3", "×3/×2", "×3/×3") for t in labelled)
    text = texts(figure)
    left_out = int(text.split(" points left unlabelled")[0].rsplit(" ", 1)[-1])
    points = {(round(x, 3), round(y, 3)) for x, y in zip(*shared_points(figure), strict=True)}
    assert len(labelled) + left_out == len(points)


def shared_points(figure):
    table = pd.read_csv(DECODE)
    data = table[table["status"] == "ok"]
    place = data.groupby(
        [
            data["predicted_prefill_peak_allocated_gib"].round(3),
            data["prefill_peak_allocated_gib"].round(3),
            "attn",
        ]
    ).size()
    shared = place[place > 1].reset_index()
    return shared.iloc[:, 0], shared.iloc[:, 1]


def test_the_decode_peak_is_compared_where_the_table_has_it():
    figure = decode_figure()
    titles = [axis.get_title() for axis in figure.axes]
    assert titles[2].startswith("decode peak: measured vs predicted")
    assert titles[3] == "decode peak, 88 cells: max |error| 0.99%, median 0.00%"
    assert figure.axes[2].get_xlabel() == "predicted decode peak allocated (GiB)"
    assert "prefill and decode peak allocated" in figure._suptitle.get_text()
    # those cells loaded and ran until they were refused: failed, not 'did not run'
    assert "not drawn: 24 failed (unsupported 24)" in texts(figure)
    assert "did not run" not in texts(figure)
    # a table without decode columns keeps the prefill row alone
    decode = predicted.PHASES[1]
    prefill_only = pd.read_csv(DECODE).drop(columns=[decode.predicted, decode.ratio])
    assert len(predicted.predicted_vs_measured(prefill_only).axes) == 2
