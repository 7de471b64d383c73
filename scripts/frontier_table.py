"""Snakemake entry point: results/tables/frontier.csv, one row per frontier search."""

import sys

sys.stderr = sys.stdout = open(snakemake.log[0], "a")  # noqa: F821 - injected by Snakemake

from llmbench import frontier  # noqa: E402

table = frontier.table(snakemake.input.searches)  # noqa: F821
table.to_csv(snakemake.output[0], index=False)  # noqa: F821
print(
    f"{len(table)} searches, {int(table['probes'].sum())} probes "
    f"({int(table['probes_run'].sum())} run, {int(table['probes_reused'].sum())} reused); "
    f"brute force at the same step: {int(table['brute_force'].sum())} cells"
)
