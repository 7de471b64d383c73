"""Stage 5, analysis: cell JSONs → tidy tables → figures.

Owns: ``aggregate`` (cells.csv/.parquet, devices.csv) and the figures.
May import every stage below it (``predict`` for the predicted columns, ``measure.checks``
for the clean-GPU check recomputed from each cell's NVML snapshot, ``record``, ``grid``).
"""
