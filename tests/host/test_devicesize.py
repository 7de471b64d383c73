"""llmbench.host.devicesize: memory sizes from text, a device named or sized as nvidia-smi
reports it, and PyTorch's total of it."""

from __future__ import annotations

import pytest

from llmbench import GIB, MIB
from llmbench.host.devicesize import (
    GPUS,
    NVML_UNREPORTED_BYTES,
    parse_bytes,
    read_device,
    torch_total_of,
)


def test_parse_bytes():
    assert parse_bytes("80GiB") == 80 * GIB
    assert parse_bytes("80 gib") == 80 * GIB
    assert parse_bytes("85GB") == 85 * 10**9
    assert parse_bytes("81920MiB") == 80 * GIB
    assert parse_bytes("24") == 24 * GIB
    assert parse_bytes(" 79.18 GiB ") == int(79.18 * GIB)
    assert parse_bytes(".5GiB") == GIB // 2 and parse_bytes("1B") == 1
    with pytest.raises(ValueError):
        parse_bytes("lots")


@pytest.mark.parametrize(
    "text",
    # below one byte, a space or separator inside the number, a digit that is not ASCII
    ["0", "-3GiB", "inf", "nan", "GiB", "lots", "1e-30", "0.9B", "8 0GiB", "1_000MiB", "٨٠GiB"],
)
def test_parse_bytes_takes_positive_sizes_only_and_says_how_to_write_one(text):
    with pytest.raises(ValueError, match=r"cannot read a memory size .* e\.g\. 80GiB"):
        parse_bytes(text)


def test_a_gpu_measured_here_is_the_same_device_by_name_or_by_nvidia_smis_total():
    by_name, by_size = read_device("H100-80GB"), read_device("81559MiB")
    assert by_name.nvml_total == by_size.nvml_total == GPUS["h100-80gb"]
    assert by_name.name == by_size.name == "h100-80gb"
    # PyTorch's total in every committed H100 cell: 85,017,493,504 bytes = 81079 MiB
    assert by_name.torch_total == by_size.torch_total == 85_017_493_504 == 81079 * MIB
    assert by_name.unreported_measured
    h200 = read_device("h200")
    assert h200.torch_total == GPUS["h200"] - NVML_UNREPORTED_BYTES[GPUS["h200"]]
    assert h200.describe() == (
        "h200: nvidia-smi 143771 MiB, PyTorch 139.80 GiB (the driver keeps 615 MiB, measured)"
    )


def test_an_unmeasured_gpu_loses_the_most_the_driver_was_measured_to_keep():
    card = read_device("46068MiB")  # nvidia-smi's total of a 48 GB card
    assert card.name is None and not card.unreported_measured
    assert card.torch_total == 46068 * MIB - max(NVML_UNREPORTED_BYTES.values())
    assert card.describe() == (
        "46068MiB: nvidia-smi 46068 MiB, PyTorch 44.39 GiB (the driver keeps 615 MiB, assumed)"
    )
    assert read_device("1MiB").torch_total == 0  # never below zero


def test_an_unreadable_device_names_the_gpus_known():
    with pytest.raises(ValueError, match="or a GPU measured here: h100-80gb, h200"):
        read_device("a100")


def test_torch_total_of_names_the_gpu_whose_pytorch_total_a_size_is():
    assert torch_total_of(81079 * MIB) == "h100-80gb"
    assert torch_total_of(81079 * MIB + MIB // 2) == "h100-80gb"
    assert torch_total_of(GPUS["h100-80gb"]) is None  # nvidia-smi's total: nothing to note
    # PyTorch's totals as predict's header and torch's OOM message print them, to 0.01 GiB
    assert torch_total_of(parse_bytes("79.18GiB")) == "h100-80gb"
    assert torch_total_of(parse_bytes("139.80GiB")) == "h200"
    assert torch_total_of(parse_bytes("79.17GiB")) is None
    torch_h100 = 81079 * MIB
    assert torch_total_of(torch_h100 + 5 * MIB) == "h100-80gb"  # within 0.005 GiB = 5.12 MiB
    assert torch_total_of(torch_h100 - 6 * MIB) is None
