rule predict:
    """Analytic memory model for every cell of the configured grid (no cell is run, no GPU):
    predicted load/prefill/decode peaks, the breakdown by term at the peak, and the fit
    against an 80 GiB device (device_need_gib lets a reader compare any other capacity)."""
    output:
        predicted="results/tables/predicted.csv",
    log:
        "logs/predict.log",
    params:
        grid=config["grid"],
        gpu_mem="80GiB",
    run:
        from llmbench import REPO_ROOT, predict as llm_predict

        rows = llm_predict.grid_prediction_rows(
            params.grid, repo_root=REPO_ROOT, gpu_mem=params.gpu_mem, terms=True
        )
        Path(output.predicted).parent.mkdir(parents=True, exist_ok=True)
        Path(output.predicted).write_text(llm_predict.format_csv(rows))
        Path(log[0]).parent.mkdir(parents=True, exist_ok=True)
        Path(log[0]).write_text(f"{len(rows)} cells of grid {params.grid} predicted\n")
