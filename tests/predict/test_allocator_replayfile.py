"""llmbench.predict.allocator against real runs: the replay files in tests/fixtures/allocator/
were made (``replayfile.convert_snapshot``) from allocator traces recorded on an NVIDIA H200
with torch 2.11.0+cu130 (Mistral-7B-v0.3 cells, default allocator and
``expandable_segments:True``; /work/traces/README.md of the recording session). The simulator
must reproduce every segment event (same input event, action, size, stream), the recorded
``torch.cuda.max_memory_reserved`` / ``max_memory_allocated`` exactly, and the OOMs."""

from __future__ import annotations

import functools
import json
from pathlib import Path

import pytest

from llmbench.predict import CUDA_CONTEXT_BYTES
from llmbench.predict.allocator import K_SMALL_BUFFER, Alloc, AllocatorConfig, Free, simulate
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


@pytest.mark.parametrize("path", REPLAYS, ids=lambda p: p.name.removesuffix(".replay.xz"))
def test_without_the_recorded_addresses_the_peak_is_still_exact(path):
    # The simulator's own segment placement (top-down, AllocatorState) instead of the
    # recorded cudaMalloc addresses: what a prediction without a trace has.
    trace, meta = load(path)
    config = AllocatorConfig.parse(meta["PYTORCH_CUDA_ALLOC_CONF"])
    _, comparison = replay_trace(
        trace, config, device_total=meta["device_total_bytes"], use_addresses=False
    )
    assert comparison.peak_reserved_simulated == meta["max_memory_reserved"]
    assert comparison.ooms_simulated == comparison.ooms_recorded


REPO = Path(__file__).parents[2]
H100_ALLOCATOR = REPO / "results" / "reference" / "h100" / "diagnostics" / "allocator"


def _late_non_pytorch_bytes():
    """Device memory taken outside PyTorch after the first allocation (cuBLAS/cuDNN handles,
    lazily loaded kernels), from the H200 OOM trace: free before the run minus what the
    allocator could still reserve at the OOM (reserved + CUDA's free then)."""
    trace, meta = load(next(p for p in REPLAYS if p.name.endswith("b2_s16384.replay.xz")))
    return meta["device_free_before_bytes"] - trace.capacity_at_oom()


@pytest.mark.parametrize(
    ("conf", "cell_json"),
    [
        ("", "eager_b2_s8192_default_alloc.json"),
        ("expandable_segments:True", "eager_b2_s8192_expandable_segments.json"),
    ],
)
def test_the_h200_trace_predicts_the_h100_outcome(conf, cell_json):
    # The same cell (none/eager/bf16, b2 x 8192) ran on an H100 80GB (results/reference/h100/
    # diagnostics, section 2): out of memory asking 16 GiB with the default allocator, fine
    # with expandable segments. Replaying the H200's allocation sequence with the H100's
    # capacity (its total memory - the measured CUDA context - late non-PyTorch memory)
    # reproduces both, the default run's failure to the byte.
    measured = json.loads((H100_ALLOCATOR / cell_json).read_text())
    total = measured["environment"]["gpus"][0]["total_memory_bytes"]
    prefill = measured["memory"]["phases"]["prefill"]["devices"][0]
    trace, meta = load(
        next(p for p in REPLAYS if p.name.endswith("eager__bfloat16__b2_s8192.replay.xz"))
    )
    capacity = total - CUDA_CONTEXT_BYTES - _late_non_pytorch_bytes()
    result = simulate(
        trace.events, AllocatorConfig.parse(conf), capacity=capacity, device_total=total
    )
    if measured["status"] == "oom":
        assert result.first_oom is not None
        assert result.first_oom.size == measured["error"]["requested_bytes"]
        assert result.first_oom.reserved == prefill["peak_reserved_bytes"]
        assert result.peak_allocated == prefill["peak_allocated_bytes"]
    else:
        assert result.first_oom is None
        # Whole run vs the prefill phase: a later 2 MiB small-pool segment (generate) at most.
        assert 0 <= result.peak_reserved - prefill["peak_reserved_bytes"] <= K_SMALL_BUFFER
