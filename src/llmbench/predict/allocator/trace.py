"""Read a recorded allocator trace and turn it into the simulator's input events.

A trace is the dict ``torch.cuda.memory._snapshot()`` returns after
``torch.cuda.memory._record_memory_history(max_entries=N)``, pickled (optionally gzipped):
``segments`` (the state when the snapshot was taken) and ``device_traces`` (per device, the
last N ``TraceEntry`` dicts: ``action``, ``addr``, ``size``, ``stream``; an ``oom`` has
``device_free`` instead of ``addr``, and its ``size`` is the rounded request).

``read_trace`` keeps, in order: ``alloc`` -> ``Alloc`` (handles by address); ``free_requested``
followed by its ``free_completed`` -> ``Free``, otherwise ``Free(completed=False)`` and later
``FreeCompleted``; ``oom`` -> ``Alloc(expect_oom=True)``; a run of ``segment_free`` /
``segment_unmap`` not followed by an allocation -> one ``EmptyCache`` (inferred: a release inside
``malloc`` and an ``empty_cache()`` just before an allocation look the same). Segment entries
are attributed to the next input event, as the simulator logs them.

A trace must start with an empty allocator: a ring buffer that dropped its oldest entries
(or recording started after memory was in use) is rejected (``IncompleteTraceError``) when an
entry refers to memory the trace never obtained, or when the trace's reserved bytes do not
add up to the snapshot's ``segments``. Imports ``.simulate``, ``.state``.
"""

from __future__ import annotations

import gzip
import pickle
from bisect import bisect_right
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from llmbench.predict.allocator.simulate import Alloc, EmptyCache, Event, Free, FreeCompleted
from llmbench.predict.allocator.state import SegmentEvent

SEGMENT_ACTIONS = ("segment_alloc", "segment_free", "segment_map", "segment_unmap")
_GROWS = {"segment_alloc": 1, "segment_map": 1, "segment_free": -1, "segment_unmap": -1}


class IncompleteTraceError(ValueError):
    """The trace does not start from an empty allocator (see module docstring)."""


@dataclass(frozen=True)
class Trace:
    """One device's recorded trace as simulator input, with what the real allocator did:
    its segment events, reserved bytes after each input event, and its OOMs (input-event
    index, ``device_free`` bytes, reserved bytes then)."""

    events: tuple[Event, ...]
    segment_events: tuple[SegmentEvent, ...]
    reserved_after: tuple[int, ...]
    ooms: tuple[tuple[int, int, int], ...]
    inferred_empty_cache: tuple[int, ...]

    @property
    def peak_reserved(self) -> int:
        """Largest reserved bytes in the trace."""
        return max(self.reserved_after, default=0)

    @property
    def segment_addresses(self) -> tuple[int, ...]:
        """Addresses of the trace's ``segment_alloc`` entries, in order."""
        return tuple(e.addr for e in self.segment_events if e.action == "segment_alloc")

    def capacity_at_oom(self) -> int | None:
        """Bytes the allocator could have reserved at the first OOM: reserved then plus the
        ``device_free`` CUDA reported (None without an OOM)."""
        if not self.ooms:
            return None
        _, device_free, reserved = self.ooms[0]
        return reserved + device_free


def load_snapshot(path: Path) -> dict[str, Any]:
    """Unpickle a snapshot (``.pickle`` or gzipped ``.pickle.gz``). Only open files you trust:
    unpickling runs code. Raises ``ValueError`` when it is not a snapshot dict."""
    opener = gzip.open if path.suffix == ".gz" else open
    with opener(path, "rb") as handle:
        snapshot = pickle.load(handle)
    if not isinstance(snapshot, dict) or "device_traces" not in snapshot:
        raise ValueError(f"{path}: not a torch.cuda.memory._snapshot() dict")
    return snapshot


def device_of(snapshot: dict[str, Any]) -> int:
    """The one device with trace entries (``ValueError`` when none or several)."""
    used = [i for i, entries in enumerate(snapshot["device_traces"]) if entries]
    if len(used) != 1:
        raise ValueError(f"expected trace entries on one device, found devices {used}")
    return used[0]


def read_trace(snapshot: dict[str, Any], device: int | None = None) -> Trace:
    """The simulator input and the recorded behaviour of ``device`` (default: the only device
    with entries). Raises ``IncompleteTraceError`` (see module docstring)."""
    device = device_of(snapshot) if device is None else device
    entries = [e for e in snapshot["device_traces"][device] if e["action"] != "snapshot"]
    reader = _Reader()
    for position, entry in enumerate(entries):
        reader.read(entry, entries, position)
    reader.finish()
    final = sum(
        s["total_size"] for s in snapshot.get("segments", []) if s.get("device", device) == device
    )
    if reader.segments.total() != final:
        raise IncompleteTraceError(
            f"trace reserves {reader.segments.total()} bytes at its end but the snapshot holds "
            f"{final}: the trace does not start from an empty allocator"
        )
    return Trace(
        events=tuple(reader.events),
        segment_events=tuple(reader.segment_log),
        reserved_after=tuple(reader.reserved_after),
        ooms=tuple(reader.ooms),
        inferred_empty_cache=tuple(reader.inferred),
    )


class _Ranges:
    """Live segment / mapped ranges by start address."""

    def __init__(self) -> None:
        self.starts: list[int] = []
        self.ends: dict[int, int] = {}

    def add(self, addr: int, size: int) -> None:
        self.starts.insert(bisect_right(self.starts, addr), addr)
        self.ends[addr] = addr + size

    def remove(self, addr: int, size: int) -> None:
        """Remove ``[addr, addr+size)``, which must be covered by live ranges."""
        end = addr + size
        while addr < end:
            start = self.containing(addr)
            if start is None:
                raise IncompleteTraceError(f"trace frees memory at {addr:#x} it never reserved")
            stop = self.ends.pop(start)
            self.starts.remove(start)
            if start < addr:
                self.add(start, addr - start)
            if stop > end:
                self.add(end, stop - end)
            addr = min(stop, end)

    def containing(self, addr: int) -> int | None:
        index = bisect_right(self.starts, addr) - 1
        if index >= 0 and self.ends[self.starts[index]] > addr:
            return self.starts[index]
        return None

    def total(self) -> int:
        return sum(self.ends[s] - s for s in self.starts)


class _Reader:
    """State of one pass over a device's trace entries."""

    def __init__(self) -> None:
        self.events: list[Event] = []
        self.segment_log: list[SegmentEvent] = []
        self.reserved_after: list[int] = []
        self.ooms: list[tuple[int, int, int]] = []
        self.inferred: list[int] = []
        self.segments = _Ranges()
        self.reserved = 0
        self.live: dict[int, int] = {}
        self.pending: dict[int, int] = {}
        self.counter = 0
        self.skip_completion: set[int] = set()
        self.open_release = False

    def emit(self, event: Event) -> None:
        self.events.append(event)
        self.reserved_after.append(self.reserved)

    def read(self, entry: dict[str, Any], entries: list[dict[str, Any]], position: int) -> None:
        """Translate one entry (``entries`` and ``position`` let a free look ahead)."""
        action = entry["action"]
        if action not in SEGMENT_ACTIONS:
            self._close_release()
        if action in SEGMENT_ACTIONS:
            self._segment(entry, entries, position)
        elif action == "alloc":
            if self.segments.containing(entry["addr"]) is None:
                raise IncompleteTraceError(
                    f"allocation at {entry['addr']:#x} lies in a segment the trace never "
                    "reserved: the trace does not start from an empty allocator"
                )
            self.counter += 1
            self.live[entry["addr"]] = self.counter
            self.emit(Alloc(self.counter, entry["size"], entry["stream"]))
        elif action == "free_requested":
            self._free_requested(entry, entries, position)
        elif action == "free_completed":
            self._free_completed(entry, position)
        elif action == "oom":
            self.ooms.append((len(self.events), entry.get("device_free", 0), self.reserved))
            self.counter += 1
            self.emit(Alloc(-self.counter, entry["size"], entry["stream"], expect_oom=True))

    def _segment(self, entry: dict[str, Any], entries: list[dict[str, Any]], position: int) -> None:
        action, addr, size = entry["action"], entry["addr"], entry["size"]
        if _GROWS[action] > 0:
            self.segments.add(addr, size)
        else:
            self.segments.remove(addr, size)
        self.reserved += _GROWS[action] * size
        self.segment_log.append(SegmentEvent(len(self.events), action, addr, size, entry["stream"]))
        if _GROWS[action] < 0 and not _release_precedes_allocation(entries, position):
            self.open_release = True

    def _free_requested(
        self, entry: dict[str, Any], entries: list[dict[str, Any]], position: int
    ) -> None:
        addr = entry["addr"]
        if addr not in self.live:
            raise IncompleteTraceError(f"free of {addr:#x}, never allocated in the trace")
        handle = self.live.pop(addr)
        following = entries[position + 1] if position + 1 < len(entries) else None
        if following and following["action"] == "free_completed" and following["addr"] == addr:
            self.skip_completion.add(position + 1)
            self.emit(Free(handle))
        else:
            self.pending[addr] = handle
            self.emit(Free(handle, completed=False))

    def _free_completed(self, entry: dict[str, Any], position: int) -> None:
        if position in self.skip_completion:
            return
        handle = self.pending.pop(entry["addr"], None)
        if handle is None:
            raise IncompleteTraceError(f"free_completed of {entry['addr']:#x} never requested")
        self.emit(FreeCompleted(handle))

    def finish(self) -> None:
        """Close an ``empty_cache()`` release run at the end of the trace."""
        self._close_release()

    def _close_release(self) -> None:
        if self.open_release:
            self.inferred.append(len(self.events))
            self.emit(EmptyCache())
            self.open_release = False


def _release_precedes_allocation(entries: list[dict[str, Any]], position: int) -> bool:
    """Whether the release at ``position`` is followed, past further segment entries, by an
    ``alloc`` or ``oom`` (then it is ``malloc``'s own release-and-retry path)."""
    for entry in entries[position + 1 :]:
        if entry["action"] in SEGMENT_ACTIONS:
            continue
        return entry["action"] in ("alloc", "oom")
    return False
