"""A compact file for a recorded trace: what a replay needs, without stack frames or times.

``torch.cuda.memory._snapshot()`` pickles of an LLM run are megabytes; the simulator needs only
the event sequence and the recorded segment events to check itself against, which compress to
kilobytes. Format (``.replay.xz``: xz-compressed UTF-8 text): a first line of JSON (``meta``:
the allocator options, device total, the recorded peaks, the OOMs, the recorded segment events
as ``[event, action, addr, size, stream]``), then one input event per line:

- ``a<size>`` an allocation (``o<size>`` one that failed with an OOM when recorded), with
  ``@<stream>`` appended when not on stream 0; allocations are numbered 1, 2, ... in order;
- ``f<k>`` frees the allocation made ``k`` allocations before the latest one (0 = the latest),
  ``r<k>`` requests a free that completes later at ``c<k>`` (same numbering);
- ``e`` is ``torch.cuda.empty_cache()``.

Imports ``.simulate``, ``.state``, ``.trace``.
"""

from __future__ import annotations

import json
import lzma
from collections.abc import Hashable
from itertools import accumulate
from pathlib import Path
from typing import Any

from llmbench.predict.allocator.simulate import Alloc, EmptyCache, Event, Free, FreeCompleted
from llmbench.predict.allocator.state import SegmentEvent
from llmbench.predict.allocator.trace import Trace, load_snapshot, read_trace

FORMAT = "llmbench-allocator-replay/1"
_SIGN = {"segment_alloc": 1, "segment_map": 1, "segment_free": -1, "segment_unmap": -1}


def write_replay(trace: Trace, path: Path, meta: dict[str, Any]) -> None:
    """Write ``trace`` with ``meta`` (JSON-serialisable: e.g. ``PYTORCH_CUDA_ALLOC_CONF``,
    ``device_total_bytes``, ``max_memory_reserved``) to ``path``."""
    header = {
        **meta,
        "format": FORMAT,
        "ooms": [list(oom) for oom in trace.ooms],
        "inferred_empty_cache": list(trace.inferred_empty_cache),
        "segment_events": [
            [e.event, e.action, e.addr, e.size, e.stream] for e in trace.segment_events
        ],
    }
    lines = [json.dumps(header, sort_keys=True)]
    ordinal: dict[Hashable, int] = {}
    for event in trace.events:
        if isinstance(event, Alloc):
            ordinal[event.handle] = len(ordinal) + 1
            stream = f"@{event.stream}" if event.stream else ""
            lines.append(f"{'o' if event.expect_oom else 'a'}{event.size}{stream}")
        elif isinstance(event, Free | FreeCompleted):
            age = len(ordinal) - ordinal[event.handle]
            code = "c" if isinstance(event, FreeCompleted) else "f" if event.completed else "r"
            lines.append(f"{code}{age}")
        else:
            lines.append("e")
    path.write_bytes(lzma.compress("\n".join(lines).encode(), preset=9))


def read_replay(path: Path) -> tuple[Trace, dict[str, Any]]:
    """The ``Trace`` and the ``meta`` written by ``write_replay``. Raises ``ValueError`` for
    another format or a malformed line."""
    first, *lines = lzma.decompress(path.read_bytes()).decode().split("\n")
    meta = json.loads(first)
    if meta.get("format") != FORMAT:
        raise ValueError(f"{path}: not a {FORMAT} file")
    events: list[Event] = [_event(line, count) for count, line in _numbered(lines)]
    segments = tuple(SegmentEvent(*row) for row in meta.pop("segment_events"))
    deltas = [0] * len(events)
    for e in segments:
        deltas[e.event] += _SIGN[e.action] * e.size
    trace = Trace(
        events=tuple(events),
        segment_events=segments,
        reserved_after=tuple(accumulate(deltas)),
        ooms=tuple(tuple(oom) for oom in meta.pop("ooms")),  # type: ignore[misc]
        inferred_empty_cache=tuple(meta.pop("inferred_empty_cache")),
    )
    return trace, meta


def _numbered(lines: list[str]) -> list[tuple[int, str]]:
    """Each line with the number of allocations up to and including it."""
    count, numbered = 0, []
    for line in lines:
        count += line[:1] in ("a", "o")
        numbered.append((count, line))
    return numbered


def _event(line: str, count: int) -> Event:
    code, rest = line[:1], line[1:]
    if code in ("a", "o"):
        size, _, stream = rest.partition("@")
        return Alloc(count, int(size), int(stream or 0), expect_oom=code == "o")
    if code == "f":
        return Free(count - int(rest))
    if code == "r":
        return Free(count - int(rest), completed=False)
    if code == "c":
        return FreeCompleted(count - int(rest))
    if code == "e":
        return EmptyCache()
    raise ValueError(f"bad replay line {line!r}")


def convert_snapshot(snapshot: Path, out: Path) -> Trace:
    """Write the replay file of a recorded snapshot (``<name>.pickle.gz`` as the pipeline's
    trace recording writes it: with ``allocator_settings`` and an ``llmbench`` dict of
    ``device_total_bytes``, ``max_memory_reserved``, ``max_memory_allocated``); returns the
    trace. Raises what ``load_snapshot`` and ``read_trace`` raise."""
    data = load_snapshot(snapshot)
    trace = read_trace(data)
    settings = data.get("allocator_settings", {})
    meta = {
        "source": snapshot.name,
        "PYTORCH_CUDA_ALLOC_CONF": settings.get("PYTORCH_CUDA_ALLOC_CONF") or "",
        **{k: v for k, v in data.get("llmbench", {}).items() if k != "PYTORCH_CUDA_ALLOC_CONF"},
    }
    write_replay(trace, out, meta)
    return trace
