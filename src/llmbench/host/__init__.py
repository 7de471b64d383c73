"""Facts about the machine a run is on: NVML queries and the recorded environment.

Owns: ``nvml`` (driver, GPUs, per-process memory, energy counters; never initialises CUDA)
and ``environment`` (package versions, git commit, CPU, the torch/CUDA view of the GPUs).
Bottom of the stack. May import: nothing of llmbench but its constants (``llmbench``).
"""
