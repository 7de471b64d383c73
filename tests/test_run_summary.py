"""The Snakefile's onsuccess/onerror handlers print the run summary (llmbench.report.summary)
after Snakemake's own output, for any target; a dry run prints none."""

from __future__ import annotations

import shutil

import pytest
from conftest import copy_repo, snakemake

SEED = "results/reference/h100/seed/cells"
MISSING = "mistral-7b-v0.3/none/eager/bfloat16/b2_s3072"
CONFIG = ("--config", "grid=seed", "on_missing_gpu=ignore")


@pytest.fixture(scope="module")
def workdir(tmp_path_factory):
    """A copy of the repository whose results/ holds the committed seed cells but one."""
    workdir = copy_repo(tmp_path_factory.mktemp("summary") / "repo")
    shutil.copytree(workdir / SEED, workdir / "results" / "cells")
    (workdir / "results" / "cells" / f"{MISSING}.json").unlink()
    return workdir


def summary_of(stderr: str) -> str:
    assert stderr.count("llmbench: run summary") == 1, stderr[-3000:]
    return stderr[stderr.index("llmbench: run summary") :]


def test_a_dry_run_prints_no_summary(workdir):
    process = snakemake(workdir, "-n", "predict", *CONFIG)
    assert "run summary" not in process.stdout + process.stderr


def test_a_run_of_another_target_ends_with_the_summary(workdir):
    process = snakemake(workdir, "predict", "--cores", "1", *CONFIG)
    summary = summary_of(process.stderr)
    assert process.stderr.index("steps (100%) done") < process.stderr.index(summary)
    assert summary.startswith("llmbench: run summary (grid seed, 9 cells, results/cells/)")
    assert "  status   6 ok, 1 unsupported, 1 check_failed" in summary
    assert "  tables   results/tables/: predicted.csv" in summary
    assert "    unsupported   mistral-7b-v0.3/nf4/flash_attention_2/float32/b2_s3072: " in summary
    assert f"failed): {MISSING}" in summary


def test_a_failed_run_ends_with_the_summary_too(workdir):
    (workdir / "results" / "tables" / "predicted.csv").unlink(missing_ok=True)
    script = workdir / "scripts" / "predict_grid.py"
    original = script.read_text()
    script.write_text(original + "\nraise SystemExit('broken on purpose')\n")
    try:
        process = snakemake(workdir, "predict", "--cores", "1", *CONFIG, check=False)
    finally:
        script.write_text(original)
    assert process.returncode != 0
    summary = summary_of(process.stderr)
    assert "  status   6 ok, 1 unsupported, 1 check_failed" in summary


def test_figures_redrawn_from_a_reference_summarize_that_reference(workdir):
    # not the grid's cells (all but one present here) but the reference's own
    process = snakemake(workdir, "figures", "--cores", "1", "--config", "report_root=" + SEED[:-6])
    summary = summary_of(process.stderr)
    assert summary.startswith(f"llmbench: run summary (9 cells, {SEED}/)")
    assert "  status   7 ok, 1 unsupported, 1 check_failed" in summary
    assert "  figures  results/redrawn/reference/h100/seed/figures/: " in summary
    assert "missing" not in summary


def test_another_target_with_a_reference_report_root_still_summarizes_the_grid(workdir):
    config = (*CONFIG, "report_root=" + SEED[:-6])
    summary = summary_of(snakemake(workdir, "predict", "--cores", "1", *config).stderr)
    assert summary.startswith("llmbench: run summary (grid seed, 9 cells, results/cells/)")
    assert f"failed): {MISSING}" in summary
