"""Snakemake entry point: validate every cell JSON and write the tidy tables.

Cell files that are not valid cell JSONs fail the job, named on the console (Snakemake's
stderr) as well as in the log; the tables are then not touched, and Snakemake puts back the
previous ones (they are ``update()`` outputs, workflow/rules/aggregate.smk). The receipt, a
plain output, is written last and only on success, so a failed build is tried again next run.
"""

import sys

console = sys.stderr  # Snakemake's console; the job's own output goes to its log
sys.stderr = sys.stdout = open(snakemake.log[0], "a")  # noqa: F821 - injected by Snakemake

from llmbench.record.cell import write_json_atomic  # noqa: E402
from llmbench.report import aggregate  # noqa: E402

try:
    cells, devices = aggregate.build_tables(
        snakemake.input.cells,  # noqa: F821
        snakemake.params.seed_cases,  # noqa: F821
        models=snakemake.config["models"],  # noqa: F821 - the run's registry, --configfile applied
    )
except aggregate.UnreadableCells as exc:
    message = f"llmbench: tables not rebuilt, the previous ones are kept. {exc}"
    print(message, flush=True)
    print(message, file=console, flush=True)
    sys.exit(1)
aggregate.write_tables(
    cells,
    devices,
    cells_csv=snakemake.output.cells_csv,  # noqa: F821
    cells_parquet=snakemake.output.cells_parquet,  # noqa: F821
    devices_csv=snakemake.output.devices_csv,  # noqa: F821
)
write_json_atomic(
    snakemake.output.receipt,  # noqa: F821
    {"cells": len(cells), "device_rows": len(devices), "cell_files": len(snakemake.input.cells)},  # noqa: F821
)
print(f"{len(cells)} cells, {len(devices)} device rows")
