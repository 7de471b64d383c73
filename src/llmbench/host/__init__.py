"""Facts about the machine a run is on: NVML queries and the recorded environment.

Owns: ``nvml`` (driver, GPUs, per-process memory, energy counters; never initialises CUDA)
``environment`` (package versions, git commit, CPU, the torch/CUDA view of the GPUs) and
``devicesize`` (a device as the command line names it: the GPUs measured here, nvidia-smi's
and PyTorch's totals, the memory the driver keeps).
Bottom of the stack. May import: nothing of llmbench but its constants (``llmbench``).
"""
