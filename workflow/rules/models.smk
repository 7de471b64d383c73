# A build that raises at run time (a config transformers cannot instantiate, a full disk, a
# bug) still ends the job well: its checkpoint.json says `status: failed` with the exception,
# the file it read and the log (scripts/materialize_model.py), and every cell of that model is
# written as an `error` cell in phase `load` that says so (llmbench.run.runner), so the tables
# are still built. The failed manifest is an ordinary output: editing the architecture file
# rebuilds the model on the next run (newer input); for any other cause, rebuild it and rerun
# its cells with `snakemake -R resources/models/<model>/base/checkpoint.json` (the console
# line of the failed build prints it).
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
        quant="int8|nf4|nf4-dq|fp4|fp4-dq",
    conda:
        "../../envs/measure.yaml"
    resources:
        gpu=1,
    params:
        compute_dtype=config["bnb_4bit_compute_dtype"],
        device=config["device"],
    script:
        "../../scripts/prequantize_model.py"
