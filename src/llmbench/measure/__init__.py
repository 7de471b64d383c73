"""Stage 3, inside one cell's own process: load the model, measure each phase, check it.

Owns: ``worker`` (the process entry point; records each phase's typed result into the cell
JSON and saves it after every step), ``phases`` (setup, load, prefill, decode, summary: one
small function per step, each with a typed input and result), the trackers ``memory``,
``timing``, ``energy``; ``efficiency`` (MFU/MBU), ``checks``, ``attention``,
``quantization``, ``kvcache`` (a quantized KV cache: build, stored bytes, check), ``models``
(checkpoints and loading) and ``failures`` (what went wrong).
Only this package imports torch, transformers or bitsandbytes, and only inside functions.
May import: ``llmbench.grid``, ``llmbench.host``, ``llmbench.record``.
"""
