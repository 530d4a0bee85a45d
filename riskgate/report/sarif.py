"""SARIF 2.1.0 output (`report.sarif`) for code-scanning tools such as GitHub code scanning.

One run: the tool driver `riskgate` with one rule per policy rule in the report, and one
result per finding with status fail or error (level "error") or warn (level "warning"). A
waived finding is a result at the level of its status before the waiver, with an external
suppression whose justification is the waiver's reason, so code-scanning tools list it as
suppressed.
Report text only ever lands in JSON strings, so `json.dumps` escapes it.
"""

from __future__ import annotations

import json
import urllib.parse
from typing import Any

from riskgate.report import issues
from riskgate.report.interface import Renderer, ReportFormat
from riskgate.report.json_format import replace_non_finite

SARIF_VERSION = "2.1.0"
SARIF_SCHEMA_URI = "https://json.schemastore.org/sarif-2.1.0.json"
TOOL_NAME = "riskgate"
ANALYSIS_RULE_ID = "analysis_complete"
"""Rule of the results made from the report's `errors` when no finding records them."""

RESULT_LEVELS = {"error": "error", "fail": "error", "warn": "warning"}
"""SARIF result level per finding status."""
_HTML_SENSITIVE_ESCAPES = {ord("<"): "\\u003c", ord(">"): "\\u003e", ord("&"): "\\u0026"}
DEFAULT_LEVELS = {"fail": "error", "warn": "warning", "info": "note"}
"""SARIF default level of a rule per finding `level`."""


def _rules(report: dict[str, Any]) -> list[dict[str, Any]]:
    """Build one reportingDescriptor per distinct finding rule, in report order."""
    rules: dict[str, dict[str, Any]] = {}
    for finding in issues.findings(report):
        rule_id = str(finding.get("rule") or "unknown")
        if rule_id in rules:
            continue
        metric = finding.get("metric")
        rules[rule_id] = {
            "id": rule_id,
            "name": rule_id,
            "shortDescription": {"text": f"riskgate policy rule {rule_id} on metric {metric}"},
            "defaultConfiguration": {"level": DEFAULT_LEVELS.get(str(finding.get("level")), "warning")},
            "properties": {
                "metric": metric,
                "warn_threshold": finding.get("warn_threshold"),
                "fail_threshold": finding.get("fail_threshold"),
            },
        }
    if issues.unreported_errors(report) and ANALYSIS_RULE_ID not in rules:
        rules[ANALYSIS_RULE_ID] = {
            "id": ANALYSIS_RULE_ID,
            "name": ANALYSIS_RULE_ID,
            "shortDescription": {"text": "riskgate finished every diagnostic"},
            "defaultConfiguration": {"level": "error"},
        }
    return list(rules.values())


def _dataset_locations(report: dict[str, Any]) -> list[dict[str, Any]]:
    """Locate a result at the fine-tune dataset: logically always, physically when its path is relative.

    GitHub code scanning shows only results with a physical location, and resolves its URI
    against the repository root.
    """
    dataset = report.get("dataset") if isinstance(report.get("dataset"), dict) else {}
    path = str(dataset.get("path") or "")
    if not path:
        return []
    location: dict[str, Any] = {"logicalLocations": [{"name": path, "kind": "resource"}]}
    relative = not path.startswith(("/", "\\")) and ":" not in path
    if relative:
        location["physicalLocation"] = {"artifactLocation": {"uri": urllib.parse.quote(path, safe="/")}}
    return [location]


def _result(rule_ids: list[str], rule_id: str, level: str, message: str, locations: list[dict[str, Any]]) -> dict[str, Any]:
    result: dict[str, Any] = {
        "ruleId": rule_id,
        "ruleIndex": rule_ids.index(rule_id),
        "level": level,
        "message": {"text": message},
    }
    if locations:
        result["locations"] = locations
    return result


def _waived_result(rule_ids: list[str], finding: dict[str, Any], locations: list[dict[str, Any]]) -> dict[str, Any]:
    rule_id = str(finding.get("rule") or "unknown")
    waiver = issues.waiver_of(finding)
    original_status = str(waiver.get("original_status") or "")
    level = RESULT_LEVELS.get(original_status, "warning")
    result = _result(rule_ids, rule_id, level, str(finding.get("message") or rule_id), locations)
    result["suppressions"] = [
        {"kind": "external", "status": "accepted", "justification": str(waiver.get("reason") or "")}
    ]
    result["properties"] = {
        "status": "waived",
        "original_status": original_status or None,
        "metric": finding.get("metric"),
        "value": finding.get("value"),
        "threshold": finding.get("threshold"),
        "waiver": {"source": waiver.get("source"), "index": waiver.get("index"), "expires": waiver.get("expires")},
    }
    return result


class SarifRenderer(Renderer):
    """Writes the failing, warning and waived findings as a SARIF 2.1.0 log with one run."""

    name = ReportFormat.SARIF.value
    filename = "report.sarif"

    def render(self, report: dict[str, Any]) -> str:
        rules = _rules(report)
        rule_ids = [rule["id"] for rule in rules]
        locations = _dataset_locations(report)

        results = []
        for finding in issues.attention_findings(report):
            rule_id = str(finding.get("rule") or "unknown")
            result = _result(rule_ids, rule_id, RESULT_LEVELS[finding["status"]], str(finding.get("message") or rule_id), locations)
            result["properties"] = {
                "status": finding["status"],
                "metric": finding.get("metric"),
                "value": finding.get("value"),
                "threshold": finding.get("threshold"),
            }
            results.append(result)
        for finding in issues.waived_findings(report):
            results.append(_waived_result(rule_ids, finding, locations))
        for error in issues.unreported_errors(report):
            results.append(_result(rule_ids, ANALYSIS_RULE_ID, "error", error, locations))

        invocation: dict[str, Any] = {"executionSuccessful": bool(report.get("complete", False))}
        errors = [str(error) for error in report.get("errors") or []]
        if errors:
            invocation["toolExecutionNotifications"] = [{"level": "error", "message": {"text": error}} for error in errors]

        log = {
            "$schema": SARIF_SCHEMA_URI,
            "version": SARIF_VERSION,
            "runs": [
                {
                    "tool": {
                        "driver": {
                            "name": TOOL_NAME,
                            "version": str(report.get("riskgate_version") or "unknown"),
                            "rules": rules,
                        }
                    },
                    "invocations": [invocation],
                    "results": results,
                    "properties": {
                        "verdict": report.get("verdict"),
                        "reason": report.get("reason"),
                        "exit_code": report.get("exit_code"),
                        "report_schema_version": report.get("schema_version"),
                    },
                }
            ],
        }
        text = json.dumps(replace_non_finite(log), indent=2, allow_nan=False)
        # `<`, `>` and `&` occur only inside JSON strings here. As \u escapes they decode to the
        # same characters, but the raw file contains no HTML tag for a careless viewer to render.
        return text.translate(_HTML_SENSITIVE_ESCAPES) + "\n"
