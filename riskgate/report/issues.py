"""The findings that need attention (status error, fail or warn), most severe first, and the
waived ones.

The SARIF, JUnit, GitHub and shortened Markdown renderers all list these in the same order.
Waived findings failed or warned, but a waiver entry accepts them; renderers show them apart.
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


def waived_findings(report: dict[str, Any]) -> list[dict[str, Any]]:
    """Return the findings with status waived, in report order."""
    return [finding for finding in findings(report) if finding.get("status") == "waived"]


def waiver_of(finding: dict[str, Any]) -> dict[str, Any]:
    """Return a waived finding's `waived_by` object, or an empty dict when it is missing."""
    waived_by = finding.get("waived_by")
    return waived_by if isinstance(waived_by, dict) else {}


def waiver_rows(report: dict[str, Any]) -> list[tuple[str, str, str, str, str, str]]:
    """Return (rule, status before the waiver, reason, expires, waiver entry, message) per waived finding.

    The text is unescaped; each renderer escapes it for its format.
    """
    rows = []
    for finding in waived_findings(report):
        waiver = waiver_of(finding)
        entry = f"{waiver.get('source') or 'waivers file'}: waivers[{waiver.get('index')}]"
        rows.append(
            (
                str(finding.get("rule") or "unknown"),
                str(waiver.get("original_status") or "unknown"),
                str(waiver.get("reason") or ""),
                str(waiver.get("expires") or "never"),
                entry,
                str(finding.get("message") or ""),
            )
        )
    return rows


def unused_waivers_note(report: dict[str, Any]) -> str | None:
    """Describe the waiver entries that matched no failing or warning finding, or return None."""
    section = report.get("waivers")
    if not isinstance(section, dict):
        return None
    unused = [entry for entry in section.get("unused") or [] if isinstance(entry, dict)]
    if not unused:
        return None
    listed = ", ".join(
        f"waivers[{entry.get('index')}] ({entry.get('rule')}{', expired' if entry.get('expired') else ''})"
        for entry in unused
    )
    noun = "entry" if len(unused) == 1 else "entries"
    return f"{len(unused)} {noun} of {section.get('source')} matched no failing or warning finding: {listed}."
