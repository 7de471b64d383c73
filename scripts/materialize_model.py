"""Snakemake entry point: build a random-weight checkpoint from an architecture config.

A build that raises (a config transformers accepts but cannot instantiate, a full disk, a bug)
does not fail the job: its manifest is written with ``status: failed``, the exception, the
architecture file and this log (``llmbench.run.builds.failed_build_manifest``), the console
says so, and the job succeeds. Every cell of the model then ends as an ``error`` cell naming
the failed build, and the rest of the run still gets its tables. After fixing the cause,
editing the architecture file rebuilds the model on the next run (it is newer than the
manifest); otherwise ``snakemake -R <manifest>`` does, and reruns the model's cells.
"""

import sys

console = sys.stderr  # Snakemake's console; the job's own output goes to its log
sys.stderr = sys.stdout = open(snakemake.log[0], "a")  # noqa: F821 - injected by Snakemake

import traceback  # noqa: E402
from pathlib import Path  # noqa: E402

from llmbench.record.cell import write_json_atomic  # noqa: E402
from llmbench.run.builds import failed_build_manifest  # noqa: E402

manifest_path = Path(snakemake.output[0])  # noqa: F821
architecture = str(snakemake.input.architecture)  # noqa: F821
log_path = snakemake.log[0]  # noqa: F821
try:
    from llmbench.measure import models

    manifest = models.materialize(
        architecture,
        manifest_path.parent,
        seed=snakemake.params.seed,  # noqa: F821
        device=models.resolve_init_device(snakemake.params.device),  # noqa: F821
    )
    print(f"materialized {manifest['n_parameters']} parameters in {manifest['seconds']:.1f} s")
except Exception as exc:  # recorded as data: the model's cells say why they did not run
    traceback.print_exc()
    failed = failed_build_manifest(
        exc, kind="random-weights", source=architecture, log_path=log_path
    )
    write_json_atomic(manifest_path, failed)
    print(
        f"llmbench: building model {snakemake.wildcards.model!r} from {architecture} failed: "  # noqa: F821
        f"{failed['error']} (log {log_path}). Its cells are recorded as status error; "
        f"after fixing the cause, rerun with: snakemake -R {manifest_path}",
        file=console,
        flush=True,
    )
