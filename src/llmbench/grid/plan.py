"""Glue between the Snakemake workflow and the package: grid selection, paths, cell settings.

Kept here (not in ``common.smk``) so that it is typed and tested like the rest.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from llmbench.grid.files import InputError
from llmbench.grid.spec import BNB_QUANTS, Cell, expand_grid, load_grid
from llmbench.host import environment

SETTINGS_KEYS = (
    "device",
    "device_map",
    "bnb_4bit_compute_dtype",
    "memory_budget_gib",
    "cell_timeout_s",
    "prequantize",
    "measurement",
)
"""Config keys copied into every cell JSON: what a reader needs to interpret its numbers."""


def export_environment(repo: Path) -> None:
    """Make the package importable in every job and let cells record the commit.

    Jobs inherit this process's environment (locally and, by default, through sbatch), so
    cells on a node that has no git checkout still know which commit they measure.
    """
    src = str(repo / "src")
    paths = [p for p in os.environ.get("PYTHONPATH", "").split(os.pathsep) if p]
    if src not in paths:
        os.environ["PYTHONPATH"] = os.pathsep.join([src, *paths])
    commit = environment.git_head(repo)
    if commit and not os.environ.get("LLMBENCH_GIT_COMMIT"):
        os.environ["LLMBENCH_GIT_COMMIT"] = commit


def host_has_cuda() -> bool:
    """Whether this host has a usable NVIDIA GPU, decided without importing torch.

    An empty or "-1" CUDA_VISIBLE_DEVICES hides all GPUs, as it does for CUDA itself.
    """
    visible = os.environ.get("CUDA_VISIBLE_DEVICES")
    if visible is not None and visible.strip() in ("", "-1"):
        return False
    gpus = Path("/proc/driver/nvidia/gpus")
    if gpus.is_dir() and any(gpus.iterdir()):
        return True
    if shutil.which("nvidia-smi") is None:
        return False
    try:
        listing = subprocess.run(["nvidia-smi", "-L"], capture_output=True, text=True, timeout=20)
    except (OSError, subprocess.SubprocessError):
        return False
    return listing.returncode == 0 and "GPU" in listing.stdout


@dataclass(frozen=True)
class GridChoice:
    """The grid a run will use, and why (a message for the user when it was changed)."""

    name: str
    message: str | None


def choose_grid(config: Mapping[str, Any], has_cuda: bool) -> GridChoice:
    """Apply ``on_missing_gpu`` when the host has no GPU and cells would want one."""
    grid = str(config["grid"])
    wants_gpu = config["device"] in ("auto", "cuda")
    policy = config["on_missing_gpu"]
    if not has_cuda and config["device"] == "cuda" and policy != "ignore":
        # the smoke grid would not help: its cells would be forced onto CUDA too
        raise InputError(
            "device: cuda, but no CUDA GPU was found on this host: every cell would fail. "
            "Pass --config device=auto (or cpu) to run here, or on_missing_gpu=ignore when "
            "the jobs go to GPU nodes (a cluster profile)."
        )
    if has_cuda or not wants_gpu or grid == "smoke":
        return GridChoice(grid, None)
    if policy == "fail":
        raise InputError(
            f"No CUDA GPU was found on this host, and grid {grid!r} needs one "
            "(on_missing_gpu: fail). Run on a GPU host, or pass --config grid=smoke."
        )
    if policy == "ignore":
        return GridChoice(grid, None)
    return GridChoice(
        "smoke",
        f"No CUDA GPU was found on this host: cells run the 'smoke' grid (tiny models, CPU) "
        f"instead of {grid!r} (the predict target still predicts {grid!r}; the frontier has "
        "its own fallback). Pass --config grid=smoke to silence this, or "
        "on_missing_gpu=ignore to run the configured grid anyway (e.g. when submitting to a "
        "cluster).",
    )


def cells_for(config: Mapping[str, Any], grid: str, config_dir: Path) -> tuple[dict, list[Cell]]:
    """Load and expand a grid against the config's model registry (whose entries
    ``llmbench.grid.validate.check_config`` has checked)."""
    document = load_grid(grid, config_dir, config["models"])
    return document, expand_grid(document)


def select_grid(
    config: Mapping[str, Any], has_cuda: bool, config_dir: Path
) -> tuple[GridChoice, dict, list[Cell]]:
    """Validate the configured grid (even if it will be replaced), then apply on_missing_gpu."""
    document, cells = cells_for(config, str(config["grid"]), config_dir)
    choice = choose_grid(config, has_cuda)
    if choice.name != config["grid"]:
        document, cells = cells_for(config, choice.name, config_dir)
    return choice, document, cells


def cell_settings(config: Mapping[str, Any]) -> dict[str, Any]:
    """The settings recorded in each cell JSON."""
    return {key: config[key] for key in SETTINGS_KEYS}


def needs_checkpoint(model_entry: Mapping[str, Any]) -> bool:
    """Random-weight models are materialized by the workflow; pretrained ones are not."""
    return "architecture" in model_entry


def base_checkpoint_dir(cache_dir: str, model: str) -> str:
    """Directory of a model's random-weight checkpoint."""
    return f"{cache_dir}/{model}/base"


def prequantized_dir(cache_dir: str, model: str, quant: str) -> str:
    """Directory of a model's pre-quantized checkpoint."""
    return f"{cache_dir}/{model}/{quant}"


def uses_prequantized(config: Mapping[str, Any], model: str, quant: str) -> bool:
    """Whether a cell loads a pre-quantized checkpoint made by the workflow."""
    return (
        bool(config["prequantize"])
        and quant in BNB_QUANTS
        and needs_checkpoint(config["models"][model])
    )
