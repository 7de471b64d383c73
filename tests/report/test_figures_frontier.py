"""The frontier figure from the committed frontier table: equal frontiers stay visible."""

import matplotlib

matplotlib.use("Agg")

import pandas as pd  # noqa: E402
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
