"""The caching allocator's constants, its ``PYTORCH_CUDA_ALLOC_CONF`` options, and the two
size rules that depend only on them: request rounding and segment size.

Sources (torch 2.11): ``c10/core/AllocatorConfig.h`` (the ``k*`` constants),
``c10/core/AllocatorConfig.cpp`` (``AcceleratorAllocatorConfig``: option parsing and
``roundup_power2_divisions(size)``), ``c10/cuda/CUDACachingAllocator.cpp``
(``round_size``, ``roundup_power2_next_division``, ``get_allocation_size``). Imports only
``llmbench.MIB``.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from llmbench import MIB

K_MIN_BLOCK_SIZE = 512
"""``kMinBlockSize``: every request is rounded up to a multiple of 512 bytes."""
K_SMALL_SIZE = 1 * MIB
"""``kSmallSize``: requests of at most 1 MiB (after rounding) use the small pool."""
K_SMALL_BUFFER = 2 * MIB
"""``kSmallBuffer``: small-pool segments are 2 MiB (also the small pool's expandable page)."""
K_LARGE_BUFFER = 20 * MIB
"""``kLargeBuffer``: segment size for large requests under ``kMinLargeAlloc`` (also the large
pool's expandable page, ``find_expandable_block``)."""
K_MIN_LARGE_ALLOC = 10 * MIB
"""``kMinLargeAlloc``: requests from here on get a segment of their own size."""
K_ROUND_LARGE = 2 * MIB
"""``kRoundLarge``: such segments are rounded up to 2 MiB."""
UNLIMITED = 2**64 - 1
"""``std::numeric_limits<size_t>::max()``: ``max_split_size`` when not configured."""

ROUNDUP_INTERVALS = 16
"""``kRoundUpPowerOfTwoIntervals``: one division count per power-of-two interval from 1 MiB
(index 0) to 32 GiB and above (index 15)."""


@dataclass(frozen=True)
class AllocatorConfig:
    """The options of ``PYTORCH_CUDA_ALLOC_CONF`` that change where memory goes.

    ``max_split_size``, ``max_non_split_rounding`` and ``large_segment_size`` (the segment of
    a 1-10 MiB request and the large pool's expandable page, ``kLargeBuffer`` unless
    ``large_segment_size_mb`` is set: an option of recent torch, unverified for 2.11) are
    bytes; ``roundup_power2_divisions``
    has one entry per interval (``ROUNDUP_INTERVALS``), 0 or 1 meaning plain 512-byte rounding.
    ``memory_fraction`` is ``torch.cuda.set_per_process_memory_fraction`` (``set_fraction`` in
    the C++), needed for ``garbage_collection_threshold`` to do anything.
    """

    max_split_size: int = UNLIMITED
    max_non_split_rounding: int = K_LARGE_BUFFER
    large_segment_size: int = K_LARGE_BUFFER
    roundup_power2_divisions: tuple[int, ...] = field(default=(0,) * ROUNDUP_INTERVALS)
    garbage_collection_threshold: float = 0.0
    expandable_segments: bool = False
    memory_fraction: float | None = None

    @classmethod
    def parse(cls, conf: str | None, memory_fraction: float | None = None) -> AllocatorConfig:
        """Options from a ``PYTORCH_CUDA_ALLOC_CONF`` string (``AllocatorConfig::parseArgs``).

        Raises ``ValueError`` for an option the simulator does not model (``backend:
        cudaMallocAsync``) or a malformed value. Options that do not change placement
        (``release_lock_on_cudamalloc``, ``pinned_*``) are accepted and ignored.
        """
        values: dict[str, object] = {"memory_fraction": memory_fraction}
        for key, value in _split_options(conf or ""):
            if key == "max_split_size_mb":
                values["max_split_size"] = _megabytes(key, value)
            elif key == "max_non_split_rounding_mb":
                values["max_non_split_rounding"] = _megabytes(key, value)
            elif key == "large_segment_size_mb":
                values["large_segment_size"] = int(value) * MIB
            elif key == "garbage_collection_threshold":
                threshold = float(value)
                if not 0.0 < threshold < 1.0:
                    raise ValueError("garbage_collection_threshold must be in (0.0, 1.0)")
                values["garbage_collection_threshold"] = threshold
            elif key == "roundup_power2_divisions":
                values["roundup_power2_divisions"] = _parse_divisions(value)
            elif key == "expandable_segments":
                values["expandable_segments"] = _boolean(key, value)
            elif key == "backend" and value != "native":
                raise ValueError(f"backend:{value} is not the caching allocator")
            elif key not in _IGNORED_KEYS:
                raise ValueError(f"unrecognized allocator option {key!r}")
        return cls(**values)  # type: ignore[arg-type]

    def divisions(self, size: int) -> int:
        """``AllocatorConfig::roundup_power2_divisions(size)``: the entry of the interval
        ``[2^k MiB, 2^(k+1) MiB)`` holding ``size`` (clamped to the first and last)."""
        index = size.bit_length() - 1 - 20
        return self.roundup_power2_divisions[min(max(index, 0), ROUNDUP_INTERVALS - 1)]


_IGNORED_KEYS = frozenset(
    {
        "backend",
        "release_lock_on_cudamalloc",
        "release_lock_on_hipmalloc",
        "pinned_use_cuda_host_register",
        "pinned_use_hip_host_register",
        "pinned_num_register_threads",
        "pinned_use_background_threads",
        "pinned_reserve_segment_size_mb",
        "graph_capture_record_stream_reuse",
    }
)


def _split_options(conf: str) -> list[tuple[str, str]]:
    """``key:value`` pairs separated by commas outside ``[...]`` (``lexArgs``)."""
    options, depth, start = [], 0, 0
    text = conf.replace(" ", "")
    for i, char in enumerate(text + ","):
        depth += {"[": 1, "]": -1}.get(char, 0)
        if char == "," and depth == 0:
            item = text[start:i]
            start = i + 1
            if item:
                key, sep, value = item.partition(":")
                if not sep:
                    raise ValueError(f"allocator option {item!r} has no value")
                options.append((key, value))
    return options


def _megabytes(key: str, value: str) -> int:
    """``parseMaxSplitSize`` / ``parseMaxNonSplitRoundingSize``: at least kLargeBuffer/MiB."""
    mb = int(value)
    if mb < K_LARGE_BUFFER // MIB:
        raise ValueError(f"{key} too small, must be >= {K_LARGE_BUFFER // MIB}")
    return min(mb, UNLIMITED // MIB) * MIB


def _boolean(key: str, value: str) -> bool:
    if value not in ("True", "False"):
        raise ValueError(f"expected True/False for {key}, got {value!r}")
    return value == "True"


def _parse_divisions(value: str) -> tuple[int, ...]:
    """``parseRoundUpPower2Divisions``: one power of two for all intervals, or a list
    ``[size_mb:divisions,...,>:divisions]`` whose first entry also fills the intervals below
    it and whose ``>`` entry fills every interval from the last key on."""
    divisions = [0] * ROUNDUP_INTERVALS
    if not value.startswith("["):
        count = int(value)
        if count <= 0 or count & (count - 1):
            raise ValueError("roundup_power2_divisions must be a power of 2")
        return (count,) * ROUNDUP_INTERVALS
    first, last_index = True, 0
    for item in filter(None, value.strip("[]").split(",")):
        key, _, raw = item.partition(":")
        count = int(raw)
        if count & (count - 1):
            raise ValueError("roundup_power2_divisions values must be 0 or powers of 2")
        if key == ">":
            divisions[last_index:] = [count] * (ROUNDUP_INTERVALS - last_index)
            continue
        size_mb = int(key)
        if size_mb <= 0 or size_mb & (size_mb - 1):
            raise ValueError("roundup_power2_divisions intervals must be powers of 2")
        index = min(size_mb.bit_length() - 1, ROUNDUP_INTERVALS - 1)
        if first:
            divisions[:index] = [count] * index
            first = False
        divisions[index] = count
        last_index = index
    return tuple(divisions)


def roundup_power2_next_division(size: int, divisions: int) -> int:
    """``roundup_power2_next_division``: ``size`` rounded up to the next of ``divisions``
    equal steps between the powers of two around it (1200 with 4 -> 1280)."""
    if size & (size - 1) == 0:
        return size
    power2_floor = 1 << (size.bit_length() - 1)
    step = power2_floor >> (divisions.bit_length() - 1)
    if step == 0:
        return power2_floor << 1
    floor = size & ~(step - 1)
    return size if floor == size else floor + step


def round_size(size: int, config: AllocatorConfig) -> int:
    """``round_size``: bytes a request of ``size`` bytes takes (512-byte granule, or the
    configured power-of-two division above ``512 * divisions`` bytes)."""
    if size < K_MIN_BLOCK_SIZE:
        return K_MIN_BLOCK_SIZE
    divisions = config.divisions(size)
    if divisions > 1 and size > K_MIN_BLOCK_SIZE * divisions:
        return roundup_power2_next_division(size, divisions)
    return -(-size // K_MIN_BLOCK_SIZE) * K_MIN_BLOCK_SIZE


def get_allocation_size(size: int, config: AllocatorConfig | None = None) -> int:
    """``get_allocation_size``: the segment ``cudaMalloc`` gets for a rounded request of
    ``size`` bytes: 2 MiB (small pool), 20 MiB (``large_segment_size``) under 10 MiB, else
    ``size`` rounded up to 2 MiB."""
    if size <= K_SMALL_SIZE:
        return K_SMALL_BUFFER
    if size < K_MIN_LARGE_ALLOC:
        return config.large_segment_size if config else K_LARGE_BUFFER
    return -(-size // K_ROUND_LARGE) * K_ROUND_LARGE
