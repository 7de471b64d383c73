"""Latency statistics keep raw values; percentiles match numpy's linear interpolation."""

import numpy as np
import pytest

from llmbench.measure.timing import LatencyStats, Stopwatch, percentile


@pytest.mark.parametrize("q", [0, 50, 90, 99, 100])
def test_percentile_matches_numpy(q):
    samples = [5.0, 1.0, 3.0, 10.0, 7.5, 2.25]
    assert percentile(samples, q) == pytest.approx(float(np.percentile(samples, q)))


def test_stats_keep_raw_samples_and_units():
    stats = LatencyStats.from_samples([3.0, 1.0, 2.0])
    assert stats.raw == [3.0, 1.0, 2.0]
    assert (stats.unit, stats.count, stats.p50, stats.min, stats.max) == ("ms", 3, 2.0, 1.0, 3.0)
    assert stats.std == pytest.approx(1.0)
    assert LatencyStats.from_samples([4.0]).std == 0.0
    with pytest.raises(ValueError):
        LatencyStats.from_samples([])


def test_tail_percentiles_need_enough_samples():
    # 3 prefill repeats have no p90 (it would interpolate between the two largest), 10 do;
    # a p99 needs 100 samples.
    three = LatencyStats.from_samples([1.0, 2.0, 3.0])
    assert three.p90 is None and three.p99 is None and three.p50 == 2.0
    ten = LatencyStats.from_samples([float(i) for i in range(10)])
    assert ten.p90 == pytest.approx(float(np.percentile(range(10), 90))) and ten.p99 is None
    hundred = LatencyStats.from_samples([float(i) for i in range(100)])
    assert hundred.p99 == pytest.approx(float(np.percentile(range(100), 99)))


def test_cpu_stopwatch_measures_wall_time():
    import time

    watch = Stopwatch("cpu")
    result, elapsed_ms = watch.time(lambda: (time.sleep(0.05), "done")[1])
    assert result == "done"
    assert watch.method == "perf_counter"
    assert 45 <= elapsed_ms < 500
