"""Faults end to end, in a copy of the repository: a model that cannot be built still gets
its cells (as ``error`` cells) and the run its tables; a model the memory model cannot
predict costs only its own rows; a corrupt cell JSON fails the table build loudly, naming
the file on the console, and keeps the last good tables."""

from __future__ import annotations

import csv
import json
import re
import shutil

import pytest
import yaml
from conftest import REPO, copy_repo, snakemake

SEED_CELLS = REPO / "results" / "reference" / "h100" / "seed" / "cells"
TABLES = ("cells.csv", "cells.parquet", "devices.csv")


def job_counts(output: str) -> dict[str, int]:
    table = output[output.index("Job stats:") :]
    return {m.group(1): int(m.group(2)) for m in re.finditer(r"^(\w+)\s+(\d+)$", table, re.M)}


def add_model(workdir, name: str, architecture: dict, grid: str, models: list[str]) -> None:
    """Register ``name`` in the copy's config.yaml (where a user adds a model) and write a
    one-cell-per-model grid ``grid`` of ``models``."""
    (workdir / "config" / "models" / f"{name}.json").write_text(json.dumps(architecture))
    config_path = workdir / "config" / "config.yaml"
    config = yaml.safe_load(config_path.read_text())
    config["models"][name] = {"architecture": f"config/models/{name}.json"}
    config_path.write_text(yaml.safe_dump(config, sort_keys=False))
    (workdir / "config" / "grids" / f"{grid}.yaml").write_text(
        f"blocks:\n  - {{models: [{', '.join(models)}], quant: [none], attn: [sdpa], "
        "dtype: [bfloat16], batch: [1], seq: [8]}\n"
    )


@pytest.fixture(scope="module")
def workdir(tmp_path_factory):
    return copy_repo(tmp_path_factory.mktemp("faults") / "repo")


def test_a_corrupt_cell_keeps_the_last_good_tables_and_is_named_on_the_console(workdir):
    """The seed reference's cells stand for a finished run: only the tables and figures are
    built (no GPU needed)."""
    # Dated now (newer than the scripts), as `llmbench.cli resume` copies them: no cell reruns.
    shutil.copytree(SEED_CELLS, workdir / "results" / "cells", copy_function=shutil.copy)
    run = ("--cores", "2", "--config", "grid=seed", "on_missing_gpu=ignore")
    planned = job_counts(snakemake(workdir, "-n", *run).stdout)
    assert set(planned) == {
        "aggregate_cells",
        "plot_figures",
        "report_cells_table",
        "all",
        "total",
    }, planned
    snakemake(workdir, *run)
    tables = workdir / "results" / "tables"
    good = {name: (tables / name).read_bytes() for name in TABLES}
    figures = {p: p.stat().st_mtime_ns for p in (workdir / "results" / "figures").glob("*")}
    relpath = "mistral-7b-v0.3/none/sdpa/bfloat16/b2_s3072.json"
    corrupt = workdir / "results" / "cells" / relpath
    document = json.loads(corrupt.read_text())
    del document["status"]
    corrupt.write_text(json.dumps(document))

    failed = snakemake(workdir, *run, check=False)
    assert failed.returncode != 0
    assert f"results/cells/{relpath}: <top level>: 'status' is a required property" in (
        failed.stderr
    )
    assert "tables not rebuilt, the previous ones are kept" in failed.stderr
    assert {name: (tables / name).read_bytes() for name in TABLES} == good
    assert {p: p.stat().st_mtime_ns for p in figures} == figures

    corrupt.write_text((SEED_CELLS / relpath).read_text())  # fixed: the tables follow
    snakemake(workdir, *run)
    with open(tables / "cells.csv") as handle:
        assert len(list(csv.DictReader(handle))) == 9


def test_snakemake_predict_gives_unknown_for_a_model_it_cannot_predict(workdir):
    opt_style = {
        "model_type": "opt",
        "hidden_size": 64,
        "ffn_dim": 256,
        "num_hidden_layers": 2,
        "num_attention_heads": 4,
        "vocab_size": 1000,
    }
    add_model(workdir, "opt-tiny", opt_style, "with-opt", ["opt-tiny", "tiny-mistral"])
    snakemake(workdir, "predict", "--config", "grid=with-opt", "on_missing_gpu=ignore")
    with open(workdir / "results" / "tables" / "predicted.csv") as handle:
        rows = {row["model"]: row for row in csv.DictReader(handle)}
    assert rows["opt-tiny"]["fits"] == "unknown"
    assert "cannot predict opt-tiny" in rows["opt-tiny"]["reason"]
    # no method applies: the hand replay's family list, and no cached trace
    assert "model_type 'opt'" in rows["opt-tiny"]["reason"]
    assert rows["tiny-mistral"]["fits"] == "yes"


@pytest.mark.integration
def test_a_model_that_cannot_be_built_ends_as_error_cells_and_the_run_has_tables(
    tmp_path_factory,
):
    """A config transformers reads and the checks before the run accept, but cannot
    instantiate (a rope_theta that is not a number: the rotary embedding's ``base ** ...``
    fails), fails the build at run time; fixing it rebuilds the model and remeasures its
    cells. (An unknown activation, this test's earlier example, is now refused before.)"""
    workdir = copy_repo(tmp_path_factory.mktemp("unbuilt") / "repo")
    broken = json.loads((REPO / "config" / "models" / "tiny-mistral.json").read_text())
    theta = broken["rope_theta"]
    broken["rope_theta"] = "abc"
    add_model(workdir, "tiny-broken", broken, "with-broken", ["tiny-mistral", "tiny-broken"])
    run = ("--cores", "2", "--resources", "gpu=1", "--config", "grid=with-broken")
    manifest = "resources/models/tiny-broken/base/checkpoint.json"

    process = snakemake(workdir, *run, "on_missing_gpu=ignore")
    assert (
        "building model 'tiny-broken' from config/models/tiny-broken.json failed: "
        "TypeError: unsupported operand type(s) for ** or pow(): 'str'" in process.stderr
    )
    assert f"snakemake -R {manifest}" in process.stderr
    cell = (
        workdir / "results" / "cells" / "tiny-broken" / "none" / "sdpa" / "bfloat16" / "b1_s8.json"
    )
    result = json.loads(cell.read_text())
    assert (result["status"], result["phase"]) == ("error", "load")
    assert "logs/models/tiny-broken/materialize.log" in result["reason"]
    with open(workdir / "results" / "tables" / "cells.csv") as handle:
        statuses = {row["model"]: row["status"] for row in csv.DictReader(handle)}
    assert statuses == {"tiny-mistral": "ok", "tiny-broken": "error"}

    # Any cause: -R on the failed manifest rebuilds that model and remeasures its cells only.
    dry = snakemake(workdir, "-n", "-R", manifest, *run, "on_missing_gpu=ignore")
    counts = job_counts(dry.stdout)
    assert (counts["materialize_model"], counts["measure_cell"]) == (1, 1)
    # A fixed architecture file is newer than the failed manifest: the next run rebuilds.
    broken["rope_theta"] = theta
    (workdir / "config" / "models" / "tiny-broken.json").write_text(json.dumps(broken))
    snakemake(workdir, *run, "on_missing_gpu=ignore")
    assert json.loads(cell.read_text())["status"] == "ok"


def run_script(name: str, monkeypatch, **snakemake_object) -> str:
    """Run scripts/<name> as Snakemake would, with ``snakemake_object`` as its ``snakemake``;
    return what it printed on the console (Snakemake's stderr)."""
    import io
    import runpy
    import sys
    from types import SimpleNamespace

    console = io.StringIO()
    monkeypatch.setattr(sys, "stderr", console)
    monkeypatch.setattr(sys, "stdout", io.StringIO())
    runpy.run_path(
        str(REPO / "scripts" / name),
        init_globals={"snakemake": SimpleNamespace(**snakemake_object)},
    )
    sys.stderr.flush()  # the script's log, as the end of its process would
    return console.getvalue()


def test_a_failed_build_writes_a_failed_manifest_and_says_so(tmp_path, monkeypatch):
    """The build job ends well and leaves data: the manifest names the exception and the
    file; the console names the model, the file, the log and the command that rebuilds."""
    from types import SimpleNamespace

    architecture = tmp_path / "broken.json"
    architecture.write_text('{"model_type": "mistral",')  # not JSON: the issue's own example
    manifest = tmp_path / "models" / "broken" / "base" / "checkpoint.json"
    log = tmp_path / "materialize.log"
    console = run_script(
        "materialize_model.py",
        monkeypatch,
        input=SimpleNamespace(architecture=str(architecture)),
        output=[str(manifest)],
        log=[str(log)],
        params=SimpleNamespace(seed=0, device="cpu"),
        wildcards=SimpleNamespace(model="broken"),
    )
    written = json.loads(manifest.read_text())
    assert written["status"] == "failed" and written["source"] == str(architecture)
    assert "JSON" in written["error"] and written["log"] == str(log)
    assert f"building model 'broken' from {architecture} failed: {written['error']}" in console
    assert f"snakemake -R {manifest}" in console and str(log) in console
    assert "Traceback" in log.read_text()

    quantized = tmp_path / "models" / "broken" / "nf4" / "checkpoint.json"
    run_script(
        "prequantize_model.py",
        monkeypatch,
        input=SimpleNamespace(base=str(manifest)),
        output=[str(quantized)],
        log=[str(tmp_path / "prequantize.log")],
        params=SimpleNamespace(compute_dtype="bfloat16", device="cpu"),
        wildcards=SimpleNamespace(quant="nf4"),
    )
    written = json.loads(quantized.read_text())
    assert written["status"] == "failed" and "base checkpoint was not built" in written["error"]
