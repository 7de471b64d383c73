"""Figures of a CPU run say, on the figure, that they test the pipeline and not GPUs."""

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt  # noqa: E402
import pandas as pd  # noqa: E402
import pytest  # noqa: E402
from conftest import REPO  # noqa: E402
from figure_marks import figure_text  # noqa: E402
from test_figures_marks import synthetic  # noqa: E402

from llmbench.report.figures import draw, style  # noqa: E402


@pytest.fixture(autouse=True)
def close_figures():
    yield
    plt.close("all")


@pytest.mark.parametrize("key", list(draw.FIGURES))
def test_cpu_figures_carry_the_note(key):
    cpu = synthetic()
    cpu = cpu[cpu["device"] == "cpu"].assign(prefill_peak_allocated_gib=float("nan"))
    figure = draw.figure(key, cpu)  # drawn or refused, the note is there
    assert style.CPU_NOTE in figure_text(figure)


def test_memory_of_a_cpu_run_is_host_rss():
    cpu = synthetic()
    cpu = cpu[cpu["device"] == "cpu"].assign(prefill_peak_allocated_gib=float("nan"))
    figure = draw.figure("memory", cpu)
    assert "host peak RSS" in figure.axes[0].get_ylabel()


@pytest.mark.parametrize("key", list(draw.FIGURES))
def test_gpu_figures_do_not(key):
    cells = pd.read_csv(REPO / "results/reference/h100/extended/tables/cells.csv")
    assert style.CPU_NOTE not in figure_text(draw.figure(key, cells))
