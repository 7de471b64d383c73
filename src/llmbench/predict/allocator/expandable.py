"""Expandable segments (``expandable_segments:True``; Note [Expandable Segments] in
``c10/cuda/CUDACachingAllocator.cpp``, torch 2.11).

Per stream and pool, one virtual reservation of ``1 1/8`` times the device's memory
(``ExpandableSegment``'s constructor) is backed by physical pages on demand: 2 MiB pages in
the small pool, 20 MiB (``kLargeBuffer``) in the large pool (``find_expandable_block``). A
reservation is one linked list of blocks; its unmapped parts sit in the pool's ``unmapped``
set. ``map_block`` maps the pages under the lowest free address range big enough
(``find_expandable_block``) and merges it with free neighbours; ``unmap_block`` returns the
whole pages inside a free block to the driver. Imports ``.blocks``, ``.config``, ``.state``.
"""

from __future__ import annotations

from llmbench.predict.allocator.blocks import Block, BlockPool, try_merge_blocks
from llmbench.predict.allocator.config import K_SMALL_BUFFER
from llmbench.predict.allocator.state import AllocatorState

DEFAULT_DEVICE_TOTAL = 1 << 40
"""Device memory assumed for a reservation's size when none is given (only the size of the
unmapped tail depends on it)."""


def page_size(state: AllocatorState, pool: BlockPool) -> int:
    """``segment_size_`` of a pool's expandable segments: 2 MiB small, 20 MiB large
    (``large_segment_size``)."""
    return K_SMALL_BUFFER if pool.small else state.config.large_segment_size


def _allocatable(block: Block | None) -> bool:
    return block is not None and not block.allocated and not block.pending_free


def find_expandable_block(state: AllocatorState, stream: int, pool: BlockPool, size: int) -> Block:
    """``find_expandable_block``: the lowest-address free-or-unmapped run of at least
    ``size`` bytes on ``stream``, starting at an unmapped block or the free block before it;
    failing that, a new reservation (one unmapped block as big as the reservation)."""
    items = pool.unmapped.items
    index = pool.unmapped.lower_bound(stream, 0)
    while index < len(items) and items[index].stream == stream:
        candidate = items[index]
        if _allocatable(candidate.prev):
            candidate = candidate.prev
        room, block = 0, candidate
        while room < size and _allocatable(block):
            room += block.size  # type: ignore[union-attr]
            block = block.next  # type: ignore[union-attr]
        if room >= size:
            return candidate
        index += 1
    page = page_size(state, pool)
    total = state.device_total or DEFAULT_DEVICE_TOTAL
    reservation = page * -(-(total + total // 8) // page)
    base = state.new_address(reservation)
    block = Block(stream, reservation, base, pool.small, mapped=False, expandable=base)
    pool.unmapped.insert(block)
    state.expandable_bases.append(base)
    return block


def map_block(state: AllocatorState, to_map: Block, size: int) -> bool:
    """``map_block``: back the first ``size`` bytes of the unmapped ``to_map`` with whole
    pages (``ExpandableSegment::map``), split off the rest as unmapped, merge with free
    neighbours and cache the result. False (nothing mapped) when the device lacks the pages."""
    pool = state.pool_of(to_map)
    page, base = page_size(state, pool), to_map.expandable
    assert base is not None and not to_map.mapped and size <= to_map.size
    begin = (to_map.ptr - base) // page
    end = -(-(to_map.ptr + size - base) // page)
    mapped = (end - begin) * page
    if mapped == 0 or not state.fits(mapped):
        return False
    pool.unmapped.erase(to_map)
    to_map.mapped = True
    if mapped < to_map.size:
        rest = Block(
            to_map.stream,
            to_map.size - mapped,
            to_map.ptr + mapped,
            to_map.small,
            mapped=False,
            expandable=base,
        )
        rest.splice(to_map, to_map.next)
        pool.unmapped.insert(rest)
        to_map.size = mapped
    address = to_map.ptr
    try_merge_blocks(to_map, to_map.prev, pool)
    try_merge_blocks(to_map, to_map.next, pool)
    pool.insert_into_blocks(to_map)
    state.stats.add_reserved(mapped)
    state.record("segment_map", address, mapped, to_map.stream)
    return True


def try_allocate_expandable_block(
    state: AllocatorState, stream: int, pool: BlockPool, size: int
) -> Block | None:
    """``try_allocate_expandable_block``: map pages until a free block of at least ``size``
    bytes exists at the lowest possible address; None when a mapping fails (pages mapped
    before the failure stay mapped, as in the C++)."""
    candidate = find_expandable_block(state, stream, pool, size)
    if not candidate.mapped and not map_block(state, candidate, min(candidate.size, size)):
        return None
    while candidate.size < size:
        following = candidate.next
        assert following is not None
        if not map_block(state, following, min(size - candidate.size, following.size)):
            return None
        candidate = following
    pool.blocks.erase(candidate)
    return candidate


def unmap_block(state: AllocatorState, block: Block) -> None:
    """``unmap_block``: unmap the whole pages inside the free ``block``; the partial pages
    before and after stay mapped as free blocks, the unmapped part merges with unmapped
    neighbours."""
    pool = state.pool_of(block)
    page, base = page_size(state, pool), block.expandable
    assert base is not None
    begin = -(-(block.ptr - base) // page)
    end = (block.ptr + block.size - base) // page
    if begin >= end:
        return
    start, length = base + begin * page, (end - begin) * page
    pool.blocks.erase(block)
    before = start - block.ptr
    if before > 0:
        head = Block(block.stream, before, block.ptr, block.small, expandable=base)
        head.splice(block.prev, block)
        pool.insert_into_blocks(head)
    after = block.size - (before + length)
    if after > 0:
        tail = Block(block.stream, after, start + length, block.small, expandable=base)
        tail.splice(block, block.next)
        pool.insert_into_blocks(tail)
    block.ptr, block.size, block.mapped = start, length, False
    try_merge_blocks(block, block.prev, pool)
    try_merge_blocks(block, block.next, pool)
    pool.unmapped.insert(block)
    state.stats.reserved -= length
    state.record("segment_unmap", start, length, block.stream)


def release_expandable_segment(state: AllocatorState, block: Block) -> None:
    """``release_expandable_segment``: drop a reservation that is one unmapped block (no
    driver event is logged: the pages were already unmapped)."""
    assert not block.mapped and block.expandable is not None
    state.expandable_bases.remove(block.expandable)
    state.pool_of(block).unmapped.erase(block)
