# Out-of-memory frontier (issue 6): per model x quant x attn x dtype, the largest sequence length
# that runs at each batch (and the largest batch at each sequence length), by a bisection from
# the predicted frontier. One job per search; each probe is an ordinary cell JSON measured in
# its own process (results/frontier/probes/), reused by later runs. See src/llmbench/frontier/.
#
#   snakemake frontier                                          # the configured (H100) frontier
#   snakemake frontier --configfile config/frontier-tiny.yaml   # tiny models on the CPU
# Input functions (frontier_section, get_frontier_searches, ...) live in common.smk.
rule frontier_search:
    """One search: probes (isolated cells) chosen by bisection until the frontier is exact to
    the step; writes the search result (frontier, first failure, probes in order)."""
    input:
        unpack(get_cell_checkpoints),
    output:
        "results/frontier/searches/{model}/{quant}/{attn}/{dtype}/{search}.json",
    log:
        "logs/frontier/searches/{model}/{quant}/{attn}/{dtype}/{search}.log",
    benchmark:
        "results/benchmarks/frontier/{model}/{quant}/{attn}/{dtype}/{search}.tsv"
    wildcard_constraints:
        search=r"(seq_b[1-9][0-9]*|batch_s[1-9][0-9]*)(_alloc-expandable)?(_kv-[a-z0-9-]+)?",
    conda:
        "../../envs/measure.yaml"
    threads: workflow.cores
    resources:
        gpu=1,
    params:
        section=lambda wildcards: frontier_section(),
        settings=get_frontier_probe_settings,
        model_entry=lambda wildcards: config["models"][wildcards.model],
        probes_dir="results/frontier/probes",
        probe_logs_dir="logs/frontier/probes",
    script:
        "../../scripts/frontier_search.py"


rule frontier_table:
    """One row per search: frontier, first failure, probes used vs brute force."""
    input:
        searches=get_frontier_searches,
    output:
        "{root}/tables/frontier.csv",
    log:
        "logs/frontier/{root}/frontier_table.log",
    wildcard_constraints:
        root=FRONTIER_TABLE_ROOT,
    conda:
        "../../envs/analysis.yaml"
    script:
        "../../scripts/frontier_table.py"


rule frontier_figure:
    """The frontier figure of this run (results/figures/) or of a committed reference (into
    results/redrawn/..., or the reference itself with figures_in_place: common.smk)."""
    input:
        get_frontier_table,
    output:
        png=report(
            "{figures_root}/figures/frontier.png",
            caption="../report/frontier.rst",
            category="Out-of-memory frontier",
            labels=figure_labels("OOM frontier"),
        ),
        svg="{figures_root}/figures/frontier.svg",
    log:
        "logs/plots/{figures_root}/frontier.log",
    conda:
        "../../envs/analysis.yaml"
    script:
        "../../scripts/plot_frontier.py"


rule frontier:
    """Target: every configured frontier search, frontier.csv and the frontier figure."""
    input:
        "results/tables/frontier.csv",
        "results/figures/frontier.png",
        "results/figures/frontier.svg",
