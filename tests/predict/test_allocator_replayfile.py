"""llmbench.predict.allocator against real runs: the replay files in tests/fixtures/allocator/
were made (``replayfile.convert_snapshot``) from allocator traces recorded on an NVIDIA H200
with torch 2.11.0+cu130 (Mistral-7B-v0.3 cells, default allocator and
``expandable_segments:True``; /work/traces/README.md of the recording session). The simulator
must reproduce every segment event (same input event, action, size, stream), the recorded
``torch.cuda.max_memory_reserved`` / ``max_memory_allocated`` exactly, and the OOMs."""

from __future__ import annotations

import functools
from pathlib import Path

import pytest

from llmbench.predict.allocator import Alloc, AllocatorConfig, Free, simulate
from llmbench.predict.allocator.compare import compare, replay_trace
from llmbench.predict.allocator.replayfile import read_replay, write_replay
from llmbench.predict.allocator.trace import read_trace

FIXTURES = Path(__file__).parents[1] / "fixtures" / "allocator"
REPLAYS = sorted(FIXTURES.glob("*.replay.xz"))


@functools.cache
def load(path):
    return read_replay(path)


def test_there_are_recorded_replays_of_both_allocator_modes():
    confs = {load(path)[1]["PYTORCH_CUDA_ALLOC_CONF"] for path in REPLAYS}
    assert confs == {"", "expandable_segments:True"}
    assert all(path.stat().st_size < 2_000_000 for path in REPLAYS)


@pytest.mark.parametrize("path", REPLAYS, ids=lambda p: p.name.removesuffix(".replay.xz"))
def test_the_simulator_reproduces_a_recorded_run(path):
    trace, meta = load(path)
    config = AllocatorConfig.parse(meta["PYTORCH_CUDA_ALLOC_CONF"])
    result, comparison = replay_trace(trace, config, device_total=meta["device_total_bytes"])
    assert comparison.divergence is None, comparison.summary()
    assert comparison.reserved_max_abs_difference == 0
    assert result.peak_reserved == meta["max_memory_reserved"]
    assert result.peak_allocated == meta["max_memory_allocated"]
    assert comparison.ooms_simulated == comparison.ooms_recorded
    if not config.expandable_segments:
        assert comparison.address_mismatches == 0


@pytest.mark.parametrize("path", [p for p in REPLAYS if "s16384" in p.name])
def test_the_oom_follows_from_the_memory_free_before_the_run(path):
    # Capacity from the device alone: what cudaMemGetInfo reported free before the first
    # allocation (the CUDA context already subtracted) - not the trace's own OOM report.
    trace, meta = load(path)
    config = AllocatorConfig.parse(meta["PYTORCH_CUDA_ALLOC_CONF"])
    oom_at = trace.ooms[0][0]
    failed = trace.events[oom_at]
    assert isinstance(failed, Alloc) and failed.expect_oom
    events = [*trace.events[:oom_at], Alloc(failed.handle, failed.size, failed.stream)]
    result = simulate(
        events,
        config,
        capacity=meta["device_free_before_bytes"],
        device_total=meta["device_total_bytes"],
    )
    assert result.first_oom is not None and result.first_oom.event == oom_at
    assert result.peak_reserved == meta["max_memory_reserved"]


def test_replay_files_round_trip(tmp_path):
    trace, meta = load(REPLAYS[0])
    write_replay(trace, tmp_path / "copy.replay.xz", meta)
    again, meta_again = read_replay(tmp_path / "copy.replay.xz")
    assert again == trace and meta_again == meta


def test_a_trace_that_disagrees_is_reported_not_hidden():
    # Drop one free from a recorded run: the replay must diverge from the recording.
    trace, meta = load(next(p for p in REPLAYS if "sdpa__bfloat16__b2_s8192." in p.name))
    index = next(i for i, e in enumerate(trace.events) if isinstance(e, Free) and i > 1000)
    events = trace.events[:index] + trace.events[index + 1 :]
    result = simulate(events, AllocatorConfig(), device_total=meta["device_total_bytes"])
    assert compare(trace, result).divergence is not None
    assert read_trace  # the reader is what made the fixtures (replayfile.convert_snapshot)
