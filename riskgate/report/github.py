"""GitHub Actions workflow commands (`report.github.txt`) that annotate a workflow run.

Printed to the log of a step, each line creates an annotation: `::error` for fail and error
findings, `::warning` for warn findings, most severe first. GitHub shows at most 10 error and
10 warning annotations per step, so the renderer writes at most that many and then one
`::notice` that counts the rest. Waived findings get no annotation of their own, only one
`::notice` that counts them.

Escaping follows `escapeData` and `escapeProperty` in actions/toolkit
(packages/core/src/command.ts). In the message, `%`, CR and LF become `%25`, `%0D` and `%0A`.
A property value also gets `:` as `%3A` and `,` as `%2C`. So each annotation stays on one
line, and text such as `::error::x` inside a message is data, because the runner ends the
properties at the first `::`.
"""

from __future__ import annotations

from typing import Any

from riskgate.report import issues
from riskgate.report.interface import Renderer, ReportFormat

MAX_ANNOTATIONS_PER_LEVEL = 10
"""Annotations of one level that GitHub shows per step; the rest are counted in a notice."""
COMMANDS = {"error": "error", "fail": "error", "warn": "warning"}
"""Workflow command per finding status."""

_MESSAGE_ESCAPES = {ord("%"): "%25", ord("\r"): "%0D", ord("\n"): "%0A"}
_PROPERTY_ESCAPES = {**_MESSAGE_ESCAPES, ord(":"): "%3A", ord(","): "%2C"}


def escape_data(text: Any) -> str:
    """Escape the message of a workflow command: `%`, CR and LF."""
    return str(text).translate(_MESSAGE_ESCAPES)


def escape_property(text: Any) -> str:
    """Escape a property value of a workflow command: `%`, CR, LF, `:` and `,`."""
    return str(text).translate(_PROPERTY_ESCAPES)


def workflow_command(command: str, message: Any, **properties: Any) -> str:
    """Format one workflow command line, e.g. `::error title=T::message`."""
    rendered = ",".join(f"{key}={escape_property(value)}" for key, value in properties.items())
    separator = " " if rendered else ""
    return f"::{command}{separator}{rendered}::{escape_data(message)}"


class GithubRenderer(Renderer):
    """Writes one annotation per failing or warning finding, capped per level, as workflow commands."""

    name = ReportFormat.GITHUB.value
    filename = "report.github.txt"

    def render(self, report: dict[str, Any]) -> str:
        entries: list[tuple[str, str, str]] = []
        for error in issues.unreported_errors(report):
            entries.append(("error", "riskgate error: analysis_complete", error))
        for finding in issues.attention_findings(report):
            status = finding["status"]
            rule = finding.get("rule") or "unknown"
            entries.append((COMMANDS[status], f"riskgate {status}: {rule}", str(finding.get("message") or rule)))

        lines: list[str] = []
        shown = {"error": 0, "warning": 0}
        left_out = {"error": 0, "warning": 0}
        for command, title, message in entries:
            if shown[command] < MAX_ANNOTATIONS_PER_LEVEL:
                shown[command] += 1
                lines.append(workflow_command(command, message, title=title))
            else:
                left_out[command] += 1

        waived = issues.waived_findings(report)
        if waived:
            section = report.get("waivers")
            source = section.get("source") if isinstance(section, dict) else None
            noun = "finding is" if len(waived) == 1 else "findings are"
            lines.append(
                workflow_command(
                    "notice",
                    f"{len(waived)} failing or warning {noun} waived by {source or 'a waivers file'}"
                    " and not annotated; report.json lists them with their reasons",
                    title="riskgate: waived findings",
                )
            )
        if left_out["error"] or left_out["warning"]:
            total = left_out["error"] + left_out["warning"]
            lines.append(
                workflow_command(
                    "notice",
                    f"{total} more findings ({left_out['error']} errors, {left_out['warning']} warnings)"
                    " are not annotated; report.json lists all of them",
                    title="riskgate: more findings",
                )
            )
        return "".join(line + "\n" for line in lines)
