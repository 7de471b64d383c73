rule predict:
    """Analytic memory model for every cell of the configured grid (no cell is run, no GPU):
    predicted load/prefill/decode peaks, the breakdown by term at the peak, and the fit
    against an H100 80GB (llmbench.host.devicesize: nvidia-smi's 81559 MiB, PyTorch's
    81079 MiB, gpu_mem_gib; device_need_gib lets a reader compare any other capacity).
    """
    output:
        predicted="results/tables/predicted.csv",
    log:
        "logs/predict.log",
    conda:
        "../../envs/analysis.yaml"
    params:
        grid=config["grid"],
        gpu="h100-80gb",
    script:
        "../../scripts/predict_grid.py"
