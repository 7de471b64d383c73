"""Model entries before any job: architecture files parse and build, pretrained paths exist,
hub ids only where downloads are allowed; every error names the key (and the file)."""

import json
import re

import pytest

from llmbench.grid import models
from llmbench.grid.models import ModelEntryError, allows_download, check_entries


@pytest.fixture
def tiny(repo):
    return json.loads((repo / "config" / "models" / "tiny-mistral.json").read_text())


def architecture(tmp_path, content, name="m.json"):
    path = tmp_path / name
    path.write_text(content if isinstance(content, str) else json.dumps(content))
    return {"architecture": name}


def test_shipped_entries_pass(repo):
    import yaml

    config = yaml.safe_load((repo / "config" / "config.yaml").read_text())
    assert check_entries(config["models"], repo) == []


def test_missing_architecture_file_names_the_key(tmp_path):
    with pytest.raises(ModelEntryError, match=r"^models\.x\.architecture: no such file 'nope"):
        check_entries({"x": {"architecture": "nope.json"}}, tmp_path)


def test_architecture_that_is_not_json_names_key_file_line_and_column(tmp_path):
    entry = architecture(tmp_path, '{\n  "model_type": "mistral"\n  "hidden_size": 128\n}')
    expected = f"models.x.architecture: {tmp_path / 'm.json'}:3:3: not valid JSON: Expecting"
    with pytest.raises(ModelEntryError, match=re.escape(expected)):
        check_entries({"x": entry}, tmp_path)


@pytest.mark.parametrize(
    "change, message",
    [
        ({"model_type": None}, "has no 'model_type'"),
        ({"torch_dtype": "bfloatt16"}, "dtype 'bfloatt16' is not one of"),
        # transformers builds these configs; the checkpoint build would fail mid-run
        ({"hidden_size": -128}, "hidden_size -128 must be at least 1"),
        ({"num_hidden_layers": 0}, "num_hidden_layers 0 must be at least 1"),
        ({"vocab_size": 32000.0}, "vocab_size 32000.0 is not a whole number"),
    ],
)
def test_architecture_without_what_a_build_needs_names_the_file(tmp_path, tiny, change, message):
    entry = architecture(tmp_path, {**tiny, **change})
    with pytest.raises(ModelEntryError, match=f"^models.x.architecture: .*m.json: {message}"):
        check_entries({"x": entry}, tmp_path)
    with pytest.raises(ModelEntryError, match="must hold a JSON object"):
        check_entries({"x": architecture(tmp_path, [1, 2])}, tmp_path)


@pytest.mark.parametrize(
    "change, message",
    [
        ({"model_type": "mistrall"}, "model_type 'mistrall' is not known to this transformers"),
        ({"model_type": "vit"}, "model_type 'vit' has no causal language model"),
        ({"num_hidden_layers": "two"}, "num_hidden_layers"),
    ],
)
def test_architecture_transformers_refuses_names_key_and_file(tmp_path, tiny, change, message):
    pytest.importorskip("transformers")
    entry = architecture(tmp_path, {**tiny, **change})
    with pytest.raises(ModelEntryError, match=f"^models.x.architecture: .*m.json: .*{message}"):
        check_entries({"x": entry}, tmp_path)


MISTRAL_DROPS = object()


@pytest.mark.parametrize(
    "change, message",
    [
        # transformers keeps a misspelt key as an unused attribute and builds its default
        ({"num_hidden_layer": 2, "num_hidden_layers": MISTRAL_DROPS},
         "'num_hidden_layer' is not a mistral config key: 'num_hidden_layers' misspelt"),
        ({"intermediate_size": MISTRAL_DROPS}, "no intermediate_size: transformers would build"),
        # MistralConfig defaults to 8 K/V heads; the memory model reads the file
        ({"num_key_value_heads": MISTRAL_DROPS}, "no num_key_value_heads: transformers builds 8"),
        ({"num_key_value_heads": 3}, "num_attention_heads 4 is not a multiple of"),
        ({"head_dim": 33}, "head_dim 33 is odd"),
        ({"hidden_act": "nosuch"}, "hidden_act 'nosuch' is not an activation"),
        ({"initializer_range": float("nan")}, "initializer_range is nan: not a finite number"),
        ({"quantization_config": {"quant_method": "bitsandbytes"}}, "has a quantization_config"),
    ],
)  # fmt: skip
def test_an_architecture_transformers_builds_as_another_model_or_cannot_run_is_refused(
    tmp_path, tiny, change, message
):
    pytest.importorskip("transformers")
    config = {k: v for k, v in {**tiny, **change}.items() if v is not MISTRAL_DROPS}
    entry = architecture(tmp_path, config)
    with pytest.raises(ModelEntryError, match=f"^models.x.architecture: .*m.json: {message}"):
        check_entries({"x": entry}, tmp_path)


def test_families_under_their_own_names_or_without_heads_pass(tmp_path):
    # GPT-2 names its sizes n_embd, n_layer, n_head (transformers' attribute_map); Mamba has
    # no attention heads: neither is "missing" a size, neither may crash the check
    pytest.importorskip("transformers")
    gpt2 = {"model_type": "gpt2", "n_embd": 128, "n_layer": 2, "n_head": 4, "vocab_size": 512}
    mamba = {"model_type": "mamba", "hidden_size": 64, "num_hidden_layers": 2,
             "vocab_size": 512}  # fmt: skip
    for name, config in (("gpt2.json", gpt2), ("mamba.json", mamba)):
        check_entries({"x": architecture(tmp_path, config, name)}, tmp_path)


def test_too_many_experts_per_token_is_refused(tmp_path, repo):
    pytest.importorskip("transformers")
    mixtral = json.loads((repo / "config/models/tiny-mixtral.json").read_text())
    entry = architecture(tmp_path, {**mixtral, "num_experts_per_tok": 8})
    with pytest.raises(ModelEntryError, match="num_experts_per_tok 8 is more than the 4 experts"):
        check_entries({"x": entry}, tmp_path)


def test_accepted_architectures_are_not_checked_again(tmp_path, tiny, monkeypatch):
    pytest.importorskip("transformers")
    cache = tmp_path / "cache" / "checked.json"
    entries = {"x": architecture(tmp_path, tiny)}
    assert check_entries(entries, tmp_path, cache_path=cache) == []
    monkeypatch.setattr(models, "transformers_problem", lambda config: pytest.fail("rechecked"))
    assert check_entries(entries, tmp_path, cache_path=cache) == []
    changed = {"x": architecture(tmp_path, {**tiny, "num_hidden_layers": 3})}
    monkeypatch.setattr(models, "transformers_problem", lambda config: "refused")
    with pytest.raises(ModelEntryError, match="refused"):
        check_entries(changed, tmp_path, cache_path=cache)


def test_without_transformers_the_check_is_skipped_with_one_note(tmp_path, tiny, monkeypatch):
    monkeypatch.setattr(models, "_transformers_version", lambda: None)
    entries = {"x": architecture(tmp_path, tiny), "y": architecture(tmp_path, tiny, "n.json")}
    notes = check_entries(entries, tmp_path)
    assert len(notes) == 1 and "not checked by transformers" in notes[0]


def test_pretrained_folder_that_does_not_exist_names_the_key(tmp_path):
    with pytest.raises(ModelEntryError) as caught:
        check_entries({"my-llama": {"pretrained": "/data/no-such-llama"}}, tmp_path)
    assert str(caught.value).startswith(
        "models.my-llama.pretrained: no such folder '/data/no-such-llama'"
    )
    assert "models.my-llama.allow_download: true" in str(caught.value)


def test_pretrained_must_be_a_checkpoint_folder(tmp_path):
    (tmp_path / "ckpt").mkdir()
    with pytest.raises(ModelEntryError, match="has no config.json"):
        check_entries({"m": {"pretrained": "ckpt"}}, tmp_path)
    (tmp_path / "ckpt" / "config.json").write_text("{}")
    assert check_entries({"m": {"pretrained": "ckpt"}}, tmp_path) == []
    with pytest.raises(ModelEntryError, match="is a file"):
        check_entries({"m": {"pretrained": "ckpt/config.json"}}, tmp_path)


def test_hub_ids_need_the_entry_to_allow_downloads(tmp_path):
    hub = {"pretrained": "meta-llama/Llama-3.1-8B"}
    with pytest.raises(ModelEntryError, match="no such folder 'meta-llama/Llama-3.1-8B'"):
        check_entries({"m": hub}, tmp_path)
    assert check_entries({"m": {**hub, "allow_download": True}}, tmp_path) == []
    with pytest.raises(ModelEntryError, match="neither an existing folder nor a hub id"):
        check_entries({"m": {"pretrained": "/data/x", "allow_download": True}}, tmp_path)


def test_allows_download_is_opt_in():
    assert not allows_download(None) and not allows_download({"pretrained": "a/b"})
    assert not allows_download({"allow_download": "yes"})  # normalised to a bool beforehand
    assert allows_download({"pretrained": "a/b", "allow_download": True})
