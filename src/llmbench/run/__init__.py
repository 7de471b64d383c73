"""Stage 2, the parent side of a cell: start its process, enforce the time limit, write its JSON.

Owns: ``runner`` (one isolated process per cell, always a JSON at the end), ``slurm``
(a cell's time limit under a Slurm job), ``child`` (the child's environment) and
``warmstart`` (a fork server that imports torch once per run). Never imports torch.
May import: ``llmbench.grid``, ``llmbench.host``, ``llmbench.record``; it starts
``llmbench.measure.worker`` by name, never imports it.
"""
