"""Stage 2, the parent side of a cell: start its process, enforce the time limit, write its JSON.

Owns: ``runner`` (one isolated process per cell; a JSON at the end whatever happens; start-up
and measurement limited separately), ``gpulock`` (one cell per GPU at a time, across runs),
``limits`` (a cell's time limit under a scheduler's runtime; retrying crashed cells),
``builds`` (cells of a model whose checkpoint could not be built), ``child`` (the
environment a worker starts with), ``scratch`` (scratch folders a killed run does not leave
behind), ``warmstart`` (a fork server that imports torch once per run), ``preload`` (what
that server imports, without initialising CUDA, and when it refuses to serve) and
``warmchild`` (the runner's client of that server). Never imports torch (the server process
does, in ``preload``). May import: ``llmbench.grid``,
``llmbench.host``, ``llmbench.record``; it starts ``llmbench.measure.worker`` by name and
never imports it.
"""
