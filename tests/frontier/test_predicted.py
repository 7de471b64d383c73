"""The predicted frontier per device (llmbench.frontier.predicted, ``predict --frontier``):
each search is the simulated frontier of its probes, on the capacity the device leaves
PyTorch, and a search that cannot be simulated is unknown with the reason."""

from __future__ import annotations

import csv
import io
import json
import os
import subprocess
import sys

import pytest
import yaml

from llmbench import REPO_ROOT
from llmbench.frontier import predicted
from llmbench.frontier.planning import Search, search_values
from llmbench.frontier.prediction import simulator_capacity
from llmbench.frontier.simulated import simulated_frontier, simulator_decide
from llmbench.host.devicesize import GPUS

GIB = 2**30


def _config(**frontier):
    config = yaml.safe_load((REPO_ROOT / "config" / "config.yaml").read_text())
    section = yaml.safe_load((REPO_ROOT / "config" / "frontier-tiny.yaml").read_text())["frontier"]
    section.update(quant=["none"], attn=["eager"], batch=[1], seq=[], **frontier)
    config["frontier"] = section
    return config


def test_each_search_is_the_simulated_frontier_on_the_devices_capacity():
    pytest.importorskip("transformers")
    config = _config()
    (result,) = predicted.predict_frontier(config, [2 * GIB])
    search = Search("tiny-mistral", "none", "eager", "bfloat16", "seq", 1)
    assert result.search == search
    capacity = simulator_capacity(2 * GIB, "eager")
    assert result.capacity == capacity and not result.unreported_measured
    measurement = {**config["measurement"], **config["frontier"]["measurement"]}
    decide = simulator_decide(config_json(), measurement, capacity)
    values = search_values(search, config["frontier"])
    outcome, simulated = simulated_frontier(search, values, decide)
    assert result.status == outcome.status == "found"
    assert (result.largest_ok, result.first_fail) == (outcome.largest_ok, outcome.first_fail)
    assert result.simulated == len(simulated)
    # a larger device runs at least as far
    (larger,) = predicted.predict_frontier(config, [4 * GIB])
    assert larger.status == "above_max" or larger.largest_ok >= result.largest_ok


def config_json():
    return json.loads((REPO_ROOT / "config" / "models" / "tiny-mistral.json").read_text())


def test_expandable_segments_reaches_at_least_as_far_as_the_default_allocator():
    pytest.importorskip("transformers")
    config = _config(allocator=["default", "expandable_segments"])
    default, expandable = predicted.predict_frontier(config, [2 * GIB])
    assert expandable.search.allocator == "expandable_segments"
    assert default.status == expandable.status == "found"
    assert expandable.largest_ok >= default.largest_ok


def test_what_cannot_be_simulated_is_unknown_with_the_reason():
    config = _config(kv_cache=["quanto-int4"])
    (result,) = predicted.predict_frontier(config, [2 * GIB])
    assert result.status == "unknown" and result.largest_ok is None
    assert "quantized KV cache" in result.reason
    (tiny,) = predicted.predict_frontier(_config(), [10**9 // 2])
    assert tiny.status == "unknown" and "nothing left for PyTorch" in tiny.reason


def test_named_gpus_are_the_totals_committed_records_hold():
    for name, gpu in (("h100-80gb", "h100"), ("h200", "h200")):
        probe = next((REPO_ROOT / "results/reference" / gpu / "frontier").rglob("probes/**/*.json"))
        record = json.loads(probe.read_text())
        (before,) = record["gpu_before"].values()
        assert GPUS[name] == before["total_bytes"]


def test_csv_and_table_say_the_same():
    search = Search("tiny-mistral", "none", "eager", "bfloat16", "seq", 1)
    results = [
        predicted.PredictedSearch(search, 2 * GIB, "found", 3584, 3840, 7, 123, False),
        predicted.PredictedSearch(search, GPUS["h200"], "unknown", reason="why"),
    ]
    rows = list(csv.DictReader(io.StringIO(predicted.format_csv(results))))
    assert [r["predicted_status"] for r in rows] == ["found", "unknown"]
    assert {r["method"] for r in rows} == {"allocator simulation"}  # never read as measured
    assert rows[0]["predicted_largest_ok"] == "3584" and rows[1]["reason"] == "why"
    assert rows[1]["device"] == "h200"
    table = predicted.format_table(results, ["note: a note"])
    assert table.startswith("PREDICTED")
    assert "3584 (3840 fails)" in table and "h200" in table and "why" in table
    assert "note: a note" in table
    # each device as every predict mode prints it, its label as --gpu-mem would read it
    small = "2048MiB: nvidia-smi 2048 MiB, PyTorch 1.40 GiB (the driver keeps 615 MiB, assumed)"
    h200 = "h200: nvidia-smi 143771 MiB, PyTorch 139.80 GiB (the driver keeps 615 MiB, measured)"
    assert small in table and h200 in table
    # a device as the user named it (--gpu-mem 2GiB), in the table and the csv alike
    labels = {2 * GIB: "2GiB"}
    assert "2GiB: nvidia-smi 2048 MiB" in predicted.format_table(results, labels=labels)
    named = csv.DictReader(io.StringIO(predicted.format_csv(results, labels)))
    assert [r["device"] for r in named] == ["2GiB", "h200"]


def test_the_command_prints_the_predicted_frontier(tmp_path):
    pytest.importorskip("transformers")
    configfile = tmp_path / "frontier.yaml"
    configfile.write_text(yaml.safe_dump({"frontier": _config()["frontier"]}))
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "llmbench.cli",
            "predict",
            "--frontier",
            "--configfile",
            str(configfile),
            "--gpu-mem",
            "2GiB",
            "--format",
            "csv",
        ],  # fmt: skip
        env={**os.environ, "PYTHONPATH": str(REPO_ROOT / "src")},
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stderr
    (row,) = csv.DictReader(io.StringIO(done.stdout))
    (expected,) = predicted.predict_frontier(_config(), [2 * GIB])
    assert (row["predicted_status"], row["predicted_largest_ok"]) == (
        expected.status,
        str(expected.largest_ok),
    )
