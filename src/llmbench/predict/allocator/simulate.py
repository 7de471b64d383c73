"""Replay an ordered list of allocation events through the simulated allocator.

Input events (bytes, streams as the integer ``cudaStream_t`` a trace records, 0 = default):

- ``Alloc(handle, size, stream)``: ``torch`` asks for ``size`` bytes; ``handle`` names the
  allocation for its ``Free``. ``expect_oom`` marks a request that failed in a recorded run
  (a trace's ``oom`` entry): if the simulator serves it, the block is freed at once so that
  the replay can go on, and the result notes the disagreement.
- ``Free(handle, completed=True)``: the tensor's memory is released; ``completed=False`` is a
  free still waiting for another stream (trace ``free_requested`` without ``free_completed``),
  finished by a later ``FreeCompleted(handle)``.
- ``EmptyCache()``: ``torch.cuda.empty_cache()`` (``release_cached_blocks``).

Output (``SimulationResult``): peak reserved and allocated bytes (``torch.cuda.
max_memory_reserved`` / ``max_memory_allocated`` from the start of the events), the segment
events (``SegmentEvent``), reserved and allocated bytes after every input event, and the OOMs:
for a given ``capacity`` (bytes PyTorch's segments may take), the first input event whose
request cannot be served after the allocator's release-and-retry path. Imports ``.blocks``,
``.caching``, ``.config``, ``.state``.
"""

from __future__ import annotations

from collections.abc import Hashable, Iterable, Iterator
from dataclasses import dataclass

from llmbench.predict.allocator.blocks import Block
from llmbench.predict.allocator.caching import complete_free, free, malloc, release_cached_blocks
from llmbench.predict.allocator.config import AllocatorConfig
from llmbench.predict.allocator.state import AllocatorState, SegmentEvent


@dataclass(frozen=True)
class Alloc:
    """A request of ``size`` bytes on ``stream``, named ``handle`` for its ``Free``."""

    handle: Hashable
    size: int
    stream: int = 0
    expect_oom: bool = False


@dataclass(frozen=True)
class Free:
    """Release of the allocation ``handle`` (``completed=False``: waits for ``FreeCompleted``)."""

    handle: Hashable
    completed: bool = True


@dataclass(frozen=True)
class FreeCompleted:
    """The deferred free of ``handle`` completes (trace ``free_completed``)."""

    handle: Hashable


@dataclass(frozen=True)
class EmptyCache:
    """``torch.cuda.empty_cache()``."""


Event = Alloc | Free | FreeCompleted | EmptyCache


@dataclass(frozen=True)
class Oom:
    """An out-of-memory at input event ``event``: the request (bytes as asked), the reserved
    and allocated bytes after the release path, and whether the recorded run expected it."""

    event: int
    size: int
    stream: int
    reserved: int
    allocated: int
    expected: bool


@dataclass(frozen=True)
class SimulationResult:
    """What one replay gives (bytes; per-event tuples are indexed like the input events)."""

    peak_reserved: int
    peak_allocated: int
    segment_events: tuple[SegmentEvent, ...]
    reserved_after: tuple[int, ...]
    allocated_after: tuple[int, ...]
    ooms: tuple[Oom, ...]
    unexpected_successes: tuple[int, ...]
    num_alloc_retries: int

    @property
    def first_oom(self) -> Oom | None:
        """The first OOM, or None when every request was served."""
        return self.ooms[0] if self.ooms else None


def simulate(
    events: Iterable[Event],
    config: AllocatorConfig | None = None,
    capacity: int | None = None,
    device_total: int | None = None,
    addresses: Iterator[int] | None = None,
    stop_at_oom: bool = True,
) -> SimulationResult:
    """Replay ``events`` (see the module docstring). ``capacity`` None means unlimited
    memory; ``device_total`` (bytes) sizes expandable reservations and the memory fraction;
    ``addresses`` supplies segment addresses in order (``AllocatorState``). With
    ``stop_at_oom`` the replay ends at the first unexpected OOM, as a program that does not
    catch ``torch.OutOfMemoryError`` would. Raises ``KeyError`` for a free of an unknown
    handle and ``ValueError`` for an allocation handle already live."""
    state = AllocatorState(
        config=config or AllocatorConfig(),
        capacity=capacity,
        device_total=device_total,
        addresses=addresses,
    )
    live: dict[Hashable, Block] = {}
    reserved, allocated, ooms, surprises = [], [], [], []
    for index, event in enumerate(events):
        state.event = index
        oom = _apply(state, live, event)
        if oom is not None:
            ooms.append(oom)
        elif isinstance(event, Alloc) and event.expect_oom:
            surprises.append(index)
        reserved.append(state.stats.reserved)
        allocated.append(state.stats.allocated)
        if oom is not None and stop_at_oom and not oom.expected:
            break
    return SimulationResult(
        peak_reserved=state.stats.peak_reserved,
        peak_allocated=state.stats.peak_allocated,
        segment_events=tuple(state.log),
        reserved_after=tuple(reserved),
        allocated_after=tuple(allocated),
        ooms=tuple(ooms),
        unexpected_successes=tuple(surprises),
        num_alloc_retries=state.stats.num_alloc_retries,
    )


def _apply(state: AllocatorState, live: dict[Hashable, Block], event: Event) -> Oom | None:
    """Apply one event; an ``Oom`` when an allocation failed."""
    if isinstance(event, Alloc):
        if event.handle in live:
            raise ValueError(f"allocation {event.handle!r} is already live")
        block = malloc(state, event.size, event.stream)
        if block is None:
            stats = state.stats
            return Oom(
                state.event,
                event.size,
                event.stream,
                stats.reserved,
                stats.allocated,
                event.expect_oom,
            )
        if event.expect_oom:
            free(state, block)
        else:
            live[event.handle] = block
    elif isinstance(event, Free):
        block = live[event.handle]
        free(state, block, completed=event.completed)
        if event.completed:
            del live[event.handle]
    elif isinstance(event, FreeCompleted):
        block = live.pop(event.handle)
        complete_free(state, block)
    else:
        release_cached_blocks(state)
    return None
