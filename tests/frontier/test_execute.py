"""Running one search (llmbench.frontier.execute): the search JSON, the prediction it starts
from and its fallbacks (fake runner, no child process)."""

from __future__ import annotations

import json

import pytest
from frontier_fakes import FakeRunner, fake_settings, run_fake_search

from llmbench import frontier
from llmbench.record.cell import read_cell_result


def test_search_writes_probes_and_result(tmp_path):
    runner = FakeRunner(bytes_per_token=50_000, budget_gib=0.5)  # frontier: 2 * s * 50kB <= 0.5 GiB
    document = run_fake_search(tmp_path, runner, fake_settings())
    assert document["status"] == "found"
    assert document["frontier"] == 5248 and document["first_fail"] == 5376
    assert document["n_probes"] == len(runner.calls) == document["probes_run"]
    assert document["predicted"] is None  # no predictor: plain bisection
    assert document["brute_force"] == 64
    for probe in document["probes"]:
        path = tmp_path / "probes" / probe["path"]
        assert read_cell_result(path)["status"] == probe["status"]
    assert json.loads((tmp_path / "seq_b2.json").read_text())["frontier"] == 5248
    row = frontier.table_row(document, "x.json")
    assert row["reduction"] == 64 / document["n_probes"] and row["batch"] == 2


def test_search_with_a_fake_predictor_starts_at_its_prediction(tmp_path):
    runner = FakeRunner(50_000, 0.5)

    def predictor(model_config, cell, *, bnb_4bit_compute_dtype):
        assert model_config["model_type"] == "mistral"
        return int(45_000 * cell.batch * cell.seq)  # 10 % low

    document = run_fake_search(tmp_path, runner, fake_settings(), predictor=predictor)
    assert document["probes"][0]["value"] == document["predicted"]
    assert document["frontier"] == 5248
    assert document["n_probes"] <= 3
    assert document["prediction"]["calibrations"]


def test_a_cpu_search_needs_a_budget(tmp_path):
    with pytest.raises(ValueError, match="memory budget"):
        run_fake_search(tmp_path, FakeRunner(1, 1), fake_settings(None))


def test_broken_predictor_falls_back_to_bisection(tmp_path):
    def predictor(*args, **kwargs):
        raise KeyError("hidden_size")

    document = run_fake_search(
        tmp_path, FakeRunner(50_000, 0.5), fake_settings(), predictor=predictor
    )
    assert document["frontier"] == 5248
    assert "prediction failed" in document["prediction"]["note"]


def test_a_single_gpu_search_starts_from_the_simulated_frontier(monkeypatch):
    from llmbench.frontier import execute, simulated

    def factory(config, measurement, capacity, *, bnb_4bit_compute_dtype):
        assert capacity == 85_520_809_984 - 503_316_480 - 720_175_104  # H100, eager
        return lambda search, value: "ok" if value <= 11520 else "oom"

    monkeypatch.setattr(execute, "visible_device_totals", lambda: [85_520_809_984])
    monkeypatch.setattr(simulated, "simulator_decide", factory)
    monkeypatch.setattr(simulated, "frontier_in_child", simulated.frontier_of)  # in-process
    search = frontier.Search("mistral-7b-v0.3", "none", "eager", "bfloat16", "seq", 1)
    values = frontier.grid_values(256, 32768, 256)
    settings = {"measurement": {}, "bnb_4bit_compute_dtype": "bfloat16"}
    entry = {"architecture": "config/models/mistral-7b-v0.3.json"}
    start = execute._simulated_start(search, values, {}, settings, entry, "cuda")
    assert start.frontier == 11520 and "allocator simulation" in start.note
    # not on the CPU, nor under a memory budget, nor with prediction off: the analytic path
    assert execute._simulated_start(search, values, {}, settings, entry, "cpu") is None
    budget = {**settings, "memory_budget_gib": 40}
    assert execute._simulated_start(search, values, {}, budget, entry, "cuda") is None
    off = {"use_prediction": False}
    assert execute._simulated_start(search, values, off, settings, entry, "cuda") is None


def test_a_failing_simulation_falls_back_with_its_reason(monkeypatch):
    from llmbench.frontier import execute, simulated

    def factory(*args, **kwargs):
        raise ImportError("no torch")

    monkeypatch.setattr(execute, "visible_device_totals", lambda: [85_520_809_984])
    monkeypatch.setattr(simulated, "simulator_decide", factory)
    monkeypatch.setattr(simulated, "frontier_in_child", simulated.frontier_of)  # in-process
    search = frontier.Search("mistral-7b-v0.3", "none", "eager", "bfloat16", "seq", 1)
    settings = {"measurement": {}, "bnb_4bit_compute_dtype": "bfloat16"}
    entry = {"architecture": "config/models/mistral-7b-v0.3.json"}
    start = execute._simulated_start(search, [256, 512], {}, settings, entry, "cuda")
    assert start.prediction is None and "no torch" in start.note
