"""The config, checked before any job (``workflow/rules/common.smk`` makes the one call,
:func:`check_config`): values typed on the command line normalised, the schema checked with
a one-line error (key, value, what is allowed), and every model entry checked
(:mod:`llmbench.grid.models`).

Also ``python -m llmbench.grid.validate [FILE ...]``: the same checks on config/config.yaml
with the given files merged over it, as ``--configfile FILE`` does, and on the grid the
config names; Snakemake's own message for a config file that is not valid YAML names neither
the file nor the line, this does.
"""

from __future__ import annotations

import sys
from collections.abc import Mapping, MutableMapping
from pathlib import Path
from typing import Any

from llmbench import REPO_ROOT
from llmbench.grid import models
from llmbench.grid.files import ConfigFileError, InputError, read_yaml
from llmbench.grid.schemas import config_error, load_schema
from llmbench.grid.spec import load_grid
from llmbench.host.devicesize import read_device

TRUE = frozenset({"true", "yes", "on", "1"})
FALSE = frozenset({"false", "no", "off", "0"})
NULL = frozenset({"null", "none", "~"})
"""Spellings accepted, in any case, for booleans and for null (``--config`` passes strings)."""


class ConfigError(InputError):
    """The config is not valid; the message is one line naming the key."""


def _types(schema: Mapping[str, Any]) -> set[str]:
    kind = schema.get("type", ())
    return {kind} if isinstance(kind, str) else set(kind)


def _scalar(value: Any, types: set[str]) -> Any:
    """``value`` as the schema's type when it is one of its usual spellings, else unchanged."""
    if isinstance(value, bool) or not isinstance(value, str | int):
        return value
    text = str(value).strip().lower()
    if "boolean" in types and text in TRUE | FALSE:
        return text in TRUE
    if not isinstance(value, str):
        return value
    if "null" in types and text in NULL:
        return None
    for kind, parse in (("integer", int), ("number", float)):
        if kind in types:
            try:
                return parse(text)
            except ValueError:
                pass
    return value


def normalise(value: Any, schema: Mapping[str, Any]) -> Any:
    """Booleans, nulls and numbers spelled as strings (``--config warm_start=False`` arrives
    as a bool, ``=false`` and ``={repeats: 5}``'s 5 as strings) turned into what ``schema``
    asks for, mappings in place; returns the value."""
    if isinstance(value, MutableMapping):
        properties = schema.get("properties") or {}
        extra = schema.get("additionalProperties")
        for key in list(value):
            sub = properties.get(key, extra if isinstance(extra, Mapping) else None)
            if sub is not None:
                value[key] = normalise(value[key], sub)
        return value
    if isinstance(value, list) and isinstance(schema.get("items"), Mapping):
        return [normalise(item, schema["items"]) for item in value]
    return _scalar(value, _types(schema))


def check_config(
    config: MutableMapping[str, Any], repo: Path, *, cache_path: Path | None = models.CHECK_CACHE
) -> None:
    """Normalise ``config`` in place and check it and every model entry; raise ConfigError (one
    line) or ModelEntryError, print notes about checks this host cannot make."""
    problem = config_problem(config) or _report_root_error(config, repo)
    if problem:
        raise ConfigError(problem)
    for note in models.check_entries(config["models"], repo, cache_path=cache_path):
        print(f"llmbench: {note}", file=sys.stderr)


def config_problem(config: MutableMapping[str, Any]) -> str | None:
    """Normalise ``config`` in place; one line naming what is wrong with its values (the
    schema, then :func:`frontier_error`), or None. What ``predict --frontier --configfile``
    checks; :func:`check_config` adds the files the config names."""
    normalise(config, load_schema("config.schema.yaml"))
    return config_error(config) or frontier_error(config) or predict_gpu_error(config)


def predict_gpu_error(config: Mapping[str, Any]) -> str | None:
    """One line naming a ``predict_gpu`` that ``llmbench.host.devicesize`` cannot read or that
    leaves PyTorch nothing once the driver has its share, or None."""
    if config.get("predict_gpu") is None:
        return None
    try:
        device = read_device(str(config["predict_gpu"]))
    except ValueError as exc:
        return f"config key 'predict_gpu': {exc}"
    if device.unusable:
        whole = "the card's whole total"
        return f"config key 'predict_gpu': {device.given}: {device.unusable} ({whole})"
    return None


def frontier_error(config: Mapping[str, Any]) -> str | None:
    """One line naming what a schema-valid config's ``frontier:`` section cannot search, or
    None: no batch and no seq (no search at all), a model not under ``models``, an empty
    range (``seq_min`` above ``seq_max``, ``batch_min`` above ``batch_max``: a search would
    fail in its job, after every probe cell was planned)."""
    section = config.get("frontier") or {}
    if section and not section.get("batch") and not section.get("seq"):
        return (
            "config key 'frontier': batch and seq are both empty: no search (a length search "
            "per batch, a batch search per length)"
        )
    unknown = [m for m in section.get("models") or () if m not in (config.get("models") or {})]
    if unknown:
        return (
            f"config key 'frontier.models': {', '.join(map(repr, unknown))} not defined under "
            "'models'"
        )
    for low, high in (("seq_min", "seq_max"), ("batch_min", "batch_max")):
        if low in section and high in section and section[low] > section[high]:
            return (
                f"config key 'frontier.{low}': value {section[low]} is above "
                f"frontier.{high} ({section[high]}): the search range is empty"
            )
    return None


def _report_root_error(config: Mapping[str, Any], repo: Path) -> str | None:
    """One line when ``report_root`` names a folder without ``tables/`` (it is where figures
    are redrawn from: ``results`` or a reference), else None; ``results`` itself may be
    empty (this run makes its tables)."""
    root = config.get("report_root", "results")
    if root == "results" or any((base / "tables").is_dir() for base in (repo / root, Path(root))):
        return None
    return (
        f"config key 'report_root': value {root!r} has no tables/ folder (results, or a "
        "reference such as results/reference/h200/seed)"
    )


def merge(base: MutableMapping[str, Any], update: Mapping[str, Any]) -> None:
    """Snakemake's merge of a --configfile over the config: nested mappings key by key."""
    for key, value in update.items():
        if isinstance(value, Mapping) and isinstance(base.get(key), MutableMapping):
            merge(base[key], value)
        else:
            base[key] = value


def main(argv: list[str] | None = None, repo: Path = REPO_ROOT) -> int:
    """``python -m llmbench.grid.validate [FILE ...]``: 0 and "config ok", or 1 and the error."""
    files = [repo / "config" / "config.yaml", *map(Path, sys.argv[1:] if argv is None else argv)]
    try:
        config: dict[str, Any] = {}
        for file in files:
            document = read_yaml(file)
            if not isinstance(document, Mapping):
                raise ConfigFileError(f"{file}: must hold keys at the top level")
            if "blocks" in document:
                raise ConfigFileError(
                    f"{file}: a grid file, not a config: name it in one (grid: {file}) or run "
                    f"snakemake --config grid={file}"
                )
            merge(config, document)
        check_config(config, repo, cache_path=None)
        load_grid(str(config["grid"]), repo / "config", config["models"])  # ValueError
    except (ConfigFileError, ConfigError, ValueError) as exc:  # ModelEntryError, SchemaError
        print(exc, file=sys.stderr)
        return 1
    print(f"config ok: {', '.join(map(str, files))} (grid {config['grid']})")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
