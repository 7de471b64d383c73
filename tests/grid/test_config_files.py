"""Config files that do not parse: the error names the file, line and column."""

import re

import pytest

from llmbench.grid.files import (
    ConfigFileError,
    GridError,
    InputError,
    read_json,
    read_yaml,
    stop_on_input_error,
)
from llmbench.grid.models import ModelEntryError
from llmbench.grid.schemas import SchemaError
from llmbench.grid.validate import ConfigError


def test_yaml_syntax_error_names_the_file_line_and_column(tmp_path):
    path = tmp_path / "grid.yaml"
    path.write_text("blocks:\n  - models: [tiny-mistral]\n    quant: [none\n    attn: [sdpa]\n")
    with pytest.raises(ConfigFileError) as caught:
        read_yaml(path)
    message = str(caught.value)
    assert message.startswith(f"{path}:4:9: not valid YAML: expected ',' or ']'")
    assert "starts at line 3, column 12" in message
    assert "<unicode string>" not in message and "\n" not in message


def test_json_syntax_error_names_the_file_line_and_column(tmp_path):
    path = tmp_path / "model.json"
    path.write_text('{\n  "model_type": "mistral"\n  "hidden_size": 128\n}\n')
    with pytest.raises(ConfigFileError, match=re.escape(f"{path}:3:3: not valid JSON: Expecting")):
        read_json(path)


def test_unreadable_file_names_the_file(tmp_path):
    with pytest.raises(ConfigFileError, match=re.escape(f"{tmp_path}: cannot be read")):
        read_yaml(tmp_path)  # a folder
    binary = tmp_path / "weights.json"
    binary.write_bytes(b"\xff\xfe\x00")
    with pytest.raises(ConfigFileError, match=re.escape(f"{binary}: not a text file")):
        read_json(binary)


def test_valid_files_parse(tmp_path):
    (tmp_path / "a.yaml").write_text("a: [1, 2]\n")
    (tmp_path / "b.json").write_text('{"b": true}')
    assert read_yaml(tmp_path / "a.yaml") == {"a": [1, 2]}
    assert read_json(tmp_path / "b.json") == {"b": True}


def test_a_key_given_twice_is_refused_naming_both_lines(tmp_path):
    # PyYAML and json keep the last value silently: seq [64] then [4096] planned only 4096
    grid = tmp_path / "g.yaml"
    grid.write_text("blocks:\n  - seq: [64]\n    batch: [1]\n    seq: [4096]\n")
    message = f"{grid}:4:5: not valid YAML: key 'seq' given twice (first at line 2)"
    with pytest.raises(ConfigFileError, match=re.escape(message)):
        read_yaml(grid)
    architecture = tmp_path / "a.json"
    architecture.write_text('{"num_hidden_layers": 2, "num_hidden_layers": 32}')
    with pytest.raises(ConfigFileError, match="key 'num_hidden_layers' given twice"):
        read_json(architecture)
    (tmp_path / "ok.yaml").write_text("a: {b: 1}\nc: {b: 2}\n")  # one key in two mappings
    assert read_yaml(tmp_path / "ok.yaml") == {"a": {"b": 1}, "c": {"b": 2}}


@pytest.mark.parametrize(
    "error", [ConfigError, ConfigFileError, GridError, ModelEntryError, SchemaError]
)
def test_an_input_error_stops_the_workflow_with_its_message_alone(error):
    with pytest.raises(SystemExit) as stopped, stop_on_input_error():
        raise error("config key 'devce': not a known key")
    assert stopped.value.code == "llmbench: error: config key 'devce': not a known key"
    assert stopped.value.__cause__ is None and stopped.value.__suppress_context__


def test_any_other_error_keeps_its_traceback():
    assert issubclass(InputError, ValueError)  # callers that catch ValueError still do
    with pytest.raises(KeyError), stop_on_input_error():
        raise KeyError("a bug")
    with pytest.raises(ValueError, match="a bug"), stop_on_input_error():
        raise ValueError("a bug")
