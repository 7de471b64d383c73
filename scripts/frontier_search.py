"""Snakemake entry point: one out-of-memory frontier search; every probe is an isolated cell."""

import sys

sys.stderr = sys.stdout = open(snakemake.log[0], "a", buffering=1)  # noqa: F821 - Snakemake

from llmbench import frontier  # noqa: E402

settings = dict(snakemake.params.settings)  # noqa: F821
settings["threads"] = snakemake.threads  # noqa: F821
frontier.run_search(
    frontier.Search.from_wildcards(snakemake.wildcards),  # noqa: F821
    section=snakemake.params.section,  # noqa: F821
    settings=settings,
    model_entry=snakemake.params.model_entry,  # noqa: F821
    base_dir=snakemake.input.get("base", "").removesuffix("/checkpoint.json") or None,  # noqa: F821
    prequantized_dir=snakemake.input.get("prequantized", "").removesuffix("/checkpoint.json")  # noqa: F821
    or None,
    probes_dir=snakemake.params.probes_dir,  # noqa: F821
    logs_dir=snakemake.params.probe_logs_dir,  # noqa: F821
    out_path=snakemake.output[0],  # noqa: F821
)
