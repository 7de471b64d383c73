"""Snakemake entry point: quantize a checkpoint once with bitsandbytes and serialize it.

Never fails the job for a failed quantization: the manifest then says ``status: failed`` and
why, and cells quantize on load instead (where the failure is classified). When the base
checkpoint itself was not built, nothing is loaded: the manifest says so, and the cells are
recorded as ``error`` cells naming the base build (``llmbench.run.runner``).
"""

import sys

sys.stderr = sys.stdout = open(snakemake.log[0], "a")  # noqa: F821 - injected by Snakemake

import traceback  # noqa: E402
from pathlib import Path  # noqa: E402

from llmbench.record.cell import write_json_atomic  # noqa: E402
from llmbench.run.builds import failed_build, failed_build_manifest  # noqa: E402

base_dir = Path(snakemake.input.base).parent  # noqa: F821
manifest_path = Path(snakemake.output[0])  # noqa: F821
quant = snakemake.wildcards.quant  # noqa: F821
log_path = snakemake.log[0]  # noqa: F821
try:
    unbuilt = failed_build(base_dir)
    if unbuilt is not None:
        raise RuntimeError(f"the base checkpoint was not built ({unbuilt[1].get('error')})")
    from llmbench.measure import models

    manifest = models.prequantize(
        base_dir,
        manifest_path.parent,
        quant=quant,
        compute_dtype=snakemake.params.compute_dtype,  # noqa: F821
        device=models.resolve_init_device(snakemake.params.device),  # noqa: F821
    )
except Exception as exc:  # recorded as data, like a failed quantization
    traceback.print_exc()
    manifest = failed_build_manifest(
        exc, kind="prequantized", source=str(base_dir), log_path=log_path
    )
    manifest["quantization"] = quant
    write_json_atomic(manifest_path, manifest)
print(f"prequantize {quant}: {manifest['status']} {manifest.get('error', '')}")
