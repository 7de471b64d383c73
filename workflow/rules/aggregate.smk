# The tables are update() outputs: Snakemake does not delete them before the job and puts the
# previous ones back when it fails (a cell file that is not a valid cell JSON; the console
# names it), so a failed rebuild never costs the last good tables. The receipt is a plain
# output, absent after a failed build, so that the next run (the figures depend on it) tries
# the build again instead of taking the restored tables for up to date.
rule aggregate_cells:
    input:
        cells=get_cell_results(),
    output:
        cells_csv=update("results/tables/cells.csv"),
        cells_parquet=update("results/tables/cells.parquet"),
        devices_csv=update("results/tables/devices.csv"),
        receipt="results/tables/tables.json",
    log:
        "logs/aggregate_cells.log",
    conda:
        "../../envs/analysis.yaml"
    params:
        seed_cases=get_seed_cases(),
    script:
        "../../scripts/aggregate_cells.py"
