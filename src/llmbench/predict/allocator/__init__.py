"""A simulator of PyTorch's CUDA caching allocator (torch 2.11), so that reserved bytes and
the out-of-memory point follow from a sequence of allocations without a GPU.

Source: ``c10/cuda/CUDACachingAllocator.cpp``, ``c10/core/AllocatorConfig.{h,cpp}`` and
``c10/cuda/CUDAAllocatorConfig.{h,cpp}`` of pytorch/pytorch; every function's docstring names
the C++ function it follows. Modelled: 512-byte rounding and ``roundup_power2_divisions``; the
small (<= 1 MiB) and large pools with per-stream blocks; segment sizes (2 MiB, 20 MiB under
10 MiB, else rounded to 2 MiB); best-fit by (stream, size, address); splitting
(``should_split``) and merging on free; ``max_split_size_mb`` and
``max_non_split_rounding_mb``; the release-and-retry path before an OOM;
``garbage_collection_threshold`` (with a memory fraction); ``expandable_segments``. Not
modelled: CUDA-graph private pools and ``MemPool``, IPC, ``cudaMallocAsync``, physical-page
fragmentation inside the driver.

Modules, each importing only those above it: ``config`` (constants, options, rounding),
``blocks`` (blocks, pools, merging), ``state`` (allocator state, statistics, segment events),
``expandable``, ``caching`` (malloc / free), ``simulate`` (event replay), ``trace`` (reading
``torch.cuda.memory._snapshot()`` pickles), ``compare`` (a replay against the recording),
``replayfile`` (compact replay files: tests/fixtures/allocator/).

Verified: the recorded H200 runs in tests/fixtures/allocator/ (torch 2.11.0+cu130, default
allocator and ``expandable_segments:True``, 0.2-0.4 M allocator events each) replay with every
segment event identical and peak reserved / allocated equal to torch's to the byte
(tests/predict/test_allocator_replayfile.py). Rules no recorded run exercised
(``max_split_size_mb``, ``roundup_power2_divisions``, ``garbage_collection_threshold``,
several streams) are checked only against hand-derived sequences.

May import nothing outside this subpackage (no torch: snapshots are plain pickled dicts).
"""

from llmbench.predict.allocator.config import (
    K_LARGE_BUFFER,
    K_MIN_BLOCK_SIZE,
    K_SMALL_BUFFER,
    K_SMALL_SIZE,
    AllocatorConfig,
    get_allocation_size,
    round_size,
)
from llmbench.predict.allocator.simulate import (
    Alloc,
    EmptyCache,
    Event,
    Free,
    FreeCompleted,
    Oom,
    SimulationResult,
    simulate,
)
from llmbench.predict.allocator.state import SegmentEvent

__all__ = [
    "K_LARGE_BUFFER",
    "K_MIN_BLOCK_SIZE",
    "K_SMALL_BUFFER",
    "K_SMALL_SIZE",
    "Alloc",
    "AllocatorConfig",
    "EmptyCache",
    "Event",
    "Free",
    "FreeCompleted",
    "Oom",
    "SegmentEvent",
    "SimulationResult",
    "get_allocation_size",
    "round_size",
    "simulate",
]
