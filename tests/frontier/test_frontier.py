"""The out-of-memory frontier end to end: one real search on the CPU through Snakemake
(integration)."""

from __future__ import annotations

import json

import pytest
import yaml
from conftest import copy_repo, snakemake
from frontier_fakes import TINY_SECTION

from llmbench.record.cell import read_cell_result


@pytest.mark.integration
def test_cpu_frontier_through_snakemake(tmp_path):
    """Two real searches on tiny-mistral under the tiny budget: frontiers exact to the step
    (checked against brute-force neighbours), every probe an isolated cell JSON, and a rerun
    that reuses every probe."""
    import pandas as pd

    workdir = copy_repo(tmp_path / "repo")
    section = {
        **TINY_SECTION,
        "quant": ["none"],
        "attn": ["eager"],
        "batch": [1],
        "seq": [1024],
    }
    (workdir / "config" / "frontier-test.yaml").write_text(yaml.safe_dump({"frontier": section}))
    args = ("frontier", "--cores", "2", "--configfile", "config/frontier-test.yaml")
    process = snakemake(workdir, *args)
    # the run summary is of the searches, not of the grid's cells (none asked for)
    summary = process.stderr[
        process.stderr.index("llmbench: frontier summary (results/frontier/)") :
    ]
    assert "run summary" not in process.stderr and "2 searches" in summary
    table = pd.read_csv(workdir / "results/tables/frontier.csv")
    assert len(table) == 2 and set(table["status"]) == {"found"}
    assert (workdir / "results/figures/frontier.png").is_file()
    for row in table.itertuples():
        assert row.probes <= row.max_probes and row.brute_force / row.probes >= 5
        searches = workdir / "results/frontier/searches/tiny-mistral/none/eager/bfloat16"
        name = "seq_b1" if row.search == "seq" else "batch_s1024"
        document = json.loads((searches / f"{name}.json").read_text())
        statuses = {p["value"]: p["status"] for p in document["probes"]}
        assert statuses[row.frontier] == "ok" and statuses[row.first_fail] == "oom"
        for probe in document["probes"]:
            cell = read_cell_result(workdir / "results/frontier/probes" / probe["path"])
            assert cell["settings"]["memory_budget_gib"] == section["memory_budget_gib"]
            assert cell["status"] == probe["status"]
    # a rerun of the searches runs no probe
    snakemake(workdir, *args, "--forcerun", "frontier_search")
    again = pd.read_csv(workdir / "results/tables/frontier.csv")
    assert (again["probes_run"] == 0).all()
    assert list(again["frontier"]) == list(table["frontier"])
