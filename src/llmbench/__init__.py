"""llmbench: GPU memory and latency of LLM inference, one isolated process per grid cell."""

from pathlib import Path

__version__ = "0.1.0"

#: Root of the repository this package lives in (src layout: <root>/src/llmbench).
REPO_ROOT = Path(__file__).resolve().parents[2]
#: JSON schemas shared with the Snakemake workflow.
SCHEMA_DIR = REPO_ROOT / "workflow" / "schemas"

GIB = 2**30
"""Bytes in a GiB, 2^30 (binary gigabyte; a "GB" is 10^9)."""

MIB = 2**20
"""Bytes in a MiB, 2^20."""
