"""Stage 3, inside one cell's own process: load the model, measure each phase, check it.

Owns: ``worker`` (the process entry point and its phases), the trackers ``memory``,
``timing``, ``energy``; ``efficiency`` (MFU/MBU), ``checks``, ``attention``,
``quantization``, ``models`` (checkpoints and loading) and ``failures`` (what went wrong).
Only this package imports torch, transformers or bitsandbytes, and only inside functions.
May import: ``llmbench.grid``, ``llmbench.host``, ``llmbench.record``.
"""
