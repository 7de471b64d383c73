"""llmbench.predict.allocator.config: request rounding, segment sizes and option parsing, as
``round_size``, ``roundup_power2_next_division``, ``get_allocation_size``
(c10/cuda/CUDACachingAllocator.cpp) and ``parseArgs`` / ``parseRoundUpPower2Divisions``
(c10/core/AllocatorConfig.cpp) define them."""

from __future__ import annotations

import pytest

from llmbench.predict.allocator import AllocatorConfig, get_allocation_size, round_size
from llmbench.predict.allocator.config import UNLIMITED, roundup_power2_next_division

MB = 2**20
DEFAULT = AllocatorConfig()


@pytest.mark.parametrize(
    ("request_bytes", "rounded"),
    [(1, 512), (511, 512), (512, 512), (513, 1024), (MB + 1, MB + 512), (3 * MB, 3 * MB)],
)
def test_requests_round_up_to_512_bytes(request_bytes, rounded):
    # round_size: size < kMinBlockSize -> kMinBlockSize, else kMinBlockSize * ceil(size / 512)
    assert round_size(request_bytes, DEFAULT) == rounded


def test_power2_divisions_round_to_the_next_division():
    # The C++ comment of roundup_power2_next_division: 1200 with 4 divisions -> 1280.
    assert roundup_power2_next_division(1200, 4) == 1280
    assert roundup_power2_next_division(1024, 4) == 1024  # powers of two stay
    config = AllocatorConfig.parse("roundup_power2_divisions:4")
    # 5 MiB + 1 lies in [4, 8) MiB; 4 divisions -> steps of 1 MiB -> 6 MiB.
    assert round_size(5 * MB + 1, config) == 6 * MB
    # Only above kMinBlockSize * divisions = 2048 bytes; below, plain 512-byte rounding.
    assert round_size(1200, config) == 1536


def test_power2_division_list_follows_the_parser():
    # parseRoundUpPower2Divisions: the first key also fills the intervals below it; ">" fills
    # from the last key's interval on (overwriting that key's own value).
    config = AllocatorConfig.parse("roundup_power2_divisions:[256:1,512:2,1024:4,>:8]")
    assert config.roundup_power2_divisions[:9] == (1,) * 9
    assert config.roundup_power2_divisions[9] == 2
    assert config.roundup_power2_divisions[10:] == (8,) * 6
    # roundup_power2_divisions(size): index = log2(size) - 20, clamped to [0, 15].
    assert config.divisions(300 * MB) == 1
    assert config.divisions(600 * MB) == 2
    assert config.divisions(100 * 2**30) == 8


@pytest.mark.parametrize(
    ("rounded", "segment"),
    [
        (512, 2 * MB),  # <= kSmallSize: kSmallBuffer
        (MB, 2 * MB),
        (MB + 512, 20 * MB),  # < kMinLargeAlloc: kLargeBuffer
        (10 * MB - 512, 20 * MB),
        (10 * MB, 10 * MB),  # else rounded up to kRoundLarge
        (10 * MB + 512, 12 * MB),
    ],
)
def test_segment_size_by_request(rounded, segment):
    assert get_allocation_size(rounded) == segment


def test_options_parse_like_torch():
    config = AllocatorConfig.parse(
        "max_split_size_mb:64, expandable_segments:True,garbage_collection_threshold:0.6",
        memory_fraction=0.9,
    )
    assert config.max_split_size == 64 * MB
    assert config.expandable_segments
    assert config.garbage_collection_threshold == 0.6
    assert config.memory_fraction == 0.9
    assert AllocatorConfig.parse(None) == DEFAULT
    assert DEFAULT.max_split_size == UNLIMITED and DEFAULT.max_non_split_rounding == 20 * MB
    assert AllocatorConfig.parse("max_non_split_rounding_mb:40").max_non_split_rounding == 40 * MB


@pytest.mark.parametrize(
    "conf",
    [
        "max_split_size_mb:10",  # below kLargeBuffer / 1 MiB = 20
        "garbage_collection_threshold:1.5",
        "expandable_segments:yes",
        "roundup_power2_divisions:3",
        "backend:cudaMallocAsync",
        "no_such_option:1",
    ],
)
def test_bad_or_unmodelled_options_are_refused(conf):
    with pytest.raises(ValueError):
        AllocatorConfig.parse(conf)
