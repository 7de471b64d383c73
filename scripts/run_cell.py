"""Snakemake entry point: measure one cell in an isolated child process, always write its JSON."""

import sys

sys.stderr = sys.stdout = open(snakemake.log[0], "a")  # noqa: F821 - injected by Snakemake

from llmbench.grid.spec import Cell  # noqa: E402
from llmbench.run.limits import (  # noqa: E402
    cell_attempts,
    effective_timeout,
    fail_for_retry,
    slurm_job_time_left,
)
from llmbench.run.runner import run_cell  # noqa: E402

settings = dict(snakemake.params.settings)  # noqa: F821
settings["threads"] = snakemake.threads  # noqa: F821
# The job's runtime (minutes, set by a cluster profile) and, under Slurm, the seconds its job
# has left: the cell stops itself before the scheduler would kill the job without a JSON.
runtime_min = snakemake.resources.get("runtime")  # noqa: F821
job_time_left_s = slurm_job_time_left()
timeout_s = effective_timeout(settings["cell_timeout_s"], runtime_min, job_time_left_s)
# The cell's limit counts from the end of its start-up (imports); a scheduler's end of job is
# a hard deadline from now, start-up included.
scheduled = runtime_min is not None or job_time_left_s is not None
deadline_s = timeout_s if scheduled else None
# Which try this is, and how many Snakemake makes (cells.smk's onstart passes them on).
attempt = int(snakemake.resources.get("attempt", 1))  # noqa: F821
attempts = cell_attempts()
time_left = "unknown" if job_time_left_s is None else f"{job_time_left_s:.0f} s"
print(
    f"attempt {attempt} of {attempts}; cell time limit {timeout_s:.0f} s from the end of "
    f"start-up (cell_timeout_s "
    f"{settings['cell_timeout_s']} s, job runtime {runtime_min} min, Slurm job time left "
    f"{time_left})",
    flush=True,
)
result = run_cell(
    cell=Cell.from_mapping(snakemake.wildcards),  # noqa: F821
    settings=settings,
    model_entry=snakemake.params.model_entry,  # noqa: F821
    base_dir=snakemake.input.get("base", "").removesuffix("/checkpoint.json") or None,  # noqa: F821
    prequantized_dir=snakemake.input.get("prequantized", "").removesuffix("/checkpoint.json")  # noqa: F821
    or None,
    out_path=snakemake.output[0],  # noqa: F821
    log_path=snakemake.log[0],  # noqa: F821
    timeout_s=timeout_s,
    deadline_s=deadline_s,
    time_limit_inputs={"job_runtime_min": runtime_min, "job_time_left_s": job_time_left_s},
)
print(f"cell {snakemake.output[0]}: {result['status']} {result.get('reason') or ''}")  # noqa: F821

# A crashed cell is a finished job to Snakemake, which would never run it again. Fail the job
# instead while Snakemake has attempts left, so a lost node or a stray kill gets another try;
# the last attempt keeps the crashed JSON.
if fail_for_retry(result["status"], attempt, attempts):
    print(f"attempt {attempt} of {attempts} crashed: failing the job so that Snakemake retries it")
    sys.exit(1)
