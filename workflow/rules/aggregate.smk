rule aggregate_cells:
    input:
        cells=get_cell_results(),
    output:
        cells_csv="results/tables/cells.csv",
        cells_parquet="results/tables/cells.parquet",
        devices_csv="results/tables/devices.csv",
    log:
        "logs/aggregate_cells.log",
    conda:
        "../../envs/analysis.yaml"
    params:
        seed_cases=get_seed_cases(),
    script:
        "../../scripts/aggregate_cells.py"
