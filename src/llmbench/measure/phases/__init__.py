"""The phases of one cell, each a small function around a tracker with a typed result.

Owns: ``spec`` (the cell spec the runner writes, typed), ``setup`` (imports, device, the
trackers of a ``Session``), ``load`` (checkpoint choice, ``from_pretrained``, inspection),
``prefill`` (memory pass, timed passes), ``generation`` and ``decode`` (greedy decoding through
the KV cache, timed steps), ``summary`` (energy, efficiency, the check verdict).
None of them writes the cell record: ``llmbench.measure.worker`` decides which phases run and
records each typed result. Nothing here imports torch at module import.
May import: ``llmbench.grid``, ``llmbench.host``, ``llmbench.record``, the rest of
``llmbench.measure`` (never ``llmbench.measure.worker``).
"""
