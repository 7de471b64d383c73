"""Command line: ``python -m llmbench.cli <command>`` (or ``llmbench`` once installed).

- ``tables ROOT``: rebuild ``ROOT/tables`` from the cell JSONs under ``ROOT/cells``.
- ``publish --to results/reference/<gpu>/<run>``: copy this run's cells and benchmarks into a
  reference folder and rebuild its tables there (figures then come from ``snakemake figures``).
- ``resume --from results/reference/<gpu>/<run> --grid NAME [--frontier]``: copy a reference
  run's finished cells (and frontier probes and searches) back into ``results/`` where missing,
  dated now, so that Snakemake measures only what the reference lacks. Run it once the model
  checkpoints exist: Snakemake remeasures cells older than their inputs.
- ``predict [--grid NAME_OR_PATH] [--gpu-mem 80GiB] [--format table|csv] [--terms]``: the
  analytic memory model (predict.py) for every cell of a grid, instantly, without a GPU: predicted
  load/prefill/decode peak allocated (GiB), the dominant term, and whether the cell fits
  ``--gpu-mem``: predicted peak allocated + allocator slack + CUDA context <= capacity.
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
from collections.abc import Sequence
from pathlib import Path

import yaml

from llmbench import REPO_ROOT


def _seed_cases(grid: str | None) -> list[dict]:
    if grid is None:
        return []
    from llmbench.grid.spec import load_grid

    config = yaml.safe_load((REPO_ROOT / "config" / "config.yaml").read_text())
    return load_grid(grid, REPO_ROOT / "config", config["models"]).get("seed_cases", [])


def rebuild_tables(root: Path, grid: str | None) -> int:
    """Tables of every cell JSON under ``root/cells``; returns the number of cells."""
    from llmbench.report import aggregate

    paths = sorted(str(p) for p in (root / "cells").rglob("*.json"))
    cells, devices = aggregate.build_tables(paths, _seed_cases(grid))
    aggregate.write_tables(
        cells,
        devices,
        cells_csv=str(root / "tables" / "cells.csv"),
        cells_parquet=str(root / "tables" / "cells.parquet"),
        devices_csv=str(root / "tables" / "devices.csv"),
    )
    return len(cells)


def _copy_cells(source: Path, target: Path, grid: str, *, resume: bool) -> int:
    """Copy the grid's cell JSONs (and job benchmarks) from ``source`` to ``target``; with
    ``resume``, only where ``target`` lacks them, dated now. Returns the cells copied."""
    from llmbench.grid.spec import expand_grid, load_grid

    config = yaml.safe_load((REPO_ROOT / "config" / "config.yaml").read_text())
    cells = expand_grid(load_grid(grid, REPO_ROOT / "config", config["models"]))
    copied = 0
    for cell in cells:
        if resume and (target / "cells" / cell.relpath).exists():
            continue  # this run's own cell (and its benchmark) stays
        for folder, suffix in (("cells", ".json"), ("benchmarks/cells", ".tsv")):
            origin = source / folder / cell.relpath.replace(".json", suffix)
            if origin.is_file():
                _copy(origin, target / folder / cell.relpath.replace(".json", suffix), touch=resume)
                copied += folder == "cells"
    return copied


def _copy(origin: Path, destination: Path, *, touch: bool) -> None:
    destination.parent.mkdir(parents=True, exist_ok=True)
    shutil.copy2(origin, destination)
    if touch:  # newer than the checkpoints: Snakemake keeps the cell
        os.utime(destination)


def publish(source: Path, target: Path, grid: str) -> int:
    """Copy the grid's cell JSONs (and job benchmarks) from ``source`` to ``target``."""
    return _copy_cells(source, target, grid, resume=False)


def resume(reference: Path, target: Path, grid: str, frontier: bool = False) -> tuple[int, int]:
    """Copy a reference run's cells of ``grid`` (and with ``frontier`` its frontier probes and
    searches) into ``target`` where missing, dated now. Returns (cells, frontier files)."""
    cells = _copy_cells(reference, target, grid, resume=True)
    files = 0
    if frontier:
        for origin in sorted((reference / "frontier").rglob("*.json")):
            destination = target / "frontier" / origin.relative_to(reference / "frontier")
            if not destination.exists():
                _copy(origin, destination, touch=True)
                files += 1
    return cells, files


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point."""
    parser = argparse.ArgumentParser(prog="llmbench", description=__doc__.splitlines()[0])
    commands = parser.add_subparsers(dest="command", required=True)
    tables = commands.add_parser("tables", help="rebuild ROOT/tables from ROOT/cells")
    tables.add_argument("root", type=Path)
    tables.add_argument("--grid", help="grid whose seed_cases label the rows")
    publisher = commands.add_parser("publish", help="copy a run into a reference folder")
    publisher.add_argument("--from", dest="source", type=Path, default=Path("results"))
    publisher.add_argument("--to", dest="target", type=Path, required=True)
    publisher.add_argument("--grid", required=True, help="grid whose cells are copied")
    resumer = commands.add_parser(
        "resume", help="copy a reference run's cells into results/ to measure only the rest"
    )
    resumer.add_argument("--from", dest="source", type=Path, required=True)
    resumer.add_argument("--to", dest="target", type=Path, default=Path("results"))
    resumer.add_argument("--grid", required=True, help="grid whose cells are copied")
    resumer.add_argument(
        "--frontier", action="store_true", help="also copy frontier/ (probes and searches)"
    )
    predictor = commands.add_parser("predict", help="predicted peak memory of a grid's cells")
    predictor.add_argument("--grid", help="grid name or path (default: the config's grid)")
    predictor.add_argument(
        "--gpu-mem", default="80GiB", help="device memory to fit in, e.g. 80GiB, 24GB (80GiB)"
    )
    predictor.add_argument("--format", choices=("table", "csv"), default="table")
    predictor.add_argument("--terms", action="store_true", help="add the peak's breakdown")
    args = parser.parse_args(argv)
    if args.command == "tables":
        print(f"{rebuild_tables(args.root, args.grid)} cells -> {args.root / 'tables'}")
    elif args.command == "predict":
        from llmbench import predict

        rows = predict.grid_prediction_rows(
            args.grid, repo_root=REPO_ROOT, gpu_mem=args.gpu_mem, terms=args.terms
        )
        if args.format == "csv":
            sys.stdout.write(predict.format_csv(rows))
        else:
            print(predict.format_table(rows, terms=args.terms))
    elif args.command == "resume":
        cells, files = resume(args.source, args.target, args.grid, args.frontier)
        print(f"copied {cells} cells and {files} frontier files to {args.target} (missing only)")
    elif args.command == "publish":
        copied = publish(args.source, args.target, args.grid)
        print(f"copied {copied} cells to {args.target}")
        print(f"{rebuild_tables(args.target, args.grid)} cells -> {args.target / 'tables'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
