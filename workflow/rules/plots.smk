# Figures from a cells table: this run's (results/tables -> results/figures) or a committed
# reference's, drawn into results/redrawn/<its path below results/>/figures/ unless
# figures_in_place asks for the reference's own figures/ (figures_root, get_cells_table and
# figure_labels are in common.smk).
rule plot_figures:
    input:
        cells=get_cells_table,
    output:
        seed_png=report(
            "{figures_root}/figures/seed_comparison.png",
            caption="../report/seed_comparison.rst",
            category="Seed comparison",
            labels=figure_labels("seed comparison"),
        ),
        seed_svg="{figures_root}/figures/seed_comparison.svg",
        memory_png=report(
            "{figures_root}/figures/memory_vs_seq.png",
            caption="../report/memory_vs_seq.rst",
            category="Memory",
            labels=figure_labels("memory vs sequence length"),
        ),
        memory_svg="{figures_root}/figures/memory_vs_seq.svg",
        latency_png=report(
            "{figures_root}/figures/latency_vs_seq.png",
            caption="../report/latency_vs_seq.rst",
            category="Latency",
            labels=figure_labels("prefill latency vs sequence length"),
        ),
        latency_svg="{figures_root}/figures/latency_vs_seq.svg",
        status_png=report(
            "{figures_root}/figures/status_map.png",
            caption="../report/status_map.rst",
            category="Where it fails",
            labels=figure_labels("status map"),
        ),
        status_svg="{figures_root}/figures/status_map.svg",
        predicted_png=report(
            "{figures_root}/figures/predicted_vs_measured.png",
            caption="../report/predicted_vs_measured.rst",
            category="Memory",
            labels=figure_labels("predicted vs measured memory"),
        ),
        predicted_svg="{figures_root}/figures/predicted_vs_measured.svg",
        decode_png=report(
            "{figures_root}/figures/decode_vs_floor.png",
            caption="../report/decode_vs_floor.rst",
            category="Latency",
            labels=figure_labels("decode vs its floor"),
        ),
        decode_svg="{figures_root}/figures/decode_vs_floor.svg",
    log:
        "logs/plots/{figures_root}/plot_figures.log",
    conda:
        "../../envs/analysis.yaml"
    script:
        "../../scripts/plot_figures.py"


rule report_cells_table:
    """The cells table the report attaches (category Tables): a copy, because a committed
    reference's cells.csv is no job's output, and Snakemake reports only outputs."""
    input:
        get_cells_table,
    output:
        report(
            "{figures_root}/report/cells.csv",
            caption="../report/cells_table.rst",
            category="Tables",
            labels={"table": "cells (one row per cell)"},
        ),
    log:
        "logs/report/{figures_root}/cells_table.log",
    conda:
        "../../envs/analysis.yaml"
    shell:
        "cp {input:q} {output:q} 2> {log:q}"


rule figures:
    """Redraw the figures from existing tables only (no cell is run): this run's results/, or
    a committed reference with --config report_root=results/reference/<gpu>/<run> (into
    results/redrawn/..., or the reference itself with figures_in_place=true)."""
    input:
        get_figures(REPORT_ROOT),
        get_report_tables(REPORT_ROOT),
