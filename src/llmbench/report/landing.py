"""The report's first page: what a results folder holds, read from its ``tables/cells.csv``.

Owns :func:`landing`, the data ``workflow/report/workflow.rst`` renders (a one-line summary:
GPU(s), cells, date range, commit(s); cells per status; the seed comparison as numbers) and
the line every figure caption gets (GPU, date, commit). Values are strings ready for
reStructuredText (escaped), so that the Jinja templates only loop and place them.

It runs whenever Snakemake parses the workflow (``workflow/rules/common.smk``), so it reads
the table with the ``csv`` module, not pandas. May import: the standard library and
``llmbench.measure.failures`` (the status vocabulary, no torch).
"""

from __future__ import annotations

import csv
import math
import re
from collections import Counter
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from llmbench.measure.failures import STATUSES, in_status_order, phase_ran

STATUS_ORDER = STATUSES
"""Statuses in the order the status table lists them (others follow, by name)."""

NO_DATE = "not recorded in the cells (see the run's README)"
NOT_RUN = "—"

SEED_COLUMNS = (
    ("load_allocated_gib", "load", "{:.2f}"),
    ("prefill_peak_allocated_gib", "prefill", "{:.2f}"),
    ("prefill_ms_p50", "prefill", "{:.1f}"),
)
"""Seed table numbers: column of cells.csv, the phase it comes from, its format."""

HOST_COLUMNS = {
    "load_allocated_gib": "load_host_rss_gib",
    "prefill_peak_allocated_gib": "prefill_host_peak_rss_gib",
}
"""What a CPU cell (no CUDA memory) shows in place of the seed table's memory columns."""

_RST_SPECIAL = re.compile(r"([\\`*|_<>\[\]])")


def rst_text(value: Any) -> str:
    """``value`` as plain reStructuredText: markup characters escaped, one line."""
    text = " ".join(str(value).split())
    return _RST_SPECIAL.sub(r"\\\1", text)


def _number(text: str | None) -> float | None:
    try:
        value = float(text) if text not in (None, "") else None
    except ValueError:
        return None
    return value if value is not None and math.isfinite(value) else None


def _read_rows(path: Path) -> list[dict[str, str]]:
    with path.open(newline="") as handle:
        return list(csv.DictReader(handle))


def _distinct(rows: Sequence[Mapping[str, str]], column: str) -> list[str]:
    return sorted({row[column] for row in rows if row.get(column)})


def _date_range(rows: Sequence[Mapping[str, str]]) -> str:
    """``2026-11-29``, ``2026-11-25 to 2026-11-29``, or :data:`NO_DATE`; says how many cells
    have a date when only some do (cells recorded before ``finished_at`` existed)."""
    dates = sorted(row["finished_at"][:10] for row in rows if row.get("finished_at"))
    if not dates:
        return NO_DATE
    text = dates[0] if dates[0] == dates[-1] else f"{dates[0]} to {dates[-1]}"
    if len(dates) < len(rows):
        text += f" ({len(dates)} of {len(rows)} cells record a date)"
    return text


def _commits(rows: Sequence[Mapping[str, str]]) -> str:
    commits = [commit[:12] for commit in _distinct(rows, "git_commit")]
    if not commits:
        return "commit not recorded"
    if len(commits) == 1:
        return f"commit {commits[0]}"
    return f"{len(commits)} commits: {', '.join(commits)}"


def _statuses(rows: Sequence[Mapping[str, str]]) -> list[dict[str, Any]]:
    counts = Counter(row.get("status") or "unknown" for row in rows)
    return [{"status": rst_text(s), "cells": counts[s]} for s in in_status_order(counts)]


def _seed_row(row: Mapping[str, str]) -> dict[str, str]:
    status, phase = row.get("status") or "unknown", row.get("phase") or None
    numbers = {}
    for column, needed, form in SEED_COLUMNS:
        source = HOST_COLUMNS.get(column, column) if row.get("device") == "cpu" else column
        value = _number(row.get(source)) if phase_ran(needed, status, phase) else None
        numbers[column] = NOT_RUN if value is None else form.format(value)
    shown = status if status == "ok" or not phase else f"{status} ({phase})"
    return {
        "case": rst_text(row["seed_case"]),
        "variant": rst_text((row.get("seed_variant") or "").removeprefix("as ")),
        "status": rst_text(shown),
        **numbers,
    }


def _seed_rows(rows: Sequence[Mapping[str, str]]) -> list[dict[str, str]]:
    """The cells that stand for the seed notebook's cases: by case, as intended first."""
    cases = [row for row in rows if row.get("seed_case")]
    cases.sort(key=lambda row: (row.get("seed_variant") != "as intended", row["seed_case"]))
    return [_seed_row(row) for row in cases]


def _device(rows: Sequence[Mapping[str, str]]) -> tuple[str, str]:
    """("GPU" or "CPU", the device names)."""
    label = "GPU" if any(row.get("device") == "cuda" for row in rows) else "CPU"
    names = _distinct(rows, "device_name")
    return label, ", ".join(names) if names else "not recorded"


def landing(root: str | Path, *, figures_dir: str | Path | None = None) -> dict[str, Any]:
    """What ``root/tables/cells.csv`` holds, for the report's first page and captions.

    Keys: ``root``, ``cells_csv`` (its path), ``found`` (whether it exists), ``n_cells``,
    ``device_label`` (GPU or CPU), ``devices``, ``date`` (range of the cells'
    ``finished_at``, else :data:`NO_DATE`), ``commits``, ``summary`` (the one-line "what this
    is"), ``caption`` (the line under every figure), ``statuses`` (``status``, ``cells``),
    ``seed`` (one dict per seed-case cell: ``case``, ``variant``, ``status`` and the
    :data:`SEED_COLUMNS`, formatted; :data:`NOT_RUN` where the phase did not run), ``memory``
    (what the seed table's memory columns hold: allocated memory, or host RSS on a CPU run,
    :data:`HOST_COLUMNS`) and ``figures_dir`` (where the figures were drawn, as given). Text
    is rst-escaped. A missing table gives ``found`` False and a summary that says so; it
    never raises for that."""
    root = str(root)
    path = Path(root, "tables", "cells.csv")
    page: dict[str, Any] = {
        "root": rst_text(root),
        "cells_csv": str(path),
        "figures_dir": None if figures_dir is None else rst_text(figures_dir),
        "found": path.is_file(),
        "statuses": [],
        "seed": [],
    }
    if not page["found"]:
        page["summary"] = rst_text(f"no cells table ({path} does not exist).")
        page["caption"] = ""
        return page
    rows = _read_rows(path)
    label, devices = _device(rows)
    date, commits = _date_range(rows), _commits(rows)
    page.update(
        n_cells=len(rows),
        device_label=label,
        memory="allocated memory" if label == "GPU" else "host RSS",
        devices=rst_text(devices),
        date=rst_text(date),
        commits=rst_text(commits),
        statuses=_statuses(rows),
        seed=_seed_rows(rows),
    )
    measured = f"measured {date}" if date != NO_DATE else f"date {NO_DATE}"
    page["summary"] = rst_text(f"{len(rows)} cells, {label} {devices}, {measured}, {commits}.")
    page["caption"] = rst_text(f"{label}: {devices}, {measured}, {commits}.")
    return page


__all__ = ["NO_DATE", "NOT_RUN", "STATUS_ORDER", "landing", "rst_text"]
