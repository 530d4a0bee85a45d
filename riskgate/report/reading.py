"""Read a canonical `report.json` back, so that any format can be rendered without the model."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from riskgate.errors import InvalidInputError
from riskgate.report import SCHEMA_VERSION

REQUIRED_KEYS = ("schema_version", "verdict", "reason", "findings")


def read_report(path: Path) -> dict[str, Any]:
    """Load a report.json file and check its schema version and the keys every renderer needs.

    Raises:
        InvalidInputError: the file is missing or unreadable, is not valid JSON, is not a
            JSON object, has another schema_version, or lacks a required key.
    """
    try:
        # utf-8-sig: a byte-order mark, as some Windows editors write, is read past.
        text = path.read_text(encoding="utf-8-sig")
    except FileNotFoundError:
        raise InvalidInputError(f"{path}: report file not found; pass the report.json that `riskgate check` wrote") from None
    except (OSError, UnicodeDecodeError) as error:
        reason = getattr(error, "strerror", None) or str(error)
        raise InvalidInputError(f"{path}: cannot read the report file ({reason})") from error

    try:
        report = json.loads(text)
    except json.JSONDecodeError as error:
        raise InvalidInputError(
            f"{path}: invalid JSON at line {error.lineno}, column {error.colno}: {error.msg};"
            " pass the report.json that `riskgate check` wrote"
        ) from None

    if not isinstance(report, dict):
        raise InvalidInputError(f"{path}: expected a JSON object with the report keys, got {type(report).__name__}")
    version = report.get("schema_version")
    if version != SCHEMA_VERSION or isinstance(version, bool):
        raise InvalidInputError(
            f"{path}: schema_version: unsupported value {version!r}; this riskgate reads"
            f" schema_version {SCHEMA_VERSION}, so render it with the riskgate version that wrote it"
        )
    missing = [key for key in REQUIRED_KEYS if key not in report]
    if missing:
        raise InvalidInputError(f"{path}: missing report keys: {', '.join(missing)}; the file is not a riskgate report")
    if not isinstance(report["findings"], list):
        raise InvalidInputError(f"{path}: findings: expected a list, got {type(report['findings']).__name__}")
    _check_structure(path, report)
    return report


_VERDICTS = ("pass", "warn", "fail", "error")
_OBJECT_OR_NULL = ("model", "dataset", "safety_data", "policy", "training_plan", "attribution", "what_if", "waivers")


def _check_structure(path: Path, report: dict[str, Any]) -> None:
    """Reject a report whose verdict, types or consistency a renderer would misrepresent."""
    verdict = report.get("verdict")
    if verdict not in _VERDICTS:
        raise InvalidInputError(f"{path}: verdict: expected one of {', '.join(_VERDICTS)}, got {verdict!r}")
    if report.get("complete") is False and verdict in ("pass", "warn"):
        raise InvalidInputError(
            f"{path}: verdict {verdict!r} with complete: false; an incomplete analysis never passes, "
            "so the file was edited or is corrupt"
        )
    if not isinstance(report.get("checks"), dict):
        raise InvalidInputError(f"{path}: checks: expected an object, got {type(report.get('checks')).__name__}")
    for key in _OBJECT_OR_NULL:
        value = report.get(key)
        if value is not None and not isinstance(value, dict):
            raise InvalidInputError(f"{path}: {key}: expected an object or null, got {type(value).__name__}")
    for position, finding in enumerate(report["findings"]):
        if not isinstance(finding, dict) or not isinstance(finding.get("rule"), str) \
                or not isinstance(finding.get("status"), str):
            raise InvalidInputError(f"{path}: findings[{position}]: expected an object with 'rule' and 'status' strings")
