"""The same cells on two GPUs (llmbench.report.compare and its figure)."""

from __future__ import annotations

import matplotlib

matplotlib.use("Agg")

import pandas as pd  # noqa: E402
import pytest  # noqa: E402
from conftest import REPO  # noqa: E402

from llmbench.report import compare  # noqa: E402
from llmbench.report.figures.crossgpu import crossgpu_figure  # noqa: E402
from llmbench.report.figures.style import REFERENCE  # noqa: E402

NAMES = ("h100", "h200")
H100 = REPO / "results/reference/h100/extended"
H200 = REPO / "results/reference/h200/extended"


def table(gpu: str, rows: list[dict]) -> pd.DataFrame:
    base = {"model": "m", "quant": "none", "attn": "sdpa", "sdpa_backend": None}
    base |= {"dtype": "bfloat16", "device_name": gpu}
    frame = pd.DataFrame([base | row for row in rows])
    for metric in compare.METRICS:
        if metric not in frame:
            frame[metric] = 1.0
    return frame


def test_ratios_only_where_the_cell_ran_on_both_gpus():
    first = table(
        "A",
        [
            {"batch": 1, "seq": 8, "status": "ok", "mbu": 0.2},
            {"batch": 2, "seq": 8, "status": "oom", "mbu": None},
        ],
    )
    second = table(
        "B",
        [
            {"batch": 1, "seq": 8, "status": "ok", "mbu": 0.1},
            {"batch": 2, "seq": 8, "status": "ok", "mbu": 0.3},
        ],
    )
    both = compare.compare(first, second, NAMES)
    assert list(both["status_h100"]) == ["ok", "oom"] and list(both["status_h200"]) == ["ok"] * 2
    assert both.loc[0, "mbu_ratio"] == pytest.approx(0.5)
    assert pd.isna(both.loc[1, "mbu_ratio"])  # no ratio against a cell that did not run
    assert both.loc[0, "prefill_memory_same"] == True  # noqa: E712 - a pandas object column
    assert pd.isna(both.loc[1, "prefill_memory_same"])


def test_a_table_with_one_cell_twice_or_two_gpus_is_refused():
    row = {"batch": 1, "seq": 8, "status": "ok"}
    with pytest.raises(ValueError, match="more than once"):
        compare.compare(table("A", [row, row]), table("B", [row]), NAMES)
    mixed = pd.concat([table("A", [row]), table("B", [row | {"seq": 16}])])
    with pytest.raises(ValueError, match="one GPU model"):
        compare.gpu_name(mixed, "mixed")


@pytest.fixture(scope="module")
def references() -> pd.DataFrame:
    return compare.compare_folders(H100, H200, NAMES)


def test_committed_references_agree_on_memory_and_differ_in_status_where_h100_ran_out(references):
    assert len(references) == 81
    differ = references[references["status_h100"] != references["status_h200"]]
    assert set(differ["status_h100"]) == {"oom"} and set(differ["status_h200"]) == {"ok"}
    assert references["prefill_memory_same"].dropna().all()  # to the byte, as established
    lines = compare.summary_lines(references, NAMES)
    # "the same" is within a relative tolerance; the count to the byte is said apart
    assert "decode peak allocated the same on both GPUs (within 1e-06 relative): 72 of 77 cells" \
        " ok on both, 69 to the byte" in "\n".join(lines)  # fmt: skip
    assert any(line.startswith("mbu h200/h100, min – median – max over 77 cells") for line in lines)


def test_every_marker_is_one_cell_ran_on_both_gpus(references):
    figure = crossgpu_figure(references, NAMES)
    ran = references[(references["status_h100"] == "ok") & (references["status_h200"] == "ok")]
    for axis, (metric, _, _) in zip(figure.axes, compare_panels(), strict=False):
        pairs = sorted(
            (float(x), float(y))
            for collection in axis.collections
            for x, y in collection.get_offsets()
        )
        expected = sorted(
            (float(a), float(b))
            for a, b in zip(ran[f"{metric}_h100"], ran[f"{metric}_h200"], strict=True)
        )
        assert pairs == expected, metric
        assert all(line.get_gid() == REFERENCE for line in axis.lines)  # only y = x
    text = " ".join(t.get_text() for t in figure.texts)
    assert "not drawn: none/eager/bfloat16 b2 s8192: h100 oom, h200 ok" in text


def compare_panels():
    from llmbench.report.figures.crossgpu import PANELS

    return PANELS
