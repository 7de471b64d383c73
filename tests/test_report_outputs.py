"""Figures redrawn from a committed reference go to results/redrawn/ (a fresh clone stays
clean), into the reference only with figures_in_place; the report opens on the answer."""

import re
import subprocess

import pytest
from conftest import copy_repo, snakemake

SEED = "results/reference/h100/seed"
FRONTIER = "results/reference/h100/frontier"


@pytest.fixture(scope="module")
def workdir(tmp_path_factory):
    return copy_repo(tmp_path_factory.mktemp("report") / "repo")


def planned(workdir, *args):
    """{rule: [output paths]} of a dry run."""
    process = snakemake(workdir, "-n", *args)
    jobs: dict[str, list[str]] = {}
    for block in re.split(r"\n(?=rule \w+:)", process.stdout)[1:]:
        rule = re.match(r"rule (\w+):", block).group(1)
        outputs = re.search(r"^\s+output: (.*)$", block, re.M)
        jobs.setdefault(rule, []).extend(outputs.group(1).split(", ") if outputs else [])
    return jobs


def test_redrawing_a_reference_plans_only_figure_jobs_under_results_redrawn(workdir):
    jobs = planned(workdir, "figures", "--config", f"report_root={SEED}")
    assert set(jobs) == {"plot_figures", "report_cells_table", "figures"}
    outputs = jobs["plot_figures"] + jobs["report_cells_table"]
    assert len(outputs) == 13  # 6 figures x (png, svg) + the cells table
    assert all(p.startswith("results/redrawn/reference/h100/seed/") for p in outputs), outputs
    assert "results/redrawn/reference/h100/seed/figures/seed_comparison.png" in outputs
    assert "results/redrawn/reference/h100/seed/report/cells.csv" in outputs


def test_figures_in_place_redraws_the_committed_figures(workdir):
    args = ("figures", "--forcerun", "plot_figures", "--config", f"report_root={SEED}")
    jobs = planned(workdir, *args, "figures_in_place=true")
    committed = sorted(str(p.relative_to(workdir)) for p in (workdir / SEED / "figures").iterdir())
    assert sorted(jobs["plot_figures"]) == committed
    # the report's copy of cells.csv never goes into a reference
    assert jobs["report_cells_table"] == ["results/redrawn/reference/h100/seed/report/cells.csv"]


def test_a_reference_frontier_figure_is_redrawn_under_results_redrawn(workdir):
    jobs = planned(workdir, "figures", "--config", f"report_root={FRONTIER}")
    assert set(jobs) == {"frontier_figure", "figures"}
    assert sorted(jobs["frontier_figure"]) == [
        "results/redrawn/reference/h100/frontier/figures/frontier.png",
        "results/redrawn/reference/h100/frontier/figures/frontier.svg",
    ]


def test_a_references_frontier_table_is_rebuilt_only_in_place(workdir):
    """A fresh clone's file dates are arbitrary: were the committed frontier.csv an output,
    redrawing could rewrite it. It is one only with figures_in_place."""
    table = f"{FRONTIER}/tables/frontier.csv"
    jobs = planned(
        workdir, table, "--forcerun", "frontier_table", "--config", "figures_in_place=true"
    )
    assert jobs["frontier_table"] == [table]
    without = snakemake(workdir, "-n", table, "--forcerun", "frontier_table", check=False)
    assert "rule frontier_table:" not in without.stdout + without.stderr


def test_this_runs_figures_stay_in_results_figures(workdir):
    jobs = planned(workdir, "figures", "--config", "grid=smoke")
    assert jobs["plot_figures"][0] == "results/figures/seed_comparison.png"


def git(workdir, *args):
    command = ["git", "-c", "user.name=t", "-c", "user.email=t@example.org", *args]
    return subprocess.run(command, cwd=workdir, capture_output=True, text=True, check=True)


@pytest.fixture
def clone(tmp_path):
    """A fresh clone (files written by git checkout, their own mtimes) of a repository holding
    a copy of the checkout, everything committed."""
    origin = copy_repo(tmp_path / "origin")
    git(origin, "init", "-q")
    git(origin, "add", "-A")
    git(origin, "commit", "-q", "--no-gpg-sign", "-m", "origin")
    git(tmp_path, "clone", "-q", str(origin), "clone")
    return tmp_path / "clone"


def test_redrawing_and_the_report_leave_a_fresh_clone_clean(clone):
    snakemake(clone, "figures", "--config", f"report_root={SEED}")
    snakemake(clone, "figures", "--config", f"report_root={SEED}", "--report", "report.html")
    jobs = planned(clone, "figures", "--config", f"report_root={FRONTIER}")
    # In a fresh clone the reference's frontier.csv may be older than scripts/frontier_table.py:
    # it is an input here, never rebuilt (test above); only the figure is drawn, under
    # results/redrawn/.
    assert set(jobs) == {"frontier_figure", "figures"}
    assert all(p.startswith("results/redrawn/") for p in jobs["frontier_figure"])
    snakemake(clone, "figures", "--config", f"report_root={FRONTIER}")
    assert git(clone, "status", "--porcelain").stdout == ""
    ignored = git(clone, "status", "--porcelain", "--ignored").stdout.splitlines()
    assert "!! results/redrawn/" in ignored
    redrawn = clone / "results/redrawn/reference/h100"
    assert {p.name for p in (redrawn / "seed/figures").glob("*.png")} >= {
        "seed_comparison.png",
        "status_map.png",
    }
    assert (redrawn / "frontier/figures/frontier.png").is_file()
    copied = (redrawn / "seed/report/cells.csv").read_bytes()
    assert copied == (clone / SEED / "tables/cells.csv").read_bytes()
    # the report's first page: summary, statuses and the seed numbers; the captions' line
    report = (clone / "report.html").read_text()
    for text in ("9 cells, GPU NVIDIA H100 80GB HBM3", "Cells per status", "13.50", "183.6"):
        assert text in report
    assert report.count("GPU: NVIDIA H100 80GB HBM3, date not recorded in the cells") == 7
