"""Where the time of one CUDA-graph decode step goes (issue 15's bar: graph mode at batch 1).

A benchmark, not a test: run it on the GPU host after a run has built the checkpoint, and keep
its JSON. It loads the checkpoint as cells do (``from_pretrained``, bf16, the given attention),
prefills a random prompt into a ``StaticCache`` (``llmbench.measure.phases.static``), captures
one decode step, then profiles ``replays`` replays with ``torch.profiler``: kernels grouped by
name (count and total GPU time per step), the GPU-busy time per step (sum of kernel times;
kernels do not overlap on one stream), the wall time per replay (CUDA events), and the floor
(weight bytes ÷ measured copy bandwidth, ``llmbench.measure.roofline``).

    python benchmarks/decode_graph_profile.py CHECKPOINT OUT.json [--attn sdpa] \
        [--sdpa-backend efficient] [--batch 1] [--seq 512] [--replays 20]
"""

from __future__ import annotations

import argparse
import json
import sys
from collections import defaultdict
from pathlib import Path


def main(argv: list[str] | None = None) -> int:
    """Profile; write the JSON; print the top kernels."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("checkpoint")
    parser.add_argument("out")
    parser.add_argument("--attn", default="sdpa")
    parser.add_argument("--sdpa-backend", default=None)
    parser.add_argument("--batch", type=int, default=1)
    parser.add_argument("--seq", type=int, default=512)
    parser.add_argument("--replays", type=int, default=20)
    args = parser.parse_args(argv)

    import torch
    from transformers import AutoModelForCausalLM

    from llmbench.measure import attention
    from llmbench.measure.phases.static import StaticGeneration
    from llmbench.measure.roofline import measure_roofline

    model = AutoModelForCausalLM.from_pretrained(
        args.checkpoint, dtype=torch.bfloat16, attn_implementation=args.attn, device_map="cuda"
    ).eval()
    weight_bytes = sum(p.numel() * p.element_size() for p in model.parameters())
    weight_bytes -= model.get_input_embeddings().weight.numel() * 2  # not read at decode
    ids = torch.randint(0, model.config.vocab_size, (args.batch, args.seq), device="cuda")
    with torch.inference_mode(), attention.sdpa_context(args.sdpa_backend):
        generation = StaticGeneration(model, ids, {"logits_to_keep": 1}, 8 + 2 * args.replays)
        generation.prefill()
        generation.capture(4)
        for _ in range(args.replays):
            generation.step()
        torch.cuda.synchronize()
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        start.record()
        with torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CUDA]) as prof:
            for _ in range(args.replays):
                generation.step()
            end.record()
            end.synchronize()
    wall_ms = start.elapsed_time(end) / args.replays
    kernels: dict[str, list[float]] = defaultdict(lambda: [0, 0.0])
    for event in prof.events():
        if event.device_type == torch.autograd.DeviceType.CUDA:
            entry = kernels[event.name]
            entry[0] += 1
            entry[1] += event.device_time / 1000.0  # us -> ms
    busy_ms = sum(v[1] for v in kernels.values()) / args.replays
    roofline = measure_roofline(torch).to_dict()
    floor_ms = weight_bytes / roofline["copy_bandwidth_bytes_s"] * 1000.0
    top = sorted(kernels.items(), key=lambda kv: -kv[1][1])[:30]
    report = {
        "checkpoint": args.checkpoint,
        "attn": args.attn,
        "sdpa_backend": args.sdpa_backend,
        "batch": args.batch,
        "seq": args.seq,
        "replays": args.replays,
        "wall_ms_per_step": wall_ms,
        "gpu_busy_ms_per_step": busy_ms,
        "kernels_per_step": sum(v[0] for v in kernels.values()) / args.replays,
        "weight_bytes_read_per_step": weight_bytes,
        "floor_ms_weights_only": floor_ms,
        "roofline": roofline,
        "top_kernels": [
            {
                "name": name[:160],
                "calls_per_step": n / args.replays,
                "ms_per_step": t / args.replays,
            }  # noqa: E501
            for name, (n, t) in top
        ],
        "torch": torch.__version__,
        "device": torch.cuda.get_device_name(),
    }
    Path(args.out).write_text(json.dumps(report, indent=1))
    print(
        f"{args.attn}/{args.sdpa_backend} b{args.batch} s{args.seq}: wall {wall_ms:.2f} ms, "
        f"GPU busy {busy_ms:.2f} ms, floor {floor_ms:.2f} ms, "
        f"{report['kernels_per_step']:.0f} kernels/step"
    )
    for row in report["top_kernels"][:12]:
        print(f"  {row['ms_per_step']:7.3f} ms  x{row['calls_per_step']:5.0f}  {row['name'][:90]}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
