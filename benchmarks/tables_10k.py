"""How long ``python -m llmbench.cli tables ROOT --grid G`` takes for a 10,000-cell grid, and
where the time goes (issue 17's bar: at most 30 s on the 2-core development machine).

A benchmark, not a test: run it on the machine whose time it claims and keep its JSON. It
synthesizes ``--cells`` cell JSONs into a temporary results root by copying the committed
reference cells (``results/reference/*/*/cells``) and giving each copy a cell identity of its
own: every model of ``config/config.yaml`` with a local architecture config × quant × attn ×
dtype × batch × seq, shuffled with a fixed seed, the optional axes (decode mode, allocator,
...) kept from the template cell. Every cell therefore has its own path and its own
prediction, as in a user's grid (no two cells of a grid share an identity). The template's
measurements are left as they are: their values do not change what the rebuild computes.

It then runs the CLI, each time in a fresh process (cold caches, imports included): as a
user does, cells read by one worker process per core (``llmbench.report.aggregate``), for the
wall time; with every cell read in the main process (``serial``: the one-core time); each
``--repeats`` times, the least counting (the machine may be shared: the load average before
the runs is kept). Last, once serially under cProfile (one process's profile then sees all
the work): the time by phase (cumulative seconds of the functions that make up the rebuild;
the profiler's overhead inflates them) and the top functions by own time.

    python benchmarks/tables_10k.py [OUT.json] [--cells 10000] [--grid extended] [--seed 0] \\
        [--repeats 3]
"""

from __future__ import annotations

import argparse
import itertools
import json
import os
import platform
import pstats
import random
import subprocess
import sys
import tempfile
import time
from importlib import metadata
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]

QUANTS = ("none", "int8", "nf4", "nf4-dq", "fp4")
ATTNS = ("eager", "sdpa", "flash_attention_2")
DTYPES = ("bfloat16", "float16")
BATCHES = (1, 2, 4, 8, 16, 32)
SEQS = (128, 256, 512, 1024, 2048, 4096, 8192)

PHASES = {
    "rebuild_tables": ("cli/__init__.py", "rebuild_tables"),
    "build_tables": ("aggregate.py", "build_tables"),
    "read_and_validate": ("cell.py", "read_cell_result"),
    "rows_total": ("aggregate.py", "_rows_of"),
    "predicted_columns": ("columns.py", "table_columns"),
    "write_tables": ("aggregate.py", "write_tables"),
}
"""Phase -> (file name, function name) whose cumulative profiled time it is."""


def _templates() -> list[dict]:
    paths = sorted((REPO / "results" / "reference").glob("*/*/cells/**/*.json"))
    if not paths:
        raise SystemExit("no committed reference cells under results/reference/*/*/cells")
    return [json.loads(p.read_text()) for p in paths]


def _models() -> list[str]:
    import yaml

    models = yaml.safe_load((REPO / "config" / "config.yaml").read_text())["models"]
    return sorted(name for name, entry in models.items() if entry.get("architecture"))


def synthesize(root: Path, n: int, seed: int) -> int:
    """Write ``n`` cell JSONs under ``root/cells``; returns how many distinct shapes exist.
    Raises SystemExit when the axes above give fewer than ``n`` identities."""
    from llmbench.grid.spec import FOUR_BIT_QUANTS, Cell

    identities = list(itertools.product(_models(), QUANTS, ATTNS, DTYPES, BATCHES, SEQS))
    if len(identities) < n:
        raise SystemExit(f"only {len(identities)} identities for {n} cells")
    rng = random.Random(seed)
    rng.shuffle(identities)
    templates = _templates()
    for i, (model, quant, attn, dtype, batch, seq) in enumerate(identities[:n]):
        result = templates[i % len(templates)]
        old = result["cell"]
        cell = Cell(
            model,
            quant,
            attn,
            dtype,
            batch,
            seq,
            decode_mode=old.get("decode_mode", "eager"),
            allocator=old.get("allocator", "default"),
            bnb_compute=old.get("bnb_compute", "config") if quant in FOUR_BIT_QUANTS else "config",
            int8_threshold=old.get("int8_threshold", "default") if quant == "int8" else "default",
        )
        document = {**result, "cell": {**cell.to_dict(), "device": old.get("device")}}
        path = root / "cells" / cell.relpath
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(document))
    return len(identities)


SERIAL_DRIVER = """import sys
from llmbench.report import aggregate
aggregate.PARALLEL_MIN_CELLS = sys.maxsize  # every cell read in this process
from llmbench.cli import main
sys.exit(main(sys.argv[1:]))
"""
"""The CLI with the cells read in its own process (a module attribute: older code lacks it)."""


def _env() -> dict[str, str]:
    return {**os.environ, "PYTHONPATH": str(REPO / "src")}


def _serial_driver(root: Path) -> str:
    path = root / "serial_cli.py"  # beside ROOT/cells, not in it
    path.write_text(SERIAL_DRIVER)
    return str(path)


def timed_rebuild(root: Path, grid: str, *, serial: bool = False) -> tuple[float, str]:
    """Wall seconds of the CLI in a fresh process (``serial``: cells read in that process), and
    what it printed."""
    entry = [_serial_driver(root)] if serial else ["-m", "llmbench.cli"]
    command = [sys.executable, *entry, "tables", str(root), "--grid", grid]
    started = time.perf_counter()
    done = subprocess.run(command, env=_env(), capture_output=True, text=True, check=True)
    return time.perf_counter() - started, done.stdout.strip()


def profiled_rebuild(root: Path, grid: str, top: int) -> dict:
    """Phase cumulative seconds and the ``top`` functions by own time, under cProfile, of the
    serial rebuild."""
    profile = root / "tables.prof"
    command = [sys.executable, "-m", "cProfile", "-o", str(profile), _serial_driver(root)]
    command += ["tables", str(root), "--grid", grid]
    started = time.perf_counter()
    subprocess.run(command, env=_env(), capture_output=True, text=True, check=True)
    wall = time.perf_counter() - started
    stats = pstats.Stats(str(profile)).stats  # (file, line, name) -> (cc, nc, tt, ct, callers)
    phases = dict.fromkeys(PHASES, 0.0)
    for (file, _, name), (_, _, _, cumulative, _) in stats.items():
        for phase, (file_name, function) in PHASES.items():
            if Path(file).as_posix().endswith("/" + file_name) and name == function:
                phases[phase] += cumulative
    ranked = sorted(stats.items(), key=lambda item: item[1][2], reverse=True)[:top]
    functions = [
        {
            "function": f"{Path(file).name}:{line}({name})",
            "calls": calls,
            "own_s": round(own, 3),
            "cumulative_s": round(cumulative, 3),
        }
        for (file, line, name), (_, calls, own, cumulative, _) in ranked
    ]
    return {"profiled_wall_s": round(wall, 2), "phases_cumulative_s": phases, "top": functions}


def machine() -> dict:
    def version(name: str) -> str | None:
        try:
            return metadata.version(name)
        except metadata.PackageNotFoundError:
            return None

    cpu = next(
        (
            line.split(":", 1)[1].strip()
            for line in Path("/proc/cpuinfo").read_text().splitlines()
            if line.startswith("model name")
        ),
        platform.processor(),
    )
    return {
        "cores": os.cpu_count(),
        "usable_cores": len(os.sched_getaffinity(0)),
        "cpu": cpu,
        "python": platform.python_version(),
        **{name: version(name) for name in ("torch", "pandas", "pyarrow", "jsonschema")},
    }


def _git_commit() -> str | None:
    done = subprocess.run(["git", "-C", str(REPO), "rev-parse", "HEAD"], capture_output=True)
    return done.stdout.decode().strip() or None


def main(argv: list[str] | None = None) -> int:
    """Synthesize, time, profile; write the JSON; print the summary."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("out", nargs="?", default=str(REPO / "benchmarks" / "tables_10k.json"))
    parser.add_argument("--cells", type=int, default=10_000)
    parser.add_argument("--grid", default="extended", help="grid whose seed_cases label rows")
    parser.add_argument("--seed", type=int, default=0, help="shuffle of the identities")
    parser.add_argument("--top", type=int, default=15, help="functions listed by own time")
    parser.add_argument("--repeats", type=int, default=3, help="timed runs; the least counts")
    args = parser.parse_args(argv)
    sys.path.insert(0, str(REPO / "src"))

    with tempfile.TemporaryDirectory(prefix="tables10k-") as tmp:
        root = Path(tmp)
        started = time.perf_counter()
        shapes = synthesize(root, args.cells, args.seed)
        synthesis = time.perf_counter() - started
        load = os.getloadavg()  # another job on the machine slows every run below
        walls, serials = [], []
        for _ in range(args.repeats):
            seconds, printed = timed_rebuild(root, args.grid)
            walls.append(seconds)
            serials.append(timed_rebuild(root, args.grid, serial=True)[0])
        wall, serial = min(walls), min(serials)
        profiled = profiled_rebuild(root, args.grid, args.top)
    report = {
        "command": f"python -m llmbench.cli tables ROOT --grid {args.grid}",
        "cells": args.cells,
        "distinct_identities_available": shapes,
        "cli_printed": printed,
        "wall_s": round(wall, 2),
        "serial_wall_s": round(serial, 2),
        "repeats_wall_s": [round(w, 2) for w in walls],
        "repeats_serial_wall_s": [round(w, 2) for w in serials],
        "loadavg_1_5_15_before": [round(x, 2) for x in load],
        "bar_s": 30.0,
        "meets_bar": wall <= 30.0,
        "synthesis_s": round(synthesis, 2),
        **profiled,
        "git_commit": _git_commit(),
        "machine": machine(),
        "date_utc": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
    }
    Path(args.out).write_text(json.dumps(report, indent=2) + "\n")
    print(f"{args.cells} cells: {wall:.1f} s (bar 30 s), serial {serial:.1f} s")
    print(f"serial profile ({profiled['profiled_wall_s']} s under cProfile):")
    for phase, seconds in profiled["phases_cumulative_s"].items():
        print(f"  {phase:<20} {seconds:8.2f} s (profiled, cumulative)")
    for entry in profiled["top"][:10]:
        print(f"  {entry['own_s']:8.2f} s own  {entry['calls']:>9}  {entry['function']}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
