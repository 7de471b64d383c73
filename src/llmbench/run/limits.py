"""A cell's time limit and retry policy under a scheduler (Slurm), for the parent side.

A scheduler kills the whole job at its runtime; the cell stops its child a margin earlier so
that a ``timeout`` JSON is written instead of nothing. Crashed cells fail their job so that
Snakemake retries them while attempts are left. Never imports torch; imports nothing of
llmbench.
"""

from __future__ import annotations

import os
import subprocess
import time
from collections.abc import Mapping
from datetime import datetime

STARTUP_LIMIT_S = 900.0
"""Seconds a cell's process may take to start and import torch, transformers and bitsandbytes
before it begins to load the model. Start-up does not count against the cell's own time limit
(which covers load and measurement): a fresh interpreter took 10-22 s on the H100 host
(results/reference/h100/diagnostics/startup/), a cold shared filesystem can take minutes."""

RUNTIME_MARGIN_S = 60.0
"""Seconds kept free before a scheduler's runtime limit, to write the timeout JSON."""

CELL_ATTEMPTS_VARIABLE = "LLMBENCH_CELL_ATTEMPTS"
"""Environment variable through which cells learn how many attempts Snakemake makes."""

SQUEUE_TIMEOUT_S = 20.0
"""Seconds to wait for squeue when asking for the job's end time."""


def effective_timeout(
    cell_timeout_s: float, runtime_min: float | None, job_time_left_s: float | None = None
) -> float:
    """The cell's time limit: the configured one, or less when the job ends sooner.

    A scheduler kills the whole job at its runtime; stopping the child a margin earlier
    leaves time to write a ``timeout`` cell instead of leaving no file. ``job_time_left_s``
    (see :func:`slurm_job_time_left`) counts what Snakemake's start-up inside the job used.
    """
    runtime_s = float(runtime_min) * 60.0 if runtime_min is not None and runtime_min > 0 else None
    known = [left for left in (job_time_left_s, runtime_s) if left is not None]
    if not known:
        return float(cell_timeout_s)
    margin = min(RUNTIME_MARGIN_S, (runtime_s or known[0]) * 0.1)
    return max(1.0, min(float(cell_timeout_s), min(known) - margin))


def parse_slurm_time(text: str) -> float | None:
    """Epoch seconds of a Slurm timestamp such as ``2026-11-25T19:42:09`` (the cluster's
    local time, as squeue prints it), or None for ``N/A``, ``Unknown`` and the like."""
    try:
        return datetime.fromisoformat(text.strip()).timestamp()
    except ValueError:
        return None


def slurm_job_time_left(environ: Mapping[str, str] | None = None) -> float | None:
    """Seconds until Slurm ends the job this process runs in, or None outside Slurm or when
    squeue cannot tell.

    Slurm (22.05) exports no end time to the job, so squeue is asked once per cell.
    """
    job_id = (os.environ if environ is None else environ).get("SLURM_JOB_ID")
    if not job_id:
        return None
    try:
        listing = subprocess.run(
            ["squeue", "--noheader", "--jobs", job_id, "--format", "%e"],
            capture_output=True,
            text=True,
            timeout=SQUEUE_TIMEOUT_S,
        )
    except (OSError, subprocess.SubprocessError):
        return None
    end = parse_slurm_time(listing.stdout) if listing.returncode == 0 else None
    return None if end is None else end - time.time()


def export_cell_attempts(retries: int) -> None:
    """Tell the cells this process starts, Slurm jobs included (they inherit the environment),
    how many attempts Snakemake makes at a failed job."""
    os.environ[CELL_ATTEMPTS_VARIABLE] = str(retries + 1)


def cell_attempts() -> int:
    """How many attempts Snakemake makes at this cell's job (1 when nobody said)."""
    return int(os.environ.get(CELL_ATTEMPTS_VARIABLE, "1"))


def fail_for_retry(status: str, attempt: int, attempts: int) -> bool:
    """Whether a finished cell should fail its job so that Snakemake runs it again.

    Only a ``crashed`` cell (the worker died without a verdict: a lost node, a killed
    process) is worth another try, and only while attempts are left: the last attempt keeps
    the crashed cell, so the grid still gets its JSON.
    """
    return status == "crashed" and attempt < attempts
