"""Snakemake entry point: build a random-weight checkpoint from an architecture config."""

import sys

sys.stderr = sys.stdout = open(snakemake.log[0], "a")  # noqa: F821 - injected by Snakemake

from pathlib import Path  # noqa: E402

from llmbench.measure import models  # noqa: E402

manifest = models.materialize(
    snakemake.input.architecture,  # noqa: F821
    Path(snakemake.output[0]).parent,  # noqa: F821
    seed=snakemake.params.seed,  # noqa: F821
    device=models.resolve_init_device(snakemake.params.device),  # noqa: F821
)
print(f"materialized {manifest['n_parameters']} parameters in {manifest['seconds']:.1f} s")
