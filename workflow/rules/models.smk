rule materialize_model:
    input:
        architecture=get_architecture,
    output:
        f"{CACHE}/{{model}}/base/checkpoint.json",
    log:
        "logs/models/{model}/materialize.log",
    conda:
        "../../envs/measure.yaml"
    resources:
        gpu=1,
    params:
        seed=config["measurement"]["seed"],
        device=config["device"],
    script:
        "../../scripts/materialize_model.py"


rule prequantize_model:
    input:
        base=f"{CACHE}/{{model}}/base/checkpoint.json",
    output:
        f"{CACHE}/{{model}}/{{quant}}/checkpoint.json",
    log:
        "logs/models/{model}/prequantize_{quant}.log",
    wildcard_constraints:
        quant="int8|nf4|nf4-dq",
    conda:
        "../../envs/measure.yaml"
    resources:
        gpu=1,
    params:
        compute_dtype=config["bnb_4bit_compute_dtype"],
        device=config["device"],
    script:
        "../../scripts/prequantize_model.py"
