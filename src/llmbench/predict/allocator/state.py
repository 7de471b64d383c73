"""The state of one simulated device allocator (``class DeviceCachingAllocator``'s members in
``c10/cuda/CUDACachingAllocator.cpp``, torch 2.11), its statistics and its segment-level
event log.

Device memory is modelled as one number: ``capacity``, the bytes PyTorch's segments may take
(total memory minus the CUDA context and any non-PyTorch allocation). A ``cudaMalloc`` or an
expandable segment's page mapping succeeds when ``reserved + size <= capacity``: every segment
and page the allocator asks for is a multiple of 2 MiB, the GPU's page, so no further driver
rounding is assumed (unverified for fragmentation of physical memory inside the driver).

Segment addresses: ``cudaMalloc`` returns addresses the simulator cannot know, yet they
matter: among free blocks of equal size and stream the lower address is taken
(``BlockComparatorSize``). On the H200 traces (driver 580, CUDA 13.0) large segments are
placed top-down, each below the previous one, so by default each new segment (and each
expandable reservation) is placed just below all earlier ones (``next_address`` goes down).
With that model the eight recorded runs give the recorded peak reserved to the byte; placing
segments upwards instead misses eager b2/s8192 by -20 % and b2/s16384 by +86 %. The driver
also serves some small segments from a second region growing upwards, which this model does
not know (it changes later segment events of two runs, not their peaks). ``addresses`` may
supply the addresses in order instead (e.g. those of a recorded trace).
Imports ``.blocks``, ``.config``.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field

from llmbench.predict.allocator.blocks import Block, BlockPool
from llmbench.predict.allocator.config import K_ROUND_LARGE, AllocatorConfig

SIMULATED_TOP_ADDRESS = 0x7F00_0000_0000
"""Where simulated segments start (each placed below the previous one). Any base that is a
multiple of 2 MiB (``K_ROUND_LARGE``: segments aligned as the driver's are) gives the same
simulation: the allocator only compares addresses (the lower of equal-size free blocks wins)
and takes differences within a segment, never reads their absolute value (the allocator tests
pass unchanged with another base). 127 TiB keeps every address positive, as real ones are,
and mimics where the driver puts segments: the recorded H200 runs' ``cudaMalloc`` addresses
lie at 0x7F7F_2C00_0000-0x7FB0_E3E0_0000 (tests/fixtures/allocator)."""


@dataclass(frozen=True)
class SegmentEvent:
    """One call to the driver, as ``record_trace`` logs it: ``action`` is ``segment_alloc``
    (``cudaMalloc``), ``segment_free`` (``cudaFree``), ``segment_map`` / ``segment_unmap``
    (expandable segments); ``size`` bytes at ``addr`` on ``stream``; ``event`` is the index of
    the input event during which it happened."""

    event: int
    action: str
    addr: int
    size: int
    stream: int


@dataclass
class Stats:
    """``DeviceStats`` aggregates the simulator reports (bytes): allocated = sum of allocated
    blocks' sizes (``allocated_bytes``), reserved = segments and mapped pages
    (``reserved_bytes``), with their peaks; ``num_alloc_retries``; ``num_ooms``."""

    allocated: int = 0
    reserved: int = 0
    peak_allocated: int = 0
    peak_reserved: int = 0
    num_alloc_retries: int = 0
    num_ooms: int = 0

    def add_allocated(self, nbytes: int) -> None:
        self.allocated += nbytes
        self.peak_allocated = max(self.peak_allocated, self.allocated)

    def add_reserved(self, nbytes: int) -> None:
        self.reserved += nbytes
        self.peak_reserved = max(self.peak_reserved, self.reserved)


@dataclass
class AllocatorState:
    """Everything the allocator holds: pools, live expandable reservations, statistics, the
    segment-event log, and how device memory is modelled (``capacity``, ``device_total``)."""

    config: AllocatorConfig
    capacity: int | None = None
    device_total: int | None = None
    addresses: Iterator[int] | None = None
    small: BlockPool = field(default_factory=lambda: BlockPool(small=True))
    large: BlockPool = field(default_factory=lambda: BlockPool(small=False))
    expandable_bases: list[int] = field(default_factory=list)
    pending: list[Block] = field(default_factory=list)
    stats: Stats = field(default_factory=Stats)
    log: list[SegmentEvent] = field(default_factory=list)
    event: int = 0
    next_address: int = SIMULATED_TOP_ADDRESS

    def pool(self, small: bool) -> BlockPool:
        """The small or the large pool (``get_pool`` without graph-private pools)."""
        return self.small if small else self.large

    def pool_of(self, block: Block) -> BlockPool:
        """The pool ``block`` belongs to."""
        return self.pool(block.small)

    def fits(self, nbytes: int) -> bool:
        """Whether the device can give ``nbytes`` more (``cudaMalloc`` / ``cuMemCreate``)."""
        return self.capacity is None or self.stats.reserved + nbytes <= self.capacity

    def fraction_allows(self, nbytes: int) -> bool:
        """``alloc_block``'s ``set_fraction`` check: reserved + ``nbytes`` within
        ``allowed_memory_maximum`` = fraction x total memory."""
        limit = self.allowed_memory_maximum()
        return limit is None or self.stats.reserved + nbytes <= limit

    def allowed_memory_maximum(self) -> int | None:
        """``allowed_memory_maximum`` (bytes), or None without a memory fraction."""
        if self.config.memory_fraction is None:
            return None
        if self.device_total is None:
            raise ValueError("a memory fraction needs the device's total memory")
        return int(self.config.memory_fraction * self.device_total)

    def new_address(self, size: int) -> int:
        """Address of a new segment or reservation of ``size`` bytes (see module docstring)."""
        if self.addresses is not None:
            supplied = next(self.addresses, None)
            if supplied is not None:
                return supplied
        self.next_address -= -(-size // K_ROUND_LARGE) * K_ROUND_LARGE
        return self.next_address

    def record(self, action: str, addr: int, size: int, stream: int) -> None:
        """Log one segment event (``record_trace`` of a ``SEGMENT_*`` action)."""
        self.log.append(SegmentEvent(self.event, action, addr, size, stream))
