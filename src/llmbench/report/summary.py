"""The run summary printed after Snakemake's own output (the Snakefile's ``onsuccess`` and
``onerror`` handlers): the grid's cells per status, the slowest cells, where the tables and
figures are, every cell that did not end ``ok`` with its one-line reason, the grid's cells that
have no JSON yet, and the frontier probes when there are any.

It reads the cell JSONs themselves (no pandas: it runs inside the Snakemake process, and the
tables may be older than the cells or absent when the run's target was not ``all``).

May import ``llmbench.grid`` (``Cell``) and ``llmbench.measure.failures`` (the statuses).
"""

from __future__ import annotations

import json
import sys
import textwrap
from collections import Counter
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import TextIO

from llmbench.grid.spec import Cell
from llmbench.measure.failures import in_status_order

SLOWEST = 5
"""How many of the slowest cells the summary names."""
REASON_CHARS = 110
"""A failure's reason is cut to its first line and this many characters."""
MISSING_SHOWN = 5
"""How many missing cells are named (the rest are counted)."""
WIDTH = 100


@dataclass(frozen=True)
class Outcome:
    """What one cell JSON says: its name (the JSON's path below ``cells/``, without
    ``.json``), status, wall time in seconds (``timing_breakdown.wall_s``; None when not
    recorded) and one-line reason (empty for ``ok``)."""

    name: str
    status: str
    wall_s: float | None
    reason: str


def one_line(text: str, limit: int = REASON_CHARS) -> str:
    """The first non-empty line of ``text``, cut to ``limit`` characters (with an ellipsis)."""
    line = next((part.strip() for part in str(text).splitlines() if part.strip()), "")
    return line if len(line) <= limit else line[: limit - 1].rstrip() + "…"


def read_outcome(path: Path, name: str) -> Outcome:
    """The outcome of the cell JSON at ``path``; a file that is no readable cell JSON becomes
    status ``unreadable`` with the error as its reason (never raises for a bad file)."""
    try:
        result = json.loads(path.read_text())
        status = str(result["status"])
    except (OSError, ValueError, KeyError, TypeError) as exc:
        return Outcome(name, "unreadable", None, one_line(f"{type(exc).__name__}: {exc}"))
    wall = (result.get("timing_breakdown") or {}).get("wall_s")
    reason = ""
    if status != "ok":
        error = result.get("error") or {}
        reason = result.get("reason") or error.get("message") or error.get("type") or ""
        reason = one_line(reason) or "no reason recorded"
    return Outcome(name, status, wall if isinstance(wall, int | float) else None, reason)


def collect(folder: Path, cells: Iterable[Cell] | None) -> tuple[list[Outcome], list[str]]:
    """Outcomes of the cells' JSONs under ``folder`` (every JSON there when ``cells`` is None)
    and the names of the cells that have none."""
    if cells is None:
        names = sorted(str(p.relative_to(folder))[:-5] for p in folder.rglob("*.json"))
    else:
        names = [cell.relpath[:-5] for cell in cells]
    found = {n: (folder / f"{n}.json").is_file() for n in names}
    outcomes = [read_outcome(folder / f"{n}.json", n) for n in names if found[n]]
    return outcomes, [n for n in names if not found[n]]


def counted(n: int, noun: str, plural: str | None = None) -> str:
    """``1 cell``, ``2 cells``: ``n`` and ``noun``, in the plural (``plural``, default
    ``noun + "s"``) unless ``n`` is 1."""
    return f"{n} {noun if n == 1 else plural or noun + 's'}"


def status_counts(outcomes: Iterable[Outcome]) -> str:
    """``8 ok, 1 unsupported``: counts in the order of ``STATUSES``, unknown statuses last."""
    counts = Counter(o.status for o in outcomes)
    return ", ".join(f"{counts[s]} {s}" for s in in_status_order(counts))


def _wrapped(label: str, text: str) -> list[str]:
    return textwrap.wrap(
        text,
        width=WIDTH,
        initial_indent=f"  {label:<9}",
        subsequent_indent=" " * 11,
        break_on_hyphens=False,
        break_long_words=False,
    )


def _files(roots: Iterable[Path], folder: str, suffixes: tuple[str, ...]) -> list[str]:
    """Per root: ``root/folder/: a.csv, b.csv`` (``a, b (.png, .svg)`` when every name has
    every suffix), only for files that exist."""
    lines = []
    for root in dict.fromkeys(roots):
        found = sorted(p for p in (root / folder).glob("*") if p.suffix in suffixes)
        stems = list(dict.fromkeys(p.stem for p in found))
        kinds = sorted({p.suffix for p in found})
        if len(found) == len(stems) * len(kinds) > len(stems):
            lines.append(f"{root / folder}/: {', '.join(stems)} ({', '.join(kinds)})")
        elif found:
            lines.append(f"{root / folder}/: {', '.join(p.name for p in found)}")
    return lines


def _frontier(root: Path) -> str | None:
    probes, _ = collect(root / "frontier" / "probes", None)
    searches = list((root / "frontier" / "searches").rglob("*.json"))
    if not probes and not searches:
        return None
    counts = status_counts(probes) or "none"
    searched = counted(len(searches), "search", "searches")
    return f"{counted(len(probes), 'probe')} ({counts}), {searched}"


def _slowest(outcomes: list[Outcome]) -> list[str]:
    timed = sorted((o for o in outcomes if o.wall_s is not None), key=lambda o: -o.wall_s)
    # the cell job's wall time (timing_breakdown.wall_s; cell_wall_s in cells.csv)
    return [f"{o.wall_s:7.1f} s wall  {o.name}" for o in timed[:SLOWEST]]


def _missing(missing: list[str], total: int) -> list[str]:
    shown = ", ".join(missing[:MISSING_SHOWN])
    more = f" and {len(missing) - MISSING_SHOWN} more" if len(missing) > MISSING_SHOWN else ""
    verb = "has" if len(missing) == 1 else "have"
    return _wrapped(
        "missing",
        f"{len(missing)} of the grid's {counted(total, 'cell')} {verb} "
        f"no JSON (not asked for by this run's target, or their job failed): {shown}{more}",
    )


def summarize(
    root: Path | str = "results",
    cells: Iterable[Cell] | None = None,
    *,
    grid: str | None = None,
    report_roots: Iterable[Path | str] = (),
) -> str:
    """The summary text (lines of at most about 100 characters; paths may make them longer).

    ``root``: the run's results folder (cell JSONs under ``root/cells``); ``cells``: the
    selected grid's cells (None: every JSON under ``root/cells``); ``grid``: its name, for the
    heading; ``report_roots``: further folders whose tables and figures are listed (e.g. the
    ``report_root`` of ``snakemake figures``). Wall times are in seconds. Raises OSError only
    when a folder cannot be listed; unreadable cell JSONs are reported, not raised."""
    root = Path(root)
    cells = None if cells is None else list(cells)
    outcomes, missing = collect(root / "cells", cells)
    total = len(outcomes) + len(missing)
    where = f"grid {grid}, " if grid else ""
    lines = [f"llmbench: run summary ({where}{counted(total, 'cell')}, {root / 'cells'}/)"]
    lines += _wrapped("status", status_counts(outcomes) or "no cell JSON yet")
    for i, line in enumerate(_slowest(outcomes)):
        lines.append(f"  {'slowest' if i == 0 else '':<9}{line}")
    roots = [root, *(Path(r) for r in report_roots)]
    for label, folder, suffixes in (
        ("tables", "tables", (".csv", ".parquet")),
        ("figures", "figures", (".png", ".svg")),
    ):
        for text in _files(roots, folder, suffixes) or ["none yet"]:
            lines += _wrapped(label, text)
    frontier = _frontier(root)
    if frontier:
        lines += _wrapped("frontier", frontier)
    failed = sorted((o for o in outcomes if o.status != "ok"), key=lambda o: (o.status, o.name))
    if failed:
        lines.append(f"  not ok   {counted(len(failed), 'cell')}:")
        lines += [f"    {o.status:<14}{o.name}: {o.reason}" for o in failed]
    if missing:
        lines += _missing(missing, total)
    return "\n".join(lines)


def summarize_frontier(root: Path | str = "results") -> str:
    """The summary of a run whose targets were frontier searches only (the grid's cells were
    not asked for, so their status would say nothing about this run): the probes by status
    and the searches under ``root/frontier``, and the frontier table and figure where they
    exist. Raises OSError only when a folder cannot be listed."""
    root = Path(root)
    lines = [f"llmbench: frontier summary ({root / 'frontier'}/)"]
    lines += _wrapped("frontier", _frontier(root) or "no probe or search yet")
    made = [
        str(path)
        for path in (root / "tables" / "frontier.csv", *(root / "figures").glob("frontier.*"))
        if path.is_file()
    ]
    if made:
        lines += _wrapped("files", ", ".join(sorted(made)))
    return "\n".join(lines)


def print_summary(
    *args, file: TextIO | None = None, summarizer: Callable[..., str] | None = None, **kwargs
) -> None:
    """Print ``summarizer(*args, **kwargs)`` (default :func:`summarize`; a run of frontier
    searches alone: :func:`summarize_frontier`) to ``file`` (default stderr). Never raises: a
    summary that fails prints one line saying why, so that it cannot turn a run into an
    error (it is called from Snakemake's ``onsuccess`` and ``onerror``)."""
    stream = sys.stderr if file is None else file
    try:
        text = (summarizer or summarize)(*args, **kwargs)
    except Exception as exc:  # noqa: BLE001 - the handler must never fail the run
        text = f"llmbench: no run summary ({type(exc).__name__}: {one_line(str(exc))})"
    try:
        print(text, file=stream, flush=True)
    except (OSError, ValueError):  # a closed or broken stream: nothing left to tell
        pass
