"""The findings that need attention (status error, fail or warn), most severe first.

The SARIF, JUnit, GitHub and shortened Markdown renderers all list these in the same order.
"""

from __future__ import annotations

from typing import Any

SEVERITY_RANK = {"error": 0, "fail": 1, "warn": 2}
"""Sort key of a finding status; statuses not listed (pass) need no attention."""


def findings(report: dict[str, Any]) -> list[dict[str, Any]]:
    """Return the report's findings as dicts, skipping entries that are not objects."""
    return [finding for finding in report.get("findings") or [] if isinstance(finding, dict)]


def attention_findings(report: dict[str, Any]) -> list[dict[str, Any]]:
    """Return the findings with status error, fail or warn, most severe first, ties in report order."""
    selected = [finding for finding in findings(report) if finding.get("status") in SEVERITY_RANK]
    return sorted(selected, key=lambda finding: SEVERITY_RANK[finding["status"]])


def unreported_errors(report: dict[str, Any]) -> list[str]:
    """Return the report's `errors` when no finding has status error, so that a renderer shows them.

    A report written after the analysis stopped early may contain no findings at all. Its
    `errors` list is then the only record of what went wrong.
    """
    if any(finding.get("status") == "error" for finding in findings(report)):
        return []
    errors = [str(error) for error in report.get("errors") or []]
    if not errors and report.get("verdict") == "error":
        errors = [str(report.get("reason") or "the analysis did not finish")]
    return errors
