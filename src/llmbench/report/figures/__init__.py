"""Seaborn figures drawn from the tables alone (no cell JSON, no GPU needed).

Owns every figure of the report, one module per figure family: ``style`` (colours, markers,
tags, the CPU banner, saving), ``marks`` (which columns tell cells apart, and the check that a
figure leaves at most one cell per mark), ``unrun`` (the marks of cells that did not run),
``seed`` (seed notebook comparison), ``scaling`` (memory and latency vs sequence length),
``status`` (status of every cell), ``predicted`` (analytic model vs measurement), ``frontier``
(out-of-memory frontier), ``crossgpu`` (the same cells on two GPUs) and ``draw`` (the registry
and the entry points that read a table and write PNG + SVG; a figure that refuses is replaced
by one that says why). May import ``llmbench.grid`` and the rest of the stack below ``report``,
plus pandas, numpy, seaborn and matplotlib; nothing here imports ``aggregate``.

Every plotted mark is one cell (or one search): no seaborn estimator, no silent mean.

GPU runs plot the CUDA allocator's numbers; CPU runs (which have none) plot host RSS, and the
axis label says so.
"""

import matplotlib

# Before any module of the package imports pyplot: figures are written to files, never shown.
matplotlib.use("Agg")

from llmbench.report.figures.draw import (  # noqa: E402
    FIGURES,
    draw_all,
    draw_crossgpu,
    draw_frontier,
)

__all__ = ["FIGURES", "draw_all", "draw_crossgpu", "draw_frontier"]
