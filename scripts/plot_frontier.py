"""Snakemake entry point: the frontier figure from results/tables/frontier.csv."""

import sys

sys.stderr = sys.stdout = open(snakemake.log[0], "a")  # noqa: F821 - injected by Snakemake

from llmbench.report import figures  # noqa: E402

figures.draw_frontier(snakemake.input[0], snakemake.output.png, snakemake.output.svg)  # noqa: F821
