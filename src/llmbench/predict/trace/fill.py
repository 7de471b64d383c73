"""Fill the trace cache for a grid: ``python -m llmbench.predict.trace.fill --grid NAME
[--cache DIR]`` traces every cell of the grid whose model has an architecture config and
whose trace is not cached yet, under config/config.yaml's ``bnb_4bit_compute_dtype`` and
``measurement.decode_tokens`` (what ``llmbench predict`` looks up). Prints one line per
model: cells traced, cached before, untraceable (with the first reason).

Imports ``llmbench`` (REPO_ROOT), ``llmbench.grid.spec``, ``llmbench.predict.architecture``,
``constants`` (the decode defaults) and ``llmbench.predict.trace.cache``; torch and
transformers through the tracer.
"""

from __future__ import annotations

import argparse
from collections import defaultdict
from pathlib import Path
from typing import Any

from llmbench import REPO_ROOT
from llmbench.grid.spec import expand_grid, load_grid
from llmbench.predict.architecture import model_config_for
from llmbench.predict.constants import DECODE_TOKENS, DECODE_WARMUP_TOKENS
from llmbench.predict.trace.cache import TRACE_CACHE, cached_trace, read_entry, trace_key


def fill(grid: str, repo_root: Path, cache_dir: Path) -> dict[str, dict[str, Any]]:
    """Trace the grid's missing cells into ``cache_dir``; per model: counts and a reason."""
    import json

    import yaml

    config = yaml.safe_load((repo_root / "config" / "config.yaml").read_text())
    models = config["models"]
    compute = config.get("bnb_4bit_compute_dtype", "bfloat16")
    measurement = config.get("measurement") or {}
    decode_tokens = int(measurement.get("decode_tokens", DECODE_TOKENS))
    warmup = int(measurement.get("decode_warmup_tokens", DECODE_WARMUP_TOKENS))
    summary: dict[str, dict[str, Any]] = defaultdict(
        lambda: {"traced": 0, "cached": 0, "untraceable": 0, "reason": None}
    )
    for cell in expand_grid(load_grid(grid, repo_root / "config", models)):
        arch = model_config_for(cell.model, models, repo_root)
        if arch is None:
            continue
        key = trace_key(
            arch,
            cell,
            decode_tokens=decode_tokens,
            compute_dtype=compute,
            decode_warmup_tokens=warmup,
        )
        known = read_entry(cache_dir, json.loads(json.dumps(key))) is not None
        entry = cached_trace(
            arch,
            cell,
            decode_tokens=decode_tokens,
            compute_dtype=compute,
            cache_dir=cache_dir,
            allow_trace=True,
            decode_warmup_tokens=warmup,
        )
        counts = summary[cell.model]
        if entry and "untraceable" in entry:
            counts["untraceable"] += 1
            counts["reason"] = counts["reason"] or entry["untraceable"]
        else:
            counts["cached" if known else "traced"] += 1
    return dict(summary)


def main(argv: list[str] | None = None) -> int:
    """Command line: ``--grid NAME`` (required), ``--cache DIR``."""
    parser = argparse.ArgumentParser(prog="python -m llmbench.predict.trace.fill")
    parser.add_argument("--grid", required=True, help="grid name or path (config/grids/)")
    parser.add_argument("--cache", type=Path, default=REPO_ROOT / TRACE_CACHE)
    args = parser.parse_args(argv)
    for model, counts in fill(args.grid, REPO_ROOT, args.cache).items():
        line = f"{model}: traced {counts['traced']}, cached before {counts['cached']}"
        line += f", untraceable {counts['untraceable']}"
        print(line + (f" ({counts['reason']})" if counts["reason"] else ""))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
