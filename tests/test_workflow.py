"""The Snakemake workflow: lint, job counts of the shipped grids, early validation errors,
reruns that redo only what is missing, figures from committed tables."""

import csv
import io
import re

import pytest
from conftest import copy_repo, snakemake


@pytest.fixture(scope="module")
def workdir(tmp_path_factory):
    return copy_repo(tmp_path_factory.mktemp("wf") / "repo")


def job_counts(output: str) -> dict[str, int]:
    table = output[output.index("Job stats:") :]
    return {m.group(1): int(m.group(2)) for m in re.finditer(r"^(\w+)\s+(\d+)$", table, re.M)}


def test_lint_is_clean(workdir):
    process = snakemake(workdir, "--lint")
    assert (
        "Congratulations, your workflow is in a good condition!" in process.stdout + process.stderr
    )


@pytest.mark.parametrize(
    "grid, cells, prequantized",
    [("seed", 9, 1), ("extended", 81, 2), ("smoke", 23, 1), ("quant", 104, 4), ("kvcache", 32, 0)],
)
def test_dry_run_job_counts(workdir, grid, cells, prequantized):
    process = snakemake(workdir, "-n", "--config", f"grid={grid}", "on_missing_gpu=ignore")
    counts = job_counts(process.stdout)
    assert counts["measure_cell"] == cells
    assert counts.get("prequantize_model", 0) == prequantized
    assert counts["aggregate_cells"] == 1 and counts["plot_figures"] == 1


def test_default_command_without_gpu_says_so_and_runs_smoke(workdir):
    process = snakemake(workdir, "-n")
    assert "No CUDA GPU was found on this host" in process.stderr
    assert job_counts(process.stdout)["measure_cell"] == 23


@pytest.mark.parametrize(
    "config, message",
    [
        (["grid=nope"], "grid 'nope': no file"),
        (["device=tpu"], "device"),
        (["grid=../../etc/passwd"], "grid"),
        (["on_missing_gpu=maybe"], "on_missing_gpu"),
        (["predict_gpu=lots"], "config key 'predict_gpu': cannot read a memory size from 'lots'"),
        (["predict_gpu=0.5"], "config key 'predict_gpu': 0.5: nothing is left for PyTorch"),
    ],
)
def test_bad_config_fails_before_any_job_naming_the_key(workdir, config, message):
    process = snakemake(workdir, "-n", "--config", *config, check=False)
    assert_one_line_error(process, message)
    assert "Job stats" not in process.stdout


def test_a_frontier_this_host_cannot_run_stops_with_its_message(workdir):
    # decided in an input function (frontier_section), not as the Snakefile is read
    config = ["--config", "grid=smoke", "on_missing_gpu=fail"]
    process = snakemake(workdir, "-n", "frontier", *config, check=False)
    assert_one_line_error(process, "No CUDA GPU was found on this host, and the frontier needs")


def assert_one_line_error(process, message: str) -> None:
    """The run stopped with status 1 and our message, without Snakemake's exception name or
    the traceback frames of our code under it (llmbench.grid.files.stop_on_input_error)."""
    output = process.stdout + process.stderr
    assert process.returncode == 1, output
    assert "llmbench: error: " in process.stderr and message in process.stderr, output
    assert '  File "' not in output and "Error in file" not in output, output


def grid_block(**overrides: str) -> str:
    """One grid block in YAML flow style, valid unless overridden."""
    axes = {
        "models": "[tiny-mistral]",
        "quant": "[none]",
        "attn": "[sdpa]",
        "dtype": "[bfloat16]",
        "batch": "[1]",
        "seq": "[8]",
    }
    axes.update(overrides)
    return "{" + ", ".join(f"{axis}: {values}" for axis, values in axes.items()) + "}"


@pytest.mark.parametrize(
    "block, key",
    [
        (grid_block(batch="[0]"), "blocks.0.batch.0"),
        (grid_block(quant="[int4]"), "blocks.0.quant.0"),
        (grid_block(attn="[flash]"), "blocks.0.attn.0"),
        (grid_block(models="[../x]"), "blocks.0.models.0"),
        (grid_block(models="[unknown-model]"), "model 'unknown-model' is not defined"),
    ],
)
def test_bad_grid_fails_naming_the_key(workdir, block, key):
    grid = workdir / "config" / "grids" / "bad.yaml"
    grid.write_text(f"blocks:\n  - {block}\n")
    process = snakemake(workdir, "-n", "--config", "grid=bad", check=False)
    assert_one_line_error(process, key)


def test_model_name_with_path_characters_is_rejected(workdir, tmp_path):
    override = tmp_path / "override.yaml"
    override.write_text("models:\n  ../evil:\n    architecture: config/models/tiny-mistral.json\n")
    process = snakemake(workdir, "-n", "--configfile", str(override), check=False)
    assert process.returncode != 0
    assert "evil" in process.stdout + process.stderr


def test_figures_regenerate_from_committed_tables_alone(workdir):
    root = "results/reference/h100/seed"
    for figure in (workdir / root / "figures").glob("*"):
        figure.unlink()
    process = snakemake(workdir, "figures", "--config", f"report_root={root}")
    assert "measure_cell" not in process.stdout + process.stderr
    figures = workdir / "results/redrawn/reference/h100/seed/figures"  # not into the reference
    assert {p.name for p in figures.glob("*.png")} >= {"seed_comparison.png", "status_map.png"}
    snakemake(workdir, "figures", "--config", f"report_root={root}", "--report", "report.html")
    assert (workdir / "report.html").stat().st_size > 10_000


def test_predict_target_predicts_the_configured_grid_and_summarises_no_cells(workdir):
    # on a host without a GPU the cells would run the smoke grid; predict still predicts the
    # configured one, and the run summary of smoke cells would describe a grid it never ran
    process = snakemake(workdir, "predict", "--config", "grid=seed")
    output = process.stdout + process.stderr
    assert "the predict target still predicts 'seed'" in output
    assert "run summary" not in output
    rows = (workdir / "results/tables/predicted.csv").read_text().splitlines()
    assert len(rows) == 1 + 9 and all("mistral-7b-v0.3" in row for row in rows[1:])
    # fitted to the config's predict_gpu (default h100-80gb), named on every row
    table = list(csv.DictReader(io.StringIO("\n".join(rows))))
    assert {(r["gpu"], float(r["gpu_mem_gib"])) for r in table} == {("h100-80gb", 81079 / 1024)}
    snakemake(workdir, "predict", "--forcerun", "predict", "--config", "predict_gpu=h200")
    table = list(csv.DictReader((workdir / "results/tables/predicted.csv").open()))
    assert {r["gpu"] for r in table} == {"h200"}
