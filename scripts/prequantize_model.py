"""Snakemake entry point: quantize a checkpoint once with bitsandbytes and serialize it."""

import sys

sys.stderr = sys.stdout = open(snakemake.log[0], "a")  # noqa: F821 - injected by Snakemake

from pathlib import Path  # noqa: E402

from llmbench.measure import models  # noqa: E402

manifest = models.prequantize(
    Path(snakemake.input.base).parent,  # noqa: F821
    Path(snakemake.output[0]).parent,  # noqa: F821
    quant=snakemake.wildcards.quant,  # noqa: F821
    compute_dtype=snakemake.params.compute_dtype,  # noqa: F821
    device=models.resolve_init_device(snakemake.params.device),  # noqa: F821
)
print(f"prequantize {snakemake.wildcards.quant}: {manifest['status']} {manifest.get('error', '')}")  # noqa: F821
