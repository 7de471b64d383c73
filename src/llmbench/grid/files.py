"""Reading the files a run is configured by (grid YAMLs, architecture JSONs, config files):
every error names the file, and a parse error its line and column, as ``path:line:column``.
Also the base of every such input error (:class:`InputError`) and how the workflow stops on
one (:func:`stop_on_input_error`).
"""

from __future__ import annotations

import contextlib
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import yaml


class InputError(ValueError):
    """Input a run cannot use (a config key, a grid, config or model file, a config this host
    cannot run); the message names the key or file, and says what to do where it can."""


class ConfigFileError(InputError):
    """A configuration file cannot be read or parsed; the message starts with its path."""


class GridError(InputError):
    """A grid cannot be used (no such file, a model the config does not define, a seed case
    that is no cell of it: ``llmbench.grid.spec.load_grid``); the message names the grid file
    and the key."""


@contextlib.contextmanager
def stop_on_input_error() -> Iterator[None]:
    """Stop the program on an :class:`InputError` raised inside, with ``SystemExit``: its
    message on stderr after ``llmbench: error:``, exit status 1.

    For the checks a Snakefile makes as it is read: Snakemake prints an exception raised
    there with the traceback frames of our code under the message; a user who mistyped a key
    needs the message alone. Any other exception propagates unchanged (a bug keeps its
    traceback)."""
    try:
        yield
    except InputError as exc:
        raise SystemExit(f"llmbench: error: {exc}") from None


def _read_text(path: Path) -> str:
    try:
        return path.read_text()
    except UnicodeDecodeError as exc:
        raise ConfigFileError(f"{path}: not a text file ({exc.reason})") from None
    except OSError as exc:
        raise ConfigFileError(f"{path}: cannot be read ({exc.strerror or exc})") from None


class _UniqueKeyLoader(yaml.SafeLoader):
    """``yaml.SafeLoader`` that refuses a mapping holding one key twice (YAML 1.2 forbids it;
    PyYAML keeps the last one silently, so ``seq: [64]`` then ``seq: [4096]`` would plan
    only 4096)."""

    def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> dict:
        seen: dict[Any, yaml.Node] = {}
        for key_node, _ in node.value:
            key = self.construct_object(key_node, deep=True)
            if key in seen:
                first = seen[key].start_mark
                raise yaml.constructor.ConstructorError(
                    None,
                    None,
                    f"key {key!r} given twice (first at line {first.line + 1})",
                    key_node.start_mark,
                )
            seen[key] = key_node
        return super().construct_mapping(node, deep=deep)


def read_yaml(path: Path | str) -> Any:
    """Parse a YAML file; a syntax error or a key given twice in one mapping names the file,
    line and column."""
    path = Path(path)
    try:
        return yaml.load(_read_text(path), Loader=_UniqueKeyLoader)  # noqa: S506 - a SafeLoader
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        where = f"{path}:{mark.line + 1}:{mark.column + 1}" if mark else str(path)
        problem = exc.problem or exc.context or "syntax error"
        context = ""
        if exc.context and exc.context_mark and exc.problem:
            context = (
                f" ({exc.context}, which starts at line {exc.context_mark.line + 1}, "
                f"column {exc.context_mark.column + 1})"
            )
        raise ConfigFileError(f"{where}: not valid YAML: {problem}{context}") from None
    except yaml.YAMLError as exc:
        raise ConfigFileError(f"{path}: not valid YAML: {exc}") from None


def _unique_pairs(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    """A JSON object's pairs as a dict; ValueError for a key given twice (``json`` keeps the
    last one silently)."""
    result: dict[str, Any] = {}
    for key, value in pairs:
        if key in result:
            raise ValueError(f"key {key!r} given twice in one object")
        result[key] = value
    return result


def read_json(path: Path | str) -> Any:
    """Parse a JSON file; a syntax error names the file, line and column, a key given twice
    in one object names the file and the key."""
    path = Path(path)
    try:
        return json.loads(_read_text(path), object_pairs_hook=_unique_pairs)
    except json.JSONDecodeError as exc:
        raise ConfigFileError(
            f"{path}:{exc.lineno}:{exc.colno}: not valid JSON: {exc.msg}"
        ) from None
    except ValueError as exc:
        raise ConfigFileError(f"{path}: not valid JSON: {exc}") from None
