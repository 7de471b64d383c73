"""The tracer: peak allocated bytes of load, prefill and decode from running the real
transformers model code on ``meta`` tensors under a dispatch mode that counts live storage
bytes, instead of replaying the allocations by hand (``llmbench.predict.forward``).

Modules, each importing only those above it in this list:

- ``livebytes`` (torch): ``LiveBytes``, live and peak storage bytes, 512-byte rounded.
- ``cuda`` (torch): CUDA's SDPA backend choice and float16 softmax, for ``meta`` tensors.
- ``model`` (torch, transformers): the model of a config.json on ``meta``; ``Untraceable``.
- ``phases`` (torch, transformers): ``trace_cell`` -> ``TracedPeaks``.

Nothing here is imported by ``llmbench.predict`` at import time: torch and transformers load
only when a trace runs, so ``llmbench predict`` keeps running without them.

May import: torch, transformers, ``llmbench.grid`` (``Cell``), ``llmbench.measure.phases``
(``Generation``: the decode loop the worker runs) and ``llmbench.predict.constants``.
"""
