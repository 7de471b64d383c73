"""Stage 1, the grid: config and grid files → the list of cells a run measures.

Owns: ``schemas`` (JSON-schema validation of config, grid and cell documents), ``files``
(reading config files; errors name the file, line and column), ``validate`` (the config
checked before any job, one line per error), ``models`` (model registry entries: architecture
files, pretrained paths, the Hub opt-in), ``spec`` (the ``Cell`` and the cartesian expansion
of grid blocks), ``support`` (combinations that cannot run, decided before any process
starts) and ``plan`` (what the Snakemake rules ask: which grid on this host, per-cell
settings, checkpoint paths).
May import: ``llmbench.host``.
"""
