"""Memory and latency vs sequence length from committed tables: cells that did not run have
their own marks, one each; one sequence length is said, not drawn as dots."""

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
import pytest  # noqa: E402
from conftest import REPO  # noqa: E402
from figure_marks import figure_text, plotted  # noqa: E402
from matplotlib.markers import MarkerStyle  # noqa: E402

from llmbench.report.figures import draw, marks, style  # noqa: E402

REFERENCE = REPO / "results" / "reference" / "h100"
DECODE = REPO / "results" / "reference" / "h200" / "decode" / "tables" / "cells.csv"


@pytest.fixture(autouse=True)
def close_figures():
    yield
    plt.close("all")


def cells(run):
    return pd.read_csv(REFERENCE / run / "tables" / "cells.csv")


def marker_path(marker):
    style_ = MarkerStyle(marker)
    return style_.get_path().transformed(style_.get_transform()).vertices


@pytest.mark.parametrize("key", ["memory", "latency"])
def test_out_of_memory_cells_have_their_own_marker_legend_and_one_mark_each(key):
    table = cells("extended")  # 4 oom cells; eager b2 and b4 both at none/8192
    figure = draw.figure(key, table)
    data_markers = {
        line.get_marker()
        for axis in figure.axes
        for line in axis.get_lines()
        if line.get_gid() != style.REFERENCE
    }
    assert data_markers and data_markers <= set(style.BATCH_MARKERS)
    assert style.OOM_MARK["marker"] not in data_markers
    assert style.FAILED_MARK["marker"] not in data_markers
    unrun = [
        (axis, c) for axis in figure.axes for c in axis.collections if c.get_gid() == "did-not-run"
    ]
    assert len(unrun) == (table["status"] == "oom").sum() == 4
    for _, collection in unrun:
        assert np.allclose(collection.get_paths()[0].vertices, marker_path("*"))
        assert collection.get_facecolor().size == 0 or collection.get_facecolor()[0][3] == 0
    places = {
        (id(axis), *np.round(c.get_offset_transform().transform(c.get_offsets()[0]), 1))
        for axis, c in unrun
    }
    assert len(places) == 4  # the two oom cells at one length are two marks, not one
    legend = [t.get_text() for legend in figure.legends for t in legend.get_texts()]
    assert style.OOM_LABEL in legend
    assert "did not run" not in figure_text(figure)  # they loaded and ran out of memory


def test_coinciding_attentions_are_dodged_and_said():
    figure = draw.figure("memory", cells("extended"))
    assert "sdpa = flash_attention_2 within 0.00% at all 27 cells" in figure_text(figure)
    panel = figure.axes[0]
    colours = {matplotlib.colors.to_hex(style.ATTN_COLORS[a]): a for a in style.ATTN_COLORS}
    xs = {}
    for line in panel.get_lines():
        if line.get_gid() != style.REFERENCE:
            xs.setdefault(colours[matplotlib.colors.to_hex(line.get_color())], set()).update(
                line.get_xdata()
            )
    assert not xs["sdpa"] & xs["flash_attention_2"]  # side by side, never on top


@pytest.mark.parametrize("run", ["seed", "seed-2gpu"])
@pytest.mark.parametrize("key", ["memory", "latency"])
def test_one_sequence_length_is_said_not_drawn(run, key):
    figure = draw.figure(key, cells(run))
    assert "one sequence length (3072): see the seed comparison" in figure_text(figure)
    assert not plotted(figure).data


def test_a_panel_with_one_length_says_so():
    table = cells("extended")
    extra = table[(table["quant"] == "none") & (table["attn"] == "sdpa")].iloc[[4]].copy()
    extra["dtype"] = "float32"
    extra["prefill_peak_allocated_gib"] = 34.5
    figure = draw.figure("memory", pd.concat([table, extra], ignore_index=True))
    visible = [axis for axis in figure.axes if axis.get_visible()]
    assert len(visible) == 3 and all("bfloat16" in axis.get_title() for axis in visible)
    text = figure_text(figure)
    assert "no panel for float32 · none: one sequence length (3072)" in text
    assert 34.5 not in plotted(figure).data


def test_redrawing_the_memory_figure_gives_the_same_bytes(tmp_path):
    drawn = []
    for attempt in ("first", "second"):
        png, svg = tmp_path / f"{attempt}.png", tmp_path / f"{attempt}.svg"
        style.save(draw.figure("memory", cells("extended")), str(png), str(svg))
        drawn.append((png.read_bytes(), svg.read_bytes()))
    assert drawn[0] == drawn[1]


def test_a_mostly_empty_matrix_of_panels_is_drawn_wrapped():
    # the quant grid's knobs go with some quantizations only: 12 panels of a 7 x 7 matrix
    quant = pd.read_csv(REPO / "results" / "reference" / "h200" / "quant" / "tables" / "cells.csv")
    figure = draw.figure("memory", quant)
    visible = [axis for axis in figure.axes if axis.get_visible() and axis.get_title()]
    assert len(visible) == 12
    grid = figure.axes[0].get_subplotspec().get_gridspec().get_geometry()
    assert grid == (3, 4)  # four a row, in reading order
    titles = [axis.get_title() for axis in visible]
    assert titles[0].endswith("quantization: nf4") and len(set(titles)) == 12
    # a full matrix keeps a row per configuration and a column per quantization
    extended = draw.figure("memory", cells("extended"))
    rows, columns = extended.axes[0].get_subplotspec().get_gridspec().get_geometry()
    assert columns == len(set(cells("extended")["quant"]))


def failure_marks(figure):
    """(axis, display points of its failed cells' marks, their labels) per visible panel."""
    figure.canvas.draw()
    for axis in figure.axes:
        if not axis.get_visible():
            continue
        points = [
            c.get_offset_transform().transform(c.get_offsets())[0]
            for c in axis.collections
            if c.get_gid() == style.DID_NOT_RUN
        ]
        labels = [t for t in axis.texts if t.get_gid() == style.DID_NOT_RUN]
        yield axis, points, labels


@pytest.mark.parametrize("key", ["memory", "latency"])
def test_failure_marks_stay_inside_their_panel_never_on_its_title(key):
    # the FA2 graph-decode cells (b1 ... b64 at 512 and 4096) are unsupported: 16 crosses
    figure = draw.figure(key, pd.read_csv(DECODE))
    renderer = figure.canvas.get_renderer()
    count = 0
    for axis, points, labels in failure_marks(figure):
        box = axis.get_window_extent()
        title = axis.title.get_window_extent(renderer)
        for x, y in points:
            assert box.x0 <= x <= box.x1 and box.y0 <= y <= box.y1
            assert y < title.y0
        for label in labels:
            extent = label.get_window_extent(renderer)
            assert box.x0 <= extent.x0 and extent.x1 <= box.x1 and extent.y1 <= box.y1
        count += len(points)
    assert count == 16
    # the band is above every value: no data line reaches its lowest mark
    for axis, points, _ in failure_marks(figure):
        if points:
            to_axes = axis.transAxes.inverted()
            lowest = min(to_axes.transform(point)[1] for point in points)
            values = [
                to_axes.transform(axis.transData.transform(xy))[1]
                for line in axis.get_lines()
                if line.get_gid() != style.REFERENCE
                for xy in line.get_xydata()
            ]
            assert max(values) < lowest - 0.02


def test_facet_titles_name_their_columns_in_words():
    figure = draw.figure("memory", pd.read_csv(DECODE))
    titles = [axis.get_title() for axis in figure.axes if axis.get_visible()]
    assert "SDPA backend: auto · decode mode: graph\nquantization: none" in titles
    assert not any("(empty)" in t or "sdpa_backend" in t for t in titles)
    assert "no panel for SDPA backend: flash · decode mode: graph · none" in figure_text(figure)
    row = {"sdpa_backend": float("nan"), "decode_mode": "static", "allocator": float("nan")}
    label = marks.describe(row, ["sdpa_backend", "decode_mode", "allocator"])
    assert label == "SDPA backend: auto · decode mode: static · allocator: default"


def test_the_legend_lists_only_what_a_panel_draws():
    # sdpa-flash, -cudnn, -efficient and -math ran at one length only: no panel draws them
    figure = draw.figure("memory", pd.read_csv(DECODE))
    legend = [t.get_text() for legend in figure.legends for t in legend.get_texts()]
    assert [t for t in legend if not t.startswith(("batch", "failed"))] == [
        "sdpa",
        "flash_attention_2",
    ]
    assert "failed: unsupported (reasons in the status map)" in legend
    text = figure_text(figure)
    assert "2 failed (unsupported 2)" in text and "did not run" not in text
