# llmbench: GPU memory and latency of LLM inference over a grid of
# models x quantization x attention x dtype x batch x sequence length.
#
# Layout of what it writes:
#   resources/models/{model}/base/          random-weight checkpoint (safetensors)
#   resources/models/{model}/{quant}/       pre-quantized checkpoint (int8, nf4(-dq), fp4(-dq))
#   results/cells/{model}/{quant}/{attn}/{dtype}/b{batch}_s{seq}.json   one JSON per cell
#   results/tables/cells.csv|.parquet, devices.csv                      tidy tables
#   results/figures/*.png|.svg                                          seaborn figures
#   results/redrawn/<path below results/>/figures/, report/cells.csv    redrawn from a reference
#   results/benchmarks/, logs/                                          job timings, logs
# Committed reference runs live in results/reference/<gpu>/ with the same layout.
import sys
from pathlib import Path

from snakemake.utils import min_version

min_version("9.0")

# The package (src/) is importable here and, through the environment, in every job.
sys.path.insert(0, str(Path(workflow.basedir) / "src"))
from llmbench.grid.files import read_yaml, stop_on_input_error

# Snakemake's own message for a config file that is not YAML names neither file nor line:
# read it first, so that the error says both (a --configfile is read before this file). Read
# the --configfile ones again too: Snakemake keeps the last of a key given twice, silently.
with stop_on_input_error():
    for config_file in [
        Path(workflow.basedir) / "config" / "config.yaml",
        *workflow.overwrite_configfiles,
    ]:
        read_yaml(config_file)


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
