import sys
from pathlib import Path

# The package in src/ is importable here (the Snakefile put it on sys.path) and, through the
# environment that pipeline.export_environment sets, in every job this workflow starts.
from llmbench import frontier as llm_frontier
from llmbench.grid import spec as llm_grid
from llmbench.grid.files import stop_on_input_error
from llmbench.grid import plan as pipeline
from llmbench.grid import validate as llm_config
from llmbench.report.landing import landing as report_landing
from llmbench.report.summary import print_summary, summarize_frontier
from llmbench.run import warmstart as llm_warmstart

# workflow/schemas/config.schema.yaml, with a one-line error naming the key, and every model
# entry (architecture files parsed and built by transformers, pretrained paths present); then
# the grid. A mistake in them stops the run with its message alone, exit status 1.
with stop_on_input_error():
    llm_config.check_config(config, Path(workflow.basedir))
    pipeline.export_environment(Path(workflow.basedir))
    GRID_CHOICE, GRID, CELLS = pipeline.select_grid(
        config, pipeline.host_has_cuda(), Path(workflow.basedir) / "config"
    )
if GRID_CHOICE.message:
    print(f"llmbench: {GRID_CHOICE.message}", file=sys.stderr)
# Targets that measure no cell of the grid (predict predicts config["grid"]; the frontier has
# its own fallback): after the missing-GPU fallback, a run summary of the smoke grid's cells
# would describe a grid they did not use. Snakemake knows the targets once the DAG is built.
FRONTIER_TARGETS = (
    "frontier",
    "results/frontier",
    "results/tables/frontier.csv",
    "results/figures/frontier.",
)
NO_CELL_TARGETS = ("predict", "results/tables/predicted.csv", *FRONTIER_TARGETS)
CACHE = config["cache_dir"]
REPORT_ROOT = config.get("report_root", "results")
FIGURES_IN_PLACE = config["figures_in_place"]
FIGURES = (
    "seed_comparison",
    "memory_vs_seq",
    "latency_vs_seq",
    "status_map",
    "predicted_vs_measured",
    "decode_vs_floor",
)


# A committed reference below results/: reference/<gpu>[/<run>]; its redrawn figures go below
# results/redrawn/ (with figures_in_place, results/redrawn/ may be left out).
REFERENCE = r"reference/[A-Za-z0-9._-]+(/[A-Za-z0-9._-]+)?"
REDRAWN = r"(redrawn/)?" if FIGURES_IN_PLACE else r"redrawn/"
# A reference's frontier table is rebuilt from its searches only with figures_in_place (when
# its files are meant to be rewritten): otherwise it is an input, never a job's output, so a
# fresh clone's redrawing never rewrites it (its mtime can be older than the script's).
FRONTIER_TABLE_ROOT = rf"results(/{REFERENCE})?" if FIGURES_IN_PLACE else r"results"


wildcard_constraints:
    **llm_grid.wildcard_constraints(),
    # A folder of tables: this run's results, or a committed reference.
    root=rf"results(/{REFERENCE})?",
    # Where figures (and the report's copy of cells.csv) go: results, or a reference's redrawn
    # folder results/redrawn/reference/...; with figures_in_place also the reference itself.
    figures_root=rf"results(/{REDRAWN}{REFERENCE})?",


def end_of_run():
    """The Snakefile's onsuccess/onerror (Snakemake keeps one of each): stop this run's
    warm-start server (cells.smk starts it), then print the run summary after Snakemake's
    own output (llmbench.report.summary; it never raises): of the grid's cells, or, when the
    run only redrew a reference's figures (target figures, or files of that reference, with
    report_root naming it), of that reference's cells; of the frontier searches alone when
    every target is one (FRONTIER_TARGETS); none when the missing-GPU fallback changed the
    grid and every target measures no cell (NO_CELL_TARGETS: predict, frontier).
    """
    llm_warmstart.stop_server()
    roots = [REPORT_ROOT, figures_root(REPORT_ROOT)]
    targets = set(workflow.dag_settings.targets or ())
    redrawn = (
        REPORT_ROOT != "results"
        and targets
        and all(
            t == "figures" or t.startswith((REPORT_ROOT, "results/redrawn/"))
            for t in targets
        )
    )
    if redrawn:
        print_summary(REPORT_ROOT, None, report_roots=roots[1:])
    elif targets and all(t.startswith(FRONTIER_TARGETS) for t in targets):
        print_summary("results", summarizer=summarize_frontier)
    elif not (
        GRID_CHOICE.message
        and targets
        and all(t.startswith(NO_CELL_TARGETS) for t in targets)
    ):
        print_summary("results", CELLS, grid=GRID_CHOICE.name, report_roots=roots)


def get_cell_results():
    """Every cell JSON of the selected grid."""
    return [f"results/cells/{cell.relpath}" for cell in CELLS]


def redrawn_root(root):
    """results for this run's tables; results/redrawn/<root below results/> for a reference."""
    return (
        root
        if root == "results"
        else f"results/redrawn/{root.removeprefix('results/')}"
    )


def figures_root(root):
    """Where figures drawn from the tables under ``root`` go: results/figures for this run;
    for a committed reference its redrawn folder (git-ignored), so that redrawing never
    rewrites a tracked file, or, with figures_in_place, the reference itself."""
    return root if FIGURES_IN_PLACE else redrawn_root(root)


def tables_root(figures_root):
    """The folder of tables a figures root is drawn from (the inverse of figures_root)."""
    if figures_root.startswith("results/redrawn/"):
        return f"results/{figures_root.removeprefix('results/redrawn/')}"
    return figures_root


def get_cells_table(wildcards):
    """cells.csv that the figures (or the report's copy) under a figures root come from."""
    return f"{tables_root(wildcards.figures_root)}/tables/cells.csv"


def get_frontier_table(wildcards):
    """frontier.csv that the frontier figure under a figures root comes from."""
    return f"{tables_root(wildcards.figures_root)}/tables/frontier.csv"


def figure_labels(figure):
    """Report labels of a figure: its name and the tables it was drawn from."""
    return lambda wildcards: {
        "figure": figure,
        "results": tables_root(wildcards.figures_root),
    }


def get_figures(root):
    """PNG and SVG of every figure drawn from the tables under ``root``, where figures_root
    puts them: the cells figures, and for a committed reference with a frontier table its
    frontier figure (this run's frontier is the target 'frontier')."""
    names = list(FIGURES)
    if root != "results" and Path(root, "tables", "frontier.csv").is_file():
        has_cells = Path(root, "tables", "cells.csv").is_file()
        names = [*names, "frontier"] if has_cells else ["frontier"]
    return [
        f"{figures_root(root)}/figures/{name}.{ext}"
        for name in names
        for ext in ("png", "svg")
    ]


def get_report_tables(root):
    """The copy of ``root``'s cells.csv the report attaches (category Tables), never inside a
    reference, figures_in_place or not; none when a reference has no cells table."""
    if root != "results" and not Path(root, "tables", "cells.csv").is_file():
        return []
    return [f"{redrawn_root(root)}/report/cells.csv"]


def report_landing_page():
    """What the report's first page (workflow/report/workflow.rst) and the figure captions
    show: llmbench.report.landing of REPORT_ROOT's tables, plus ``captions``, the caption
    line per figures root (REPORT_ROOT's and this run's, redrawn or in place)."""
    page = report_landing(
        REPORT_ROOT, figures_dir=f"{figures_root(REPORT_ROOT)}/figures"
    )
    page["captions"] = {}
    for root in dict.fromkeys([REPORT_ROOT, "results"]):
        line = (page if root == REPORT_ROOT else report_landing(root))["caption"]
        page["captions"].update(dict.fromkeys([root, redrawn_root(root)], line))
    return page


# Internal, not a setting (the checks above ran first and reject it as an unknown key): the
# one place both report templates can read, as snakemake.config["_landing"].
config["_landing"] = report_landing_page()


def get_final_output():
    """Cells, tables and figures of this run."""
    return (
        get_cell_results()
        + [
            "results/tables/cells.csv",
            "results/tables/cells.parquet",
            "results/tables/devices.csv",
            # written last, only when the tables were rebuilt: a run whose table rule failed
            # (a corrupt cell JSON) fails again, naming the file, until it is fixed
            "results/tables/tables.json",
        ]
        + get_figures("results")
        + get_report_tables("results")
    )


def get_cell_checkpoints(wildcards):
    """Checkpoints a cell loads: the base one, and the pre-quantized one when used."""
    entry = config["models"][wildcards.model]
    if not pipeline.needs_checkpoint(entry):
        return {}
    inputs = {
        "base": f"{pipeline.base_checkpoint_dir(CACHE, wildcards.model)}/checkpoint.json"
    }
    if pipeline.uses_prequantized(config, wildcards.model, wildcards.quant):
        inputs["prequantized"] = (
            f"{pipeline.prequantized_dir(CACHE, wildcards.model, wildcards.quant)}/checkpoint.json"
        )
    return inputs


def get_architecture(wildcards):
    """The architecture config a random-weight model is built from."""
    return config["models"][wildcards.model]["architecture"]


def get_seed_cases():
    """The grid's cells that stand for the seed notebook's cases (may be empty)."""
    return GRID.get("seed_cases", [])


_FRONTIER_CHOICE = []


def frontier_section():
    """The frontier section of this run (workflow/rules/frontier.smk): decided on first use, so
    that runs that do not ask for the frontier neither look for a GPU again nor hear about the
    CPU fallback (config/frontier-tiny.yaml on a host without CUDA)."""
    if not _FRONTIER_CHOICE:
        with stop_on_input_error():
            choice = llm_frontier.choose_section(
                config, pipeline.host_has_cuda(), Path(workflow.basedir) / "config"
            )
        if choice.message:
            print(f"llmbench: {choice.message}", file=sys.stderr)
        _FRONTIER_CHOICE.append(choice)
    return _FRONTIER_CHOICE[0].section


def get_frontier_searches(wildcards):
    """Search-result JSONs of a frontier table: this run's planned searches under results/, or
    every search a committed reference (results/reference/...) holds."""
    if wildcards.root == "results":
        return [
            f"results/frontier/searches/{search.relpath}"
            for search in llm_frontier.plan(frontier_section(), config["models"])
        ]
    return sorted(
        str(p) for p in Path(wildcards.root, "frontier", "searches").rglob("*.json")
    )


def get_frontier_probe_settings(wildcards):
    """Settings of every frontier probe: cell settings with the frontier's overrides."""
    return llm_frontier.probe_settings(config, frontier_section())
