"""No plotted mark lacks a cell: every figure of every committed reference, and of a table that
mixes dtypes, quantizations, devices and GPUs, plots only values that cells measured, each
cell once, or refuses and names what varies."""

import matplotlib

matplotlib.use("Agg")

from collections import Counter  # noqa: E402

import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
import pytest  # noqa: E402
import seaborn as sns  # noqa: E402
from conftest import REPO  # noqa: E402
from figure_marks import assert_every_mark_is_a_cell, figure_text, plotted  # noqa: E402

from llmbench.measure.failures import MEASURED  # noqa: E402
from llmbench.report.figures import draw, marks  # noqa: E402

REFERENCE = REPO / "results" / "reference" / "h100"
RUNS = ("seed", "seed-2gpu", "extended")
SEED_COLUMNS = (
    "load_allocated_gib",
    "load_reserved_gib",
    "prefill_peak_allocated_gib",
    "prefill_peak_reserved_gib",
    "load_host_rss_gib",
    "prefill_host_peak_rss_gib",
    "load_reserved_cuda0_gib",
    "prefill_reserved_cuda0_gib",
)


@pytest.fixture(autouse=True)
def close_figures():
    yield
    plt.close("all")


def phase_ran(row, column) -> bool:
    """The test's own reading of a cell: which phases ran to their end."""
    if row["status"] in MEASURED:
        return True
    order = ["setup", "load", "prefill", "decode"]
    phase = column.split("_", 1)[0]
    return row["phase"] in order and order.index(phase) < order.index(row["phase"])


def allowed(cells: pd.DataFrame, key: str) -> list[float]:
    """Values a mark of figure ``key`` may take: what the cells measured for its y."""
    measured = cells[cells["status"].isin(MEASURED)]
    if key == "memory":
        cuda = measured[measured["device"] == "cuda"]
        return [*cuda["prefill_peak_allocated_gib"], *measured["prefill_host_peak_rss_gib"]]
    if key == "latency":
        return list(measured["prefill_ms_p50"])
    if key == "predicted":
        return [
            *measured["prefill_peak_allocated_gib"],
            *measured["prefill_measured_over_predicted"],
            *measured.get("decode_peak_allocated_gib", []),
            *measured.get("decode_measured_over_predicted", []),
        ]
    if key == "seed":
        seeds = cells[cells["seed_case"].notna()]
        values = [
            *seeds["notebook_initial_reserved_gib"],
            *seeds["notebook_inference_reserved_gib"],
        ]
        for _, row in seeds.iterrows():
            values += [row[c] for c in SEED_COLUMNS if c in row and phase_ran(row, c)]
        return values
    if key == "decode":
        return list(measured["decode_over_floor"]) if "decode_over_floor" in measured else []
    return []  # the status map plots no value


@pytest.mark.parametrize("run", RUNS)
@pytest.mark.parametrize("key", list(draw.FIGURES))
def test_no_plotted_mark_of_a_committed_reference_lacks_a_cell(run, key):
    cells = pd.read_csv(REFERENCE / run / "tables" / "cells.csv")
    figure = draw.figure(key, cells)
    found = assert_every_mark_is_a_cell(figure, allowed(cells, key))
    if key == "status":
        annotated = [t for t in figure.axes[0].texts if t.get_text()]
        assert sorted(t.get_text() for t in annotated) == sorted(cells["status"])
    if key in ("memory", "latency") and run == "extended":
        column = "prefill_peak_allocated_gib" if key == "memory" else "prefill_ms_p50"
        measured = cells[cells["status"].isin(MEASURED)]
        assert sorted(found.data) == sorted(measured[column])  # each cell exactly once
        assert found.did_not_run == int((~cells["status"].isin(MEASURED)).sum())


def test_frontier_marks_are_searches():
    searches = pd.read_csv(REFERENCE / "frontier" / "tables" / "frontier.csv")
    figure = draw.figure("frontier", searches, draw.frontier_figure)
    ys = [*searches["frontier"], *searches["seq"], *searches["min"]]
    numbers = [*searches["frontier"], *searches["seq"], *searches["first_fail"]]
    found = assert_every_mark_is_a_cell(figure, ys, numbers)
    assert found.numbers  # the frontier labels are checked, not skipped


def test_the_checker_catches_a_seaborn_mean():
    """The old memory_vs_seq: relplot(kind="line") averaged bfloat16 and float32 to 24.6 GiB."""
    cells = pd.read_csv(REFERENCE / "seed" / "tables" / "cells.csv")
    measured = cells[cells["status"].isin(MEASURED)]
    grid = sns.relplot(
        data=measured, kind="line", x="seq", y="prefill_peak_allocated_gib", hue="attn", col="quant"
    )
    with pytest.raises(AssertionError, match="no cell measured"):
        assert_every_mark_is_a_cell(grid.figure, allowed(cells, "memory"))
    values = plotted(grid.figure).data
    assert any(abs(v - 24.626) < 0.01 for v in values)  # (14.963 + 34.289) / 2


def synthetic() -> pd.DataFrame:
    """Cells that differ in dtype, quantization, device (cpu, cuda) and GPU (H100, H200) at
    the same model, attention, batch and length; every measured value distinct."""
    rows = []
    places = (("cuda", "NVIDIA H100 80GB HBM3", 1), ("cuda", "NVIDIA H200", 1), ("cpu", "AMD", 0))
    for device, gpu, n_devices in places:
        for quant in ("none", "nf4"):
            for dtype in ("bfloat16", "float32"):
                for attn in ("sdpa", "flash_attention_2"):
                    for seq in (1024, 2048):
                        i = len(rows)
                        cuda = device == "cuda"
                        row = {
                            **dict(model="m", quant=quant, attn=attn, sdpa_backend=np.nan),
                            **dict(dtype=dtype, batch=2, seq=seq, device=device),
                            **dict(device_name=gpu, n_devices=n_devices, status="ok"),
                            **dict(phase=None, error=None, quant_applied=quant),
                            "device_total_gib": 79.2 if cuda else np.nan,
                            "load_allocated_gib": 2 + 0.011 * i if cuda else np.nan,
                            "load_reserved_gib": 2.5 + 0.013 * i if cuda else np.nan,
                            "prefill_peak_allocated_gib": 3 + 0.731 * i if cuda else np.nan,
                            "prefill_peak_reserved_gib": 3.5 + 0.733 * i if cuda else np.nan,
                            "load_host_rss_gib": 0.4 + 0.017 * i,
                            "prefill_host_peak_rss_gib": 0.5 + 0.019 * i,
                            "prefill_ms_p50": 50 + 13.1 * i,
                            "decode_over_floor": 3 + 0.37 * i if cuda else np.nan,
                            "predicted_prefill_peak_allocated_gib": 3 + 0.73 * i if cuda else None,
                            "prefill_measured_over_predicted": 1 + 0.001 * i if cuda else None,
                            "seed_case": "1 standard" if seq == 1024 and attn == "sdpa" else None,
                            "seed_variant": "as intended" if dtype == "bfloat16" else "as written",
                            "notebook_initial_reserved_gib": np.nan,
                            "notebook_inference_reserved_gib": np.nan,
                        }
                        rows.append(row)
    cells = pd.DataFrame(rows)
    oom = (cells["device"] == "cuda") & (cells["seq"] == 2048) & (cells["attn"] == "sdpa")
    cells.loc[oom & (cells["dtype"] == "float32"), "status"] = "oom"
    cells.loc[oom & (cells["dtype"] == "float32"), "phase"] = "prefill"
    return cells


@pytest.mark.parametrize("key", list(draw.FIGURES))
def test_a_mixed_table_maps_every_mark_to_one_cell_or_refuses(key):
    cells = synthetic()
    try:
        figure = draw.FIGURES[key](cells)
    except marks.NotDrawn as refusal:
        assert [c for c in marks.IDENTITY if f"{c} varies" in str(refusal)], refusal
        notice = draw.figure(key, cells)  # drawn in the figure's place, saying why
        assert str(refusal).split(" and ")[0] in figure_text(notice).replace("\n", " ")
        assert not plotted(notice).data
        return
    found = assert_every_mark_is_a_cell(figure, allowed(cells, key))
    if key != "seed":  # the seed bars of different readings may coincide in value
        assert max(Counter(found.data).values(), default=1) == 1  # no cell drawn twice


def test_the_mixed_table_is_drawn_where_it_can_be_and_refused_where_not():
    cells = synthetic()
    memory = figure_text(draw.figure("memory", cells))
    assert "CPU cells not drawn" in memory and "H200" in memory and "float32" in memory
    seed = figure_text(draw.figure("seed", cells))
    assert "not drawn" in seed and "device_name varies" in seed


def test_the_check_names_the_columns_a_figure_leaves_out():
    cells = synthetic()
    with pytest.raises(marks.NotDrawn, match="dtype varies .*device_name varies"):
        marks.check_one_cell_per_mark(cells, ["model", "quant", "attn", "batch", "seq"])
    twice = pd.concat([cells.iloc[:1], cells.iloc[:1]])
    with pytest.raises(marks.NotDrawn, match="same cell"):
        marks.check_one_cell_per_mark(twice, list(marks.IDENTITY))
    marks.check_one_cell_per_mark(cells, list(marks.IDENTITY))  # all encoded: fine
