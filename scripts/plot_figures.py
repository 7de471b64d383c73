"""Snakemake entry point: draw every figure from the cells table."""

import sys

sys.stderr = sys.stdout = open(snakemake.log[0], "a")  # noqa: F821 - injected by Snakemake

from llmbench.report import figures  # noqa: E402

figures.draw_all(snakemake.input.cells, snakemake.output)  # noqa: F821
