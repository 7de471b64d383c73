"""``DeviceCachingAllocator::malloc`` and ``free`` and the rules they use, one function each
(``c10/cuda/CUDACachingAllocator.cpp``, torch 2.11).

``malloc`` rounds the request (``round_size``), picks the pool (small when the rounded size is
at most 1 MiB), searches the pool best-fit (``get_free_block``), and otherwise asks the driver
(``alloc_block``); when the driver refuses, it frees cached oversize blocks
(``release_available_cached_blocks``) and retries, then frees every unsplit cached segment
(``release_cached_blocks``) and retries once more; still failing is an OOM. A found block is
split when the rest is worth keeping (``should_split``). ``free`` merges a block with its free
neighbours (``free_block``). Not modelled: CUDA-graph private pools, IPC, memory-freeing
callbacks (none registered in a plain process). Imports ``.blocks``, ``.config``,
``.expandable``, ``.state``.
"""

from __future__ import annotations

from llmbench.predict.allocator.blocks import Block, BlockPool, try_merge_blocks
from llmbench.predict.allocator.config import (
    K_MIN_BLOCK_SIZE,
    K_SMALL_SIZE,
    UNLIMITED,
    get_allocation_size,
    round_size,
)
from llmbench.predict.allocator.expandable import (
    release_expandable_segment,
    try_allocate_expandable_block,
    unmap_block,
)
from llmbench.predict.allocator.state import AllocatorState


def malloc(state: AllocatorState, orig_size: int, stream: int) -> Block | None:
    """``DeviceCachingAllocator::malloc``: the allocated block for a request of
    ``orig_size`` bytes on ``stream``, or None on out-of-memory (``num_ooms`` counts it)."""
    size = round_size(orig_size, state.config)
    pool = state.pool(size <= K_SMALL_SIZE)
    alloc_size = get_allocation_size(size, state.config)
    block = get_free_block(state, pool, stream, size)
    if block is None:
        if _gc_enabled(state):
            garbage_collect_cached_blocks(state)
        block = alloc_block(state, pool, stream, size, alloc_size, retry=False)
        if block is None and release_available_cached_blocks(state, pool, stream, size):
            block = alloc_block(state, pool, stream, size, alloc_size, retry=False)
        if block is None:
            release_cached_blocks(state)
            block = alloc_block(state, pool, stream, size, alloc_size, retry=True)
    if block is None:
        state.stats.num_ooms += 1
        return None
    return alloc_found_block(state, block, size, orig_size, should_split(state, block, size))


def _gc_enabled(state: AllocatorState) -> bool:
    """``set_fraction && garbage_collection_threshold() > 0.0``."""
    return (
        state.config.memory_fraction is not None and state.config.garbage_collection_threshold > 0
    )


def get_free_block(state: AllocatorState, pool: BlockPool, stream: int, size: int) -> Block | None:
    """``get_free_block``: the smallest cached block of at least ``size`` bytes on ``stream``
    (``lower_bound`` in stream, size, address order), taken out of the pool. Expandable
    blocks are ranked by the size they can grow to (block + unmapped block after it). An
    oversize block (>= ``max_split_size``) serves only requests >= ``max_split_size`` and then
    only if it exceeds the request by less than ``max_non_split_rounding`` (default
    ``kLargeBuffer``)."""
    config = state.config
    if _gc_enabled(state):
        pool.get_free_blocks_call_count += 1
    items = pool.blocks.items
    index = pool.blocks.lower_bound(stream, size)
    if index == len(items) or items[index].stream != stream:
        return None
    if items[index].expandable is not None and config.expandable_segments:
        following = index + 1
        while (
            items[index].expandable is not None
            and following < len(items)
            and items[following].stream == stream
            and _expandable_size(items[following]) < _expandable_size(items[index])
        ):
            index, following = following, following + 1
    found = items[index]
    if size < config.max_split_size <= found.size:
        return None
    if size >= config.max_split_size and found.size >= size + config.max_non_split_rounding:
        return None
    pool.blocks.erase(found)
    return found


def _expandable_size(block: Block) -> int:
    following = block.next
    return block.size + (following.size if following is not None and not following.mapped else 0)


def should_split(state: AllocatorState, block: Block, size: int) -> bool:
    """``should_split``: small pool or expandable segments split off any rest of at least
    512 bytes; the large pool only a rest above 1 MiB (``kSmallSize``), and never for a
    request of ``max_split_size`` or more."""
    remaining = block.size - size
    if block.small or state.config.expandable_segments:
        return remaining >= K_MIN_BLOCK_SIZE
    return size < state.config.max_split_size and remaining > K_SMALL_SIZE


def alloc_found_block(
    state: AllocatorState, block: Block, size: int, orig_size: int, split: bool
) -> Block:
    """``alloc_found_block``: hand out the first ``size`` bytes of ``block`` (the rest
    returns to the pool) or the whole block; ``allocated_bytes`` grows by the handed-out
    block's size."""
    if split:
        rest = block
        block = Block(rest.stream, size, rest.ptr, rest.small, expandable=rest.expandable)
        block.prev = rest.prev
        if block.prev is not None:
            block.prev.next = block
        block.next = rest
        rest.prev = block
        rest.ptr += size
        rest.size -= size
        state.pool_of(rest).insert_into_blocks(rest)
    block.allocated = True
    block.requested_size = orig_size
    state.stats.add_allocated(block.size)
    return block


def alloc_block(
    state: AllocatorState,
    pool: BlockPool,
    stream: int,
    size: int,
    alloc_size: int,
    retry: bool,
) -> Block | None:
    """``alloc_block``: a new segment of ``alloc_size`` bytes (``cudaMalloc``), or with
    expandable segments the pages for ``size`` bytes; None when the device (or the memory
    fraction) cannot give them."""
    if retry:
        state.stats.num_alloc_retries += 1
    if not state.fraction_allows(alloc_size):
        return None
    if state.config.expandable_segments:
        return try_allocate_expandable_block(state, stream, pool, size)
    if not state.fits(alloc_size):
        return None
    block = Block(stream, alloc_size, state.new_address(alloc_size), pool.small)
    state.stats.add_reserved(alloc_size)
    state.record("segment_alloc", block.ptr, alloc_size, stream)
    return block


def release_block(state: AllocatorState, block: Block) -> None:
    """``release_block``: ``cudaFree`` a whole cached segment."""
    if block.expandable is not None:
        raise ValueError("release_block on an expandable segment (torch asserts here)")
    state.record("segment_free", block.ptr, block.size, block.stream)
    state.stats.reserved -= block.size
    state.pool_of(block).blocks.erase(block)


def release_available_cached_blocks(
    state: AllocatorState, pool: BlockPool, stream: int, size: int
) -> bool:
    """``release_available_cached_blocks`` (only with ``max_split_size``): free the smallest
    cached oversize block of at least max(``size``, ``max_split_size``), else the largest
    ones, largest first, until that much is freed; True when enough was freed (blocks freed
    on the way stay freed either way). Expandable blocks are skipped."""
    max_split = state.config.max_split_size
    if max_split == UNLIMITED:
        return False
    key_size = max(size, max_split)
    items = pool.blocks.items
    index = pool.blocks.lower_bound(stream, key_size)
    if index < len(items) and items[index].stream == stream and items[index].expandable is None:
        release_block(state, items[index])
        return True
    if index == 0:
        return False
    released = 0
    index -= 1
    while released < key_size and items[index].size >= max_split:
        current = items[index]
        if current.stream != stream:
            break
        first = index == 0
        if not first:
            index -= 1
        if current.expandable is None:
            released += current.size
            release_block(state, current)
        if first:
            break
    return released >= key_size


def release_cached_blocks(state: AllocatorState) -> None:
    """``release_cached_blocks``: complete every pending free (``synchronize_and_free_events``),
    then free every unsplit cached segment and unmap the free pages of expandable segments,
    large pool first."""
    for block in list(state.pending):
        complete_free(state, block)
    release_blocks(state, state.large)
    release_blocks(state, state.small)


def release_blocks(state: AllocatorState, pool: BlockPool) -> None:
    """``release_blocks``: in pool order, free unsplit segments; then unmap the free blocks of
    expandable segments, dropping a reservation left with nothing mapped."""
    to_unmap = []
    for block in pool.blocks:
        if block.expandable is not None:
            to_unmap.append(block)
        elif not block.is_split():
            release_block(state, block)
    for block in to_unmap:
        unmap_block(state, block)
        if not block.is_split() and not block.mapped:
            release_expandable_segment(state, block)


def garbage_collect_cached_blocks(state: AllocatorState) -> None:
    """``garbage_collect_cached_blocks``: with a memory fraction and
    ``garbage_collection_threshold``, once reserved bytes pass threshold x allowed maximum,
    free unsplit large-pool segments not reused for at least the average age (in
    ``get_free_block`` calls), repeating until the excess is reclaimed (never expandable
    blocks)."""
    limit = state.allowed_memory_maximum()
    assert limit is not None
    gc_threshold = int(state.config.garbage_collection_threshold * limit)
    if state.stats.reserved <= gc_threshold:
        return
    target = state.stats.reserved - gc_threshold
    pool = state.large
    freeable = [block for block in pool.blocks if not block.is_split()]  # as the C++: counts
    # expandable blocks' ages too, though it never frees them
    total_age = sum(pool.gc_count(block) for block in freeable)
    count = len(freeable)
    reclaimed, freed = 0, True
    while reclaimed < target and freed and count > 0:
        age_threshold = total_age / count
        freed = False
        for block in pool.blocks:
            if (
                not block.is_split()
                and block.expandable is None
                and pool.gc_count(block) >= age_threshold
            ):
                freed = True
                reclaimed += block.size
                total_age -= pool.gc_count(block)
                count -= 1
                release_block(state, block)


def free(state: AllocatorState, block: Block, completed: bool = True) -> None:
    """``DeviceCachingAllocator::free``: ``allocated_bytes`` drops now; the block returns to
    its pool now (``completed``) or when ``complete_free`` is called (a block used on another
    stream waits for its CUDA events)."""
    block.allocated = False
    state.stats.allocated -= block.size
    if completed:
        free_block(state, block)
    else:
        block.pending_free = True
        state.pending.append(block)


def complete_free(state: AllocatorState, block: Block) -> None:
    """The CUDA events of a pending free completed (``process_events``): cache the block."""
    if block.pending_free:
        block.pending_free = False
        state.pending.remove(block)
        free_block(state, block)


def free_block(state: AllocatorState, block: Block) -> None:
    """``free_block``: merge with the free previous and next blocks, then cache."""
    pool = state.pool_of(block)
    for neighbour in (block.prev, block.next):
        try_merge_blocks(block, neighbour, pool)
    pool.insert_into_blocks(block)
