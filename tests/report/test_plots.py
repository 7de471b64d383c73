"""Figures from committed tables: what each one compares."""

import matplotlib

matplotlib.use("Agg")

import pandas as pd  # noqa: E402
from conftest import REPO  # noqa: E402

from llmbench.report import plots  # noqa: E402

REFERENCE = REPO / "results" / "reference" / "h100"


def texts(figure):
    return " ".join(t.get_text() for axis in figure.axes for t in axis.texts) + " ".join(
        t.get_text() for t in figure.texts
    )


def test_predicted_vs_measured_compares_one_gpu_cells_only():
    one_gpu = pd.read_csv(REFERENCE / "seed" / "tables" / "cells.csv")
    figure = plots.predicted_vs_measured(one_gpu)
    assert len(figure.axes) == 2
    assert "8 cells" in figure.axes[1].get_title()  # 7 ok + the check_failed case 2
    two_gpu = pd.read_csv(REFERENCE / "seed-2gpu" / "tables" / "cells.csv")
    assert "one device" in texts(plots.predicted_vs_measured(two_gpu))


def test_seed_comparison_marks_cuda0_only_where_a_model_spans_gpus():
    def labels(run):
        figure = plots.seed_comparison(pd.read_csv(REFERENCE / run / "tables" / "cells.csv"))
        return {text.get_text() for legend in figure.legends for text in legend.get_texts()}

    assert "here: reserved after load, cuda:0 only" in labels("seed-2gpu")
    assert "here: reserved after load, cuda:0 only" not in labels("seed")
    assert "notebook: reserved after load (cuda:0)" in labels("seed")


def test_redrawing_a_figure_gives_the_same_bytes(tmp_path):
    cells = pd.read_csv(REFERENCE / "seed" / "tables" / "cells.csv")
    drawn = []
    for attempt in ("first", "second"):
        png, svg = tmp_path / f"{attempt}.png", tmp_path / f"{attempt}.svg"
        plots._save(plots.seed_comparison(cells), str(png), str(svg))
        drawn.append((png.read_bytes(), svg.read_bytes()))
    assert drawn[0] == drawn[1]
    assert b"<dc:date>" not in drawn[0][1]


def test_frontier_keeps_equal_frontiers_visible_and_labels_them_once():
    searches = pd.read_csv(REFERENCE / "frontier" / "tables" / "frontier.csv")
    figure = plots.frontier_figure(searches)
    panel = figure.axes[0]  # quantization none: sdpa and FA2 both reach 32768 at b1, b2, b4
    colours = {matplotlib.colors.to_hex(plots.ATTN_COLORS[a]): a for a in plots.ATTN_COLORS}
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
