"""Where a cell's start-up time goes, and which imports may precede a fork.

A benchmark, not a test: run it on the GPU host and keep its JSON. Each stage of a worker's
start (interpreter, llmbench's own modules, the NVML snapshot, torch, transformers, the
modeling module, bitsandbytes, flash-attn, CUDA context) is timed in fresh processes,
``repeats`` times (the first run may see a cold page cache). The fork checks import a set of
modules in a parent, fork, and run one CUDA operation in the child: a set whose import
initialises the CUDA driver cannot be imported before forking cell processes.

    python benchmarks/startup_profile.py OUT.json [--repeats 3] [--importtime OUT.txt]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

STAGES = """
import time, json, sys
t = [("start", time.perf_counter())]
def mark(name):
    t.append((name, time.perf_counter()))
import llmbench.measure.worker, llmbench.record.cell, llmbench.host.environment
mark("llmbench_modules")
from llmbench.host import nvml
from llmbench.record import cell as results
results.new_result({"model": "m", "quant": "none", "attn": "sdpa", "dtype": "bfloat16",
                    "batch": 1, "seq": 1}, {})
mark("new_result_environment_capture")
nvml.host_snapshot()
mark("nvml_host_snapshot")
import torch
mark("import_torch")
from transformers import AutoModelForCausalLM
mark("import_transformers_auto")
import transformers.models.mistral.modeling_mistral
mark("import_modeling_mistral")
import accelerate, safetensors.torch
mark("import_accelerate_safetensors")
try:
    import bitsandbytes
except Exception as exc:
    print("bitsandbytes:", exc, file=sys.stderr)
mark("import_bitsandbytes")
try:
    import flash_attn
except Exception as exc:
    print("flash_attn:", exc, file=sys.stderr)
mark("import_flash_attn")
if torch.cuda.is_available():
    torch.ones(1, device="cuda").sum().item()
mark("cuda_context_first_op")
print(json.dumps({b[0]: b[1] - a[1] for a, b in zip(t, t[1:])}))
"""

FORK_CHECK = """
import os, sys, json, time
for name in sys.argv[1].split(","):
    __import__(name)
import torch
parent = {"cuda_initialized_in_parent": torch.cuda.is_initialized(),
          "libcuda_mapped_in_parent": any("libcuda.so" in line
                                           for line in open("/proc/self/maps"))}
started = time.perf_counter()
pid = os.fork()
if pid == 0:
    try:
        torch.ones(1, device="cuda").sum().item()
        os._exit(0)
    except BaseException as exc:
        print(repr(exc)[:300], file=sys.stderr)
        os._exit(1)
_, status = os.waitpid(pid, 0)
parent["child_cuda_ok"] = os.waitstatus_to_exitcode(status) == 0
parent["child_s"] = time.perf_counter() - started
print(json.dumps(parent))
"""

FORK_SETS = {
    "torch_transformers": "torch,transformers,transformers.models.mistral.modeling_mistral",
    "plus_accelerate_safetensors": (
        "torch,transformers,transformers.models.mistral.modeling_mistral,accelerate,"
        "safetensors.torch"
    ),
    "plus_bitsandbytes": "torch,transformers,transformers.models.mistral.modeling_mistral,"
    "bitsandbytes",
    "plus_flash_attn": "torch,transformers,transformers.models.mistral.modeling_mistral,flash_attn",
}


def _python(
    code: str, *args: str, extra_env: dict[str, str] | None = None
) -> tuple[str, str, float]:
    env = dict(os.environ, **(extra_env or {}))
    src = str(Path(__file__).resolve().parents[1] / "src")
    env["PYTHONPATH"] = os.pathsep.join(p for p in (src, env.get("PYTHONPATH")) if p)
    started = time.perf_counter()
    process = subprocess.run(
        [sys.executable, "-c", code, *args], capture_output=True, text=True, env=env
    )
    return process.stdout, process.stderr, time.perf_counter() - started


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("out", type=Path)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--importtime", type=Path)
    args = parser.parse_args()
    report: dict = {"python": sys.version, "executable": sys.executable, "runs": []}
    report["bare_interpreter_s"] = [_python("pass")[2] for _ in range(args.repeats)]
    for _ in range(args.repeats):
        out, err, wall = _python(STAGES)
        stages = json.loads(out.strip().splitlines()[-1]) if out.strip() else None
        report["runs"].append({"stages_s": stages, "process_wall_s": wall, "stderr": err[-2000:]})
        print(json.dumps(report["runs"][-1]["stages_s"]), f"wall {wall:.2f}", flush=True)
    for name, modules in FORK_SETS.items():
        for nvml_check in ("0", "1"):
            out, err, wall = _python(
                FORK_CHECK, modules, extra_env={"PYTORCH_NVML_BASED_CUDA_CHECK": nvml_check}
            )
            key = f"{name}|nvml_based_cuda_check={nvml_check}"
            report.setdefault("fork_checks", {})[key] = {
                "result": json.loads(out) if out.strip() else None,
                "stderr": err[-1500:],
                "wall_s": wall,
            }
            print(key, out.strip(), err.strip()[-300:], flush=True)
    if args.importtime:
        _, err, _ = _python(
            STAGES.replace("import time, json, sys", "import time, json, sys"),
            extra_env={"PYTHONPROFILEIMPORTTIME": "1"},
        )
        args.importtime.write_text(err)
    args.out.write_text(json.dumps(report, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
