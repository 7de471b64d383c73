"""llmbench.predict.allocator.trace and .compare: a hand-written snapshot in the format of
``torch.cuda.memory._snapshot()`` (torch/cuda/memory.py ``_snapshot`` docstring) becomes
simulator input, replays without divergence, and incomplete traces are refused."""

from __future__ import annotations

import gzip
import pickle

import pytest

from llmbench.predict.allocator import Alloc, AllocatorConfig, EmptyCache, Free, FreeCompleted
from llmbench.predict.allocator.compare import replay_trace
from llmbench.predict.allocator.trace import IncompleteTraceError, load_snapshot, read_trace

MB = 2**20
A, B = 0x7F00_0000_0000, 0x7F00_4000_0000


def entry(action, addr=0, size=0, stream=0, **extra):
    return {"action": action, "addr": addr, "size": size, "stream": stream, "frames": [], **extra}


def snapshot(entries, segments=()):
    return {"segments": list(segments), "device_traces": [entries]}


# What the allocator logs for: x = 5 MiB, y = 5 MiB, del x, z = 3 MiB (best fit: x's block),
# y freed while in use on another stream, w = 100 B (small pool), y's free completes, del z,
# del w, torch.cuda.empty_cache() (release_cached_blocks: large pool first).
SESSION = [
    entry("segment_alloc", A, 20 * MB),
    entry("alloc", A, 5 * MB),
    entry("alloc", A + 5 * MB, 5 * MB),
    entry("free_requested", A, 5 * MB),
    entry("free_completed", A, 5 * MB),
    entry("alloc", A, 3 * MB),
    entry("free_requested", A + 5 * MB, 5 * MB),
    entry("segment_alloc", B, 2 * MB),
    entry("alloc", B, 100),
    entry("free_completed", A + 5 * MB, 5 * MB),
    entry("free_requested", A, 3 * MB),
    entry("free_completed", A, 3 * MB),
    entry("free_requested", B, 100),
    entry("free_completed", B, 100),
    entry("snapshot"),
    entry("segment_free", A, 20 * MB),
    entry("segment_free", B, 2 * MB),
]


def test_a_session_becomes_simulator_events():
    trace = read_trace(snapshot(SESSION))
    assert trace.events == (
        Alloc(1, 5 * MB),
        Alloc(2, 5 * MB),
        Free(1),
        Alloc(3, 3 * MB),
        Free(2, completed=False),
        Alloc(4, 100),
        FreeCompleted(2),
        Free(3),
        Free(4),
        EmptyCache(),
    )
    assert trace.inferred_empty_cache == (9,)
    assert [e.event for e in trace.segment_events] == [0, 5, 9, 9]
    assert trace.peak_reserved == 22 * MB and trace.reserved_after[-1] == 0


def test_a_session_replays_identically(tmp_path):
    path = tmp_path / "session.pickle.gz"
    with gzip.open(path, "wb") as handle:
        pickle.dump(snapshot(SESSION), handle)
    result, comparison = replay_trace(read_trace(load_snapshot(path)), AllocatorConfig())
    assert comparison.divergence is None, comparison.summary()
    assert comparison.address_mismatches == 0
    assert comparison.peak_reserved_simulated == comparison.peak_reserved_recorded == 22 * MB
    assert comparison.reserved_max_abs_difference == 0
    assert result.peak_allocated == 10 * MB


def test_a_different_allocator_shows_where_it_diverges():
    # Had the 3 MiB request not taken x's block, a replay diverges at empty_cache: the
    # simulator reproduces best fit, so feed it a trace claiming a second segment instead.
    claimed = [*SESSION[:5], entry("segment_alloc", B + 4 * MB, 20 * MB), *SESSION[5:]]
    claimed[-2:] = [
        entry("segment_free", A, 20 * MB),
        entry("segment_free", B + 4 * MB, 20 * MB),
        entry("segment_free", B, 2 * MB),
    ]
    claimed[6] = entry("alloc", B + 4 * MB, 3 * MB)
    claimed[11] = entry("free_requested", B + 4 * MB, 3 * MB)
    claimed[12] = entry("free_completed", B + 4 * MB, 3 * MB)
    _, comparison = replay_trace(read_trace(snapshot(claimed)), AllocatorConfig())
    assert comparison.divergence is not None
    assert comparison.divergence.position == 1 and comparison.divergence.event == 3
    assert comparison.divergence.recorded.size == 20 * MB
    assert comparison.divergence.simulated.size == 2 * MB


def test_an_oom_gives_the_capacity():
    # At the OOM CUDA reported 30 MiB free with 30 MiB reserved: capacity 60 MiB; the replay
    # fails the same 40 MiB request.
    entries = [
        entry("segment_alloc", A, 30 * MB),
        entry("alloc", A, 30 * MB),
        {"action": "oom", "size": 40 * MB, "stream": 0, "device_free": 30 * MB, "frames": []},
        entry("free_requested", A, 30 * MB),
        entry("free_completed", A, 30 * MB),
    ]
    segments = [{"address": A, "total_size": 30 * MB, "stream": 0, "blocks": []}]
    trace = read_trace(snapshot(entries, segments))
    assert trace.capacity_at_oom() == 60 * MB
    assert trace.events[1] == Alloc(-2, 40 * MB, expect_oom=True)
    result, comparison = replay_trace(trace, AllocatorConfig())
    assert comparison.ooms_simulated == comparison.ooms_recorded == (1,)
    assert comparison.divergence is None and not result.unexpected_successes


@pytest.mark.parametrize(
    "entries",
    [
        [entry("free_requested", A, 5 * MB)],  # a free of memory allocated before the trace
        [entry("alloc", A, 5 * MB)],  # an allocation in a segment reserved before it
        [entry("segment_free", A, 20 * MB)],
    ],
)
def test_a_trace_that_starts_mid_way_is_refused(entries):
    with pytest.raises(IncompleteTraceError):
        read_trace(snapshot(entries))


def test_a_trace_must_add_up_to_the_snapshot_segments():
    segments = [{"address": B, "total_size": 2 * MB, "stream": 0, "blocks": []}]
    with pytest.raises(IncompleteTraceError, match="does not start from an empty allocator"):
        read_trace(snapshot([entry("segment_alloc", A, 20 * MB)], segments))
