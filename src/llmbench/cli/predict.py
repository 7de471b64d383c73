"""``llmbench predict``: its options (:func:`add_predict`) and what it runs
(:func:`run_predict`): the one-device table, ``--gpus N`` per device, ``--frontier`` per
device size (the help text of each column is ``llmbench.predict.help``'s).

May import ``llmbench.cli.common``, ``llmbench.predict``, ``llmbench.frontier`` and
``llmbench.grid``; torch only through ``--gpus`` and ``--frontier``.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from llmbench.cli import common
from llmbench.cli.common import UsageError, grid_document, repo_config


def _predict_epilog() -> str:
    from llmbench.frontier.predicted import HELP
    from llmbench.predict.help import COLUMNS, SIZES

    return "\n".join((COLUMNS, HELP, SIZES))


def add_predict(commands: argparse._SubParsersAction) -> None:
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
        help="with --frontier: a YAML file merged over config/config.yaml as snakemake"
        " --configfile merges it (key by key: its frontier: section and models)",
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
        help="with --gpus: the most GPUs 'GPUs needed' tries (default 8)",
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


def run_predict(args: argparse.Namespace) -> None:
    from llmbench import predict
    from llmbench.predict.constants import DEFAULT_GPU_MEM

    for flag, value in (("--grid", args.grid), ("--gpu-mem", args.gpu_mem)):
        if value is not None and not value.strip():
            raise UsageError(f"{flag}: an empty value (leave the option out for the default)")
    if args.frontier:
        _predict_frontier(args)
        return
    if args.gpu or args.configfile:
        raise UsageError("--gpu and --configfile go with --frontier")
    for flag, value in (("--device-map", args.device_map), ("--max-gpus", args.max_gpus)):
        if value is not None and args.gpus is None:
            raise UsageError(f"{flag} needs --gpus N (it sets how N GPUs are planned)")
    args.gpu_mem = args.gpu_mem or DEFAULT_GPU_MEM
    if "," in args.gpu_mem:
        raise UsageError("--gpu-mem: several sizes go with --frontier; predict takes one")
    grid = args.grid or str(repo_config()["grid"])
    grid_document(grid)  # an unknown or invalid grid is a usage error, named before any prediction
    try:
        predict.parse_bytes(args.gpu_mem)
    except ValueError as exc:
        raise UsageError(f"--gpu-mem: {exc}") from None
    if args.gpus is not None:
        _predict_devices(args, grid)
        return
    rows = predict.grid_prediction_rows(
        grid, repo_root=common.REPO_ROOT, gpu_mem=args.gpu_mem, terms=args.terms
    )
    if args.format == "csv":
        sys.stdout.write(predict.format_csv(rows))
    else:
        print(predict.format_report(rows, grid=grid, gpu_mem=args.gpu_mem, terms=args.terms))


def _predict_frontier(args: argparse.Namespace) -> None:
    """``predict --frontier``: the predicted frontier per device (llmbench.frontier.predicted)."""
    from llmbench import predict
    from llmbench.frontier import predicted, prediction

    extra = (args.gpus, args.grid, args.device_map, args.max_gpus)
    if args.terms or any(value is not None for value in extra):
        raise UsageError("--frontier takes --configfile, --gpu, --gpu-mem and --format only")
    totals = [prediction.GPUS[name] for name in args.gpu or []]  # argparse checked the names
    for size in (args.gpu_mem or "").split(","):
        if size.strip():
            try:
                totals.append(predict.parse_bytes(size.strip()))
            except ValueError as exc:
                raise UsageError(f"--gpu-mem: {exc}") from None
            _torch_total_note(size.strip(), totals[-1])
    if not totals:
        raise UsageError(
            "--frontier needs a device: --gpu NAME (a GPU measured here) or --gpu-mem SIZE[,SIZE]"
            " (nvidia-smi's total, e.g. 46068MiB)"
        )
    config = _frontier_config(args.configfile)
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


def _torch_total_note(size: str, total: int) -> None:
    """A note on stderr when ``--frontier --gpu-mem SIZE`` is, to 1 MiB, a measured GPU's
    total as torch reports it (what plain ``predict --gpu-mem`` takes): ``--frontier`` reads
    NVML's total, larger by the driver's unreported memory, so the capacity would be short."""
    from llmbench import MIB
    from llmbench.frontier import prediction

    for name, nvml_total in prediction.GPUS.items():
        if abs(total - (nvml_total - prediction.nvml_unreported_bytes(nvml_total)[0])) < MIB:
            print(
                f"llmbench: note: --gpu-mem {size} is torch's total of an {name}; --frontier "
                f"reads nvidia-smi's ({nvml_total // MIB}MiB): use --gpu {name}",
                file=sys.stderr,
            )


def _frontier_config(configfile: Path | None) -> dict:
    """config.yaml with ``configfile`` merged over it key by key, as ``snakemake
    --configfile`` merges it (its own models too), then checked as Snakemake's run checks it
    (schema, ranges; ``llmbench.grid.validate``; the searched models' entries,
    ``llmbench.grid.models``). UsageError naming the file or the key."""
    from llmbench.grid import models, validate
    from llmbench.grid.files import ConfigFileError, read_yaml

    config = repo_config()
    if configfile is not None:
        try:
            document = read_yaml(configfile)
        except ConfigFileError as exc:
            raise UsageError(f"--configfile: {str(exc).splitlines()[0]}") from None
        if not isinstance(document, dict) or not isinstance(document.get("frontier"), dict):
            raise UsageError(f"--configfile {configfile}: no frontier: section")
        validate.merge(config, document)
    where = f"--configfile {configfile}: " if configfile is not None else ""
    problem = validate.config_problem(config)
    if problem:
        raise UsageError(where + problem)
    searched = {m: config["models"][m] for m in config["frontier"].get("models") or ()}
    try:  # the entries searched, as the run checks every entry (files present, transformers)
        models.check_entries(searched, common.REPO_ROOT, cache_path=None)
    except models.ModelEntryError as exc:
        raise UsageError(where + str(exc)) from None
    return config


def _predict_devices(args: argparse.Namespace, grid: str) -> None:
    """``predict --gpus N``: one row per device (``llmbench.predict.devicesoutput``)."""
    from llmbench.predict import devicesoutput
    from llmbench.predict.multigpu import MAX_GPUS

    args.max_gpus = MAX_GPUS if args.max_gpus is None else args.max_gpus
    if args.gpus < 1 or args.max_gpus < 1:
        raise UsageError("--gpus and --max-gpus must be at least 1")
    if args.terms:
        raise UsageError("--terms is not available with --gpus")
    rows = devicesoutput.grid_device_rows(
        grid,
        repo_root=common.REPO_ROOT,
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
