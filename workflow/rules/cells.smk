rule measure_cell:
    input:
        unpack(get_cell_checkpoints),
    output:
        "results/cells/{model}/{quant}/{attn}/{dtype}/b{batch}_s{seq}.json",
    log:
        "logs/cells/{model}/{quant}/{attn}/{dtype}/b{batch}_s{seq}.log",
    benchmark:
        "results/benchmarks/cells/{model}/{quant}/{attn}/{dtype}/b{batch}_s{seq}.tsv"
    params:
        settings=pipeline.cell_settings(config),
        model_entry=lambda wildcards: config["models"][wildcards.model],
    threads: workflow.cores
    resources:
        gpu=1,
    conda:
        "../../envs/measure.yaml"
    script:
        "../../scripts/run_cell.py"
