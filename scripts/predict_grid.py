"""Snakemake entry point: the analytic memory model for every cell of the configured grid,
with the run's own config (``--configfile`` and ``--config`` applied: models, decode length,
4-bit compute dtype, device), not config/config.yaml as it lies on disk."""

import sys
from pathlib import Path

sys.stderr = sys.stdout = open(snakemake.log[0], "a")  # noqa: F821 - injected by Snakemake

from llmbench import REPO_ROOT, predict  # noqa: E402

rows = predict.grid_prediction_rows(
    snakemake.params.grid,  # noqa: F821
    repo_root=REPO_ROOT,
    gpu_mem=snakemake.params.gpu,  # noqa: F821
    terms=True,
    run_config=snakemake.config,  # noqa: F821
)
output = Path(snakemake.output.predicted)  # noqa: F821
output.parent.mkdir(parents=True, exist_ok=True)
output.write_text(predict.format_csv(rows))
print(f"{len(rows)} cells of grid {snakemake.params.grid} predicted -> {output}")  # noqa: F821
