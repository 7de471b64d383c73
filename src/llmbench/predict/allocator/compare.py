"""Replay a recorded trace through the simulator and compare, event by event.

Two segment events agree when they happen during the same input event with the same action,
size and stream. Addresses are compared separately and only for ``segment_alloc`` /
``segment_free`` (a replay given the trace's ``cudaMalloc`` addresses reproduces them while it
agrees); expandable reservations get simulated base addresses, so their map/unmap addresses
differ from the recording by the reservation's base.
Imports ``.config``, ``.simulate``, ``.state``, ``.trace``.
"""

from __future__ import annotations

from dataclasses import dataclass

from llmbench.predict.allocator.config import AllocatorConfig
from llmbench.predict.allocator.simulate import Event, SimulationResult, simulate
from llmbench.predict.allocator.state import SegmentEvent
from llmbench.predict.allocator.trace import Trace


@dataclass(frozen=True)
class Divergence:
    """The first segment event where simulation and recording differ: its position in both
    logs, the recorded and simulated events there (None past a log's end), and the input
    event (index and value) during which the earlier of the two happened."""

    position: int
    recorded: SegmentEvent | None
    simulated: SegmentEvent | None
    event: int
    input: Event | None


@dataclass(frozen=True)
class Comparison:
    """Simulation vs recording of one trace (bytes)."""

    peak_reserved_simulated: int
    peak_reserved_recorded: int
    peak_allocated_simulated: int
    segment_events_recorded: int
    segment_events_simulated: int
    divergence: Divergence | None
    address_mismatches: int
    reserved_max_abs_difference: int
    first_reserved_difference: int | None
    ooms_recorded: tuple[int, ...]
    ooms_simulated: tuple[int, ...]

    @property
    def peak_reserved_error(self) -> float:
        """(simulated - recorded) / recorded peak reserved bytes."""
        recorded = self.peak_reserved_recorded
        return (self.peak_reserved_simulated - recorded) / recorded if recorded else 0.0

    def summary(self) -> str:
        """One paragraph for a report."""
        lines = [
            f"peak reserved: simulated {self.peak_reserved_simulated:,} B, recorded "
            f"{self.peak_reserved_recorded:,} B ({self.peak_reserved_error:+.3%})",
            f"segment events: {self.segment_events_simulated} simulated, "
            f"{self.segment_events_recorded} recorded; {self.address_mismatches} address "
            f"mismatches; reserved curve max |diff| {self.reserved_max_abs_difference:,} B",
            f"OOM at input events: recorded {list(self.ooms_recorded)}, simulated "
            f"{list(self.ooms_simulated)}",
        ]
        d = self.divergence
        if d is None:
            lines.append("segment events identical")
        else:
            lines.append(
                f"first divergence at segment event {d.position} (input event {d.event}, "
                f"{d.input}): recorded {d.recorded}, simulated {d.simulated}"
            )
        return "\n".join(lines)


def replay_trace(
    trace: Trace,
    config: AllocatorConfig,
    capacity: int | None = None,
    device_total: int | None = None,
    use_addresses: bool = True,
) -> tuple[SimulationResult, Comparison]:
    """Simulate ``trace.events`` under ``config`` and compare. ``capacity`` defaults to the
    capacity the trace's first OOM implies (``Trace.capacity_at_oom``), else unlimited."""
    if capacity is None:
        capacity = trace.capacity_at_oom()
    addresses = iter(trace.segment_addresses) if use_addresses else None
    result = simulate(
        trace.events,
        config,
        capacity=capacity,
        device_total=device_total,
        addresses=addresses,
        stop_at_oom=False,
    )
    return result, compare(trace, result)


def _key(event: SegmentEvent) -> tuple[int, str, int, int]:
    return (event.event, event.action, event.size, event.stream)


def compare(trace: Trace, result: SimulationResult) -> Comparison:
    """Compare a replay of ``trace.events`` with the recording."""
    recorded, simulated = trace.segment_events, result.segment_events
    divergence = None
    for position in range(max(len(recorded), len(simulated))):
        ours = simulated[position] if position < len(simulated) else None
        theirs = recorded[position] if position < len(recorded) else None
        if ours is None or theirs is None or _key(ours) != _key(theirs):
            event = min(e.event for e in (ours, theirs) if e is not None)
            divergence = Divergence(
                position,
                theirs,
                ours,
                event,
                trace.events[event] if event < len(trace.events) else None,
            )
            break
    agreeing = divergence.position if divergence else len(recorded)
    mismatches = sum(
        recorded[i].addr != simulated[i].addr
        for i in range(agreeing)
        if recorded[i].action in ("segment_alloc", "segment_free")
    )
    differences = [
        abs(a - b) for a, b in zip(result.reserved_after, trace.reserved_after, strict=False)
    ]
    first = next((i for i, d in enumerate(differences) if d), None)
    return Comparison(
        peak_reserved_simulated=result.peak_reserved,
        peak_reserved_recorded=trace.peak_reserved,
        peak_allocated_simulated=result.peak_allocated,
        segment_events_recorded=len(recorded),
        segment_events_simulated=len(simulated),
        divergence=divergence,
        address_mismatches=mismatches,
        reserved_max_abs_difference=max(differences, default=0),
        first_reserved_difference=first,
        ooms_recorded=tuple(i for i, _, _ in trace.ooms),
        ooms_simulated=tuple(o.event for o in result.ooms),
    )
