"""llmbench.predict.allocator.caching: hand-built event sequences whose outcome follows from
``DeviceCachingAllocator`` in c10/cuda/CUDACachingAllocator.cpp (torch 2.11); each test names
the C++ functions its expectation comes from."""

from __future__ import annotations

from llmbench.predict.allocator import (
    Alloc,
    AllocatorConfig,
    EmptyCache,
    Free,
    FreeCompleted,
    simulate,
)

MB = 2**20
KB = 2**10


def driver_calls(result):
    """(event index, action, size in MiB) of each segment event."""
    return [(e.event, e.action, e.size / MB) for e in result.segment_events]


def test_small_requests_pack_into_2_mib_segments():
    # get_pool: rounded size <= kSmallSize -> small pool; get_allocation_size -> kSmallBuffer;
    # should_split (small pool): remaining >= kMinBlockSize. Four 512 KiB requests fill one
    # 2 MiB segment exactly (the fourth takes the last 512 KiB unsplit); the fifth needs a
    # second segment.
    result = simulate([Alloc(i, 512 * KB) for i in range(5)])
    assert driver_calls(result) == [(0, "segment_alloc", 2), (4, "segment_alloc", 2)]
    assert result.peak_reserved == 4 * MB
    assert result.peak_allocated == 5 * 512 * KB


def test_requests_under_10_mib_share_20_mib_segments():
    # get_allocation_size: 1 MiB < size < kMinLargeAlloc -> kLargeBuffer (20 MiB); the rest of
    # the segment is split off (remaining > kSmallSize) and serves the next requests.
    result = simulate([Alloc(i, 5 * MB) for i in range(5)])
    assert driver_calls(result) == [(0, "segment_alloc", 20), (4, "segment_alloc", 20)]
    assert result.allocated_after == tuple(5 * MB * (i + 1) for i in range(5))


def test_large_pool_keeps_a_rest_of_at_most_1_mib_in_the_block():
    # should_split (large pool): only remaining > kSmallSize is split off; otherwise the whole
    # block is handed out and allocated_bytes counts all of it (alloc_found_block).
    unsplit = simulate([Alloc(0, int(19.5 * MB))])
    assert unsplit.peak_allocated == 20 * MB
    # (19.5 MiB >= kMinLargeAlloc: its own segment, rounded up to 20 MiB; 0.5 MiB rest kept.)
    split = simulate([Alloc(0, 9 * MB), Alloc(1, 11 * MB)])
    assert split.allocated_after == (9 * MB, 20 * MB)
    assert driver_calls(split) == [(0, "segment_alloc", 20)]
    # A request of 10 MiB or more gets a segment rounded up to 2 MiB: 12.5 -> 14 MiB, and the
    # 1.5 MiB rest (> 1 MiB) is split off and reused.
    own = simulate([Alloc(0, int(12.5 * MB)), Alloc(1, MB + 512)])
    assert driver_calls(own) == [(0, "segment_alloc", 14)]


def test_best_fit_takes_the_smallest_block_that_fits():
    # get_free_block: lower_bound in (stream, size, address) order = the smallest cached block
    # of at least the rounded size. An 11 MiB request takes the cached 12 MiB segment (not the
    # 14 MiB one), unsplit (rest 1 MiB is not > kSmallSize); 13 MiB then takes the 14 MiB.
    events = [Alloc(0, 14 * MB), Alloc(1, 12 * MB), Free(0), Free(1)]
    events += [Alloc(2, 11 * MB), Alloc(3, 13 * MB)]
    result = simulate(events)
    assert driver_calls(result) == [(0, "segment_alloc", 14), (1, "segment_alloc", 12)]
    assert result.allocated_after[4] == 12 * MB
    assert result.allocated_after[5] == 26 * MB


def test_equal_blocks_are_ranked_by_address():
    # BlockComparatorSize: equal stream and size -> lower address first. Segments at 0x9...
    # (first) and 0x5... (second): a new 12 MiB request takes the lower one, so empty_cache
    # (release_cached_blocks) frees the higher one.
    high, low = 0x9000_0000, 0x5000_0000
    events = [Alloc(0, 12 * MB), Alloc(1, 12 * MB), Free(0), Free(1), Alloc(2, 12 * MB)]
    result = simulate([*events, EmptyCache()], addresses=iter([high, low]))
    assert [(e.action, e.addr) for e in result.segment_events] == [
        ("segment_alloc", high),
        ("segment_alloc", low),
        ("segment_free", high),
    ]


def test_freed_neighbours_merge():
    # free_block -> try_merge_blocks with prev and next: after freeing the first two 5 MiB
    # blocks of a 20 MiB segment they form one 10 MiB block that serves a 10 MiB request
    # (rounded 10 MiB); without merging a new segment would be needed.
    events = [Alloc(i, 5 * MB) for i in range(3)] + [Free(1), Free(0), Alloc(3, 10 * MB)]
    result = simulate(events)
    assert driver_calls(result) == [(0, "segment_alloc", 20)]
    # Everything freed merges back into one unsplit segment, which empty_cache frees.
    result = simulate([*events, Free(2), Free(3), EmptyCache()])
    assert driver_calls(result)[1:] == [(8, "segment_free", 20)]


def test_streams_do_not_share_cached_blocks():
    # get_free_block: the block found must be on the request's stream.
    result = simulate([Alloc(0, 5 * MB, stream=1), Free(0), Alloc(1, 5 * MB, stream=2)])
    assert driver_calls(result) == [(0, "segment_alloc", 20), (2, "segment_alloc", 20)]
    assert [e.stream for e in result.segment_events] == [1, 2]


def test_max_split_size_keeps_oversize_blocks_whole():
    config = AllocatorConfig.parse("max_split_size_mb:40")
    # get_free_block: a request >= max_split_size may take an oversize block less than
    # max_non_split_rounding (20 MiB) bigger: 45 MiB takes the cached 50 MiB, whole
    # (should_split: never for size >= max_split_size).
    reuse = simulate([Alloc(0, 50 * MB), Free(0), Alloc(1, 45 * MB)], config)
    assert driver_calls(reuse) == [(0, "segment_alloc", 50)]
    assert reuse.allocated_after[-1] == 50 * MB
    # ... but not one 20 MiB or more bigger (100 MiB for 60 MiB), and a request below
    # max_split_size never takes an oversize block (25 MiB does not split the 50 MiB).
    events = [Alloc(0, 100 * MB), Alloc(1, 50 * MB), Free(0), Free(1)]
    events += [Alloc(2, 60 * MB), Alloc(3, 25 * MB)]
    refused = simulate(events, config)
    assert driver_calls(refused)[2:] == [(4, "segment_alloc", 60), (5, "segment_alloc", 26)]
    # Without max_split_size both are served by splitting cached blocks (60 MiB from the
    # 100 MiB one, 25 MiB from its 40 MiB rest): no new segment.
    default = simulate(events)
    assert driver_calls(default)[2:] == []


def test_release_and_retry_before_oom():
    # malloc: alloc_block fails (30 cached + 40 > 60 MiB) -> release_available_cached_blocks
    # does nothing without max_split_size -> release_cached_blocks frees the unsplit cached
    # segment -> alloc_block(isRetry) succeeds.
    result = simulate([Alloc(0, 30 * MB), Free(0), Alloc(1, 40 * MB)], capacity=60 * MB)
    assert driver_calls(result) == [
        (0, "segment_alloc", 30),
        (2, "segment_free", 30),
        (2, "segment_alloc", 40),
    ]
    assert result.first_oom is None and result.num_alloc_retries == 1
    # A live 30 MiB tensor cannot be released: OOM at the third event, and the replay stops.
    oom = simulate([Alloc(0, 30 * MB), Alloc(1, 40 * MB), Alloc(2, MB)], capacity=60 * MB)
    assert oom.first_oom is not None and oom.first_oom.event == 1
    assert oom.first_oom.reserved == 30 * MB and len(oom.reserved_after) == 2
    # A segment with a live block in it (split) is not released either.
    split = simulate(
        [Alloc(0, 5 * MB), Alloc(1, 5 * MB), Free(1), Alloc(2, 45 * MB)], capacity=60 * MB
    )
    assert split.first_oom is not None and split.first_oom.event == 3


def test_oversize_blocks_are_released_largest_first():
    # release_available_cached_blocks with max_split_size: no cached block >= 100 MiB, so the
    # oversize blocks are freed from the largest down until 100 MiB are freed (60, then 50);
    # release_cached_blocks would have freed them in pool order (50, then 60).
    config = AllocatorConfig.parse("max_split_size_mb:40")
    events = [Alloc(0, 50 * MB), Alloc(1, 60 * MB), Free(0), Free(1), Alloc(2, 100 * MB)]
    result = simulate(events, config, capacity=150 * MB)
    assert driver_calls(result)[2:] == [
        (4, "segment_free", 60),
        (4, "segment_free", 50),
        (4, "segment_alloc", 100),
    ]
    default = simulate(events, capacity=150 * MB)
    assert driver_calls(default)[2:] == [
        (4, "segment_free", 50),
        (4, "segment_free", 60),
        (4, "segment_alloc", 100),
    ]


def test_garbage_collection_frees_the_oldest_cached_segments():
    # garbage_collect_cached_blocks (memory fraction set, threshold 0.5 of 100 MiB allowed):
    # before asking for 50 MiB with 70 MiB reserved, free unsplit large blocks whose age in
    # get_free_block calls is at least the average (30 MiB segment: 2, 40 MiB: 1, average
    # 1.5) until 20 MiB are reclaimed: only the 30 MiB segment goes.
    config = AllocatorConfig.parse("garbage_collection_threshold:0.5", memory_fraction=1.0)
    events = [Alloc(0, 30 * MB), Free(0), Alloc(1, 40 * MB), Free(1), Alloc(2, 50 * MB)]
    result = simulate(events, config, device_total=100 * MB)
    assert driver_calls(result)[2:] == [(4, "segment_free", 30), (4, "segment_alloc", 50)]
    # Without the threshold, the fraction's limit (70 + 50 > 100 MiB) triggers the full release.
    plain = simulate(events, AllocatorConfig(memory_fraction=1.0), device_total=100 * MB)
    assert driver_calls(plain)[2:] == [
        (4, "segment_free", 30),
        (4, "segment_free", 40),
        (4, "segment_alloc", 50),
    ]


def test_a_deferred_free_returns_the_block_only_when_completed():
    # free: allocated_bytes drops at once; a block used on another stream returns to the pool
    # when its events complete (free_block from process_events).
    events = [Alloc(0, 5 * MB), Free(0, completed=False), Alloc(1, 5 * MB)]
    pending = simulate(events)
    assert pending.allocated_after == (5 * MB, 0, 5 * MB)
    assert driver_calls(pending) == [(0, "segment_alloc", 20)]  # split rest serves Alloc(1)
    events = [Alloc(0, 18 * MB), Free(0, completed=False), Alloc(1, 18 * MB), FreeCompleted(0)]
    assert len(simulate(events).segment_events) == 2
    completed = [Alloc(0, 18 * MB), Free(0, completed=False), FreeCompleted(0), Alloc(1, 18 * MB)]
    assert len(simulate(completed).segment_events) == 1
