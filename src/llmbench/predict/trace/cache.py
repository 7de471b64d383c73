"""Cached traces: one JSON file per traced cell, so that ``llmbench predict`` answers from
the tracer without torch and in milliseconds (a trace takes 1-5 s of CPU per cell).

Key: SHA-256 of the canonical JSON of everything the trace depends on - the architecture
config.json, the cell's quant / attn / dtype / batch / seq, ``decode_tokens`` (and for a
``graph`` decode ``decode_warmup_tokens``), the
bitsandbytes compute dtype, the installed torch, transformers and bitsandbytes versions
(``importlib.metadata``, no import) and ``TRACER_VERSION``. A different library or tracer
version is a different key: stale entries are never read, only left behind.

Entry (``<cache_dir>/<key[:2]>/<key>.json``): ``{"key": {...}, "load", "prefill", "decode"}``
peak allocated bytes with ``prefill_at``, ``decode_at``, ``sdpa``, ``prefill_kv``,
``decode_kv``, ``load_converted`` and ``load_quantized_elements``, or
``{"key": {...}, "untraceable": reason}``.

Torch-free; ``cached_trace(..., allow_trace=True)`` imports ``llmbench.predict.trace.phases``
(torch, transformers) only to fill a missing entry. Imports ``llmbench.grid.spec.Cell``,
``llmbench.predict.constants`` (the decode warm-up default) and ``llmbench.record.cell``
(atomic JSON write).
"""

from __future__ import annotations

import functools
import hashlib
import json
from collections.abc import Mapping
from dataclasses import asdict
from importlib import metadata
from pathlib import Path
from typing import Any

from llmbench.grid.spec import Cell
from llmbench.predict.constants import DECODE_WARMUP_TOKENS
from llmbench.record.cell import write_json_atomic

TRACER_VERSION = 9
"""Bump when the tracer's semantics change (every older entry then misses). 5: a boolean SDPA
mask made additive before the kernel; flash_attention_2 traced with FA2's mask function.
6: a prompt past learned position embeddings is untraceable with the run's reason.
7: CUDA-graph decode traced; flash_attention_2's padded path (a static cache's mask);
LLM.int8 at the cell's outlier threshold; 4-bit layers in the cell's ``bnb_compute``.
8: the load's transient terms (``load_converted``, ``load_quantized_elements``).
9: learned positions counted as the worker counts them (``grid.support.positions_needed``:
an eager run feeds ``seq + decode_tokens - 1``, one fewer than before)."""

LIBRARIES = ("torch", "transformers", "bitsandbytes")

TRACE_CACHE = Path("resources") / "trace-cache"
"""Default cache, relative to the repository root (git-ignored, like the checkpoints)."""

FILL_COMMAND = "python -m llmbench.predict.trace.fill --grid NAME"
"""How to fill the cache (needs torch and transformers; 1-5 s of CPU per 7B-70B cell)."""


@functools.cache
def _versions() -> tuple[tuple[str, str | None], ...]:
    found = []
    for name in LIBRARIES:
        try:
            found.append((name, metadata.version(name)))
        except metadata.PackageNotFoundError:
            found.append((name, None))
    return tuple(found)


def library_versions() -> dict[str, str | None]:
    """Installed versions of the libraries a trace runs (None: not installed; read once per
    process)."""
    return dict(_versions())


def trace_key(
    config: Mapping[str, Any],
    cell: Cell,
    *,
    decode_tokens: int,
    compute_dtype: str,
    decode_warmup_tokens: int = DECODE_WARMUP_TOKENS,
) -> dict[str, Any]:
    """Everything a traced cell depends on (module docstring); its hash names the entry."""
    shape = {k: v for k, v in asdict(cell).items() if k != "model"}
    key = {
        "config": dict(config),
        "cell": shape,
        "decode_tokens": decode_tokens,
        "bnb_4bit_compute_dtype": compute_dtype,
        "versions": library_versions(),
        "tracer_version": TRACER_VERSION,
    }
    if cell.decode_mode == "graph":  # its cache also holds the warm-up steps' positions
        key["decode_warmup_tokens"] = decode_warmup_tokens
    return key


def _path(cache_dir: Path, key: Mapping[str, Any]) -> Path:
    digest = hashlib.sha256(json.dumps(key, sort_keys=True).encode()).hexdigest()
    return cache_dir / digest[:2] / f"{digest}.json"


def read_entry(cache_dir: Path, key: Mapping[str, Any]) -> dict[str, Any] | None:
    """The cached entry of ``key``, or None (missing, unreadable, or another key's)."""
    try:
        entry = json.loads(_path(cache_dir, key).read_text())
    except (OSError, ValueError):
        return None
    return entry if isinstance(entry, dict) and entry.get("key") == key else None


def cached_trace(
    config: Mapping[str, Any],
    cell: Cell,
    *,
    decode_tokens: int,
    compute_dtype: str,
    cache_dir: Path,
    allow_trace: bool = False,
    decode_warmup_tokens: int = DECODE_WARMUP_TOKENS,
) -> dict[str, Any] | None:
    """The cell's trace entry from ``cache_dir``; when missing, traced and written if
    ``allow_trace`` (raises what writing raises), else None."""
    key = trace_key(
        config,
        cell,
        decode_tokens=decode_tokens,
        compute_dtype=compute_dtype,
        decode_warmup_tokens=decode_warmup_tokens,
    )
    # a JSON round trip, so that the key compares equal to the one read back
    key = json.loads(json.dumps(key))
    entry = read_entry(cache_dir, key)
    if entry is not None or not allow_trace:
        return entry
    from llmbench.predict.trace.model import Untraceable
    from llmbench.predict.trace.phases import trace_cell

    try:
        traced = trace_cell(
            config,
            cell,
            decode_tokens=decode_tokens,
            bnb_4bit_compute_dtype=compute_dtype,
            decode_warmup_tokens=decode_warmup_tokens,
        )
        entry = {"key": key, **asdict(traced)}
        entry["sdpa"] = {str(q): b for q, b in traced.sdpa.items()}
    except Untraceable as exc:
        entry = {"key": key, "untraceable": str(exc)}
    path = _path(cache_dir, key)
    path.parent.mkdir(parents=True, exist_ok=True)
    write_json_atomic(path, entry)
    return entry
