"""Command line: ``python -m llmbench.cli <command>`` (or ``llmbench`` once installed).

- ``tables ROOT``: rebuild ``ROOT/tables`` from the cell JSONs under ``ROOT/cells``.
- ``publish --to results/reference/<gpu>/<run>``: copy this run's cells and benchmarks into a
  reference folder and rebuild its tables there (figures then come from ``snakemake figures``).
- ``resume --from results/reference/<gpu>/<run> --grid NAME [--frontier]``: copy a reference
  run's finished cells (and frontier probes and searches) back into ``results/`` where missing,
  dated now, so that Snakemake measures only what the reference lacks. Run it once the model
  checkpoints exist: Snakemake remeasures cells older than their inputs.
- ``predict [--grid G] [--gpu-mem 81079MiB] [--format table|csv] [--terms]``: the memory model
  (llmbench.predict) for every cell of a grid, no GPU: predicted peaks and whether each cell
  fits; ``--gpus N``: per device on N GPUs, and the fewest GPUs each cell needs;
  ``--frontier``: the out-of-memory frontier of the ``frontier:`` section per device, by the
  caching-allocator simulation (llmbench.frontier.predicted). ``predict --help`` says more.
- ``compare A B --names h100 h200 --to DIR``: the same cells of two reference runs (their
  ``tables/cells.csv``) side by side, one row per cell (``DIR/tables/cells.csv``), a figure
  (``DIR/figures/crossgpu.png|svg``) and a summary on stdout (llmbench.report.compare).

A usage mistake (an unreadable size, an unknown grid, a missing folder, a bad option) is one
line on stderr, ``llmbench: error: ...``, exit status 2; when the reader of stdout goes away
(``| head``) the command stops quietly with status 141, as a Unix filter does.

May import every stage (it is the top of the stack); torch and pandas only through the
commands that need them (``predict`` runs without them).
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Sequence
from pathlib import Path

import yaml

from llmbench import REPO_ROOT


class UsageError(Exception):
    """A mistake in the command line or in what it names (a size, a grid, a folder): printed
    as one line ``llmbench: error: ...`` with exit status 2."""


class _Parser(argparse.ArgumentParser):
    """argparse whose mistakes are a UsageError (one line) instead of usage text and exit."""

    def error(self, message: str):  # type: ignore[override]
        raise UsageError(f"{message} (see: {self.prog} --help)")


def _config() -> dict:
    return yaml.safe_load((REPO_ROOT / "config" / "config.yaml").read_text())


def _grid(grid: str) -> dict:
    """The validated grid document; raises UsageError naming what is wrong with it."""
    from llmbench.grid.spec import load_grid

    try:
        return load_grid(grid, REPO_ROOT / "config", _config()["models"])
    except (ValueError, OSError, yaml.YAMLError) as exc:
        raise UsageError(str(exc).splitlines()[0]) from None


def _folder(path: Path, what: str) -> Path:
    """``path`` when it is a folder; else UsageError naming ``what`` it should hold."""
    if not path.is_dir():
        raise UsageError(f"no folder {path} ({what})")
    return path


def _seed_cases(grid: str | None) -> list[dict]:
    return [] if grid is None else _grid(grid).get("seed_cases", [])


def rebuild_tables(root: Path, grid: str | None) -> int:
    """Tables of every cell JSON under ``root/cells``; returns the number of cells. Raises
    UsageError for an unknown grid, before any table is written."""
    seed_cases = _seed_cases(grid)
    from llmbench.report import aggregate

    paths = sorted(str(p) for p in (root / "cells").rglob("*.json"))
    cells, devices = aggregate.build_tables(paths, seed_cases)
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

    return references.publish(source, target, expand_grid(_grid(grid)))


def resume(reference: Path, target: Path, grid: str, frontier: bool = False) -> tuple[int, int]:
    """Copy a reference run's cells of ``grid`` (and with ``frontier`` its frontier files)
    into ``target`` where missing, dated now (``report.references.resume``); UsageError for an
    unknown grid. Returns (cells, frontier files)."""
    from llmbench.grid.spec import expand_grid
    from llmbench.report import references

    return references.resume(reference, target, expand_grid(_grid(grid)), frontier=frontier)


def _predict_epilog() -> str:
    from llmbench.frontier.predicted import HELP
    from llmbench.predict.help import COLUMNS, SIZES

    return "\n".join((COLUMNS, HELP, SIZES))


def _add_predict(commands: argparse._SubParsersAction) -> None:
    """The ``predict`` subcommand's options."""
    from llmbench.frontier.prediction import GPUS

    predictor = commands.add_parser(
        "predict",
        help="predicted peak memory of a grid's cells",
        description="Predicted peak memory of every cell of a grid, and whether it fits a\n"
        "device (llmbench.predict: no GPU; on one device instant and without torch, from\n"
        "cached traces; --gpus N traces with torch, seconds per cell). --frontier: the\n"
        "predicted out-of-memory frontier (torch; seconds per traced cell, minutes per config).",
        epilog=_predict_epilog(),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    predictor.add_argument("--grid", help="grid name or path (default: the config's grid)")
    predictor.add_argument(
        "--gpu-mem",
        help="device memory to fit in, e.g. 81079MiB, 24GB (default 81079MiB = 79.18 GiB: an H100"
        " 80GB as torch reports it, not 80 GiB); with --frontier:"
        " each device's total as nvidia-smi reports it, comma-separated (e.g. 46068MiB)",
    )
    predictor.add_argument(
        "--frontier",
        action="store_true",
        help="the OOM frontier of the frontier: section per device (allocator simulation)",
    )
    predictor.add_argument(
        "--configfile",
        type=Path,
        help="with --frontier: a YAML file whose frontier: section replaces the config's",
    )
    predictor.add_argument(
        "--gpu",
        action="append",
        choices=sorted(GPUS),
        help="with --frontier: a GPU measured here, by name (repeatable)",
    )
    predictor.add_argument(
        "--gpus",
        type=int,
        help="per-device prediction on this many GPUs of --gpu-mem, and GPUs needed",
    )
    predictor.add_argument(
        "--device-map",
        choices=("single", "auto", "balanced", "balanced_low_0", "sequential"),
        help="with --gpus: the planner's policy for every cell (default: the cell's; auto)",
    )
    predictor.add_argument(
        "--max-gpus",
        type=int,
        default=8,
        help="with --gpus: the most GPUs 'GPUs needed' tries (8)",
    )
    predictor.add_argument(
        "--format",
        choices=("table", "csv"),
        default="table",
        help="table: for a person (default); csv: every number, for a program",
    )
    predictor.add_argument(
        "--terms", action="store_true", help="add the breakdown of each cell's peak by term"
    )


def _parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="llmbench", description=__doc__.splitlines()[0])
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
    _add_predict(commands)
    comparer = commands.add_parser(
        "compare", help="the same cells of two reference runs side by side (two GPUs)"
    )
    comparer.add_argument("first", type=Path, help="a reference run with tables/cells.csv")
    comparer.add_argument("second", type=Path, help="the same grid measured elsewhere")
    comparer.add_argument("--names", nargs=2, required=True, metavar=("A", "B"))
    comparer.add_argument("--to", dest="target", type=Path, required=True)
    return parser


def _compare(args: argparse.Namespace) -> None:
    from llmbench.report import compare, figures

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


def _predict(args: argparse.Namespace) -> None:
    from llmbench import predict
    from llmbench.predict.constants import DEFAULT_GPU_MEM

    if args.frontier:
        _predict_frontier(args)
        return
    if args.gpu or args.configfile:
        raise UsageError("--gpu and --configfile go with --frontier")
    if args.device_map is not None and args.gpus is None:
        raise UsageError("--device-map needs --gpus N (it picks the planner's policy on N GPUs)")
    args.gpu_mem = args.gpu_mem or DEFAULT_GPU_MEM
    if "," in args.gpu_mem:
        raise UsageError("--gpu-mem: several sizes go with --frontier; predict takes one")
    grid = args.grid or str(_config()["grid"])
    _grid(grid)  # an unknown or invalid grid is a usage error, named before any prediction
    try:
        predict.parse_bytes(args.gpu_mem)
    except ValueError as exc:
        raise UsageError(f"--gpu-mem: {exc}") from None
    if args.gpus is not None:
        _predict_devices(args, grid)
        return
    rows = predict.grid_prediction_rows(
        grid, repo_root=REPO_ROOT, gpu_mem=args.gpu_mem, terms=args.terms
    )
    if args.format == "csv":
        sys.stdout.write(predict.format_csv(rows))
    else:
        print(predict.format_report(rows, grid=grid, gpu_mem=args.gpu_mem, terms=args.terms))


def _predict_frontier(args: argparse.Namespace) -> None:
    """``predict --frontier``: the predicted frontier per device (llmbench.frontier.predicted)."""
    from llmbench import predict
    from llmbench.frontier import predicted, prediction

    if args.gpus is not None or args.terms or args.grid or args.device_map:
        raise UsageError("--frontier takes --configfile, --gpu, --gpu-mem and --format only")
    totals = [prediction.GPUS[name] for name in args.gpu or []]  # argparse checked the names
    for size in (args.gpu_mem or "").split(","):
        if size.strip():
            try:
                totals.append(predict.parse_bytes(size.strip()))
            except ValueError as exc:
                raise UsageError(f"--gpu-mem: {exc}") from None
    if not totals:
        raise UsageError(
            "--frontier needs a device: --gpu NAME (a GPU measured here) or --gpu-mem SIZE[,SIZE]"
            " (nvidia-smi's total, e.g. 46068MiB)"
        )
    config = _config()
    if args.configfile is not None:
        try:
            document = yaml.safe_load(args.configfile.read_text())
        except (OSError, yaml.YAMLError) as exc:
            raise UsageError(f"--configfile: cannot read {args.configfile} ({exc})") from None
        if not isinstance(document, dict) or not isinstance(document.get("frontier"), dict):
            raise UsageError(f"--configfile {args.configfile}: no frontier: section")
        config["frontier"] = document["frontier"]
    try:
        results = predicted.predict_frontier(config, list(dict.fromkeys(totals)))
    except ValueError as exc:
        raise UsageError(str(exc)) from None
    if args.format == "csv":
        sys.stdout.write(predicted.format_csv(results))
        return
    budget = config["frontier"].get("memory_budget_gib")
    note = f"note: the section's memory_budget_gib ({budget}) is not applied: whole devices"
    notes = [] if budget is None else [note]
    print(predicted.format_table(results, notes))


def _predict_devices(args: argparse.Namespace, grid: str) -> None:
    """``predict --gpus N``: one row per device (``llmbench.predict.devicesoutput``)."""
    from llmbench.predict import devicesoutput

    if args.gpus < 1 or args.max_gpus < 1:
        raise UsageError("--gpus and --max-gpus must be at least 1")
    if args.terms:
        raise UsageError("--terms is not available with --gpus")
    rows = devicesoutput.grid_device_rows(
        grid,
        repo_root=REPO_ROOT,
        gpus=args.gpus,
        gpu_mem=args.gpu_mem,
        policy=args.device_map,
        max_gpus=args.max_gpus,
    )
    if args.format == "csv":
        from llmbench.predict import format_csv

        sys.stdout.write(format_csv(rows))
    else:
        print(devicesoutput.format_devices(rows, grid=grid, gpus=args.gpus, gpu_mem=args.gpu_mem))


def _run(args: argparse.Namespace) -> None:
    if args.command == "tables":
        _folder(args.root / "cells", "tables ROOT reads the cell JSONs under ROOT/cells")
        print(f"{rebuild_tables(args.root, args.grid)} cells -> {args.root / 'tables'}")
    elif args.command == "predict":
        _predict(args)
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
        _run(_parser().parse_args(argv))
        sys.stdout.flush()
    except UsageError as exc:
        print(f"llmbench: error: {exc}", file=sys.stderr)
        return 2
    except BrokenPipeError:
        _quiet_stdout()
        return 141
    return 0


if __name__ == "__main__":
    sys.exit(main())
