"""Command line: ``python -m llmbench.cli <command>`` (or ``llmbench`` once installed).

- ``tables ROOT``: rebuild ``ROOT/tables`` from the cell JSONs under ``ROOT/cells``.
- ``publish --to results/reference/<gpu>/<run>``: copy this run's cells and benchmarks into a
  reference folder and rebuild its tables there (figures then come from ``snakemake figures``).
- ``resume --from results/reference/<gpu>/<run> --grid NAME [--frontier]``: copy a reference
  run's finished cells (and frontier probes and searches) back into ``results/`` where missing,
  dated now, so that Snakemake measures only what the reference lacks. Run it once the model
  checkpoints exist: Snakemake remeasures cells older than their inputs.
- ``predict [--grid G] [--gpu NAME | --gpu-mem 81559MiB] [--format table|csv] [--terms]``: the
  memory model (llmbench.predict) for every cell of a grid, no GPU: predicted peaks and whether
  each cell fits a device (a GPU measured here, or its total as nvidia-smi reports it:
  llmbench.host.devicesize, the same in every mode); ``--gpus N``: per device on N GPUs, and
  the fewest GPUs each cell needs;
  ``--frontier``: the out-of-memory frontier of the ``frontier:`` section per device, by the
  caching-allocator simulation (llmbench.frontier.predicted). ``predict --help`` says more.
- ``compare A B --names h100 h200 --to DIR``: the same cells of two reference runs (their
  ``tables/cells.csv``) side by side, one row per cell (``DIR/tables/cells.csv``), a figure
  (``DIR/figures/crossgpu.png|svg``) and a summary on stdout (llmbench.report.compare).

A usage mistake (an unreadable size, an unknown grid, a missing folder, a bad option) is one
line on stderr, ``llmbench: error: ...``, exit status 2; when the reader of stdout goes away
(``| head``) the command stops quietly with status 141, as a Unix filter does.

The commands are here but ``predict``'s (:mod:`llmbench.cli.predict`); what they share, the
one-line :class:`~llmbench.cli.common.UsageError` and the config and grid readers, is in
:mod:`llmbench.cli.common`. May import every stage (it is the top of the stack); torch and
pandas only through the commands that need them (``predict`` runs without them).
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Sequence
from pathlib import Path

from llmbench.cli.common import Parser, UsageError, grid_document
from llmbench.cli.predict import add_predict, run_predict


def _folder(path: Path, what: str) -> Path:
    """``path`` when it is a folder; else UsageError naming ``what`` it should hold."""
    if not path.is_dir():
        raise UsageError(f"no folder {path} ({what})")
    return path


def _seed_cases(grid: str | None) -> list[dict]:
    return [] if grid is None else grid_document(grid).get("seed_cases", [])


def _labelled_rows(table: Path) -> int:
    """How many rows of an existing cells.csv carry a ``seed_case`` label (0 without one)."""
    import csv

    try:
        with table.open(newline="") as file:
            return sum(bool(row.get("seed_case")) for row in csv.DictReader(file))
    except (OSError, csv.Error):
        return 0


def rebuild_tables(root: Path, grid: str | None) -> int:
    """Tables of every cell JSON under ``root/cells``; returns the number of cells. Raises
    UsageError for an unknown grid, before any table is written."""
    seed_cases = _seed_cases(grid)
    from llmbench.report import aggregate

    paths = sorted(str(p) for p in (root / "cells").rglob("*.json"))
    try:
        cells, devices = aggregate.build_tables(paths, seed_cases)
    except aggregate.UnreadableCells as exc:  # the previous tables stay
        raise UsageError(f"tables not rebuilt (the previous ones stay): {exc}") from None
    if grid is None and _labelled_rows(root / "tables" / "cells.csv"):
        print(
            f"llmbench: note: {root / 'tables' / 'cells.csv'} labelled rows with seed cases; "
            "without --grid (e.g. --grid seed) the rebuilt table has none",
            file=sys.stderr,
        )
    aggregate.write_tables(
        cells,
        devices,
        cells_csv=str(root / "tables" / "cells.csv"),
        cells_parquet=str(root / "tables" / "cells.parquet"),
        devices_csv=str(root / "tables" / "devices.csv"),
    )
    return len(cells)


def publish(source: Path, target: Path, grid: str) -> int:
    """Copy the grid's cell JSONs (and job benchmarks) from ``source`` to ``target``
    (``report.references.publish``); UsageError for an unknown grid."""
    from llmbench.grid.spec import expand_grid
    from llmbench.report import references

    cells = expand_grid(grid_document(grid))
    _some_cell(source, cells, grid, "nothing to publish")
    return references.publish(source, target, cells)


def _some_cell(source: Path, cells: list, grid: str, why: str) -> None:
    """UsageError unless one of ``cells`` has a JSON under ``source``/cells (a grid that does
    not match the run: a wrong --grid or --from)."""
    if not any((source / "cells" / cell.relpath).is_file() for cell in cells):
        raise UsageError(
            f"--from {source}: none of grid {grid}'s {len(cells)} cells has a JSON under "
            f"{source / 'cells'} ({why})"
        )


def resume(reference: Path, target: Path, grid: str, frontier: bool = False) -> tuple[int, int]:
    """Copy a reference run's cells of ``grid`` (and with ``frontier`` its frontier files)
    into ``target`` where missing, dated now (``report.references.resume``); UsageError for an
    unknown grid. Returns (cells, frontier files)."""
    from llmbench.grid.spec import expand_grid
    from llmbench.report import references

    cells = expand_grid(grid_document(grid))
    if not frontier:
        _some_cell(reference, cells, grid, "nothing to resume from")
    return references.resume(reference, target, cells, frontier=frontier)


def _parser() -> argparse.ArgumentParser:
    parser = Parser(prog="llmbench", description=__doc__.splitlines()[0])
    commands = parser.add_subparsers(dest="command", required=True)
    tables = commands.add_parser("tables", help="rebuild ROOT/tables from ROOT/cells")
    tables.add_argument(
        "root",
        type=Path,
        help="a run folder, e.g. results or results/reference/h100/seed: reads ROOT/cells,"
        " writes ROOT/tables",
    )
    tables.add_argument(
        "--grid", help="grid whose seed_cases label the rows (default: none, no labels)"
    )
    publisher = commands.add_parser("publish", help="copy a run into a reference folder")
    resumer = commands.add_parser(
        "resume", help="copy a reference run's cells into results/ to measure only the rest"
    )
    reference = "a reference folder, e.g. results/reference/<gpu>/<run> (required)"
    for command, source, target in ((publisher, "results", None), (resumer, None, "results")):
        for flag, dest, default in (("--from", "source", source), ("--to", "target", target)):
            what = f"a run folder (default: {default})" if default else reference
            command.add_argument(
                flag, dest=dest, type=Path, default=default and Path(default), required=not default,
                help=f"copy {flag.removeprefix('--')} {what}",
            )  # fmt: skip
        command.add_argument("--grid", required=True, help="grid whose cells are copied (required)")
    resumer.add_argument(
        "--frontier", action="store_true", help="also copy frontier/ (probes and searches)"
    )
    add_predict(commands)
    comparer = commands.add_parser(
        "compare", help="the same cells of two reference runs side by side (two GPUs)"
    )
    comparer.add_argument("first", type=Path, help="a reference run with tables/cells.csv")
    comparer.add_argument("second", type=Path, help="the same grid measured elsewhere")
    comparer.add_argument("--names", nargs=2, required=True, metavar=("A", "B"))
    comparer.add_argument("--to", dest="target", type=Path, required=True)
    return parser


def _target(path: Path, flag: str = "--to") -> Path:
    """``path`` when it is a folder or absent (it is made); UsageError for a file."""
    if path.exists() and not path.is_dir():
        raise UsageError(f"{flag} {path}: a file, not a folder")
    return path


def _compare(args: argparse.Namespace) -> None:
    from llmbench.report import compare, figures

    _target(args.target)
    if not all(name.strip() for name in args.names) or args.names[0] == args.names[1]:
        raise UsageError(f"--names: two different, non-empty names (got {args.names})")
    if args.first.resolve() == args.second.resolve():
        raise UsageError(f"{args.first} twice: compare needs two different runs")
    try:
        table = compare.compare_folders(args.first, args.second, args.names)
    except (FileNotFoundError, ValueError) as exc:  # a missing table, two GPUs, a cell twice
        raise UsageError(str(exc)) from None
    (args.target / "tables").mkdir(parents=True, exist_ok=True)
    table.to_csv(args.target / "tables" / "cells.csv", index=False)
    figures.draw_crossgpu(
        table,
        args.names,
        str(args.target / "figures" / "crossgpu.png"),
        str(args.target / "figures" / "crossgpu.svg"),
    )
    print("\n".join(compare.summary_lines(table, args.names)))


def _run(args: argparse.Namespace) -> None:
    if args.command in ("resume", "publish"):
        _target(args.target)
    if args.command == "tables":
        _folder(args.root / "cells", "tables ROOT reads the cell JSONs under ROOT/cells")
        print(f"{rebuild_tables(args.root, args.grid)} cells -> {args.root / 'tables'}")
    elif args.command == "predict":
        run_predict(args)
    elif args.command == "compare":
        _compare(args)
    elif args.command == "resume":
        _folder(args.source, "--from: a reference run")
        if not (args.source / "cells").is_dir() and not (args.source / "frontier").is_dir():
            raise UsageError(f"--from {args.source}: no cells/ or frontier/ folder in it")
        cells, files = resume(args.source, args.target, args.grid, args.frontier)
        print(f"copied {cells} cells and {files} frontier files to {args.target} (missing only)")
    elif args.command == "publish":
        _folder(args.source / "cells", "--from: a run whose cell JSONs are under cells/")
        copied = publish(args.source, args.target, args.grid)
        print(f"copied {copied} cells to {args.target}")
        print(f"{rebuild_tables(args.target, args.grid)} cells -> {args.target / 'tables'}")


def _quiet_stdout() -> None:
    """Point stdout at /dev/null, so that the interpreter's last flush cannot fail again."""
    try:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
    except (OSError, ValueError):  # no file descriptor (e.g. captured by a test)
        pass


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point; returns the exit status: 0; 2 after a usage mistake (UsageError), told as
    one line on stderr; 141 (128 + SIGPIPE) when stdout's reader went away (``| head``)."""
    try:
        args, extra = _parser().parse_known_args(argv)
        if extra:  # named with the subcommand's help, not the top level's
            raise UsageError(
                f"unrecognized arguments: {' '.join(extra)} (see: llmbench {args.command} --help)"
            )
        _run(args)
        sys.stdout.flush()
    except UsageError as exc:
        print(f"llmbench: error: {exc}", file=sys.stderr)
        return 2
    except BrokenPipeError:
        _quiet_stdout()
        return 141
    return 0
