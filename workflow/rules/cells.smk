from llmbench.run import limits as cell_limits
from llmbench.run import scratch as run_scratch
from llmbench.run import warmstart

# Scratch folders of runs that were killed (their owner process is gone) are removed here.
run_scratch.remove_stale()


onstart:
    # How many times Snakemake runs a failed job (--retries, e.g. from profiles/slurm) is
    # known to the scheduling process only, and not before the run starts: its cluster jobs
    # get --retries 0. Cells need it to decide whether a crashed cell is retried
    # (scripts/run_cell.py), so it reaches them through the environment, which Slurm jobs
    # inherit (sbatch --export=ALL). Without it a crashed cell is kept at once.
    cell_limits.export_cell_attempts(workflow.execution_settings.retries)
    # One server per run imports torch and transformers once and forks each cell's process
    # (llmbench.run.warmstart); it dies with this process. Cells that find no server start a
    # fresh interpreter, so a run never depends on it. Cluster jobs run on other nodes.
    # Only when cells or frontier probes are to run (not for figures from committed tables).
    if (
        config["warm_start"]
        and not workflow.executor_plugin.common_settings.non_local_exec
        and any(
            job.rule.name in ("measure_cell", "frontier_search")
            for job in workflow.dag.needrun_jobs()
        )
    ):
        # The socket's folder in $TMPDIR (a short path, as Unix sockets need) goes when this
        # process exits; if it is killed, with the next run (llmbench.run.scratch).
        warmstart.start_server(
            run_scratch.make_dir("ws") / "warmstart.sock",
            log_path=Path("logs/warmstart.log"),
        )


rule measure_cell:
    input:
        unpack(get_cell_checkpoints),
    output:
        "results/cells/{model}/{quant}/{attn}/{dtype}/b{batch}_s{seq}{variant}.json",
    log:
        "logs/cells/{model}/{quant}/{attn}/{dtype}/b{batch}_s{seq}{variant}.log",
    benchmark:
        "results/benchmarks/cells/{model}/{quant}/{attn}/{dtype}/b{batch}_s{seq}{variant}.tsv"
    conda:
        "../../envs/measure.yaml"
    threads: workflow.cores
    resources:
        gpu=1,
        # Which try this is (1, 2, ...): Snakemake shows it to resources only, not to scripts.
        attempt=lambda wildcards, attempt: attempt,
    params:
        settings=pipeline.cell_settings(config),
        model_entry=lambda wildcards: config["models"][wildcards.model],
    script:
        "../../scripts/run_cell.py"
