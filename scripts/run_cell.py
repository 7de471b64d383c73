"""Snakemake entry point: measure one cell in an isolated child process, always write its JSON."""

import sys

sys.stderr = sys.stdout = open(snakemake.log[0], "a")  # noqa: F821 - injected by Snakemake

from llmbench.grid import Cell  # noqa: E402
from llmbench.runner import effective_timeout, run_cell  # noqa: E402

settings = dict(snakemake.params.settings)  # noqa: F821
settings["threads"] = snakemake.threads  # noqa: F821
result = run_cell(
    cell=Cell.from_mapping(snakemake.wildcards),  # noqa: F821
    settings=settings,
    model_entry=snakemake.params.model_entry,  # noqa: F821
    base_dir=snakemake.input.get("base", "").removesuffix("/checkpoint.json") or None,  # noqa: F821
    prequantized_dir=snakemake.input.get("prequantized", "").removesuffix("/checkpoint.json")  # noqa: F821
    or None,
    out_path=snakemake.output[0],  # noqa: F821
    log_path=snakemake.log[0],  # noqa: F821
    timeout_s=effective_timeout(
        settings["cell_timeout_s"],
        snakemake.resources.get("runtime"),  # noqa: F821
    ),
)
print(f"cell {snakemake.output[0]}: {result['status']} {result.get('reason') or ''}")  # noqa: F821
