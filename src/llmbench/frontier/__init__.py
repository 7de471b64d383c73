"""Out-of-memory frontier: the largest sequence length (or batch) that runs, found by bisection.

For a fixed (model, quant, attn, dtype, batch) the search finds the largest sequence length on
the grid ``seq_min, seq_min + step, ..., <= seq_max`` whose cell runs; for a fixed (..., seq)
it finds the largest batch the same way. Every probe is an ordinary cell, measured by
``runner.run_cell`` in its own process and written as an ordinary cell JSON.

The module has three layers, so that the search can be tested without running anything:

1. Pure search (:func:`bisect_frontier`): integers on a step grid, a ``probe(value)`` callable
   and an optional predicted frontier. No I/O.
2. Probing (:func:`make_probe`, :func:`run_search`): turns a value into a cell, reuses an
   existing probe JSON, or runs the cell, and writes the search-result JSON.
3. Planning and tables (:func:`plan`, :func:`table`): which searches a config asks for, and
   one row per search for ``results/tables/frontier.csv``.

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

Probe reuse: a probe JSON already at ``probes/{cell.relpath}`` is reused instead of run when it
is a valid cell measured with the same settings (budget, measurement, device, probe
environment; threads aside) and has a decisive status (ok, oom, unsupported, unavailable,
check_failed); error/timeout/crashed probes and corrupt files are run again.

Assumption (monotonicity): memory grows with sequence length and batch, so if a value runs,
every smaller value runs, and if it fails for memory, every larger value fails. The search
never probes a value outside the current bracket, so it never sees a contradiction; a
non-monotone configuration (noise near the boundary) yields *a* boundary point, exact to the
step only where the assumption holds. ``scripts/frontier_brute.py`` measures the cells around
each found frontier to check it.

Probe statuses (see failures.STATUSES):

- ``ok``: runs. ``oom``: does not run (the frontier signal).
- ``check_failed``: the cell ran, but a truth check failed (quantization not applied,
  attention not the one requested), so its memory is not that of the configuration asked for:
  the search stops and reports ``check_failed`` instead of a frontier.
- ``unsupported``/``unavailable``: the configuration cannot run at any size here; the search
  stops at once and reports that status (typically after one probe).
- ``error``/``timeout``/``crashed``: not a memory verdict; the search stops and reports the
  status, keeping the largest value that ran so far (``largest_ok``) as a lower bound.

Search statuses: ``found`` (``frontier`` ran, ``first_fail`` = frontier + step ran out of
memory), ``above_max`` (everything up to the grid's maximum ran: ``frontier`` is the maximum,
a lower bound, ``first_fail`` is None), ``below_min`` (the minimum already ran out of memory:
``frontier`` is None), or the stopping probe status above.
"""

from __future__ import annotations

import math
import os
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from llmbench import GIB
from llmbench.grid.spec import Cell

PASS_STATUSES: frozenset[str] = frozenset({"ok"})
"""Probe statuses that count as "runs"."""

FAIL_STATUSES: frozenset[str] = frozenset({"oom"})
"""Probe statuses that count as "does not run" (out of memory)."""

SEARCH_STATUSES: tuple[str, ...] = (
    "found",
    "above_max",
    "below_min",
    "check_failed",
    "unsupported",
    "unavailable",
    "error",
    "timeout",
    "crashed",
)
"""Outcomes of a search (module docstring)."""

AXES: tuple[str, ...] = ("seq", "batch")
"""Axis a search moves along; the other one is held fixed."""

REUSABLE_STATUSES: frozenset[str] = frozenset(
    {"ok", "oom", "unsupported", "unavailable", "check_failed"}
)
"""Probe statuses an existing probe JSON is reused with. error/timeout/crashed may be transient
(a killed job, a busy node), so those probes are run again."""

EXTRA_PROBES = 3
"""Probes a search may spend beyond plain bisection's worst case to follow the prediction.
With 1 the worst case never exceeds the issue's goal ``log2(range / step) + 2`` (rounded up),
but the search must then leave a correct prediction whenever the frontier sits far from the
middle of the range; with 3 the simulated searches (linear and quadratic memory curves,
predictions off by ~30 %, with recalibration) averaged 2.6-3 probes and never exceeded the
goal, at a worst case of ``ceil(log2(n + 1)) + 3``."""

SEARCH_SCHEMA_VERSION = 1


# ---------------------------------------------------------------------------------------------
# 1. Pure search
# ---------------------------------------------------------------------------------------------


def grid_values(minimum: int, maximum: int, step: int) -> list[int]:
    """The values a search can return: ``minimum + k * step`` up to ``maximum`` (rounded down
    onto the grid)."""
    if step <= 0:
        raise ValueError(f"step must be positive, got {step}")
    if minimum <= 0 or maximum < minimum:
        raise ValueError(f"need 0 < minimum <= maximum, got [{minimum}, {maximum}]")
    return list(range(minimum, maximum + 1, step))


def max_probes(n_values: int, extra: int = EXTRA_PROBES) -> int:
    """Probes a search may use at most: ``ceil(log2(n_values + 1)) + extra``.

    Plain bisection needs ``ceil(log2(n_values + 1))`` probes to tell the ``n_values + 1``
    possible outcomes apart (nothing runs, or the frontier is one of the values); ``extra`` is
    the room the search has to follow the prediction (module docstring).
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
    budget, however wrong the prediction.
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


# ---------------------------------------------------------------------------------------------
# 2. Searches, probes and their JSON
# ---------------------------------------------------------------------------------------------


@dataclass(frozen=True, order=True)
class Search:
    """One frontier search: a configuration and the axis it moves along.

    ``axis`` "seq": the largest sequence length at batch ``fixed``; "batch": the largest batch
    at sequence length ``fixed``.
    """

    model: str
    quant: str
    attn: str
    dtype: str
    axis: str
    fixed: int

    def __post_init__(self) -> None:
        if self.axis not in AXES:
            raise ValueError(f"axis must be one of {', '.join(AXES)}, got {self.axis!r}")
        self.cell(1)  # validates model/quant/attn/dtype/fixed like a cell

    @property
    def name(self) -> str:
        """File stem: ``seq_b{batch}`` or ``batch_s{seq}``."""
        return f"seq_b{self.fixed}" if self.axis == "seq" else f"batch_s{self.fixed}"

    @property
    def relpath(self) -> str:
        """Path of the search-result JSON below the searches directory."""
        return f"{self.model}/{self.quant}/{self.attn}/{self.dtype}/{self.name}.json"

    def cell(self, value: int) -> Cell:
        """The cell a probe at ``value`` measures."""
        batch, seq = (self.fixed, value) if self.axis == "seq" else (value, self.fixed)
        return Cell(self.model, self.quant, self.attn, self.dtype, batch, seq)

    @classmethod
    def from_wildcards(cls, values: Mapping[str, Any]) -> Search:
        """Build from Snakemake wildcards (model, quant, attn, dtype, search=<name>)."""
        name = str(values["search"])
        axis, _, fixed = name.partition("_")
        if axis not in AXES or fixed[:1] != ("b" if axis == "seq" else "s"):
            raise ValueError(f"search name {name!r} is not seq_b<batch> or batch_s<seq>")
        return cls(
            str(values["model"]),
            str(values["quant"]),
            str(values["attn"]),
            str(values["dtype"]),
            axis,
            int(fixed[1:]),
        )

    def to_dict(self) -> dict[str, Any]:
        """JSON form, with the fixed axis named."""
        return {**asdict(self), "name": self.name}


def search_values(search: Search, section: Mapping[str, Any]) -> list[int]:
    """The step grid a search walks, from the config's ``frontier`` section."""
    if search.axis == "seq":
        return grid_values(section["seq_min"], section["seq_max"], section["step"])
    return grid_values(section["batch_min"], section["batch_max"], section["batch_step"])


def plan(section: Mapping[str, Any], models: Mapping[str, Any] | None = None) -> list[Search]:
    """Every search a ``frontier`` section asks for: per model × quant × attn × dtype, one seq
    search per batch in ``batch`` and one batch search per sequence length in ``seq``."""
    searches = []
    for model in section["models"]:
        if models is not None and model not in models:
            raise ValueError(
                f"frontier.models: model {model!r} is not defined under 'models' "
                f"(defined: {', '.join(sorted(models))})"
            )
        for quant in section["quant"]:
            for attn in section["attn"]:
                for dtype in section["dtype"]:
                    for batch in section["batch"]:
                        searches.append(Search(model, quant, attn, dtype, "seq", batch))
                    for seq in section["seq"]:
                        searches.append(Search(model, quant, attn, dtype, "batch", seq))
    return sorted(set(searches))


def probe_settings(config: Mapping[str, Any], section: Mapping[str, Any]) -> dict[str, Any]:
    """Settings of every probe: the cell settings with the frontier's overrides (lighter
    measurement, its own budget and time limit when set) and the probe environment."""
    from llmbench.grid.plan import cell_settings

    settings = {k: v for k, v in cell_settings(config).items()}
    settings["measurement"] = {**settings["measurement"], **(section.get("measurement") or {})}
    if section.get("memory_budget_gib") is not None:
        settings["memory_budget_gib"] = section["memory_budget_gib"]
    if section.get("cell_timeout_s") is not None:
        settings["cell_timeout_s"] = section["cell_timeout_s"]
    threshold = section.get("cpu_malloc_mmap_threshold_bytes")
    settings["probe_environment"] = (
        {"MALLOC_MMAP_THRESHOLD_": str(int(threshold))} if threshold is not None else {}
    )
    return settings


def probe_device(settings: Mapping[str, Any], has_cuda: bool) -> str:
    """Where probes run, decided in the parent (which never imports torch)."""
    if settings["device"] == "cpu" or (settings["device"] == "auto" and not has_cuda):
        return "cpu"
    return "cuda"


def _comparable(settings: Mapping[str, Any]) -> dict[str, Any]:
    """Settings as compared for probe reuse (threads only change speed, not memory)."""
    import json

    return json.loads(json.dumps({k: v for k, v in settings.items() if k != "threads"}))


def budget_peak_bytes(result: Mapping[str, Any]) -> tuple[int | None, bool]:
    """The largest per-phase peak of what the memory budget is checked against, and whether it
    is complete: CUDA peak reserved (summed over devices; at an out-of-memory error only what
    was reserved before the failed allocation, so a lower bound) or CPU peak RSS growth over
    the pre-load baseline (measured after the phase, so complete)."""
    memory = result.get("memory") or {}
    phases = memory.get("phases") or {}
    if (result.get("cell") or {}).get("device") == "cuda":
        peaks = [
            sum(d.get("peak_reserved_bytes") or 0 for d in phase["devices"])
            for phase in phases.values()
            if phase.get("devices")
        ]
        exact = result.get("status") != "oom"
    else:
        base = memory.get("host_rss_before_load_bytes")
        peaks = [
            phase["host"]["peak_rss_bytes"] - base
            for phase in phases.values()
            if base is not None and (phase.get("host") or {}).get("peak_rss_bytes") is not None
        ]
        exact = True
    return (max(peaks), exact) if peaks else (None, False)


def reusable_probe(path: Path, settings: Mapping[str, Any]) -> dict[str, Any] | None:
    """An existing probe JSON at ``path`` that this search may reuse, or None.

    Reused: a valid cell JSON measured with the same settings (budget, measurement, device,
    probe environment...) and a decisive status (:data:`REUSABLE_STATUSES`).
    """
    from llmbench.record.cell import read_cell_result

    if not path.is_file():
        return None
    try:
        document = read_cell_result(path)
    except (ValueError, OSError):
        return None
    if document.get("status") not in REUSABLE_STATUSES:
        return None
    measured, wanted = _comparable(document.get("settings") or {}), _comparable(settings)
    if (document.get("cell") or {}).get("device") == "cuda":  # host malloc: no GPU effect
        measured.pop("probe_environment", None)
        wanted.pop("probe_environment", None)
    if measured != wanted:
        return None
    return document


def _record(value: int, result: Mapping[str, Any], relpath: str, reused: bool) -> ProbeRecord:
    peak, _ = budget_peak_bytes(result)
    return ProbeRecord(
        value=value,
        status=str(result.get("status")),
        reused=reused,
        path=relpath,
        peak_bytes=peak,
        wall_s=(result.get("timing_breakdown") or {}).get("wall_s"),
        reason=result.get("reason"),
    )


def make_probe(
    search: Search,
    *,
    settings: Mapping[str, Any],
    model_entry: Mapping[str, Any],
    base_dir: str | None,
    prequantized_dir: str | None,
    probes_dir: Path | str,
    logs_dir: Path | str | None,
    timeout_s: float,
    runner: Callable[..., dict[str, Any]] | None = None,
    log: Callable[[str], None] = print,
    results: dict[int, dict[str, Any]] | None = None,
) -> Callable[[int], ProbeRecord]:
    """``probe(value)``: reuse ``probes_dir/{cell.relpath}`` if :func:`reusable_probe` allows,
    else measure the cell with ``runner`` (default ``runner.run_cell``: its own process) and
    write it there. Full probe results are collected in ``results`` when given."""
    if runner is None:
        from llmbench.run.runner import run_cell as runner
    probes_dir = Path(probes_dir)

    def probe(value: int) -> ProbeRecord:
        cell = search.cell(value)
        path = probes_dir / cell.relpath
        existing = reusable_probe(path, settings)
        if existing is not None:
            record = _record(value, existing, cell.relpath, reused=True)
            log(f"probe {cell.relpath}: {record.status} (reused {path})")
        else:
            started = time.perf_counter()
            with _environment(settings.get("probe_environment") or {}):
                result = runner(
                    cell=cell,
                    settings=settings,
                    model_entry=model_entry,
                    base_dir=base_dir,
                    prequantized_dir=prequantized_dir,
                    out_path=path,
                    log_path=None
                    if logs_dir is None
                    else Path(logs_dir) / cell.relpath.replace(".json", ".log"),
                    timeout_s=timeout_s,
                )
            record = _record(value, result, cell.relpath, reused=False)
            if record.wall_s is None:
                record.wall_s = time.perf_counter() - started
            existing = result
            log(
                f"probe {cell.relpath}: {record.status} in {record.wall_s:.1f} s"
                + (f" ({record.reason})" if record.reason else "")
            )
        if results is not None:
            results[value] = dict(existing)
        return record

    return probe


class _environment:
    """Set environment variables for the probes' child processes, restore them afterwards."""

    def __init__(self, variables: Mapping[str, str]) -> None:
        self.variables = dict(variables)
        self.saved: dict[str, str | None] = {}

    def __enter__(self) -> None:
        for key, value in self.variables.items():
            self.saved[key] = os.environ.get(key)
            os.environ[key] = value

    def __exit__(self, *exc: object) -> None:
        for key, value in self.saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value


# ---------------------------------------------------------------------------------------------
# Prediction: the first probe, and corrections from measured probes
# ---------------------------------------------------------------------------------------------

Predictor = Callable[..., int]
"""``predicted_peak_bytes(model_config, cell, *, bnb_4bit_compute_dtype) -> int``."""


DEFAULT_CUDA_CONTEXT_BYTES = 512 * 2**20
"""CUDA context of a probe process, outside PyTorch's allocator, when llmbench.predict does not
say (it measured 518 MiB on the H100)."""


def default_predictor(device: str = "cpu", decode_tokens: int | None = None) -> Predictor | None:
    """The prediction of what the budget is checked against, from llmbench.predict (None where
    that module is missing).

    CPU: ``predicted_peak_bytes`` (peak allocated; compared with the RSS-growth budget). CUDA:
    the predicted peak *reserved* bytes (allocated + allocator slack), which is what
    ``set_per_process_memory_fraction`` and the device's capacity limit, when the module
    offers it (``predict(...).reserved_need``); else peak allocated.
    """
    try:
        from llmbench import predict as model
    except ImportError:
        return None
    if device != "cuda" or not hasattr(model, "predict"):
        return model.predicted_peak_bytes
    import inspect

    extra = {}
    if decode_tokens is not None and "decode_tokens" in inspect.signature(model.predict).parameters:
        extra["decode_tokens"] = decode_tokens

    def reserved_need(model_config, cell, *, bnb_4bit_compute_dtype="bfloat16"):
        prediction = model.predict(
            model_config, cell, bnb_4bit_compute_dtype=bnb_4bit_compute_dtype, **extra
        )
        return int(getattr(prediction, "reserved_need", prediction.peak_allocated))

    return reserved_need


def cuda_context_bytes() -> int:
    """Device memory a process holds outside PyTorch's allocator (CUDA context, kernels)."""
    try:
        from llmbench.predict import CUDA_CONTEXT_BYTES
    except ImportError:
        return DEFAULT_CUDA_CONTEXT_BYTES
    return int(CUDA_CONTEXT_BYTES)


def model_config(model_entry: Mapping[str, Any], base: Path | None = None) -> dict | None:
    """The architecture config.json of a model entry (random-weight or local pretrained)."""
    import json

    from llmbench import REPO_ROOT

    if "architecture" in model_entry:
        candidates = [Path(model_entry["architecture"])]
    else:
        candidates = [Path(model_entry.get("pretrained", "")) / "config.json"]
    for candidate in list(candidates):
        if not candidate.is_absolute():
            candidates.append((base or REPO_ROOT) / candidate)
    for candidate in candidates:
        if candidate.is_file():
            return json.loads(candidate.read_text())
    return None


def visible_device_totals() -> list[int]:
    """Total memory (bytes) of each CUDA device this process may use, read through NVML
    (the parent never initialises CUDA); empty where NVML sees none."""
    from llmbench.host import nvml

    visible = os.environ.get("CUDA_VISIBLE_DEVICES")
    if visible is None:
        handles = [nvml._call("nvmlDeviceGetHandleByIndex", i) for i in range(nvml.device_count())]
    else:
        handles = []
        for token in (t.strip() for t in visible.split(",") if t.strip()):
            if token.isdigit():
                handles.append(nvml._call("nvmlDeviceGetHandleByIndex", int(token)))
            else:
                handles.append(nvml.handle_for_uuid(token))
    totals = [nvml.device_total_bytes(h) for h in handles if h is not None]
    return [t for t in totals if t]


def capacity_bytes(settings: Mapping[str, Any], device: str) -> float | None:
    """What a probe's peak must stay under: the memory budget (per device, times the devices
    the model is spread over; on CUDA it caps the allocator's reserved bytes) or, on CUDA
    without one, the devices' total memory less a CUDA context each."""
    budget = settings.get("memory_budget_gib")
    if device == "cpu":
        return None if budget is None else budget * GIB
    totals = visible_device_totals()
    if settings.get("device_map") == "single":
        totals = totals[:1]
    if budget is not None:
        return budget * GIB * max(len(totals), 1)
    return float(sum(totals) - len(totals) * cuda_context_bytes()) if totals else None


@dataclass
class Prediction:
    """The predicted frontier of one search, and the pieces to correct it after each probe."""

    values: list[int]
    predict_bytes: Callable[[int], float]
    capacity_bytes: float
    frontier: int | None = None
    calibrations: list[dict[str, Any]] = field(default_factory=list)

    @classmethod
    def make(
        cls,
        search: Search,
        values: list[int],
        *,
        predictor: Predictor,
        config: Mapping[str, Any],
        capacity: float,
        compute_dtype: str,
    ) -> Prediction:
        """Predict the frontier: the largest grid value whose predicted peak fits."""

        def predict_bytes(value: int) -> float:
            return float(
                predictor(config, search.cell(value), bnb_4bit_compute_dtype=compute_dtype)
            )

        prediction = cls(values, predict_bytes, capacity)
        index = predicted_index(values, predict_bytes, capacity)
        prediction.frontier = values[index] if index >= 0 else values[0] - 1
        return prediction

    def recalibrate(self, record: ProbeRecord, exact: bool = True) -> float | None:
        """Correct the prediction with a measured probe and predict the frontier again.

        The measured peak is the quantity the budget is checked against, so allocator slack
        and host overheads are folded in. With one measurement the prediction is scaled by
        measured / predicted; with two or more, measured = a + b * predicted is fitted through
        the two measurements nearest the capacity (this also absorbs a constant offset, such
        as a CPU process's start-up growth). Only complete measurements are used (not the
        reading of a CUDA out-of-memory, which stops at the failed allocation).
        """
        if record.peak_bytes is None or not exact or record.status not in ("ok", "oom"):
            return None
        predicted = self.predict_bytes(record.value)
        record.predicted_bytes = predicted
        if predicted <= 0 or record.peak_bytes <= 0:
            return None
        points = {c["value"]: c for c in self.calibrations}
        points[record.value] = {
            "value": record.value,
            "predicted_bytes": predicted,
            "measured_bytes": float(record.peak_bytes),
        }
        nearest = sorted(
            points.values(), key=lambda c: abs(c["measured_bytes"] - self.capacity_bytes)
        )[:2]
        fit = "ratio"
        scale, offset = record.peak_bytes / predicted, 0.0
        if len(nearest) == 2 and nearest[0]["predicted_bytes"] != nearest[1]["predicted_bytes"]:
            (x0, y0), (x1, y1) = ((c["predicted_bytes"], c["measured_bytes"]) for c in nearest)
            slope = (y1 - y0) / (x1 - x0)
            if slope > 0:
                fit, scale, offset = "affine", slope, y0 - slope * x0
        index = predicted_index(
            self.values, self.predict_bytes, (self.capacity_bytes - offset) / scale
        )
        frontier = self.values[index] if index >= 0 else self.values[0] - 1
        points[record.value].update(fit=fit, scale=scale, offset_bytes=offset, frontier=frontier)
        self.calibrations = sorted(points.values(), key=lambda c: c["value"])
        return frontier


# ---------------------------------------------------------------------------------------------
# Running one search
# ---------------------------------------------------------------------------------------------


def run_search(
    search: Search,
    *,
    section: Mapping[str, Any],
    settings: Mapping[str, Any],
    model_entry: Mapping[str, Any],
    base_dir: str | None,
    prequantized_dir: str | None,
    probes_dir: Path | str,
    out_path: Path | str,
    logs_dir: Path | str | None = None,
    timeout_s: float | None = None,
    has_cuda: bool | None = None,
    predictor: Predictor | None | str = "default",
    runner: Callable[..., dict[str, Any]] | None = None,
    log: Callable[[str], None] = print,
) -> dict[str, Any]:
    """Run one search (probes in their own processes), write and return its result JSON.

    ``predictor``: "default" = :func:`default_predictor`; None = no prediction (bisection
    from the middle). Prediction is skipped when ``section['use_prediction']`` is false or no
    capacity is known (CPU without a budget).
    """
    from llmbench.grid.plan import host_has_cuda
    from llmbench.record.cell import write_json_atomic

    started = time.perf_counter()
    values = search_values(search, section)
    has_cuda = host_has_cuda() if has_cuda is None else has_cuda
    device = probe_device(settings, has_cuda)
    if device != "cpu":  # the malloc threshold steadies CPU RSS; GPU probes keep warm starts
        settings = {**settings, "probe_environment": {}}
    if device == "cpu" and settings.get("memory_budget_gib") is None:
        raise ValueError(
            "a frontier search on the CPU needs a memory budget (frontier.memory_budget_gib or "
            "memory_budget_gib); without one probes would grow until the host runs out of "
            "memory. Use --configfile config/frontier-tiny.yaml for the CPU frontier."
        )
    if predictor == "default":
        predictor = default_predictor(device, settings["measurement"].get("decode_tokens"))
    capacity = capacity_bytes(settings, device)
    architecture = model_config(model_entry)
    prediction: Prediction | None = None
    prediction_note = None
    if not section.get("use_prediction", True):
        prediction_note = "disabled (frontier.use_prediction: false)"
    elif predictor is None:
        prediction_note = "no predictor (llmbench.predict not available): plain bisection"
    elif capacity is None:
        prediction_note = "no capacity known (no budget, no GPU memory total): plain bisection"
    elif architecture is None:
        prediction_note = "no architecture config.json for this model: plain bisection"
    else:
        try:
            prediction = Prediction.make(
                search,
                values,
                predictor=predictor,
                config=architecture,
                capacity=capacity,
                compute_dtype=settings["bnb_4bit_compute_dtype"],
            )
        except Exception as exc:  # noqa: BLE001 - a broken prediction must not stop the search
            prediction_note = f"prediction failed ({type(exc).__name__}: {exc}): plain bisection"
    log(
        f"search {search.relpath}: {len(values)} values {values[0]}..{values[-1]} "
        f"step {values[1] - values[0] if len(values) > 1 else '-'}, at most "
        f"{max_probes(len(values), int(section.get('extra_probes', EXTRA_PROBES)))} probes, "
        f"predicted frontier "
        f"{prediction.frontier if prediction else None} ({prediction_note or 'llmbench.predict'})"
    )
    full: dict[int, dict[str, Any]] = {}
    probe = make_probe(
        search,
        settings=settings,
        model_entry=model_entry,
        base_dir=base_dir,
        prequantized_dir=prequantized_dir,
        probes_dir=probes_dir,
        logs_dir=logs_dir,
        timeout_s=float(settings["cell_timeout_s"] if timeout_s is None else timeout_s),
        runner=runner,
        log=log,
        results=full,
    )

    recalibrate = None
    if prediction is not None and section.get("recalibrate", True):

        def recalibrate(record: ProbeRecord) -> float | None:
            _, exact = budget_peak_bytes(full.get(record.value) or {})
            return prediction.recalibrate(record, exact)

    outcome = bisect_frontier(
        values,
        probe,
        predicted=None if prediction is None else prediction.frontier,
        recalibrate=recalibrate,
        extra_probes=int(section.get("extra_probes", EXTRA_PROBES)),
    )
    document = {
        "schema_version": SEARCH_SCHEMA_VERSION,
        "search": search.to_dict(),
        **outcome.to_dict(),
        "probes_dir": str(probes_dir),
        "device": device,
        "memory_budget_gib": settings.get("memory_budget_gib"),
        "capacity_bytes": capacity,
        "prediction": {
            "frontier": None if prediction is None else prediction.frontier,
            "note": prediction_note,
            "calibrations": [] if prediction is None else prediction.calibrations,
        },
        "settings": dict(settings),
        "wall_s": time.perf_counter() - started,
    }
    write_json_atomic(out_path, document)
    log(
        f"search {search.relpath}: {outcome.status}, frontier {outcome.frontier}, first fail "
        f"{outcome.first_fail}, {outcome.n_probes} probes (brute force {outcome.brute_force}, "
        f"at most {outcome.max_probes}) in {document['wall_s']:.0f} s"
    )
    return document


# ---------------------------------------------------------------------------------------------
# 3. Which frontier a run uses, and the table
# ---------------------------------------------------------------------------------------------

TINY_FRONTIER = "frontier-tiny.yaml"
"""config/<this>: the CPU frontier (tiny models, artificial budget); a config file whose
``frontier`` section replaces the configured one (``--configfile config/frontier-tiny.yaml``)."""


@dataclass(frozen=True)
class FrontierChoice:
    """The frontier section a run uses, and why (a message when it was replaced)."""

    section: Mapping[str, Any]
    message: str | None


def choose_section(config: Mapping[str, Any], has_cuda: bool, config_dir: Path) -> FrontierChoice:
    """The configured ``frontier`` section, or on a host without CUDA (``on_missing_gpu:
    smoke``) the tiny CPU one, unless the configured one is CPU-ready (has a memory budget)."""
    import yaml

    section = config.get("frontier")
    if section is None:
        raise ValueError("the config has no 'frontier' section (see config/config.yaml)")
    budget = section.get("memory_budget_gib", config.get("memory_budget_gib"))
    if budget is None:
        budget = config.get("memory_budget_gib")
    wants_gpu = config["device"] in ("auto", "cuda")
    if has_cuda or not wants_gpu or budget is not None or config["on_missing_gpu"] == "ignore":
        return FrontierChoice(section, None)
    if config["on_missing_gpu"] == "fail":
        raise RuntimeError(
            "No CUDA GPU was found on this host, and the frontier needs one (on_missing_gpu: "
            f"fail). Run on a GPU host, or pass --configfile config/{TINY_FRONTIER}."
        )
    tiny = yaml.safe_load((config_dir / TINY_FRONTIER).read_text())["frontier"]
    return FrontierChoice(
        tiny,
        "No CUDA GPU was found on this host: running the tiny CPU frontier "
        f"(config/{TINY_FRONTIER}, artificial memory budget) instead of the configured one. "
        f"Pass --configfile config/{TINY_FRONTIER} to silence this.",
    )


TABLE_COLUMNS = (
    "model",
    "quant",
    "attn",
    "dtype",
    "search",
    "batch",
    "seq",
    "status",
    "frontier",
    "first_fail",
    "largest_ok",
    "min",
    "max",
    "step",
    "predicted",
    "prediction_error_steps",
    "probes",
    "probes_run",
    "probes_reused",
    "max_probes",
    "goal_probes",
    "brute_force",
    "reduction",
    "device",
    "memory_budget_gib",
    "frontier_peak_gib",
    "wall_s",
    "probe_values",
    "probe_statuses",
    "path",
)
"""Columns of results/tables/frontier.csv, one row per search. ``batch``/``seq``: the fixed
axis (the searched one is empty); ``reduction``: brute_force / probes."""


def table_row(document: Mapping[str, Any], path: str) -> dict[str, Any]:
    """One frontier.csv row from a search-result JSON."""
    search = document["search"]
    probes = document["probes"]
    step = document["step"]
    error = None
    if document["frontier"] is not None and document.get("predicted_index") is not None:
        error = (document["frontier"] - document["values_min"]) // step - document[
            "predicted_index"
        ]
    peak = next((p["peak_bytes"] for p in probes if p["value"] == document["frontier"]), None)
    return {
        "model": search["model"],
        "quant": search["quant"],
        "attn": search["attn"],
        "dtype": search["dtype"],
        "search": search["axis"],
        "batch": search["fixed"] if search["axis"] == "seq" else None,
        "seq": search["fixed"] if search["axis"] == "batch" else None,
        "status": document["status"],
        "frontier": document["frontier"],
        "first_fail": document["first_fail"],
        "largest_ok": document["largest_ok"],
        "min": document["values_min"],
        "max": document["values_max"],
        "step": step,
        "predicted": document["predicted"],
        "prediction_error_steps": error,
        "probes": document["n_probes"],
        "probes_run": document["probes_run"],
        "probes_reused": document["probes_reused"],
        "max_probes": document["max_probes"],
        "goal_probes": document["goal_probes"],
        "brute_force": document["brute_force"],
        "reduction": document["brute_force"] / max(document["n_probes"], 1),
        "device": document.get("device"),
        "memory_budget_gib": document.get("memory_budget_gib"),
        "frontier_peak_gib": None if peak is None else peak / GIB,
        "wall_s": document.get("wall_s"),
        "probe_values": " ".join(str(p["value"]) for p in probes),
        "probe_statuses": " ".join(p["status"] for p in probes),
        "path": path,
    }


def table(paths: Iterable[str | Path]) -> Any:
    """frontier.csv as a DataFrame: one row per search-result JSON."""
    import json

    import pandas as pd

    rows = [table_row(json.loads(Path(p).read_text()), str(p)) for p in paths]
    frame = pd.DataFrame(rows, columns=list(TABLE_COLUMNS))
    for column in ("batch", "seq", "frontier", "first_fail", "largest_ok", "predicted"):
        frame[column] = frame[column].astype("Int64")
    return frame.sort_values(["model", "quant", "attn", "dtype", "search", "batch", "seq"])
