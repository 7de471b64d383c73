#!/usr/bin/env bash
# Create .venv with everything the pipeline needs on this machine.
#   LLMBENCH_TORCH   pip spec for torch (default: torch==2.11.0, what the GPU references ran
#                    with; a CUDA build on Linux x86-64 PyPI)
#   LLMBENCH_SKIP_FLASH_ATTN=1   do not try to build flash-attn
#   LLMBENCH_SKIP_EXTRAS=1       do not install the optional quantization libraries
# flash-attn is optional: without it, flash_attention_2 cells end as "unavailable"; so are the
# libraries of requirements/extras.txt (torchao: without it, fp8 cells are "unavailable").
set -euo pipefail
cd "$(dirname "$0")/.."
python3 -m venv .venv
.venv/bin/python -m pip install -q --upgrade pip
.venv/bin/python -m pip install -q "${LLMBENCH_TORCH:-torch==2.11.0}"
.venv/bin/python -m pip install -q -r requirements/measure.txt
# The llmbench package itself (python -m llmbench.cli, the llmbench command); the rules
# import it from src/ either way.
.venv/bin/python -m pip install -q --no-deps -e .
if [[ -z "${LLMBENCH_SKIP_EXTRAS:-}" ]]; then
  # One at a time, so that one that does not install leaves the others (and the pipeline) be.
  grep -v '^\s*#' requirements/extras.txt | grep -v '^\s*$' | while read -r extra; do
    .venv/bin/python -m pip install -q "$extra" \
      || echo "setup: $extra did not install; its cells will be 'unavailable'" >&2
  done
fi
if [[ -z "${LLMBENCH_SKIP_FLASH_ATTN:-}" ]] && command -v nvidia-smi >/dev/null 2>&1; then
  # Builds against the torch above; prebuilt wheels exist for common torch/CUDA pairs.
  .venv/bin/python -m pip install -q flash-attn==2.8.3 --no-build-isolation \
    || echo "setup: flash-attn did not install; flash_attention_2 cells will be 'unavailable'" >&2
fi
echo "setup: done; run .venv/bin/snakemake --cores 1 --resources gpu=1"
