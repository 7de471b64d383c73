import sys
from pathlib import Path

# The measurement package lives in src/: importable here, and (via the environment that
# pipeline.export_environment sets) in every job this workflow starts.
sys.path.insert(0, str(Path(workflow.basedir) / "src"))

from llmbench import frontier as llm_frontier
from llmbench.grid import spec as llm_grid
from llmbench.grid import plan as pipeline
from llmbench.grid import validate as llm_config
from llmbench.report.summary import print_summary
from llmbench.run import warmstart as llm_warmstart

# workflow/schemas/config.schema.yaml, with a one-line error naming the key, and every model
# entry (architecture files parsed and built by transformers, pretrained paths present).
llm_config.check_config(config, Path(workflow.basedir))

pipeline.export_environment(Path(workflow.basedir))

GRID_CHOICE, GRID, CELLS = pipeline.select_grid(
    config, pipeline.host_has_cuda(), Path(workflow.basedir) / "config"
)
if GRID_CHOICE.message:
    print(f"llmbench: {GRID_CHOICE.message}", file=sys.stderr)
CACHE = config["cache_dir"]
REPORT_ROOT = config.get("report_root", "results")
FIGURES = (
    "seed_comparison",
    "memory_vs_seq",
    "latency_vs_seq",
    "status_map",
    "predicted_vs_measured",
)


wildcard_constraints:
    **llm_grid.wildcard_constraints(),
    root=r"results(/reference/[A-Za-z0-9._-]+(/[A-Za-z0-9._-]+)?)?",


def end_of_run():
    """The Snakefile's onsuccess/onerror (Snakemake keeps one of each): stop this run's
    warm-start server (cells.smk starts it), then print the run summary after Snakemake's
    own output (llmbench.report.summary; it never raises)."""
    llm_warmstart.stop_server()
    print_summary("results", CELLS, grid=GRID_CHOICE.name, report_roots=[REPORT_ROOT])


def get_cell_results():
    """Every cell JSON of the selected grid."""
    return [f"results/cells/{cell.relpath}" for cell in CELLS]


def get_figures(root):
    """PNG and SVG of every figure drawn from the tables under ``root``."""
    return [
        f"{root}/figures/{name}.{ext}" for name in FIGURES for ext in ("png", "svg")
    ]


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
