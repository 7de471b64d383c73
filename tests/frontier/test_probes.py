"""Probes (llmbench.frontier.probes): their settings, and reuse of existing probe JSONs
(fake runner, no child process)."""

from __future__ import annotations

import json
import os

import yaml
from frontier_fakes import TINY_SECTION, FakeRunner, fake_settings, run_fake_search

from llmbench import frontier
from llmbench.frontier import (
    Search,
)
from llmbench.record.cell import write_json_atomic


def test_probe_settings_apply_the_overrides(repo):
    config = yaml.safe_load((repo / "config/config.yaml").read_text())
    settings = frontier.probe_settings(config, TINY_SECTION)
    assert settings["memory_budget_gib"] == TINY_SECTION["memory_budget_gib"]
    assert settings["cell_timeout_s"] == TINY_SECTION["cell_timeout_s"]
    assert settings["measurement"]["repeats"] == 1
    assert settings["measurement"]["seed"] == config["measurement"]["seed"]
    assert settings["probe_environment"] == {"MALLOC_MMAP_THRESHOLD_": "131072"}
    inherited = frontier.probe_settings(
        {**config, "memory_budget_gib": 3}, {**TINY_SECTION, "memory_budget_gib": None}
    )
    assert inherited["memory_budget_gib"] == 3


# ---- probes: reuse (fake runner, no child process) ---------------------------------------------


def test_rerun_reuses_existing_probes(tmp_path):
    first = run_fake_search(tmp_path, FakeRunner(50_000, 0.5), fake_settings())
    again = FakeRunner(50_000, 0.5)
    second = run_fake_search(tmp_path, again, fake_settings(), name="again.json")
    assert again.calls == []
    assert second["probes_reused"] == second["n_probes"] == first["n_probes"]
    assert second["frontier"] == first["frontier"]
    # threads only change speed: still reused
    threaded = FakeRunner(50_000, 0.5)
    run_fake_search(tmp_path, threaded, {**fake_settings(), "threads": 7}, name="threads.json")
    assert threaded.calls == []


def test_gpu_probes_run_without_the_cpu_malloc_environment(tmp_path):
    """The malloc threshold is for CPU RSS; on a GPU it would only cost the warm start."""
    seen = []

    class Recorder(FakeRunner):
        def __call__(self, *, settings, **kwargs):
            seen.append((settings["probe_environment"], os.environ.get("MALLOC_MMAP_THRESHOLD_")))
            result = super().__call__(settings=settings, **kwargs)
            result["cell"]["device"] = "cuda"
            write_json_atomic(kwargs["out_path"], result)
            return result

    settings = {**fake_settings(), "device": "auto"}
    settings["probe_environment"] = {"MALLOC_MMAP_THRESHOLD_": "131072"}
    search = Search("tiny-mistral", "none", "sdpa", "bfloat16", "seq", 2)
    arguments = dict(
        section={**TINY_SECTION, "seq_min": 128, "seq_max": 8192, "step": 128},
        settings=settings,
        model_entry={"architecture": "config/models/tiny-mistral.json"},
        base_dir=None,
        prequantized_dir=None,
        probes_dir=tmp_path / "probes",
        has_cuda=True,
        predictor=None,
        log=lambda message: None,
    )
    first = frontier.run_search(
        search, out_path=tmp_path / "a.json", runner=Recorder(50_000, 0.5), **arguments
    )
    assert seen and all(env == {} and value is None for env, value in seen)
    # GPU probes measured with the malloc variable (as the first H100 probes were) are reused
    for probe in first["probes"]:
        path = tmp_path / "probes" / probe["path"]
        document = json.loads(path.read_text())
        document["settings"]["probe_environment"] = {"MALLOC_MMAP_THRESHOLD_": "131072"}
        path.write_text(json.dumps(document))
    again = Recorder(50_000, 0.5)
    second = frontier.run_search(search, out_path=tmp_path / "b.json", runner=again, **arguments)
    assert again.calls == [] and second["probes_reused"] == first["n_probes"]


def test_probes_measured_with_other_settings_are_run_again(tmp_path):
    run_fake_search(tmp_path, FakeRunner(50_000, 0.5), fake_settings())
    other_budget = FakeRunner(50_000, 0.25)
    document = run_fake_search(tmp_path, other_budget, fake_settings(0.25), name="other.json")
    assert other_budget.calls and document["probes_reused"] < document["n_probes"]
    assert document["frontier"] == 2560


def test_transient_and_corrupt_probes_are_run_again(tmp_path):
    run_fake_search(tmp_path, FakeRunner(50_000, 0.5, status="crashed"), fake_settings())
    rerun = FakeRunner(50_000, 0.5)
    assert run_fake_search(tmp_path, rerun, fake_settings(), name="2.json")["status"] == "found"
    assert rerun.calls
    probe = (
        tmp_path
        / "probes"
        / Search("tiny-mistral", "none", "sdpa", "bfloat16", "seq", 2).cell(4096).relpath
    )  # plain bisection's first probe
    probe.write_text("{not json")
    fixed = FakeRunner(50_000, 0.5)
    run_fake_search(tmp_path, fixed, fake_settings(), name="3.json")
    assert fixed.calls == [probe.relative_to(tmp_path / "probes").as_posix()]


def test_a_probe_from_before_measurement_generate_is_reused():
    """``generate: false`` (the probes' setting) and no ``generate`` key mean the same."""
    from llmbench.frontier.probes import _comparable

    old = {"device": "cuda", "measurement": {"warmup": 0, "decode_tokens": 2}}
    new = {"device": "cuda", "measurement": {"warmup": 0, "decode_tokens": 2, "generate": False}}
    assert _comparable(old) == _comparable(new)
    timed = {**new, "measurement": {**new["measurement"], "generate": True}}
    assert _comparable(timed) != _comparable(old)
