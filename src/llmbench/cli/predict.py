"""``llmbench predict``: its options (:func:`add_predict`) and what it runs
(:func:`run_predict`): the one-device table, ``--gpus N`` per device, ``--frontier`` per
device size (the help text of each column is ``llmbench.predict.help``'s).

May import ``llmbench.cli.common``, ``llmbench.predict``, ``llmbench.frontier``,
``llmbench.grid`` and ``llmbench.host.devicesize``; torch only through ``--gpus`` and
``--frontier``.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import TYPE_CHECKING

from llmbench.cli import common
from llmbench.cli.common import UsageError, grid_document, repo_config

if TYPE_CHECKING:
    from llmbench.host.devicesize import DeviceSize


def _predict_epilog() -> str:
    from llmbench.frontier.predicted import HELP
    from llmbench.predict.help import COLUMNS, SIZES

    return "\n".join((COLUMNS, HELP, SIZES))


def add_predict(commands: argparse._SubParsersAction) -> None:
    """The ``predict`` subcommand's options."""
    from llmbench.host.devicesize import DEFAULT_GPU, GPUS

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
        help="the device's total memory as nvidia-smi reports it, e.g. 81559MiB (an H100 80GB;"
        " not '80GB', which is 10^9-byte GB), or a name as --gpu takes; cells are fitted into"
        " PyTorch's total of it: that less the memory the driver keeps (measured per GPU"
        " model); with --frontier: comma-separated, one column each",
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
        type=str.lower,
        choices=sorted(GPUS),
        help="a GPU measured here, by name, instead of --gpu-mem (default: the config's"
        f" predict_gpu, {DEFAULT_GPU} as shipped; --frontier has none: give it one or more, one"
        " column each)",
    )
    predictor.add_argument(
        "--gpus",
        type=int,
        help="per-device prediction on this many GPUs of the device, and GPUs needed",
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

    for flag, value in (("--grid", args.grid), ("--gpu-mem", args.gpu_mem)):
        if value is not None and not value.strip():
            raise UsageError(f"{flag}: an empty value (leave the option out for the default)")
    if args.frontier:
        _predict_frontier(args)
        return
    if args.configfile:
        raise UsageError("--configfile goes with --frontier")
    for flag, value in (("--device-map", args.device_map), ("--max-gpus", args.max_gpus)):
        if value is not None and args.gpus is None:
            raise UsageError(f"{flag} needs --gpus N (it sets how N GPUs are planned)")
    if len(args.gpu or []) + (args.gpu_mem is not None) > 1:
        raise UsageError("one device: --gpu NAME or --gpu-mem SIZE (several go with --frontier)")
    if args.gpu_mem is not None and "," in args.gpu_mem:
        raise UsageError("--gpu-mem: several sizes go with --frontier; predict takes one")
    grid = args.grid or str(repo_config()["grid"])
    grid_document(grid)  # an unknown or invalid grid is a usage error, named before any prediction
    if args.gpu_mem is None and not args.gpu:  # the config's, as snakemake predict fits to
        args.gpu_mem = str(repo_config()["predict_gpu"])
    if args.gpu_mem is not None:
        _read_gpu_mem(args.gpu_mem)
    args.gpu_mem = args.gpu_mem or args.gpu[0]
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
    from llmbench.frontier import predicted
    from llmbench.host.devicesize import read_device

    extra = (args.gpus, args.grid, args.device_map, args.max_gpus)
    if args.terms or any(value is not None for value in extra):
        raise UsageError("--frontier takes --configfile, --gpu, --gpu-mem and --format only")
    devices = [read_device(name) for name in args.gpu or []]  # argparse checked the names
    sizes = [size.strip() for size in (args.gpu_mem or "").split(",")]
    devices += [_read_gpu_mem(size) for size in sizes if size]
    labels = {}  # each device as it was named; the first name of a total given twice
    for device in devices:
        labels.setdefault(device.nvml_total, device.label)
    totals = list(labels)
    if not totals:
        raise UsageError(
            "--frontier needs a device: --gpu NAME (a GPU measured here) or --gpu-mem SIZE[,SIZE]"
            " (nvidia-smi's total, e.g. 46068MiB)"
        )
    config = _frontier_config(args.configfile)
    try:
        results = predicted.predict_frontier(config, totals)
    except ValueError as exc:
        raise UsageError(str(exc)) from None
    if args.format == "csv":
        sys.stdout.write(predicted.format_csv(results, labels))
        return
    budget = config["frontier"].get("memory_budget_gib")
    note = f"note: the section's memory_budget_gib ({budget}) is not applied: whole devices"
    notes = [] if budget is None else [note]
    print(predicted.format_table(results, notes, labels))


def _read_gpu_mem(size: str) -> DeviceSize:
    """The device ``--gpu-mem SIZE`` names (``llmbench.host.devicesize.read_device``), with a
    note when it looks copied from torch; UsageError when it cannot be read or leaves PyTorch
    nothing once the driver has its share."""
    from llmbench.host.devicesize import read_device

    try:
        device = read_device(size)
    except ValueError as exc:
        raise UsageError(f"--gpu-mem: {exc}") from None
    _torch_total_note(size, device.nvml_total)
    if device.unusable:
        whole = "--gpu-mem is the card's whole total"
        raise UsageError(f"--gpu-mem {size}: {device.unusable} ({whole})")
    return device


def _torch_total_note(size: str, total: int) -> None:
    """A note on stderr when ``--gpu-mem SIZE`` is, to 0.005 GiB (``torch_total_of``), a
    measured GPU's total as torch reports it, not as nvidia-smi does (what ``--gpu-mem``
    reads): the capacity is then short by the driver's unreported memory
    (``llmbench.host.devicesize``)."""
    from llmbench import MIB
    from llmbench.host.devicesize import GPUS, torch_total_of

    name = torch_total_of(total)
    if name is not None:
        print(
            f"llmbench: note: --gpu-mem {size} is PyTorch's total of an {name}; --gpu-mem reads "
            f"nvidia-smi's ({GPUS[name] // MIB}MiB): use --gpu {name}",
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
