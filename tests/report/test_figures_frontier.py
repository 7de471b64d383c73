"""The frontier figure from the committed frontier table: equal frontiers stay visible."""

import matplotlib

matplotlib.use("Agg")

import pandas as pd  # noqa: E402
import pytest  # noqa: E402
from conftest import REPO  # noqa: E402

from llmbench.report.figures import frontier, style  # noqa: E402

REFERENCE = REPO / "results" / "reference" / "h100"


def test_frontier_keeps_equal_frontiers_visible_and_labels_them_once():
    searches = pd.read_csv(REFERENCE / "frontier" / "tables" / "frontier.csv")
    figure = frontier.frontier_figure(searches)
    panel = figure.axes[0]  # quantization none: sdpa and FA2 both reach 32768 at b1, b2, b4
    colours = {matplotlib.colors.to_hex(style.ATTN_COLORS[a]): a for a in style.ATTN_COLORS}
    lines = {
        colours[matplotlib.colors.to_hex(line.get_color())]: list(line.get_xdata())
        for line in panel.get_lines()
        if len(line.get_xdata()) and line.get_linestyle() == "-"  # length searches
    }
    assert set(lines) == {"eager", "sdpa", "flash_attention_2"}
    assert all(
        a != b for a, b in zip(lines["sdpa"], lines["flash_attention_2"], strict=True)
    )  # side by side, not on top of each other
    assert all(abs(x / b - 1) < 0.1 for x, b in zip(lines["sdpa"], [1, 2, 4], strict=True))
    labels = [t.get_text() for t in panel.texts]
    assert labels.count("32768") == 3  # once per batch, not once per attention
    assert sorted(int(t) for t in labels if t.isdigit() and t != "32768") == [5632, 7936, 11520]
    assert labels.count("b7 @ s32768") == 1  # sdpa and FA2's largest batch, once
    assert [int(t.get_text()) for t in panel.get_xticklabels()] == [1, 2, 4, 8]  # b7 @ 32768


def h100_figure():
    return frontier.frontier_figure(pd.read_csv(REFERENCE / "frontier" / "tables" / "frontier.csv"))


def test_a_batch_search_label_sits_beside_its_own_marker():
    panel = h100_figure().axes[0]
    label = next(t for t in panel.texts if t.get_text() == "b7 @ s32768")
    x, y = label.xy
    assert abs(x / 7 - 1) < 0.1 and y == 32768  # at the batch-7 marker, not under batch 4
    assert label.get_horizontalalignment() == "center"


def test_a_search_that_fails_at_its_smallest_value_is_marked_at_the_bottom_not_as_a_value():
    figure = h100_figure()
    figure.canvas.draw()
    for panel in figure.axes:  # eager's batch search at s32768 fails already at batch 1
        marks = [c for c in panel.collections if c.get_gid() == style.DID_NOT_RUN]
        assert len(marks) == 1
        display = marks[0].get_offset_transform().transform(marks[0].get_offsets())[0]
        height = panel.transAxes.inverted().transform(display)[1]
        assert height == pytest.approx(frontier.BOTTOM)
        low, high = panel.get_ylim()
        band = low * (high / low) ** (2 * frontier.BOTTOM)
        assert all(tick > band for tick in panel.get_yticks())  # no length to read there
        texts = [t.get_text() for t in panel.texts if t.get_gid() == style.DID_NOT_RUN]
        assert texts == ["fails at smallest batch (b1 @ s32768)"]
    legend = [t.get_text() for legend in figure.legends for t in legend.get_texts()]
    assert "fails already at the smallest length searched (at the axis bottom)" not in legend


def test_a_panel_without_a_search_says_so():
    searches = pd.read_csv(
        REPO / "results" / "reference" / "h200" / "frontier" / "tables" / "frontier.csv"
    )
    # the committed H200 frontier searched every facet; without its nf4 expandable_segments
    # searches that facet is drawn, empty
    searches = searches[~searches["quant"].eq("nf4") | searches["allocator"].eq("default")]
    figure = frontier.frontier_figure(searches)
    empty = [axis for axis in figure.axes if any(t.get_text() == "no search" for t in axis.texts)]
    assert len(empty) == 1  # expandable_segments searched without nf4
    assert empty[0].get_title().endswith("expandable_segments\nquantization: nf4")
    assert "allocator: default" in figure.axes[0].get_title()
