"""The prediction a search starts from (llmbench.frontier.prediction): recalibration from
measured peaks, the default predictor and the capacity."""

from __future__ import annotations

import json

import pytest
from frontier_fakes import truth

from llmbench import GIB, frontier
from llmbench.frontier import (
    Prediction,
    ProbeRecord,
    Search,
    bisect_frontier,
    grid_values,
)

# ---- recalibration from measured peaks --------------------------------------------------------


def _memory_oracle(measured):
    def probe(value):
        peak = measured(value)
        return ProbeRecord(value, "ok" if peak <= 128 else "oom", peak_bytes=peak)

    return probe


@pytest.mark.parametrize(
    ("measured", "predicted"),
    [
        (lambda v: 30 + 4.9e-5 * v * v, lambda v: 1.5 + 3e-5 * v * v),  # eager, 40% low
        (lambda v: 30 + 0.0188 * v, lambda v: 1.5 + 0.016 * v),  # sdpa, offset + 15% low
        (lambda v: 16 + 1.6e-4 * v * v, lambda v: 20 + 2.4e-4 * v * v),  # eager, 50% high
    ],
)
def test_recalibration_finds_the_frontier_in_few_probes(measured, predicted):
    values = grid_values(128, 8192, 128)
    expected = truth(values, max(v for v in values if measured(v) <= 128))
    plain = bisect_frontier(values, _memory_oracle(measured), predicted=None)
    prediction = Prediction(values, predicted, 128.0)
    index = frontier.predicted_index(values, predicted, 128.0)
    prediction.frontier = values[index]
    calibrated = bisect_frontier(
        values,
        _memory_oracle(measured),
        predicted=prediction.frontier,
        recalibrate=prediction.recalibrate,
    )
    assert plain.frontier == calibrated.frontier == expected
    assert calibrated.n_probes <= 4 < plain.n_probes
    assert prediction.calibrations and prediction.calibrations[-1]["fit"] in ("ratio", "affine")


def test_default_predictor_predicts_what_the_budget_limits(repo):
    from llmbench import predict

    config = json.loads((repo / "config/models/tiny-mistral.json").read_text())
    cell = Search("tiny-mistral", "none", "eager", "bfloat16", "seq", 2).cell(1024)
    cpu = frontier.default_predictor("cpu")
    allocated = cpu(config, cell, bnb_4bit_compute_dtype="bfloat16")
    # CPU budget: RSS growth ~ peak allocated
    assert allocated == predict.predicted_peak_bytes(config, cell)
    # the probes' own decode length, not the default's
    short = Search("tiny-mistral", "none", "sdpa", "bfloat16", "seq", 2).cell(64)
    long_decode = frontier.default_predictor("cpu", decode_tokens=4096)
    expected = predict.predict(config, short, decode_tokens=4096).peak_allocated
    assert long_decode(config, short) == expected > predict.predicted_peak_bytes(config, short)
    cuda = frontier.default_predictor("cuda", decode_tokens=2)
    reserved = cuda(config, cell, bnb_4bit_compute_dtype="bfloat16")
    assert reserved > allocated  # + allocator slack
    assert frontier.capacity_bytes({"memory_budget_gib": 0.5}, "cpu") == 0.5 * GIB
    assert frontier.capacity_bytes({"memory_budget_gib": None}, "cpu") is None


@pytest.mark.parametrize("device", ["cpu", "cuda"])
def test_the_default_predictor_refuses_a_family_the_hand_replay_does_not_replay(repo, device):
    # a Qwen3 search with a memory budget starts from no prediction (plain bisection, the
    # reason in its note), never from the Mistral replay's numbers
    pytest.importorskip("llmbench.predict")
    config = json.loads((repo / "config/models/tiny-qwen3.json").read_text())
    search = Search("tiny-qwen3", "none", "sdpa", "bfloat16", "seq", 1)
    predictor = frontier.default_predictor(device, decode_tokens=2)
    with pytest.raises(ValueError, match="the hand replay does not apply: .*'qwen3'"):
        predictor(config, search.cell(1024), bnb_4bit_compute_dtype="bfloat16")
    with pytest.raises(ValueError, match="replays only the mistral, llama, qwen2 code"):
        Prediction.make(
            search,
            grid_values(256, 2048, 256),
            predictor=predictor,
            config=config,
            capacity=GIB,
            compute_dtype="bfloat16",
        )


# ---- the allocator-simulated prediction --------------------------------------------------------


def _threshold_decide(limit, calls):
    def factory(config, measurement, capacity, *, bnb_4bit_compute_dtype):
        assert capacity == 84_297_318_400

        def decide(search, value):
            calls.append(value)
            return "ok" if value <= limit else "oom"

        return decide

    return factory


@pytest.mark.parametrize("limit", [11520, 32768, 100])
def test_simulated_prediction_is_the_simulated_frontier(monkeypatch, limit):
    from llmbench.frontier import simulated

    calls = []
    monkeypatch.setattr(simulated, "simulator_decide", _threshold_decide(limit, calls))
    monkeypatch.setattr(simulated, "frontier_in_child", simulated.frontier_of)  # in-process
    values = grid_values(256, 32768, 256)
    search = Search("mistral-7b-v0.3", "none", "eager", "bfloat16", "seq", 1)
    prediction = frontier.prediction.simulated_prediction(
        search,
        values,
        config={},
        measurement={},
        capacity=84_297_318_400,
        compute_dtype="bfloat16",
    )
    assert prediction.frontier == (limit if limit >= 256 else 255)
    assert prediction.method == "simulated"
    assert calls[0] == 32768 and len(calls) <= 9
    # a probe does not move it: it predicts outcomes, not a peak to rescale
    assert prediction.recalibrate(ProbeRecord(11520, "ok", peak_bytes=80 * GIB)) is None


def test_simulator_capacity_is_the_committed_probes_capacity():
    """NVML total less the constants = torch total less the memory outside the allocator, as
    each committed H100 and H200 probe measured it (llmbench.predict.oom.capacity_from_record)."""
    from llmbench import REPO_ROOT
    from llmbench.predict.oom import capacity_from_record, nvml_before

    reference = REPO_ROOT / "results" / "reference"
    probes = {
        gpu: sorted((reference / gpu / "frontier" / "frontier" / "probes").rglob("*.json"))
        for gpu in ("h100", "h200")
    }
    assert (len(probes["h100"]), len(probes["h200"])) == (48, 51)
    for path in probes["h100"] + probes["h200"]:
        record = json.loads(path.read_text())
        capacity = frontier.prediction.simulator_capacity(
            nvml_before(record)["total_bytes"], record["cell"]["attn"]
        )
        assert capacity == capacity_from_record(record), path.name


def test_an_unmeasured_gpu_model_is_given_the_largest_unreported_bytes():
    from llmbench.host.devicesize import NVML_UNREPORTED_BYTES, nvml_unreported_bytes

    assert nvml_unreported_bytes(150_754_820_096) == (644_939_776, True)  # H200
    assert nvml_unreported_bytes(85_520_809_984) == (503_316_480, True)  # H100 80GB
    assert nvml_unreported_bytes(25_757_220_864) == (max(NVML_UNREPORTED_BYTES.values()), False)


def test_a_length_search_past_a_sliding_window_starts_from_no_prediction(repo):
    # the hand replay applies below the window, not past it: the search must not start
    # from a prediction that fails once a probe goes past it (it bisects instead)
    pytest.importorskip("llmbench.predict")
    config = json.loads((repo / "config/models/tiny-mistral.json").read_text())
    config["sliding_window"] = 1024
    search = Search("tiny-mistral", "none", "sdpa", "bfloat16", "seq", 1)
    predictor = frontier.default_predictor("cuda", decode_tokens=2)
    assert predictor(config, search.cell(256), bnb_4bit_compute_dtype="bfloat16") > 0

    def make(values):
        return Prediction.make(
            search, values, predictor=predictor, config=config, capacity=64 * GIB,
            compute_dtype="bfloat16",
        )  # fmt: skip

    with pytest.raises(ValueError, match=r"sliding window \(1024 tokens\) is reached"):
        make(grid_values(256, 2048, 256))
    # a prediction made below the window is left as it is by a probe past it
    below = make(grid_values(256, 512, 256))
    below.values = grid_values(256, 2048, 256)
    assert below.recalibrate(ProbeRecord(1536, "ok", peak_bytes=GIB)) is None
