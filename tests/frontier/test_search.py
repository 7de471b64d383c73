"""The pure search (llmbench.frontier.search): the grid, the probe budget, and bisection with
fake oracles: exact to the step, within the budget, following the prediction."""

from __future__ import annotations

import math

import pytest
from frontier_fakes import Oracle, truth

from llmbench import frontier
from llmbench.frontier import (
    ProbeRecord,
    bisect_frontier,
    grid_values,
    max_probes,
)

VALUES = grid_values(256, 32768, 256)  # 128 values, as the H100 frontier's sequence grid


GOAL = math.log2((VALUES[-1] - VALUES[0]) / 256) + 2


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


def test_predicted_index_is_the_largest_fitting_value():
    values = grid_values(1, 100, 1)
    assert frontier.predicted_index(values, lambda v: v * 10, 555) == values.index(55)
    assert frontier.predicted_index(values, lambda v: v * 10, 5) == -1
    assert frontier.predicted_index(values, lambda v: v, 10**6) == 99


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
