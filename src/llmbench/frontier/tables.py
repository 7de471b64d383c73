"""The frontier table: results/tables/frontier.csv, one row per search-result JSON.

Owns :data:`TABLE_COLUMNS`, :func:`table_row` and :func:`table`. Reads only the search JSON
that :func:`llmbench.frontier.execute.run_search` writes (no other frontier module).
May import: ``llmbench`` (GIB), pandas (lazily).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

from llmbench import GIB

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
axis (the searched one is empty); ``reduction``: brute_force / probes. A table with a
quantized-KV-cache search adds ``kv_cache`` after ``dtype``, one with an expandable-segments
search ``allocator`` (after ``kv_cache`` where both are present)."""


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
        # only a quantized-cache or expandable-segments search has the column (frontier.csv of
        # the others unchanged)
        **({"kv_cache": search["kv_cache"]} if search.get("kv_cache", "model") != "model" else {}),
        **(
            {"allocator": search["allocator"]}
            if search.get("allocator", "default") != "default"
            else {}
        ),
    }


def table(paths: Iterable[str | Path]) -> Any:
    """frontier.csv as a DataFrame: one row per search-result JSON."""
    import json

    import pandas as pd

    rows = [table_row(json.loads(Path(p).read_text()), str(p)) for p in paths]
    defaults = {"kv_cache": "model", "allocator": "default"}
    kv = [c for c in defaults if any(c in row for row in rows)]
    frame = pd.DataFrame(rows, columns=[*TABLE_COLUMNS[:4], *kv, *TABLE_COLUMNS[4:]])
    for column in kv:
        frame[column] = frame[column].fillna(defaults[column])
    for column in ("batch", "seq", "frontier", "first_fail", "largest_ok", "predicted"):
        frame[column] = frame[column].astype("Int64")
    return frame.sort_values(["model", "quant", "attn", "dtype", *kv, "search", "batch", "seq"])
