"""The tracer: peak allocated bytes of load, prefill and decode from running the real
transformers model code on ``meta`` tensors under a dispatch mode that counts live storage
bytes, instead of replaying the allocations by hand (``llmbench.predict.forward``). On the
committed one-GPU references (Mistral-7B-v0.3, none / int8 / nf4, eager / sdpa / FA2, bf16
and fp32) it is within 0.02 % on every ``ok`` cell (``check``).

Modules, each importing only those above it in this list:

- ``livebytes`` (torch): ``LiveBytes``, live and peak storage bytes, 512-byte rounded.
- ``cuda`` (torch): CUDA's SDPA backend choice and float16 softmax, for ``meta`` tensors.
- ``model`` (torch, transformers): the model of a config.json on ``meta``; ``Untraceable``.
- ``bnb`` (torch, bitsandbytes, transformers): pre-quantized NF4 and LLM.int8 layers on
  ``meta`` and the allocations of bitsandbytes' CUDA kernels.
- ``phases`` (torch, transformers): ``trace_cell`` -> ``TracedPeaks``.
- ``events`` (torch, transformers): ``trace_cell_events`` -> ``CellEvents``, the ordered
  allocator requests and frees of a cell as the worker runs its phases (for ``predict.oom``).
- ``cache`` (torch-free): traced results on disk, keyed by config, cell and library versions.
- ``fill``: ``python -m llmbench.predict.trace.fill --grid NAME`` traces a grid into the cache.
- ``check``: ``python -m llmbench.predict.trace.check``, traced vs measured reference cells.
- ``placement`` (torch, transformers): transformers' ``device_map`` over several GPUs on the
  meta model, parameter bytes per device.
- ``devices`` (torch, transformers): ``trace_devices`` -> ``DevicePeaks``, load / prefill /
  decode peaks per GPU of a model spread by that map (accelerate's device copies replayed).

Only ``cache`` is imported by ``llmbench.predict`` at import time (``method``): torch,
transformers and bitsandbytes load only when a trace runs, so ``llmbench predict`` keeps
running without them.

May import: torch, transformers, bitsandbytes, ``llmbench`` (REPO_ROOT), ``llmbench.grid``
(``Cell``, grids), ``llmbench.record`` (atomic JSON write), ``llmbench.measure.phases``
(``Generation``: the decode loop the worker runs), ``llmbench.measure.quantization``
(``build_bnb_config``), ``llmbench.measure.models`` (``placement``) and ``llmbench.predict``
(constants, architecture, outliers).
"""
