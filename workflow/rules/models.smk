rule materialize_model:
    input:
        architecture=get_architecture,
    output:
        f"{CACHE}/{{model}}/base/checkpoint.json",
    log:
        "logs/models/{model}/materialize.log",
    params:
        seed=config["measurement"]["seed"],
        device=config["device"],
    resources:
        gpu=1,
    conda:
        "../../envs/measure.yaml"
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
    params:
        compute_dtype=config["bnb_4bit_compute_dtype"],
        device=config["device"],
    resources:
        gpu=1,
    conda:
        "../../envs/measure.yaml"
    script:
        "../../scripts/prequantize_model.py"
