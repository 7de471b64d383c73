"""One model the memory model cannot handle costs its own cells only: ``predict_cell`` returns
``Unpredictable`` with the reason, ``llmbench predict`` says ``fits: unknown`` and why, and
the cells table gets ``predicted_error`` (tests/report/test_aggregate.py)."""

from __future__ import annotations

import csv
import io
import json
import shutil

import pytest
import yaml
from predict_fixtures import REPO, TINY, cell

from llmbench import predict

OPT_STYLE = {
    "model_type": "opt",
    "hidden_size": 64,
    "ffn_dim": 256,
    "num_hidden_layers": 2,
    "num_attention_heads": 4,
    "vocab_size": 1000,
}
"""An OPT-style config.json: the MLP width is ``ffn_dim``; there is no ``intermediate_size``."""


@pytest.fixture
def repo_root(tmp_path):
    """A checkout with one extra model, opt-tiny, and a grid of it and tiny-mistral."""
    (tmp_path / "config" / "models").mkdir(parents=True)
    (tmp_path / "config" / "grids").mkdir()
    shutil.copy(REPO / "config" / "models" / "tiny-mistral.json", tmp_path / "config" / "models")
    (tmp_path / "config" / "models" / "opt-tiny.json").write_text(json.dumps(OPT_STYLE))
    config = yaml.safe_load((REPO / "config" / "config.yaml").read_text())
    config["models"]["opt-tiny"] = {"architecture": "config/models/opt-tiny.json"}
    (tmp_path / "config" / "config.yaml").write_text(yaml.safe_dump(config))
    (tmp_path / "config" / "grids" / "mixed.yaml").write_text(
        "blocks:\n  - {models: [opt-tiny, tiny-mistral], quant: [none], attn: [sdpa],"
        " dtype: [bfloat16], batch: [1], seq: [8, 16]}\n"
    )
    return tmp_path


def test_predict_cell_says_why_a_model_cannot_be_predicted(tmp_path):
    from llmbench.predict.method import Unpredictable, predict_cell
    from llmbench.predict.prediction import Prediction

    (tmp_path / "opt.json").write_text(json.dumps(OPT_STYLE))
    (tmp_path / "broken.json").write_text("{not json")
    (tmp_path / "tiny.json").write_text(json.dumps(TINY))
    models = {name: {"architecture": f"{name}.json"} for name in ("opt", "broken", "tiny")}
    opt = predict_cell(cell(model="opt"), models, tmp_path)
    assert isinstance(opt, Unpredictable)
    assert opt.reason.startswith("cannot predict opt from opt.json: the hand replay replays only")
    assert "(model_type 'opt')" in opt.reason and "tracer: not traced yet" in opt.reason
    broken = predict_cell(cell(model="broken"), models, tmp_path)
    assert isinstance(broken, Unpredictable)
    assert "broken.json: JSONDecodeError" in broken.reason
    assert isinstance(predict_cell(cell(model="tiny"), models, tmp_path), Prediction)
    assert predict_cell(cell(model="not-registered"), models, tmp_path) is None


def test_a_config_without_heads_is_unpredictable_but_a_bug_propagates(tmp_path, monkeypatch):
    from llmbench.predict import method

    (tmp_path / "headless.json").write_text(
        json.dumps({**TINY, "num_attention_heads": 0, "head_dim": None})
    )
    (tmp_path / "tiny.json").write_text(json.dumps(TINY))
    models = {name: {"architecture": f"{name}.json"} for name in ("headless", "tiny")}
    headless = method.predict_cell(cell(model="headless"), models, tmp_path)
    assert isinstance(headless, method.Unpredictable) and "ZeroDivisionError" in headless.reason

    (tmp_path / "nulled.json").write_text(json.dumps({**TINY, "hidden_size": None}))
    registry = {"nulled": {"architecture": "nulled.json"}}
    nulled = method.predict_cell(cell(model="nulled"), registry, tmp_path)
    assert isinstance(nulled, method.Unpredictable) and "TypeError" in nulled.reason
    (tmp_path / "listed.json").write_text("[1]")  # JSON, not an object: no AttributeError
    registry = {"listed": {"architecture": "listed.json"}}
    listed = method.predict_cell(cell(model="listed"), registry, tmp_path)
    assert isinstance(listed, method.Unpredictable) and "must hold a JSON object" in listed.reason

    def broken(*args, **kwargs):
        raise AttributeError("a programming error")

    monkeypatch.setattr(method, "predict", broken)
    with pytest.raises(AttributeError):
        method.predict_cell(cell(model="tiny"), models, tmp_path)


def test_cli_predict_gives_unknown_and_the_reason_for_that_model_only(
    repo_root, monkeypatch, capsys
):
    from llmbench import cli
    from llmbench.cli import common

    monkeypatch.setattr(common, "REPO_ROOT", repo_root)
    assert cli.main(["predict", "--grid", "mixed", "--gpu-mem", "80GiB", "--format", "csv"]) == 0
    rows = list(csv.DictReader(io.StringIO(capsys.readouterr().out)))
    assert [(r["model"], r["fits"]) for r in rows] == [
        ("opt-tiny", "unknown"),
        ("opt-tiny", "unknown"),
        ("tiny-mistral", "yes"),
        ("tiny-mistral", "yes"),
    ]
    assert "model_type 'opt'" in rows[0]["reason"]
    assert float(rows[2]["prefill_peak_allocated_gib"]) > 0
    assert cli.main(["predict", "--grid", "mixed", "--gpu-mem", "80GiB"]) == 0
    text = capsys.readouterr().out
    assert "unknown" in text and "cannot predict opt-tiny" in text


def test_grid_rows_without_a_budget_have_no_verdict_but_the_reason(repo_root):
    rows = predict.grid_prediction_rows("mixed", repo_root=repo_root, gpu_mem=None, terms=True)
    opt = [r for r in rows if r["model"] == "opt-tiny"]
    assert len(rows) == 4 and len(opt) == 2
    assert all(r["fits"] is None and "model_type 'opt'" in r["reason"] for r in opt)
    assert "cannot predict opt-tiny" in predict.format_csv(rows)


def test_table_columns_of_an_unpredictable_model_carry_the_reason(repo_root, monkeypatch):
    from llmbench.predict import columns

    models = yaml.safe_load((repo_root / "config" / "config.yaml").read_text())["models"]
    monkeypatch.setattr(columns, "_registry", lambda root: models)
    result = json.loads(
        next(
            (REPO / "results" / "reference" / "h100" / "seed" / "cells").rglob("*.json")
        ).read_text()
    )
    result["cell"]["model"] = "opt-tiny"
    values = predict.table_columns(result, repo_root=repo_root)
    assert set(values) == {*predict.PREDICTED_COLUMNS, "predicted_error"}
    assert "model_type 'opt'" in values["predicted_error"]
    assert all(values[k] is None for k in predict.PREDICTED_COLUMNS)


def test_static_and_graph_decode_are_never_the_eager_numbers(repo, tmp_path):
    from llmbench.grid.spec import Cell
    from llmbench.predict.method import Unpredictable, predict_cell
    from llmbench.predict.trace.cache import cached_trace

    models = {"tiny-mistral": {"architecture": "config/models/tiny-mistral.json"}}
    eager = Cell("tiny-mistral", "none", "sdpa", "bfloat16", 1, 64)
    assert not isinstance(predict_cell(eager, models, repo), Unpredictable)
    config = json.loads((repo / "config/models/tiny-mistral.json").read_text())
    decodes = {}
    for mode in ("static", "graph"):
        cell = Cell("tiny-mistral", "none", "sdpa", "bfloat16", 1, 64, decode_mode=mode)
        untraced = predict_cell(cell, models, repo, trace_cache=tmp_path)
        assert isinstance(untraced, Unpredictable) and "DynamicCache" in untraced.reason
        cached_trace(
            config, cell, decode_tokens=32, compute_dtype="bfloat16", cache_dir=tmp_path,
            allow_trace=True,
        )  # fmt: skip
        traced = predict_cell(cell, models, repo, trace_cache=tmp_path)
        assert traced.method == "tracer"
        decodes[mode] = traced.decode.peak_allocated
    assert decodes["static"] != predict_cell(eager, models, repo).decode.peak_allocated
    # a graph decode adds the warm-up and capture streams' cuBLAS workspaces (32 MiB each)
    assert decodes["graph"] > decodes["static"] + 64 * 2**20


def test_an_int8_threshold_and_a_4bit_compute_dtype_are_predicted(repo):
    from llmbench.grid.spec import Cell
    from llmbench.predict.method import predict_cell
    from llmbench.predict.prediction import Prediction

    models = {
        "tiny-mistral": {"architecture": "config/models/tiny-mistral.json"},
        "mistral-7b-v0.3": {"architecture": "config/models/mistral-7b-v0.3.json"},
    }
    peaks = {}
    for threshold in ("default", "0", "4"):
        cell = Cell(
            "mistral-7b-v0.3", "int8", "sdpa", "bfloat16", 1, 1024, int8_threshold=threshold
        )
        answer = predict_cell(cell, models, repo)
        assert isinstance(answer, Prediction)
        peaks[threshold] = answer.prefill.peak_allocated
    # threshold 0: no |A| >= t mask, no outlier columns or state (bitsandbytes' threshold > 0
    # branch), so never more than at 6.0; a lower threshold never fewer outliers than 6.0
    assert peaks["0"] < peaks["default"] <= peaks["4"]
    fp32 = Cell("tiny-mistral", "fp4", "sdpa", "bfloat16", 1, 64, bnb_compute="float32")
    assert isinstance(predict_cell(fp32, models, repo), Prediction)
