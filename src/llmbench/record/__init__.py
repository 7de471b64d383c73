"""The cell record: the one JSON a cell leaves, its skeleton, atomic writes and validated reads.

It is the contract between measuring (``run``, ``measure``) and analysing (``report``,
``frontier``). May import: ``llmbench.grid``, ``llmbench.host``.
"""
