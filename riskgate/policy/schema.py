"""The JSON Schema of policy files, generated from the loader's key tables.

`riskgate/policy/policy.schema.json` is the output of `policy_json_schema()`, and a test
checks that the two are equal, so the shipped schema lists exactly the keys the loader
accepts. Regenerate the file with `python -m riskgate.policy.schema`.

The schema covers keys, types and ranges. It cannot express the rules that span keys or
files, which only `load_policy` checks: warn and fail in the worse-side order, `extends`
resolution, and settings missing after the `extends` chain is merged.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

from riskgate.policy.loader import _SECTIONS, _THRESHOLD_KEYS, _TOP_LEVEL_KEYS, PRESET_NAMES, SCHEMA_VERSION, _Field
from riskgate.policy.model import METRICS, Direction

SCHEMA_PATH = Path(__file__).resolve().parent / "policy.schema.json"
SCHEMA_ID = "https://riskgate.invalid/policy.schema.json"
"""Identifier of the schema; the `.invalid` domain keeps any tool from fetching it."""

_SECTION_DESCRIPTIONS = {
    "subspace": "The rank rule and orthogonality level of the safety Fisher subspace.",
    "forecast": "Settings of the quartic forecast.",
    "samples": "Minimum sample sizes; fewer analysed sequences give the verdict error.",
}


def _number_schema(field: _Field) -> dict[str, Any]:
    schema: dict[str, Any] = {"type": "integer" if field.integer else "number"}
    schema["exclusiveMinimum" if field.minimum_open else "minimum"] = field.minimum
    if field.maximum is not None:
        schema["maximum"] = field.maximum
    return schema


def _threshold_schema(metric: str) -> dict[str, Any]:
    spec = METRICS[metric]
    limit: dict[str, Any] = {"type": ["number", "null"], "minimum": spec.minimum}
    if spec.maximum is not None:
        limit["maximum"] = spec.maximum
    worse = "higher" if spec.direction is Direction.MAX else "lower"
    return {
        "description": f"{metric} ({spec.unit}); {worse} is worse. null drops an inherited threshold.",
        "oneOf": [
            {"type": "null"},
            {
                "type": "object",
                "additionalProperties": False,
                "minProperties": 1,
                "properties": {key: dict(limit) for key in _THRESHOLD_KEYS},
            },
        ],
    }


def policy_json_schema() -> dict[str, Any]:
    """Build the JSON Schema (draft 2020-12) of one policy file from the loader's key tables."""
    properties: dict[str, Any] = {}
    for key in _TOP_LEVEL_KEYS:
        if key == "schema_version":
            properties[key] = {"const": SCHEMA_VERSION}
        elif key == "description":
            properties[key] = {"type": "string"}
        elif key == "extends":
            properties[key] = {
                "type": "string",
                "minLength": 1,
                "description": f"A preset ({', '.join(PRESET_NAMES)}) or a YAML file path relative to this file.",
            }
        elif key in _SECTIONS:
            properties[key] = {
                "type": "object",
                "description": _SECTION_DESCRIPTIONS[key],
                "additionalProperties": False,
                "properties": {name: _number_schema(field) for name, field in _SECTIONS[key].items()},
            }
        elif key == "thresholds":
            properties[key] = {
                "type": "object",
                "description": "warn and fail limits per metric.",
                "additionalProperties": False,
                "properties": {metric: _threshold_schema(metric) for metric in METRICS},
            }
        elif key == "name":
            properties[key] = {"type": "string", "minLength": 1}
        else:
            raise NotImplementedError(f"{key}: policy key without a schema; add it to policy_json_schema")

    return {
        "$schema": "https://json-schema.org/draft/2020-12/schema",
        "$id": SCHEMA_ID,
        "title": "riskgate policy",
        "type": "object",
        "required": ["schema_version"],
        "additionalProperties": False,
        "properties": properties,
    }


def schema_text() -> str:
    """Return the schema as the exact text of the shipped file."""
    return json.dumps(policy_json_schema(), indent=2) + "\n"


if __name__ == "__main__":  # pragma: no cover
    sys.stdout.write(schema_text())
