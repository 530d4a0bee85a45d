"""The canonical report as JSON (`report.json`)."""

from __future__ import annotations

import json
import math
from typing import Any

from riskgate.report.interface import Renderer, ReportFormat


def replace_non_finite(value: Any) -> Any:
    """Return a copy of `value` with every NaN or infinite float replaced by None.

    Dicts, lists and tuples are copied recursively (tuples become lists, as JSON has no
    tuple); other values are returned as they are. The input is not modified.
    """
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, dict):
        return {key: replace_non_finite(item) for key, item in value.items()}
    if isinstance(value, (list, tuple)):
        return [replace_non_finite(item) for item in value]
    return value


class JsonRenderer(Renderer):
    """Writes the report dict as indented JSON, keys in their original order.

    NaN and infinity are not valid JSON, so they are written as null; a report that still
    contains a value JSON cannot represent (a Path, a set) raises TypeError from `json.dumps`.
    """

    name = ReportFormat.JSON.value
    filename = "report.json"

    def render(self, report: dict[str, Any]) -> str:
        finite_report = replace_non_finite(report)
        return json.dumps(finite_report, indent=2, sort_keys=False, allow_nan=False) + "\n"
