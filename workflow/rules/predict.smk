rule predict:
    """Analytic memory model for every cell of the configured grid (no cell is run, no GPU):
    predicted load/prefill/decode peaks, the breakdown by term at the peak, and the fit
    against an H100 80GB as torch reports it, 81079 MiB (device_need_gib lets a reader compare
    any other capacity).
    """
    output:
        predicted="results/tables/predicted.csv",
    log:
        "logs/predict.log",
    conda:
        "../../envs/analysis.yaml"
    params:
        grid=config["grid"],
        gpu_mem="81079MiB",
    script:
        "../../scripts/predict_grid.py"
