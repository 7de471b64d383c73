"""The config before any job: spellings typed on the command line normalised, and a one-line
error naming the key, the value and what is allowed."""

import copy

import pytest
import yaml

from llmbench.grid.schemas import config_error, load_schema
from llmbench.grid.validate import ConfigError, check_config, main, normalise


@pytest.fixture(scope="module")
def shipped(repo):
    return yaml.safe_load((repo / "config" / "config.yaml").read_text())


@pytest.fixture
def config(shipped):
    return copy.deepcopy(shipped)


SCHEMA = load_schema("config.schema.yaml")


@pytest.mark.parametrize(
    "typed, value",
    [
        ("false", False),
        ("False", False),
        ("FALSE", False),
        ("no", False),
        ("Off", False),
        ("0", False),
        (0, False),
        ("true", True),
        ("Yes", True),
        ("ON", True),
        ("1", True),
        (1, True),
        (True, True),
    ],
)
def test_boolean_spellings_are_accepted(config, typed, value):
    config["warm_start"] = typed
    normalise(config, SCHEMA)
    assert config["warm_start"] is value
    assert config_error(config) is None


def test_nested_values_typed_as_strings_are_normalised(config):
    # --config 'frontier={...}' and 'models={...}' arrive with every scalar as a string
    config["frontier"].update(use_prediction="no", extra_probes="2", batch=["1", "2"])
    config["frontier"]["memory_budget_gib"] = "Null"
    config["measurement"]["repeats"] = "5"
    config["memory_budget_gib"] = "1.5"
    config["models"]["hub"] = {"pretrained": "org/name", "allow_download": "yes"}
    normalise(config, SCHEMA)
    assert config["frontier"]["use_prediction"] is False
    assert config["frontier"]["extra_probes"] == 2 and config["frontier"]["batch"] == [1, 2]
    assert config["frontier"]["memory_budget_gib"] is None
    assert config["measurement"]["repeats"] == 5 and config["memory_budget_gib"] == 1.5
    assert config["models"]["hub"]["allow_download"] is True
    assert config_error(config) is None


def test_normalise_keeps_what_it_cannot_read(config):
    config.update(warm_start="maybe", grid="seed", device="cpu")
    config["measurement"]["repeats"] = "many"
    normalise(config, SCHEMA)
    assert config["warm_start"] == "maybe" and config["measurement"]["repeats"] == "many"
    assert config["grid"] == "seed"


@pytest.mark.parametrize(
    "change, message",
    [
        (
            {"devce": "cpu"},
            "config key 'devce' (value 'cpu') is not a known key; did you mean "
            "'device'? Known keys here: bnb_4bit_compute_dtype, cache_dir",
        ),
        ({"device": "tpu"}, "config key 'device': value 'tpu' is not one of: auto, cuda, cpu"),
        (
            {"warm_start": "maybe"},
            "config key 'warm_start': value 'maybe' is not of type "
            "boolean (true/false, yes/no, on/off, 1/0)",
        ),
        ({"cell_timeout_s": 0}, "config key 'cell_timeout_s': 0 is less than or equal to"),
        # nan passes every minimum test: it would remove the time limit without a word
        ({"cell_timeout_s": float("nan")}, "config key 'cell_timeout_s': value nan is not a "),
        ({"memory_budget_gib": float("inf")}, "config key 'memory_budget_gib': value inf is not"),
        ({"zzz": 1}, "config key 'zzz' (value 1) is not a known key. Known keys here: "),
        (
            {"models": {"x": {"architecture": "a.json", "pretrained": "b"}}},
            "config key 'models.x': give exactly one of: architecture, pretrained",
        ),
        (
            {"models": {"x": {"architecture": "a.json", "allow_download": True}}},
            "config key 'models.x.allow_download' is only allowed with pretrained",
        ),
        ({"models": {"../x": {"architecture": "a.json"}}}, "config key 'models': name '../x'"),
        ({"measurement": {"seed": 0}}, "config key 'measurement.warmup' is missing"),
        # checkpoints at the filesystem's root
        ({"cache_dir": " "}, "config key 'cache_dir': value ' ' is blank"),
    ],
)
def test_config_errors_are_one_line_naming_key_value_and_allowed(config, change, message):
    config.update(change)
    error = config_error(config)
    assert error.startswith(message)
    assert "\n" not in error and len(error) < 400


def test_an_empty_frontier_range_and_a_report_root_without_tables_are_refused(config, repo):
    config["frontier"].update(seq_min=300, seq_max=290)
    with pytest.raises(ConfigError, match=r"'frontier.seq_min': value 300 is above frontier"):
        check_config(config, repo, cache_path=None)
    config["frontier"].update(seq_min=256, batch_min=10, batch_max=2)
    with pytest.raises(ConfigError, match=r"'frontier.batch_min': value 10 is above"):
        check_config(config, repo, cache_path=None)
    config["frontier"].update(batch_min=1, batch_max=64)
    batch, seq = config["frontier"]["batch"], config["frontier"]["seq"]
    config["frontier"].update(batch=[], seq=[])
    with pytest.raises(ConfigError, match=r"'frontier': batch and seq are both empty"):
        check_config(config, repo, cache_path=None)
    config["frontier"].update(batch=batch, seq=seq, models=["nosuch"])
    with pytest.raises(ConfigError, match=r"'frontier.models': 'nosuch' not defined"):
        check_config(config, repo, cache_path=None)
    config["frontier"]["models"] = ["tiny-mistral"]
    config["measurement"]["seed"] = 10**23  # torch.manual_seed overflows
    with pytest.raises(ConfigError, match=r"'measurement.seed'"):
        check_config(config, repo, cache_path=None)
    config["measurement"]["seed"] = 0
    config["report_root"] = "results/reference/nosuch"
    with pytest.raises(ConfigError, match=r"'report_root': value '.*nosuch' has no tables/"):
        check_config(config, repo, cache_path=None)
    config["report_root"] = "results/reference/h100/seed"
    check_config(config, repo, cache_path=None)


def test_check_config_raises_the_one_line(config, repo):
    config["device"] = "tpu"
    with pytest.raises(ConfigError, match="^config key 'device': value 'tpu'"):
        check_config(config, repo, cache_path=None)


def test_validate_command_checks_the_grid_and_names_a_grid_file(tmp_path, repo, capsys):
    # "config ok" must not pass a config whose grid Snakemake then refuses
    nosuch = tmp_path / "c.yaml"
    nosuch.write_text("grid: nosuch\n")
    assert main([str(nosuch)], repo=repo) == 1
    assert "grid 'nosuch': no file" in capsys.readouterr().err
    grid = repo / "config/grids/smoke.yaml"
    assert main([str(grid)], repo=repo) == 1
    assert "smoke.yaml: a grid file, not a config" in capsys.readouterr().err
    assert main([], repo=repo) == 0
    assert capsys.readouterr().out.rstrip().endswith("(grid seed)")


def test_validate_command_names_a_broken_configfile(tmp_path, repo, capsys):
    broken = tmp_path / "my.yaml"
    broken.write_text("grid: [smoke\ndevice: cpu\n")
    assert main([str(broken)], repo=repo) == 1
    assert capsys.readouterr().err.startswith(f"{broken}:2:7: not valid YAML")


def test_validate_command_checks_the_merged_config(tmp_path, repo, capsys):
    override = tmp_path / "my.yaml"
    override.write_text("measurement: {repeats: 5}\nwarm_start: off\n")
    assert main([str(override)], repo=repo) == 0
    assert "config ok" in capsys.readouterr().out
    override.write_text("measurement: {repeats: 0}\n")
    assert main([str(override)], repo=repo) == 1
    assert "config key 'measurement.repeats': 0 is less than" in capsys.readouterr().err


def test_each_schema_keeps_its_own_validator(config):
    """first_error builds each schema's validator once: asking one schema must not answer
    with another's (the same document, valid against one, invalid against the other)."""
    from llmbench.grid.schemas import first_error

    verdicts = [
        first_error(config, name) is None
        for name in ("config.schema.yaml", "cell.schema.json", "config.schema.yaml")
    ]
    assert verdicts == [True, False, True]
