"""Pure frontier search: bracketed bisection on a step grid, with no I/O.

Owns the grid (:func:`grid_values`), the probe budget (:func:`max_probes`,
:data:`EXTRA_PROBES`), what a search learned (:class:`ProbeRecord`, :class:`SearchOutcome`)
and the search itself (:func:`bisect_frontier`): integers on a step grid, a ``probe(value)``
callable and an optional predicted frontier. Imports nothing from llmbench (the standard
library only), so the search can be tested with fake oracles.

Search: the bracket is (largest value known to run, smallest value known to fail). The first
probe is the predicted frontier rounded onto the grid (the largest value whose predicted peak
fits the budget; llmbench.predict by default, any callable in tests). If it is on the wrong
side, the bracket is expanded from the prediction by 1, 2, 4, ... steps until the other side is
found, then bisected. After every probe whose peak was measured completely, the prediction is
recalibrated (measured / predicted, then an affine fit through the two measurements nearest
the budget) and a corrected frontier inside the bracket is probed next; a correction that lands
on the value that just ran probes the next step to confirm it. Every choice is clamped so that
the search needs at most ``ceil(log2(n + 1)) + extra_probes`` probes for ``n`` grid values,
whatever the prediction (plain bisection needs ``ceil(log2(n + 1))``). With a good prediction a
search takes 2 probes (the frontier runs, the next step does not), or 1 when the prediction says
everything fits and the maximum runs.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

PASS_STATUSES: frozenset[str] = frozenset({"ok"})
"""Probe statuses that count as "runs"."""

FAIL_STATUSES: frozenset[str] = frozenset({"oom"})
"""Probe statuses that count as "does not run" (out of memory)."""

DECIDED_STATUSES: tuple[str, ...] = ("found", "above_max", "below_min")
"""Outcomes of a search whose bracket closed: the frontier is known (``found``), or the whole
grid runs (``above_max``) or fails (``below_min``). Any other status is the probe status that
stopped the search (package docstring, "Search statuses")."""

SEARCH_STATUSES: tuple[str, ...] = (
    *DECIDED_STATUSES,
    "check_failed",
    "unsupported",
    "unavailable",
    "error",
    "timeout",
    "crashed",
)
"""Outcomes of a search (package docstring, "Search statuses")."""


EXTRA_PROBES = 3
"""Probes a search may spend beyond plain bisection's worst case to follow the prediction.
With 1 the worst case never exceeds the issue's goal ``log2(range / step) + 2`` (rounded up),
but the search must then leave a correct prediction whenever the frontier sits far from the
middle of the range; with 3 the simulated searches (linear and quadratic memory curves,
predictions off by ~30 %, with recalibration) averaged 2.6-3 probes and never exceeded the
goal, at a worst case of ``ceil(log2(n + 1)) + 3``."""


def grid_values(minimum: int, maximum: int, step: int) -> list[int]:
    """The values a search can return: ``minimum + k * step`` up to ``maximum`` (rounded down
    onto the grid), ascending. Raises ValueError unless ``step > 0`` and
    ``0 < minimum <= maximum``."""
    if step <= 0:
        raise ValueError(f"step must be positive, got {step}")
    if minimum <= 0 or maximum < minimum:
        raise ValueError(f"need 0 < minimum <= maximum, got [{minimum}, {maximum}]")
    return list(range(minimum, maximum + 1, step))


def max_probes(n_values: int, extra: int = EXTRA_PROBES) -> int:
    """Probes a search may use at most: ``ceil(log2(n_values + 1)) + extra``.

    Plain bisection needs ``ceil(log2(n_values + 1))`` probes to tell the ``n_values + 1``
    possible outcomes apart (nothing runs, or the frontier is one of the values); ``extra`` is
    the room the search has to follow the prediction (module docstring). Raises ValueError
    for ``n_values <= 0``.
    """
    if n_values <= 0:
        raise ValueError("a search needs at least one value")
    return math.ceil(math.log2(n_values + 1)) + extra


def goal_probes(n_values: int) -> float:
    """The issue's goal for one search, ``log2(range / step) + 2`` (inf for a single value)."""
    return math.inf if n_values <= 1 else math.log2(n_values - 1) + 2


def nearest_index(values: Sequence[int], value: float) -> int:
    """Index of ``value`` rounded to the grid: -1 below the minimum (predicted: nothing runs),
    ``len(values) - 1`` at or above the maximum."""
    if value < values[0]:
        return -1
    step = values[1] - values[0] if len(values) > 1 else 1
    return max(0, min(len(values) - 1, round((value - values[0]) / step)))


def predicted_index(
    values: Sequence[int], predict_bytes: Callable[[int], float], capacity_bytes: float
) -> int:
    """Index of the largest value whose predicted peak fits ``capacity_bytes`` (-1 if none).

    Bisection over the (assumed monotone) prediction; costs ``log2(len(values))`` calls.
    """
    lo, hi = -1, len(values)
    while hi - lo > 1:
        middle = (lo + hi) // 2
        if predict_bytes(values[middle]) <= capacity_bytes:
            lo = middle
        else:
            hi = middle
    return lo


@dataclass
class ProbeRecord:
    """What a search learned from one probe. ``peak_bytes`` is the quantity the memory budget
    is checked against (CUDA: peak reserved; CPU: peak RSS growth), when known; ``path`` is the
    probe's cell JSON relative to the probes directory (its ``Cell.relpath``)."""

    value: int
    status: str
    reused: bool = False
    path: str | None = None
    peak_bytes: int | None = None
    wall_s: float | None = None
    reason: str | None = None
    predicted_bytes: float | None = None

    @classmethod
    def coerce(
        cls, value: int, outcome: ProbeRecord | Mapping[str, Any] | str | bool
    ) -> ProbeRecord:
        """Accept what a probe callable returns: a record, a mapping with ``status``, a
        status string, or a bool (True = ok, False = oom)."""
        if isinstance(outcome, ProbeRecord):
            return outcome
        if isinstance(outcome, bool):
            return cls(value=value, status="ok" if outcome else "oom")
        if isinstance(outcome, str):
            return cls(value=value, status=outcome)
        return cls(value=value, **{k: outcome[k] for k in outcome if k != "value"})


@dataclass
class SearchOutcome:
    """Result of one bracketed bisection."""

    status: str
    frontier: int | None
    first_fail: int | None
    largest_ok: int | None
    values_min: int
    values_max: int
    step: int
    brute_force: int
    max_probes: int
    goal_probes: float
    predicted: int | None
    predicted_index: int | None
    probes: list[ProbeRecord] = field(default_factory=list)

    @property
    def n_probes(self) -> int:
        """Probes this search looked at (run now or reused)."""
        return len(self.probes)

    def to_dict(self) -> dict[str, Any]:
        """JSON form."""
        document = asdict(self)
        document["n_probes"] = self.n_probes
        document["probes_run"] = sum(not p.reused for p in self.probes)
        document["probes_reused"] = sum(p.reused for p in self.probes)
        document["goal_probes"] = None if math.isinf(self.goal_probes) else self.goal_probes
        return document


def _desired(lo: int, hi: int, top: int, predicted: int | None, streak: int, fresh: bool) -> int:
    """Where the search would like to probe next, before the probe budget is applied.

    ``lo``: index of the largest value known to run (-1: none); ``hi``: index of the smallest
    value known to fail (``top`` = number of values: none). ``streak``: probes made so far
    while expanding from the prediction; ``fresh``: ``predicted`` was just recalibrated.
    """
    if predicted is None:
        return (lo + hi) // 2  # no prediction: bisect
    if lo < predicted < hi:
        return predicted  # the (re)predicted frontier, not probed yet
    if predicted == lo and fresh:
        return lo + 1  # recalibrated on the value that ran, it says that is the frontier
    if hi == top and predicted <= lo:
        return lo + 2**streak  # prediction too low: expand upwards, doubling the distance
    if lo == -1 and predicted >= hi:
        return hi - 2**streak  # prediction too high: expand downwards, doubling the distance
    return (lo + hi) // 2  # bracketed on both sides: bisect


def next_probe_index(
    lo: int,
    hi: int,
    top: int,
    predicted: int | None,
    streak: int,
    probes_left: int,
    fresh: bool = False,
) -> int:
    """The next index to probe: the desired one, moved just far enough towards the middle that
    the rest of the search still fits in ``probes_left - 1`` probes whatever this one says.

    After a probe at ``i`` the remaining outcomes are ``hi - i`` (it runs) or ``i - lo`` (it
    fails); ``r`` more probes can tell ``2**r`` outcomes apart.
    """
    reach = 2 ** max(probes_left - 1, 0)
    low = max(lo + 1, hi - reach)
    high = min(hi - 1, lo + reach)
    if low > high:  # the budget cannot hold any more (only when called with too few probes)
        low = high = (lo + hi) // 2
    return max(low, min(high, _desired(lo, hi, top, predicted, streak, fresh)))


def bisect_frontier(
    values: Sequence[int],
    probe: Callable[[int], ProbeRecord | Mapping[str, Any] | str | bool],
    *,
    predicted: float | None = None,
    recalibrate: Callable[[ProbeRecord], float | None] | None = None,
    passing: Iterable[str] = PASS_STATUSES,
    failing: Iterable[str] = FAIL_STATUSES,
    extra_probes: int = EXTRA_PROBES,
) -> SearchOutcome:
    """Find the largest value that runs, probing at most :func:`max_probes` values.

    ``values``: the ascending step grid. ``probe(value)``: runs (or looks up) one probe.
    ``predicted``: the predicted frontier value (None: plain bisection from the middle); it is
    rounded onto the grid and probed first. After a wrong-side first probe the bracket is
    expanded from the prediction by 1, 2, 4, ... steps until the other side is found, then
    bisected. ``recalibrate(record)``, if given, may return a corrected predicted frontier after
    each probe (e.g. scaled by measured / predicted memory); a corrected prediction inside the
    bracket is probed next. Every choice is clamped so that the search never exceeds its probe
    budget, however wrong the prediction. ``passing`` / ``failing``: the probe statuses that
    count as runs / does not run; any other status stops the search with that status.

    Returns the :class:`SearchOutcome` (status one of :data:`SEARCH_STATUSES`). Raises
    ValueError when ``values`` is empty or not strictly ascending; what ``probe`` or
    ``recalibrate`` raise propagates.
    """
    values = list(values)
    if any(b <= a for a, b in zip(values, values[1:], strict=False)):
        raise ValueError("values must be strictly ascending")
    passing, failing = frozenset(passing), frozenset(failing)
    top = len(values)
    budget = max_probes(top, extra_probes)
    lo, hi = -1, top
    guess = None if predicted is None else nearest_index(values, predicted)
    first_guess = guess
    streak = 0
    fresh = False
    records: list[ProbeRecord] = []
    status: str | None = None
    while hi - lo > 1:
        index = next_probe_index(lo, hi, top, guess, streak, budget - len(records), fresh)
        expanding = guess is not None and not (lo < guess < hi) and (hi == top or lo == -1)
        record = ProbeRecord.coerce(values[index], probe(values[index]))
        record.value = values[index]
        records.append(record)
        if record.status in passing:
            lo = index
        elif record.status in failing:
            hi = index
        else:
            status = record.status
            break
        streak = streak + 1 if expanding else 0
        fresh = False
        if recalibrate is not None:
            corrected = recalibrate(record)
            if corrected is not None:
                guess = nearest_index(values, corrected)
                fresh = True
                if lo < guess < hi:
                    streak = 0
    return _outcome(values, lo, hi, status, budget, first_guess, records)


def _outcome(
    values: list[int],
    lo: int,
    hi: int,
    status: str | None,
    budget: int,
    first_guess: int | None,
    records: list[ProbeRecord],
) -> SearchOutcome:
    """The :class:`SearchOutcome` of a finished search: bracket ``(lo, hi)`` (indices into
    ``values``; -1 / ``len(values)`` = no value known to run / to fail) and ``status`` (None:
    the bracket closed, so found / above_max / below_min)."""
    top = len(values)
    if status is None:
        status = "above_max" if lo == top - 1 else "below_min" if lo == -1 else "found"
    found = status in ("found", "above_max")
    return SearchOutcome(
        status=status,
        frontier=values[lo] if found else None,
        first_fail=values[hi] if hi < top else None,
        largest_ok=values[lo] if lo >= 0 else None,
        values_min=values[0],
        values_max=values[-1],
        step=values[1] - values[0] if top > 1 else 1,
        brute_force=top,
        max_probes=budget,
        goal_probes=goal_probes(top),
        predicted=None if first_guess is None or first_guess < 0 else values[first_guess],
        predicted_index=first_guess,
        probes=records,
    )
