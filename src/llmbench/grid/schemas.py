"""JSON-schema validation against the schemas in ``workflow/schemas/``.

``validate_document`` checks grid files and cell JSONs; ``config_error`` says in one line
what is wrong with a config: the key, the value and what is allowed there.
"""

from __future__ import annotations

import difflib
import functools
import json
import math
from collections.abc import Iterable, Mapping
from typing import Any

import jsonschema
import yaml

from llmbench import SCHEMA_DIR
from llmbench.grid.files import InputError


class SchemaError(InputError):
    """A document does not match its schema; the message names the file and the key."""


NOT_BLANK = r"\S"
"""The schemas' ``pattern`` for a string that must not be empty or only spaces."""


@functools.cache
def load_schema(name: str) -> dict[str, Any]:
    """Load a schema file (YAML or JSON) from ``workflow/schemas``."""
    text = (SCHEMA_DIR / name).read_text()
    return json.loads(text) if name.endswith(".json") else yaml.safe_load(text)


def validate_document(document: Any, schema_name: str, *, where: str) -> None:
    """Raise SchemaError naming ``where`` and the offending key path on the first violation."""
    error = first_error(document, schema_name)
    if error is not None:
        key = _join(error.absolute_path) or "<top level>"
        if error.validator == "type":  # the value shortened (a whole file, say), nan, 256.0
            raise SchemaError(f"{where}: {key}{describe(error)[1]}")
        raise SchemaError(f"{where}: {key}: {error.message}")


STRICT_SCHEMAS = frozenset({"config.schema.yaml", "grid.schema.yaml"})
"""Schemas of what people type (the config, grid files), validated with strict numbers: an
``integer`` is not a float (``seq: [256.0]`` would reach ``Cell`` and fail there), and a
``number`` is finite (a ``nan`` passes every ``minimum`` test, so ``cell_timeout_s: nan``
would silently remove the time limit). Cell JSONs keep JSON Schema's own rules."""


def _strict_integer(_checker: Any, instance: Any) -> bool:
    return isinstance(instance, int) and not isinstance(instance, bool)


def _finite_number(_checker: Any, instance: Any) -> bool:
    if isinstance(instance, bool) or not isinstance(instance, int | float):
        return False
    return math.isfinite(instance)


@functools.cache
def _validator(schema_name: str) -> jsonschema.protocols.Validator:
    """The validator of ``schema_name``, built once per process (schema files do not change
    while it runs): a cells table validates thousands of cell JSONs against one schema;
    strict numbers for :data:`STRICT_SCHEMAS`."""
    schema = load_schema(schema_name)
    cls = jsonschema.validators.validator_for(schema)
    if schema_name in STRICT_SCHEMAS:
        checker = cls.TYPE_CHECKER.redefine_many(
            {"integer": _strict_integer, "number": _finite_number}
        )
        cls = jsonschema.validators.extend(cls, type_checker=checker)
    return cls(schema)


def first_error(document: Any, schema_name: str) -> jsonschema.ValidationError | None:
    """The first violation of ``schema_name`` in key order, or None."""
    validator = _validator(schema_name)
    errors = sorted(validator.iter_errors(document), key=lambda e: [str(p) for p in e.path])
    return errors[0] if errors else None


def _show(value: Any, limit: int = 60) -> str:
    text = repr(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _join(path: Iterable[Any]) -> str:
    return ".".join(str(p) for p in path)


def _unknown_key(error: jsonschema.ValidationError) -> tuple[str, str]:
    known = sorted(error.schema.get("properties") or {})
    unknown = [k for k in error.instance if k not in known]
    key = unknown[0]
    close = difflib.get_close_matches(key, known, n=1)
    hint = f"; did you mean {close[0]!r}?" if close else ""
    return _join([*error.absolute_path, key]), (
        f" (value {_show(error.instance[key])}) is not a known key{hint or '.'} "
        f"Known keys here: {', '.join(known)}"
    )


def _one_of(error: jsonschema.ValidationError) -> str:
    names = [next(iter(s.get("required") or []), None) for s in error.validator_value]
    if all(names):
        return f"give exactly one of: {', '.join(names)}"
    return f"value {_show(error.instance)} matches none or several of the allowed forms"


def describe(error: jsonschema.ValidationError) -> tuple[str, str]:
    """(key path, what is wrong there) for one validation error, in one short line; the second
    part reads on from the key (``: value 'tpu' is not one of: ...``, `` is missing``)."""
    key = _join(error.absolute_path)
    kind, allowed, value = error.validator, error.validator_value, _show(error.instance)
    if kind == "additionalProperties":
        return _unknown_key(error)
    if kind == "enum":
        return key, f": value {value} is not one of: {', '.join(map(str, allowed))}"
    if kind == "type":
        types = [allowed] if isinstance(allowed, str) else list(allowed)
        if isinstance(error.instance, float) and not math.isfinite(error.instance):
            return key, f": value {value} is not a finite number"
        if isinstance(error.instance, float) and error.instance.is_integer() and "integer" in types:
            return key, f": value {value} is not an integer (write it without a decimal point)"
        spellings = " (true/false, yes/no, on/off, 1/0)" if "boolean" in types else ""
        return key, f": value {value} is not of type {' or '.join(types)}{spellings}"
    if kind == "required":
        missing = [name for name in allowed if name not in error.instance]
        return _join([*error.absolute_path, missing[0]]), " is missing (it is required)"
    if kind == "oneOf":
        return key, f": {_one_of(error)}"
    if kind == "dependentRequired":
        needed = {k: v for k, v in allowed.items() if k in error.instance}
        first, deps = next(iter(needed.items()))
        return _join([*error.absolute_path, first]), f" is only allowed with {', '.join(deps)}"
    if kind == "pattern" and "propertyNames" in error.schema_path:
        return key, f": name {value} must match {allowed} (it becomes a path component)"
    if kind == "pattern" and allowed == NOT_BLANK:
        return key, f": value {value} is blank"
    if kind == "pattern":
        return key, f": value {value} must match {allowed}"
    return key, f": {error.message[:200]}"


def config_error(config: Mapping[str, Any], schema_name: str = "config.schema.yaml") -> str | None:
    """One line naming the first invalid key of ``config``, its value and what is allowed; None
    when the config is valid."""
    error = first_error(config, schema_name)
    if error is None:
        return None
    key, problem = describe(error)
    return f"config key {key!r}{problem}" if key else f"config{problem}"
