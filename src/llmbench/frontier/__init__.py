"""Out-of-memory frontier: the largest sequence length (or batch) that runs, found by bisection.

For a fixed (model, quant, attn, dtype, batch) the search finds the largest sequence length on
the grid ``seq_min, seq_min + step, ..., <= seq_max`` whose cell runs; for a fixed (..., seq)
it finds the largest batch the same way. Every probe is an ordinary cell, measured by
``runner.run_cell`` in its own process and written as an ordinary cell JSON.

The package has three layers, so that the search can be tested without running anything:

1. Pure search (:mod:`.search`, :func:`bisect_frontier`): integers on a step grid, a
   ``probe(value)`` callable and an optional predicted frontier. No I/O.
2. Probing: :mod:`.probes` (:func:`make_probe`) turns a value into a cell, reuses an existing
   probe JSON, or runs the cell; :mod:`.prediction` predicts the frontier the search starts
   from (llmbench.predict) and corrects it after each probe, or, on one CUDA device,
   :mod:`.simulated` answers every probe with the allocator simulation
   (``llmbench.predict.oom``) and the search starts at that frontier; :mod:`.execute`
   (:func:`run_search`) runs one search and writes the search-result JSON.
3. Planning and tables: :mod:`.planning` (:func:`plan`, :func:`choose_section`) says which
   searches a config asks for; :mod:`.tables` (:func:`table`) makes one row per search for
   ``results/tables/frontier.csv``; :mod:`.predicted` (``llmbench predict --frontier``)
   simulates every search of a section on devices of given sizes, running nothing.

Imports run one way: search < planning < simulated < probes, prediction < execute, predicted;
tables reads only the search JSON. The package may import ``llmbench.host``, ``llmbench.grid``,
``llmbench.record``, ``llmbench.measure``, ``llmbench.run`` and ``llmbench.predict``. This
module re-exports every name used outside the package (``from llmbench import frontier;
frontier.run_search``).

Assumption (monotonicity): memory grows with sequence length and batch, so if a value runs,
every smaller value runs, and if it fails for memory, every larger value fails. The search
never probes a value outside the current bracket, so it never sees a contradiction; a
non-monotone configuration (noise near the boundary) yields *a* boundary point, exact to the
step only where the assumption holds. ``scripts/frontier_brute.py`` measures the cells around
each found frontier to check it.

Probe statuses (see llmbench.measure.failures.STATUSES):

- ``ok``: runs. ``oom``: does not run (the frontier signal).
- ``check_failed``: the cell ran, but a truth check failed (quantization not applied,
  attention not the one requested), so its memory is not that of the configuration asked for:
  the search stops and reports ``check_failed`` instead of a frontier.
- ``unsupported``/``unavailable``: the configuration cannot run at any size here; the search
  stops at once and reports that status (typically after one probe).
- ``error``/``timeout``/``crashed``: not a memory verdict; the search stops and reports the
  status, keeping the largest value that ran so far (``largest_ok``) as a lower bound.

Search statuses: ``found`` (``frontier`` ran, ``first_fail`` = frontier + step ran out of
memory), ``above_max`` (everything up to the grid's maximum ran: ``frontier`` is the maximum,
a lower bound, ``first_fail`` is None), ``below_min`` (the minimum already ran out of memory:
``frontier`` is None), or the stopping probe status above.
"""

from llmbench.frontier.execute import SEARCH_SCHEMA_VERSION, run_search
from llmbench.frontier.planning import (
    AXES,
    TINY_FRONTIER,
    FrontierChoice,
    Search,
    choose_section,
    plan,
    search_values,
)
from llmbench.frontier.prediction import (
    Prediction,
    Predictor,
    capacity_bytes,
    cuda_context_bytes,
    default_predictor,
    model_config,
    visible_device_totals,
)
from llmbench.frontier.probes import (
    REUSABLE_STATUSES,
    budget_peak_bytes,
    make_probe,
    probe_device,
    probe_settings,
    reusable_probe,
)
from llmbench.frontier.search import (
    DECIDED_STATUSES,
    EXTRA_PROBES,
    FAIL_STATUSES,
    PASS_STATUSES,
    SEARCH_STATUSES,
    ProbeRecord,
    SearchOutcome,
    bisect_frontier,
    goal_probes,
    grid_values,
    max_probes,
    nearest_index,
    next_probe_index,
    predicted_index,
)
from llmbench.frontier.tables import TABLE_COLUMNS, table, table_row

__all__ = [
    "AXES",
    "DECIDED_STATUSES",
    "EXTRA_PROBES",
    "FAIL_STATUSES",
    "FrontierChoice",
    "PASS_STATUSES",
    "Prediction",
    "Predictor",
    "ProbeRecord",
    "REUSABLE_STATUSES",
    "SEARCH_SCHEMA_VERSION",
    "SEARCH_STATUSES",
    "Search",
    "SearchOutcome",
    "TABLE_COLUMNS",
    "TINY_FRONTIER",
    "bisect_frontier",
    "budget_peak_bytes",
    "capacity_bytes",
    "choose_section",
    "cuda_context_bytes",
    "default_predictor",
    "goal_probes",
    "grid_values",
    "make_probe",
    "max_probes",
    "model_config",
    "nearest_index",
    "next_probe_index",
    "plan",
    "predicted_index",
    "probe_device",
    "probe_settings",
    "reusable_probe",
    "run_search",
    "search_values",
    "table",
    "table_row",
    "visible_device_totals",
]
