"""Stage 5, analysis: cell JSONs → tidy tables → figures.

Owns: ``aggregate`` (cells.csv/.parquet, devices.csv), ``figures`` (one module per figure
family), ``compare`` (the same cells on two GPUs), ``landing`` (the report's first page) and
``summary`` (the text printed at the end of a Snakemake run), ``references`` (copying cells
into and out of a committed reference run).
May import every stage below it (``predict`` for the predicted columns, ``measure.checks``
for the clean-GPU check recomputed from each cell's NVML snapshot, ``record``, ``grid``).
"""
