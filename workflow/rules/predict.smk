rule predict:
    """Analytic memory model for every cell of the configured grid (no cell is run, no GPU):
    predicted load/prefill/decode peaks, the breakdown by term at the peak, and the fit
    against the config's predict_gpu (default h100-80gb: nvidia-smi's 81559 MiB, PyTorch's
    81079 MiB; columns gpu and gpu_mem_gib; device_need_gib lets a reader compare any other
    capacity).
    """
    output:
        predicted="results/tables/predicted.csv",
    log:
        "logs/predict.log",
    conda:
        "../../envs/analysis.yaml"
    params:
        grid=config["grid"],
        gpu=str(config["predict_gpu"]),
    script:
        "../../scripts/predict_grid.py"
