rule plot_figures:
    input:
        cells="{root}/tables/cells.csv",
    output:
        seed_png=report(
            "{root}/figures/seed_comparison.png",
            caption="../report/seed_comparison.rst",
            category="Seed comparison",
            labels={"figure": "seed comparison", "results": "{root}"},
        ),
        seed_svg="{root}/figures/seed_comparison.svg",
        memory_png=report(
            "{root}/figures/memory_vs_seq.png",
            caption="../report/memory_vs_seq.rst",
            category="Memory",
            labels={"figure": "memory vs sequence length", "results": "{root}"},
        ),
        memory_svg="{root}/figures/memory_vs_seq.svg",
        latency_png=report(
            "{root}/figures/latency_vs_seq.png",
            caption="../report/latency_vs_seq.rst",
            category="Latency",
            labels={
                "figure": "prefill latency vs sequence length",
                "results": "{root}",
            },
        ),
        latency_svg="{root}/figures/latency_vs_seq.svg",
        status_png=report(
            "{root}/figures/status_map.png",
            caption="../report/status_map.rst",
            category="Where it fails",
            labels={"figure": "status map", "results": "{root}"},
        ),
        status_svg="{root}/figures/status_map.svg",
        predicted_png=report(
            "{root}/figures/predicted_vs_measured.png",
            caption="../report/predicted_vs_measured.rst",
            category="Memory",
            labels={"figure": "predicted vs measured memory", "results": "{root}"},
        ),
        predicted_svg="{root}/figures/predicted_vs_measured.svg",
    log:
        "logs/plots/{root}/plot_figures.log",
    conda:
        "../../envs/analysis.yaml"
    script:
        "../../scripts/plot_figures.py"


rule figures:
    """Redraw the figures from existing tables only (no cell is run): this run's results/,
    or a committed reference with --config report_root=results/reference/<gpu>."""
    input:
        get_figures(REPORT_ROOT),
