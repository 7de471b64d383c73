"""Blocks and block pools of the caching allocator (``struct Block``, ``struct BlockPool`` in
``c10/cuda/CUDACachingAllocator.cpp``, torch 2.11).

A segment (one ``cudaMalloc``, or one expandable reservation) is a doubly linked list of
blocks in address order; a block is allocated, free (cached in its pool's ``blocks`` set) or,
in an expandable segment, unmapped (in the pool's ``unmapped`` set). ``blocks`` is ordered by
``BlockComparatorSize`` (stream, size, address), which makes ``lower_bound`` a best-fit search;
``unmapped`` by ``BlockComparatorAddress`` (stream, address). Imports nothing from llmbench.
"""

from __future__ import annotations

import itertools
from bisect import bisect_left
from collections.abc import Iterator
from dataclasses import dataclass, field

_serial = itertools.count()


@dataclass(eq=False)
class Block:
    """One block: ``size`` bytes at ``ptr`` on ``stream``, in the small or large pool.

    ``expandable`` is the reservation's base address for a block of an expandable segment
    (``expandable_segment_``), else None. ``pending_free`` marks a block whose free was
    requested but not completed (``event_count > 0``: used on another stream).
    """

    stream: int
    size: int
    ptr: int
    small: bool
    allocated: bool = False
    mapped: bool = True
    expandable: int | None = None
    requested_size: int = 0
    prev: Block | None = None
    next: Block | None = None
    pending_free: bool = False
    gc_count_base: int = 0
    serial: int = field(default_factory=lambda: next(_serial))
    key: tuple[int, ...] | None = None

    def is_split(self) -> bool:
        """``Block::is_split``: the block has a neighbour in its segment."""
        return self.prev is not None or self.next is not None

    def splice(self, before: Block | None, after: Block | None) -> None:
        """``Block::splice``: link this block between ``before`` and ``after``."""
        if before is not None:
            before.next = self
        self.prev = before
        if after is not None:
            after.prev = self
        self.next = after


class SortedBlocks:
    """A ``std::set<Block*, Comparison>``: blocks kept sorted by a key taken at insertion.

    ``by_size`` gives ``BlockComparatorSize`` (stream, size, ptr), else
    ``BlockComparatorAddress`` (stream, ptr); the block's serial number breaks ties.
    """

    def __init__(self, by_size: bool) -> None:
        self.by_size = by_size
        self.keys: list[tuple[int, ...]] = []
        self.items: list[Block] = []

    def _key(self, block: Block) -> tuple[int, ...]:
        if self.by_size:
            return (block.stream, block.size, block.ptr, block.serial)
        return (block.stream, block.ptr, block.serial)

    def __len__(self) -> int:
        return len(self.items)

    def __iter__(self) -> Iterator[Block]:
        """A snapshot of the blocks in order (safe to mutate the set while iterating)."""
        return iter(list(self.items))

    def insert(self, block: Block) -> None:
        """Insert ``block`` (its key is remembered for ``erase``)."""
        key = self._key(block)
        block.key = key
        index = bisect_left(self.keys, key)
        self.keys.insert(index, key)
        self.items.insert(index, block)

    def erase(self, block: Block) -> bool:
        """Remove ``block`` if present; True when it was."""
        if block.key is None:
            return False
        index = bisect_left(self.keys, block.key)
        if index < len(self.items) and self.items[index] is block:
            del self.keys[index]
            del self.items[index]
            block.key = None
            return True
        return False

    def lower_bound(self, stream: int, size_or_ptr: int) -> int:
        """Index of the first block not below (stream, size_or_ptr, address 0)."""
        return bisect_left(self.keys, (stream, size_or_ptr, -1, -1)[: 4 if self.by_size else 3])


@dataclass
class BlockPool:
    """``struct BlockPool``: the free (``blocks``) and unmapped blocks of one pool."""

    small: bool
    blocks: SortedBlocks = field(default_factory=lambda: SortedBlocks(by_size=True))
    unmapped: SortedBlocks = field(default_factory=lambda: SortedBlocks(by_size=False))
    get_free_blocks_call_count: int = 0

    def insert_into_blocks(self, block: Block) -> None:
        """``BlockPool::insert_into_blocks``: cache a free block, stamping its GC age base."""
        block.gc_count_base = self.get_free_blocks_call_count
        self.blocks.insert(block)

    def gc_count(self, block: Block) -> int:
        """``Block::gc_count``: free-block searches since ``block`` was cached."""
        return self.get_free_blocks_call_count - block.gc_count_base


def try_merge_blocks(dst: Block, src: Block | None, pool: BlockPool) -> int:
    """``try_merge_blocks``: absorb the free neighbour ``src`` into ``dst`` when both are
    mapped or both unmapped; returns the bytes absorbed (0 when not merged). ``src`` leaves
    ``pool`` (``blocks`` or ``unmapped``)."""
    if src is None or src.allocated or src.pending_free or dst.mapped != src.mapped:
        return 0
    if dst.prev is src:
        dst.ptr = src.ptr
        dst.prev = src.prev
        if dst.prev is not None:
            dst.prev.next = dst
    else:
        dst.next = src.next
        if dst.next is not None:
            dst.next.prev = dst
    dst.size += src.size
    (pool.blocks if src.mapped else pool.unmapped).erase(src)
    return src.size
