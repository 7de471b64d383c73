"""JSON-schema validation against the schemas in ``workflow/schemas/``."""

from __future__ import annotations

import functools
import json
from typing import Any

import jsonschema
import yaml

from llmbench import SCHEMA_DIR


class SchemaError(ValueError):
    """A document does not match its schema; the message names the file and the key."""


@functools.cache
def load_schema(name: str) -> dict[str, Any]:
    """Load a schema file (YAML or JSON) from ``workflow/schemas``."""
    text = (SCHEMA_DIR / name).read_text()
    return json.loads(text) if name.endswith(".json") else yaml.safe_load(text)


def validate_document(document: Any, schema_name: str, *, where: str) -> None:
    """Raise SchemaError naming ``where`` and the offending key path on the first violation."""
    validator_class = jsonschema.validators.validator_for(load_schema(schema_name))
    validator = validator_class(load_schema(schema_name))
    errors = sorted(validator.iter_errors(document), key=lambda e: list(e.absolute_path))
    if errors:
        error = errors[0]
        key = ".".join(str(p) for p in error.absolute_path) or "<top level>"
        raise SchemaError(f"{where}: {key}: {error.message}")
