"""The CRDs' ``openAPIV3Schema`` as strict JSON Schema, for tests/test_schemas.py.

The API server *prunes* what a structural schema does not declare and drops a ``null`` where a
field is not ``nullable``: a field that pullwatch writes and its CRD forgets is lost without an
error. Made strict, the same schema refuses it instead, so a test finds the gap:

* ``additionalProperties: false`` wherever ``properties`` are listed, unless the schema says
  ``x-kubernetes-preserve-unknown-fields: true`` (an object with no ``properties``, such as
  ``metadata``, stays open: the API server checks metadata itself);
* ``nullable: true`` becomes a ``null`` type (and a ``null`` enum value) allowed, anything else
  refuses ``null``;
* ``enum``, ``minimum``, ``maximum``, ``maxItems``, ``maxLength``, ``minLength``, ``pattern``,
  ``required`` are JSON Schema's own words and are kept as they are;
* the formats the API server checks are checked too: ``date-time`` (RFC 3339), ``int32``,
  ``int64``.

    >>> strict({"type": "object", "properties": {"n": {"type": "integer", "nullable": True}}})
    ... # doctest: +NORMALIZE_WHITESPACE
    {'type': 'object', 'properties': {'n': {'type': ['integer', 'null']}},
     'additionalProperties': False}
"""

from __future__ import annotations

import re
from datetime import datetime
from pathlib import Path
from typing import Any

import jsonschema
import yaml

ROOT = Path(__file__).resolve().parents[1]
CRD_FILES = (
    *sorted((ROOT / "crds").glob("*.yaml")),
    *sorted((ROOT / "manifests" / "components").glob("*/*.yaml")),
)
# Keywords of a structural schema that say nothing JSON Schema can check (or that strict() turns
# into JSON Schema of its own).
_DROPPED = {"description", "nullable", "example", "externalDocs", "default"}
_RFC3339 = re.compile(r"^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}(\.\d{1,9})?(Z|[+-]\d{2}:\d{2})$")

FORMATS = jsonschema.FormatChecker(formats=())


@FORMATS.checks("date-time", raises=ValueError)
def _date_time(value: object) -> bool:
    """RFC 3339, as the API server's ``date-time`` format: ``2026-11-18T10:00:00Z``, with an
    optional fraction and any offset."""
    if not isinstance(value, str):
        return True  # the type keyword speaks for other types
    if not _RFC3339.match(value):
        raise ValueError(f"{value!r} is not an RFC 3339 date-time")
    datetime.fromisoformat(value.replace("Z", "+00:00"))  # a real date and time of day
    return True


@FORMATS.checks("int32")
def _int32(value: object) -> bool:
    return not isinstance(value, int) or -(2**31) <= value < 2**31


@FORMATS.checks("int64")
def _int64(value: object) -> bool:
    return not isinstance(value, int) or -(2**63) <= value < 2**63


def strict(node: dict[str, Any]) -> dict[str, Any]:
    """One structural schema node (and everything under it) as strict JSON Schema."""
    out: dict[str, Any] = {}
    for key, value in node.items():
        if key in _DROPPED or key.startswith("x-kubernetes-"):
            continue
        if key == "properties":
            out[key] = {name: strict(sub) for name, sub in value.items()}
        elif key in ("items", "additionalProperties", "not") and isinstance(value, dict):
            out[key] = strict(value)
        elif key in ("allOf", "anyOf", "oneOf"):
            out[key] = [strict(sub) for sub in value]
        else:
            out[key] = value
    if node.get("x-kubernetes-int-or-string"):
        out["type"] = ["integer", "string"]
    if node.get("nullable"):
        kind = out.get("type")
        if isinstance(kind, str):
            out["type"] = [kind, "null"]
        if "enum" in out:
            out["enum"] = [*out["enum"], None]
    if (
        "properties" in node
        and "additionalProperties" not in node
        and not node.get("x-kubernetes-preserve-unknown-fields")
    ):
        out["additionalProperties"] = False
    return out


def load_validators() -> dict[tuple[str, str], jsonschema.protocols.Validator]:
    """{(apiVersion, kind): a strict validator} for every served version of every CRD shipped."""
    validators = {}
    for path in CRD_FILES:
        for doc in yaml.safe_load_all(path.read_text()):
            if not isinstance(doc, dict) or doc.get("kind") != "CustomResourceDefinition":
                continue
            spec = doc["spec"]
            for version in spec["versions"]:
                schema = strict(version["schema"]["openAPIV3Schema"])
                jsonschema.Draft202012Validator.check_schema(schema)
                api_version = f"{spec['group']}/{version['name']}"
                validators[(api_version, spec["names"]["kind"])] = jsonschema.Draft202012Validator(
                    schema, format_checker=FORMATS
                )
    return validators


def problems(validator: jsonschema.protocols.Validator, body: Any) -> list[str]:
    """Every way ``body`` breaks the schema, one line each, with the path to the field."""
    return sorted(
        f"{'.'.join(str(p) for p in error.absolute_path) or '(top)'}: {error.message[:300]}"
        for error in validator.iter_errors(body)
    )
