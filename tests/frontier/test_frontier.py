"""The out-of-memory frontier: bisection with fake oracles, probe reuse, planning, the table and
figure, and one real search on the CPU through Snakemake (integration)."""

from __future__ import annotations

import json
import math
import os
from pathlib import Path

import pytest
import yaml
from conftest import copy_repo, snakemake

from llmbench import GIB, frontier
from llmbench.frontier import (
    Prediction,
    ProbeRecord,
    Search,
    bisect_frontier,
    grid_values,
    max_probes,
)
from llmbench.record.cell import read_cell_result, write_json_atomic

VALUES = grid_values(256, 32768, 256)  # 128 values, as the H100 frontier's sequence grid
GOAL = math.log2((VALUES[-1] - VALUES[0]) / 256) + 2


class Oracle:
    """Runs up to ``limit`` (inclusive); counts calls; optional non-memory statuses."""

    def __init__(self, limit: float, special: dict[int, str] | None = None) -> None:
        self.limit = limit
        self.special = special or {}
        self.calls: list[int] = []

    def __call__(self, value: int) -> str:
        self.calls.append(value)
        if value in self.special:
            return self.special[value]
        return "ok" if value <= self.limit else "oom"


def truth(values: list[int], limit: float) -> int | None:
    fitting = [v for v in values if v <= limit]
    return fitting[-1] if fitting else None


# ---- the grid and the probe budget -------------------------------------------------------------


def test_grid_values_round_the_maximum_down_onto_the_step():
    assert grid_values(128, 1000, 128) == [128, 256, 384, 512, 640, 768, 896]
    assert grid_values(1, 4, 1) == [1, 2, 3, 4]
    assert grid_values(5, 5, 3) == [5]
    for bad in ((0, 10, 1), (10, 5, 1), (1, 10, 0)):
        with pytest.raises(ValueError):
            grid_values(*bad)


def test_probe_budget_is_bisection_plus_the_extra():
    assert max_probes(128, 0) == 8  # 129 outcomes need 8 probes
    assert max_probes(128) == 8 + frontier.EXTRA_PROBES
    assert max_probes(1, 0) == 1
    assert frontier.goal_probes(128) == pytest.approx(math.log2(127) + 2)


def test_prediction_is_rounded_onto_the_grid():
    assert frontier.nearest_index(VALUES, 100) == -1  # below the minimum: nothing runs
    assert frontier.nearest_index(VALUES, 256) == 0
    assert frontier.nearest_index(VALUES, 1000) == 3  # 1024
    assert frontier.nearest_index(VALUES, 10**6) == len(VALUES) - 1


# ---- exactness and probe counts ------------------------------------------------------------------


@pytest.mark.parametrize("predicted", [None, 100, 256, 5000, 16384, 32768, 10**6])
def test_exact_to_the_step_for_every_frontier_and_within_the_budget(predicted):
    budget = max_probes(len(VALUES))
    for limit in [0, *VALUES[::3], VALUES[-1], VALUES[-1] + 1000, 300, 32767]:
        oracle = Oracle(limit)
        outcome = bisect_frontier(VALUES, oracle, predicted=predicted)
        expected = truth(VALUES, limit)
        assert outcome.frontier == expected, (limit, predicted)
        assert outcome.largest_ok == expected
        first_fail = next((v for v in VALUES if v > limit), None)
        assert outcome.first_fail == first_fail
        assert outcome.n_probes == len(oracle.calls) <= budget
        assert [p.value for p in outcome.probes] == oracle.calls
        assert len(set(oracle.calls)) == len(oracle.calls)  # never probes a value twice


def test_without_prediction_it_is_plain_bisection():
    for limit in VALUES[::5]:
        outcome = bisect_frontier(VALUES, Oracle(limit))
        assert outcome.n_probes <= max_probes(len(VALUES), 0)  # ceil(log2(129)) = 8
        assert outcome.predicted is None and outcome.predicted_index is None


def test_first_probe_is_the_prediction_rounded_to_the_step():
    oracle = Oracle(10_000)
    bisect_frontier(VALUES, oracle, predicted=10_000)
    assert oracle.calls[0] == 9984  # 10000 rounded to the 256-step grid


def test_exact_prediction_takes_two_probes():
    for index in range(len(VALUES) - 1):
        outcome = bisect_frontier(VALUES, Oracle(VALUES[index]), predicted=VALUES[index])
        assert outcome.status == "found"
        assert outcome.n_probes == 2  # the frontier runs, the next step does not


@pytest.mark.parametrize("error_steps", [-3, -2, -1, 1, 2, 3])
def test_good_prediction_meets_the_goal(error_steps):
    """Prediction off by up to 3 steps: <= log2(range/step) + 2 probes, >= 5x fewer than the
    brute-force grid."""
    counts = []
    for index in range(3, len(VALUES) - 4):
        predicted = VALUES[index + error_steps]
        outcome = bisect_frontier(VALUES, Oracle(VALUES[index]), predicted=predicted)
        assert outcome.frontier == VALUES[index]
        counts.append(outcome.n_probes)
    assert max(counts) <= GOAL
    assert max(counts) <= 2 * math.ceil(math.log2(abs(error_steps) + 1)) + 2
    assert len(VALUES) / max(counts) >= 5


def test_far_off_prediction_still_exact_and_bounded():
    for limit, predicted in ((300, 32768), (32000, 256), (16000, 1000), (1000, 20000)):
        oracle = Oracle(limit)
        outcome = bisect_frontier(VALUES, oracle, predicted=predicted)
        assert outcome.frontier == truth(VALUES, limit)
        assert outcome.n_probes <= max_probes(len(VALUES))
        assert len(VALUES) / outcome.n_probes >= 5


def test_prediction_too_low_expands_upwards_by_doubling():
    oracle = Oracle(VALUES[70])
    bisect_frontier(VALUES, oracle, predicted=VALUES[60])
    indices = [VALUES.index(v) for v in oracle.calls]
    assert indices[:5] == [60, 61, 63, 67, 75]  # 0, 1, 3, 7, 15 steps above the prediction
    assert indices[5:] == [71, 69, 70]  # then bisection of the bracket (67, 75)


def test_budget_overrides_the_expansion_when_the_frontier_is_far():
    """Frontier 10 steps above a prediction near the bottom of a wide range: after four
    expansions the budget leaves no room but the middle of what is left."""
    oracle = Oracle(VALUES[20])
    outcome = bisect_frontier(VALUES, oracle, predicted=VALUES[10])
    indices = [VALUES.index(v) for v in oracle.calls]
    assert indices[:5] == [10, 11, 13, 17, 64]
    assert outcome.frontier == VALUES[20] and outcome.n_probes <= max_probes(len(VALUES))


def test_prediction_too_high_expands_downwards_by_doubling():
    oracle = Oracle(VALUES[50])
    bisect_frontier(VALUES, oracle, predicted=VALUES[60])
    indices = [VALUES.index(v) for v in oracle.calls]
    assert indices[:4] == [60, 59, 57, 53]
    assert all(45 <= i < 53 for i in indices[4:])


def test_everything_fails():
    for predicted in (None, 256, 20000, 100):
        outcome = bisect_frontier(VALUES, Oracle(0), predicted=predicted)
        assert outcome.status == "below_min"
        assert outcome.frontier is None and outcome.largest_ok is None
        assert outcome.first_fail == VALUES[0]
        assert outcome.n_probes <= max_probes(len(VALUES))
    # predicted below the minimum: the minimum is the first (and only) probe
    outcome = bisect_frontier(VALUES, Oracle(0), predicted=100)
    assert [p.value for p in outcome.probes] == [256]


def test_nothing_fails():
    for predicted in (None, 256, 5000, 10**6):
        outcome = bisect_frontier(VALUES, Oracle(10**9), predicted=predicted)
        assert outcome.status == "above_max"
        assert outcome.frontier == VALUES[-1] and outcome.first_fail is None
        assert outcome.n_probes <= max_probes(len(VALUES))
    outcome = bisect_frontier(VALUES, Oracle(10**9), predicted=10**6)
    assert outcome.n_probes == 1  # predicted to fit everywhere: the maximum runs, done


def test_unsupported_probe_ends_the_search():
    oracle = Oracle(5000, special={v: "unsupported" for v in VALUES})
    outcome = bisect_frontier(VALUES, oracle, predicted=5000)
    assert outcome.status == "unsupported"
    assert outcome.frontier is None and outcome.first_fail is None
    assert outcome.n_probes == 1


@pytest.mark.parametrize("status", ["error", "timeout", "crashed", "unavailable", "check_failed"])
def test_other_statuses_stop_and_keep_the_lower_bound(status):
    oracle = Oracle(9000, special={VALUES[31] + 256: status})  # the second probe
    outcome = bisect_frontier(VALUES, oracle, predicted=VALUES[31])
    assert outcome.status == status
    assert outcome.frontier is None
    assert outcome.largest_ok == VALUES[31]
    assert outcome.n_probes == 2


def test_check_failed_can_be_counted_as_running():
    oracle = Oracle(5000, special={v: "check_failed" for v in VALUES if v <= 5000})
    outcome = bisect_frontier(VALUES, oracle, predicted=4000, passing={"ok", "check_failed"})
    assert outcome.status == "found" and outcome.frontier == 4864


def test_probe_results_may_be_bools_strings_mappings_or_records():
    for answer in (
        lambda v: v <= 3000,
        lambda v: "ok" if v <= 3000 else "oom",
        lambda v: {"status": "ok" if v <= 3000 else "oom", "peak_bytes": v},
        lambda v: ProbeRecord(v, "ok" if v <= 3000 else "oom"),
    ):
        outcome = bisect_frontier(VALUES, answer, predicted=2000)
        assert outcome.frontier == 2816


def test_single_value_grid():
    assert bisect_frontier([512], Oracle(1000)).status == "above_max"
    outcome = bisect_frontier([512], Oracle(0))
    assert outcome.status == "below_min" and outcome.n_probes == 1


# ---- recalibration from measured peaks --------------------------------------------------------


def _memory_oracle(measured):
    def probe(value):
        peak = measured(value)
        return ProbeRecord(value, "ok" if peak <= 128 else "oom", peak_bytes=peak)

    return probe


@pytest.mark.parametrize(
    ("measured", "predicted"),
    [
        (lambda v: 30 + 4.9e-5 * v * v, lambda v: 1.5 + 3e-5 * v * v),  # eager, 40% low
        (lambda v: 30 + 0.0188 * v, lambda v: 1.5 + 0.016 * v),  # sdpa, offset + 15% low
        (lambda v: 16 + 1.6e-4 * v * v, lambda v: 20 + 2.4e-4 * v * v),  # eager, 50% high
    ],
)
def test_recalibration_finds_the_frontier_in_few_probes(measured, predicted):
    values = grid_values(128, 8192, 128)
    expected = truth(values, max(v for v in values if measured(v) <= 128))
    plain = bisect_frontier(values, _memory_oracle(measured), predicted=None)
    prediction = Prediction(values, predicted, 128.0)
    index = frontier.predicted_index(values, predicted, 128.0)
    prediction.frontier = values[index]
    calibrated = bisect_frontier(
        values,
        _memory_oracle(measured),
        predicted=prediction.frontier,
        recalibrate=prediction.recalibrate,
    )
    assert plain.frontier == calibrated.frontier == expected
    assert calibrated.n_probes <= 4 < plain.n_probes
    assert prediction.calibrations and prediction.calibrations[-1]["fit"] in ("ratio", "affine")


def test_default_predictor_predicts_what_the_budget_limits(repo):
    predict = pytest.importorskip("llmbench.predict")
    config = json.loads((repo / "config/models/tiny-mistral.json").read_text())
    cell = Search("tiny-mistral", "none", "eager", "bfloat16", "seq", 2).cell(1024)
    cpu = frontier.default_predictor("cpu")
    assert cpu is predict.predicted_peak_bytes  # CPU budget: RSS growth ~ peak allocated
    cuda = frontier.default_predictor("cuda", decode_tokens=2)
    reserved = cuda(config, cell, bnb_4bit_compute_dtype="bfloat16")
    assert reserved > cpu(config, cell, bnb_4bit_compute_dtype="bfloat16")  # + allocator slack
    assert frontier.capacity_bytes({"memory_budget_gib": 0.5}, "cpu") == 0.5 * GIB
    assert frontier.capacity_bytes({"memory_budget_gib": None}, "cpu") is None


def test_predicted_index_is_the_largest_fitting_value():
    values = grid_values(1, 100, 1)
    assert frontier.predicted_index(values, lambda v: v * 10, 555) == values.index(55)
    assert frontier.predicted_index(values, lambda v: v * 10, 5) == -1
    assert frontier.predicted_index(values, lambda v: v, 10**6) == 99


# ---- searches, plans, sections ------------------------------------------------------------------

TINY_SECTION = yaml.safe_load(
    (Path(__file__).parents[2] / "config/frontier-tiny.yaml").read_text()
)["frontier"]


def test_search_names_paths_and_cells():
    search = Search("tiny-mistral", "nf4", "sdpa", "bfloat16", "seq", 4)
    assert search.name == "seq_b4"
    assert search.relpath == "tiny-mistral/nf4/sdpa/bfloat16/seq_b4.json"
    assert search.cell(1024).relpath == "tiny-mistral/nf4/sdpa/bfloat16/b4_s1024.json"
    other = Search("tiny-mistral", "none", "eager", "bfloat16", "batch", 1024)
    assert other.name == "batch_s1024"
    assert other.cell(8).relpath == "tiny-mistral/none/eager/bfloat16/b8_s1024.json"
    wildcards = {"model": "tiny-mistral", "quant": "nf4", "attn": "sdpa", "dtype": "bfloat16"}
    assert Search.from_wildcards({**wildcards, "search": "seq_b4"}) == search
    with pytest.raises(ValueError):
        Search.from_wildcards({**wildcards, "search": "seq_s4"})
    with pytest.raises(ValueError):
        Search("tiny-mistral", "nf5", "sdpa", "bfloat16", "seq", 4)


def test_plan_covers_both_axes(repo):
    config = yaml.safe_load((repo / "config/config.yaml").read_text())
    searches = frontier.plan(TINY_SECTION, config["models"])
    per_config = len(TINY_SECTION["batch"]) + len(TINY_SECTION["seq"])
    assert len(searches) == per_config * len(TINY_SECTION["quant"]) * len(TINY_SECTION["attn"])
    assert {s.axis for s in searches} == {"seq", "batch"}
    h100 = frontier.plan(config["frontier"], config["models"])
    # quant {none, nf4} x attn x (batch {1, 2, 4} + seq {32768})
    assert len(h100) == 2 * 3 * (3 + 1)
    with pytest.raises(ValueError, match="not defined"):
        frontier.plan({**TINY_SECTION, "models": ["nope"]}, config["models"])


def test_configs_validate(repo):
    from llmbench.grid.schemas import validate_document

    config = yaml.safe_load((repo / "config/config.yaml").read_text())
    validate_document(config, "config.schema.yaml", where="config.yaml")
    validate_document({**config, "frontier": TINY_SECTION}, "config.schema.yaml", where="tiny")
    broken = {**config, "frontier": {**TINY_SECTION, "stepp": 3}}
    with pytest.raises(ValueError, match="stepp"):
        validate_document(broken, "config.schema.yaml", where="broken")


def test_cpu_host_falls_back_to_the_tiny_frontier(repo):
    config = yaml.safe_load((repo / "config/config.yaml").read_text())
    config_dir = repo / "config"
    choice = frontier.choose_section(config, False, config_dir)
    assert choice.section == TINY_SECTION and "frontier-tiny.yaml" in choice.message
    assert frontier.choose_section(config, True, config_dir).section == config["frontier"]
    explicit = {**config, "frontier": TINY_SECTION}  # --configfile config/frontier-tiny.yaml
    assert frontier.choose_section(explicit, False, config_dir).message is None
    assert frontier.choose_section({**config, "on_missing_gpu": "ignore"}, False, config_dir)
    with pytest.raises(RuntimeError, match="frontier"):
        frontier.choose_section({**config, "on_missing_gpu": "fail"}, False, config_dir)


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


# ---- probes: reuse and the search JSON (fake runner, no child process) --------------------------


class FakeRunner:
    """Writes a valid CPU cell JSON whose RSS growth is ``bytes_per_token * batch * seq``."""

    def __init__(self, bytes_per_token: float, budget_gib: float, status: str | None = None):
        self.bytes_per_token = bytes_per_token
        self.budget = budget_gib * GIB
        self.status = status
        self.calls: list[str] = []

    def __call__(self, *, cell, settings, out_path, **kwargs):
        from llmbench.measure.failures import MemoryBudgetExceeded, classify
        from llmbench.measure.timing import LatencyStats
        from llmbench.record.cell import new_result

        self.calls.append(cell.relpath)
        result = new_result(cell.to_dict(), settings)
        growth = int(self.bytes_per_token * cell.batch * cell.seq)
        base = 300 * 2**20
        status = self.status or ("ok" if growth <= self.budget else "oom")
        host = {"devices": [], "host": {"rss_bytes": base, "peak_rss_bytes": base + growth}}
        result.update(
            status=status,
            phase=None if status == "ok" else "prefill",
            reason=None if status == "ok" else f"fake {status}",
            error=None
            if status in ("ok", "unsupported")
            else classify(MemoryBudgetExceeded(f"memory budget exceeded ({status})")).to_dict(),
            memory={
                "unit": "bytes",
                "devices": [],
                "host_rss_before_load_bytes": base,
                "phases": {"load": host, "prefill": host, "decode": host},
            },
            timing_breakdown={"wall_s": 0.01},
        )
        result["cell"]["device"] = "cpu"
        if status == "ok":
            stats = LatencyStats.from_samples([1.0]).to_dict()
            result["latency"] = {
                "timer": "fake",
                "prefill": stats,
                "decode_per_token": stats,
                "ttft_ms": 1.0,
                "decode_tokens_per_s": 1.0,
            }
            result["efficiency"] = {}
        write_json_atomic(out_path, result)
        return result


def _settings(budget_gib=0.5):
    return {
        "device": "cpu",
        "device_map": "auto",
        "bnb_4bit_compute_dtype": "bfloat16",
        "memory_budget_gib": budget_gib,
        "cell_timeout_s": 60,
        "prequantize": True,
        "measurement": {"warmup": 0, "repeats": 1, "decode_tokens": 2},
        "probe_environment": {},
    }


def _run(tmp_path, runner, settings, section=None, predictor=None, name="seq_b2.json"):
    search = Search("tiny-mistral", "none", "sdpa", "bfloat16", "seq", 2)
    return frontier.run_search(
        search,
        section=section or {**TINY_SECTION, "seq_min": 128, "seq_max": 8192, "step": 128},
        settings=settings,
        model_entry={"architecture": "config/models/tiny-mistral.json"},
        base_dir=None,
        prequantized_dir=None,
        probes_dir=tmp_path / "probes",
        out_path=tmp_path / name,
        has_cuda=False,
        predictor=predictor,
        runner=runner,
        log=lambda message: None,
    )


def test_search_writes_probes_and_result(tmp_path):
    runner = FakeRunner(bytes_per_token=50_000, budget_gib=0.5)  # frontier: 2 * s * 50kB <= 0.5 GiB
    document = _run(tmp_path, runner, _settings())
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


def test_rerun_reuses_existing_probes(tmp_path):
    first = _run(tmp_path, FakeRunner(50_000, 0.5), _settings())
    again = FakeRunner(50_000, 0.5)
    second = _run(tmp_path, again, _settings(), name="again.json")
    assert again.calls == []
    assert second["probes_reused"] == second["n_probes"] == first["n_probes"]
    assert second["frontier"] == first["frontier"]
    # threads only change speed: still reused
    threaded = FakeRunner(50_000, 0.5)
    _run(tmp_path, threaded, {**_settings(), "threads": 7}, name="threads.json")
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

    settings = {**_settings(), "device": "auto"}
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
    _run(tmp_path, FakeRunner(50_000, 0.5), _settings())
    other_budget = FakeRunner(50_000, 0.25)
    document = _run(tmp_path, other_budget, _settings(0.25), name="other.json")
    assert other_budget.calls and document["probes_reused"] < document["n_probes"]
    assert document["frontier"] == 2560


def test_transient_and_corrupt_probes_are_run_again(tmp_path):
    _run(tmp_path, FakeRunner(50_000, 0.5, status="crashed"), _settings())
    rerun = FakeRunner(50_000, 0.5)
    assert _run(tmp_path, rerun, _settings(), name="2.json")["status"] == "found"
    assert rerun.calls
    probe = (
        tmp_path
        / "probes"
        / Search("tiny-mistral", "none", "sdpa", "bfloat16", "seq", 2).cell(4096).relpath
    )  # plain bisection's first probe
    probe.write_text("{not json")
    fixed = FakeRunner(50_000, 0.5)
    _run(tmp_path, fixed, _settings(), name="3.json")
    assert fixed.calls == [probe.relative_to(tmp_path / "probes").as_posix()]


def test_search_with_a_fake_predictor_starts_at_its_prediction(tmp_path):
    runner = FakeRunner(50_000, 0.5)

    def predictor(model_config, cell, *, bnb_4bit_compute_dtype):
        assert model_config["model_type"] == "mistral"
        return int(45_000 * cell.batch * cell.seq)  # 10 % low

    document = _run(tmp_path, runner, _settings(), predictor=predictor)
    assert document["probes"][0]["value"] == document["predicted"]
    assert document["frontier"] == 5248
    assert document["n_probes"] <= 3
    assert document["prediction"]["calibrations"]


def test_a_cpu_search_needs_a_budget(tmp_path):
    with pytest.raises(ValueError, match="memory budget"):
        _run(tmp_path, FakeRunner(1, 1), _settings(None))


def test_broken_predictor_falls_back_to_bisection(tmp_path):
    def predictor(*args, **kwargs):
        raise KeyError("hidden_size")

    document = _run(tmp_path, FakeRunner(50_000, 0.5), _settings(), predictor=predictor)
    assert document["frontier"] == 5248
    assert "prediction failed" in document["prediction"]["note"]


# ---- table and figure -------------------------------------------------------------------------


def test_table_and_figure(tmp_path):
    from llmbench.report import plots

    paths = []
    for quant, attn, batch, status in (
        ("none", "sdpa", 1, None),
        ("none", "sdpa", 4, None),
        ("none", "eager", 1, None),
        ("none", "flash_attention_2", 1, "unsupported"),
    ):
        search = Search("tiny-mistral", quant, attn, "bfloat16", "seq", batch)
        runner = FakeRunner(20_000 if attn == "sdpa" else 200_000, 0.5, status=status)
        document = frontier.run_search(
            search,
            section={**TINY_SECTION, "seq_min": 128, "seq_max": 8192, "step": 128},
            settings=_settings(),
            model_entry={"architecture": "config/models/tiny-mistral.json"},
            base_dir=None,
            prequantized_dir=None,
            probes_dir=tmp_path / "probes",
            out_path=tmp_path / "searches" / search.relpath,
            has_cuda=False,
            predictor=None,
            runner=runner,
            log=lambda message: None,
        )
        paths.append(tmp_path / "searches" / search.relpath)
        assert document["search"]["name"] == f"seq_b{batch}"
    table = frontier.table(paths)
    assert list(table.columns) == list(frontier.TABLE_COLUMNS)
    by_key = table.set_index(["attn", "batch"])
    assert by_key.loc[("sdpa", 1), "status"] == "above_max"
    assert by_key.loc[("flash_attention_2", 1), "status"] == "unsupported"
    assert by_key.loc[("eager", 1), "frontier"] == 2560
    csv = tmp_path / "frontier.csv"
    table.to_csv(csv, index=False)
    plots.draw_frontier(csv, str(tmp_path / "f.png"), str(tmp_path / "f.svg"))
    assert (tmp_path / "f.png").stat().st_size > 10_000
    assert "unsupported" in (tmp_path / "f.svg").read_text()


# ---- a real frontier on the CPU, through Snakemake ---------------------------------------------


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
    snakemake(workdir, *args)
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
