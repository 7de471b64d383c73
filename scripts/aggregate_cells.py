"""Snakemake entry point: validate every cell JSON and write the tidy tables."""

import sys

sys.stderr = sys.stdout = open(snakemake.log[0], "a")  # noqa: F821 - injected by Snakemake

from llmbench.report import aggregate  # noqa: E402

cells, devices = aggregate.build_tables(snakemake.input.cells, snakemake.params.seed_cases)  # noqa: F821
aggregate.write_tables(
    cells,
    devices,
    cells_csv=snakemake.output.cells_csv,  # noqa: F821
    cells_parquet=snakemake.output.cells_parquet,  # noqa: F821
    devices_csv=snakemake.output.devices_csv,  # noqa: F821
)
print(f"{len(cells)} cells, {len(devices)} device rows")
