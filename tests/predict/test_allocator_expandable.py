"""llmbench.predict.allocator.expandable: ``expandable_segments:True`` sequences whose
outcome follows from ``find_expandable_block``, ``map_block``, ``try_allocate_expandable_block``,
``unmap_block`` and ``release_blocks`` in c10/cuda/CUDACachingAllocator.cpp (torch 2.11)."""

from __future__ import annotations

from llmbench.predict.allocator import Alloc, AllocatorConfig, EmptyCache, Free, simulate

MB = 2**20
GB = 2**30
EXPANDABLE = AllocatorConfig.parse("expandable_segments:True")


def driver_calls(result):
    return [(e.event, e.action, e.size / MB) for e in result.segment_events]


def run(events, **kwargs):
    return simulate(events, EXPANDABLE, device_total=80 * GB, **kwargs)


def test_segments_grow_by_20_mib_pages_at_their_end():
    # alloc_block -> try_allocate_expandable_block(size = rounded request, not the 20 MiB
    # segment size): 25 MiB maps ceil(25 / 20) = 2 large-pool pages at once; 10 MiB comes
    # from the 15 MiB rest (should_split with expandable segments: rest >= 512 B); the next
    # 10 MiB starts in the free 5 MiB before the unmapped tail (find_expandable_block) and maps
    # one more page, which merges with it (map_block -> try_merge_blocks).
    result = run([Alloc(0, 25 * MB), Alloc(1, 10 * MB), Alloc(2, 10 * MB)])
    assert driver_calls(result) == [(0, "segment_map", 40), (2, "segment_map", 20)]
    assert result.segment_events[1].addr == result.segment_events[0].addr + 40 * MB
    assert result.peak_reserved == 60 * MB and result.peak_allocated == 45 * MB


def test_small_pool_pages_are_2_mib():
    result = run([Alloc(0, 100), Alloc(1, MB)])
    assert driver_calls(result) == [(0, "segment_map", 2)]
    assert run([Alloc(0, MB), Alloc(1, MB), Alloc(2, 512)]).peak_reserved == 4 * MB


def test_best_fit_ranks_a_block_by_what_it_can_grow_to():
    # get_free_block with expandable segments: while the next block in size order can grow
    # less (size + unmapped tail after it), prefer it. Streams have separate reservations.
    result = run([Alloc(0, 5 * MB, stream=1), Alloc(1, 5 * MB, stream=2)])
    assert driver_calls(result) == [(0, "segment_map", 20), (1, "segment_map", 20)]
    assert result.segment_events[0].addr != result.segment_events[1].addr


def test_empty_cache_unmaps_whole_free_pages_only():
    # unmap_block: only the pages entirely inside a free block; [20, 25) MiB stays mapped.
    events = [Alloc(0, 25 * MB), Alloc(1, 10 * MB), Free(0), EmptyCache()]
    result = run([*events, Free(1), EmptyCache()])
    assert driver_calls(result) == [
        (0, "segment_map", 40),
        (3, "segment_unmap", 20),
        (5, "segment_unmap", 20),
    ]
    assert result.reserved_after == (40 * MB, 40 * MB, 40 * MB, 20 * MB, 20 * MB, 0)
    # After everything is unmapped the reservation is dropped (release_expandable_segment)
    # and a new request maps the first page of a new one.
    again = run([*events, Free(1), EmptyCache(), Alloc(2, 5 * MB)])
    assert driver_calls(again)[-1] == (6, "segment_map", 20)


def test_no_page_left_is_an_oom():
    # 25 MiB maps 40 MiB (the capacity); 30 MiB needs one more page; release_cached_blocks
    # has no whole free page to unmap ([25, 40) MiB is inside mapped pages) -> OOM.
    result = run([Alloc(0, 25 * MB), Alloc(1, 30 * MB)], capacity=40 * MB)
    assert driver_calls(result) == [(0, "segment_map", 40)]
    assert result.first_oom is not None and result.first_oom.event == 1
    # Freed pages are unmapped and mapped again where the request fits: 30 MiB does not fit
    # the [0, 25) MiB hole, so after the free 5 MiB at [35, 40) MiB 25 MiB more are needed:
    # two pages, possible only once release_cached_blocks has unmapped [0, 20) MiB.
    events = [Alloc(0, 25 * MB), Alloc(1, 10 * MB), Free(0), Alloc(2, 30 * MB)]
    result = run(events, capacity=60 * MB)
    assert result.first_oom is None and result.num_alloc_retries == 1
    assert driver_calls(result)[1:] == [(3, "segment_unmap", 20), (3, "segment_map", 40)]
