# llmbench: GPU memory and latency of LLM inference over a grid of
# models x quantization x attention x dtype x batch x sequence length.
#
# Layout of what it writes:
#   resources/models/{model}/base/          random-weight checkpoint (safetensors)
#   resources/models/{model}/{quant}/       pre-quantized checkpoint (int8, nf4, nf4-dq)
#   results/cells/{model}/{quant}/{attn}/{dtype}/b{batch}_s{seq}.json   one JSON per cell
#   results/tables/cells.csv|.parquet, devices.csv                      tidy tables
#   results/figures/*.png|.svg                                          seaborn figures
#   results/benchmarks/, logs/                                          job timings, logs
# Committed reference runs live in results/reference/<gpu>/ with the same layout.
from snakemake.utils import min_version

min_version("9.0")


configfile: "config/config.yaml"


report: "workflow/report/workflow.rst"


include: "workflow/rules/common.smk"
include: "workflow/rules/models.smk"
include: "workflow/rules/cells.smk"
include: "workflow/rules/aggregate.smk"
include: "workflow/rules/plots.smk"
include: "workflow/rules/predict.smk"
include: "workflow/rules/frontier.smk"


rule all:
    default_target: True
    input:
        get_final_output(),


# Stop the warm-start server, then, after Snakemake's own output, summarise the run: cells per
# status, the slowest, tables and figures, failures (common.smk: end_of_run).
onsuccess:
    end_of_run()


onerror:
    end_of_run()
