"""A Markdown summary of the report (`report.md`), ready to paste into a pull-request comment.

Every piece of report text passes through `escape_markdown` before it lands in the file, so a
dataset path or record snippet cannot break a table, inject HTML, ping a user, or issue a
GitHub Actions workflow command.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from typing import Any

from riskgate.errors import UsageError
from riskgate.report import issues, summary
from riskgate.report.interface import Renderer, ReportFormat

ZERO_WIDTH_JOINER = "\u200d"
REPLACEMENT_CHARACTER = "\ufffd"
DEFAULT_FULL_REPORT_LOCATION = "report.html and report.json in the report folder"
MAX_SENSITIVE_TENSORS = 5
"""Tensors listed in the Markdown sensitivity table; the HTML report charts more."""

# One pass of str.translate, so the `&` of an inserted entity is never escaped again.
# `|` and backticks become entities, not backslash escapes: GitHub splits table rows on
# `\|` even inside code spans, but never on an entity. Backslash escapes stop emphasis,
# strikethrough and link or image brackets.
_CHARACTER_ESCAPES = {
    ord("&"): "&amp;",
    ord("<"): "&lt;",
    ord(">"): "&gt;",
    ord("|"): "&#124;",
    ord("`"): "&#96;",
    ord("\\"): "\\\\",
    ord("["): "\\[",
    ord("]"): "\\]",
    ord("*"): "\\*",
    ord("_"): "\\_",
    ord("~"): "\\~",
}
# Control characters, and the bidirectional overrides that make text display in an order
# other than the one it is stored in.
_UNSAFE_CHARACTERS = re.compile(r"[\x00-\x1f\x7f-\x9f\u202a-\u202e\u2066-\u2069]")
_MENTION = re.compile(r"@(?=[A-Za-z0-9])")
_WORKFLOW_COMMAND = re.compile(r"^(\s*):(?=:)")


def escape_markdown(text: Any) -> str:
    """Escape report text for a Markdown table cell or inline position.

    - line breaks of any kind become a space, so the text stays on one line;
    - other control characters and bidirectional overrides become U+FFFD;
    - `&`, `<`, `>`, `|` and backticks become HTML entities, so no HTML, code span or table
      column can start inside the text;
    - backslash, `[`, `]`, `*`, `_` and `~` get a backslash, so no link, image or emphasis forms;
    - a zero-width joiner follows each `@` that precedes a letter or digit, so GitHub creates no
      `@mention` notification;
    - a leading `::` gets a zero-width joiner between its colons, so a log that prints the
      line issues no GitHub Actions workflow command.
    """
    one_line = " ".join(str(text).splitlines())
    visible = _UNSAFE_CHARACTERS.sub(REPLACEMENT_CHARACTER, one_line)
    escaped = visible.translate(_CHARACTER_ESCAPES)
    escaped = _MENTION.sub("@" + ZERO_WIDTH_JOINER, escaped)
    return _WORKFLOW_COMMAND.sub(r"\1:" + ZERO_WIDTH_JOINER, escaped)


def markdown_table(header: Sequence[str], rows: Sequence[Sequence[Any]]) -> list[str]:
    """Build the lines of a Markdown table, every header and cell escaped."""
    lines = [
        "| " + " | ".join(escape_markdown(name) for name in header) + " |",
        "|" + "|".join(" --- " for _ in header) + "|",
    ]
    for row in rows:
        lines.append("| " + " | ".join(escape_markdown(cell) for cell in row) + " |")
    return lines


def _finding_rows(report: dict[str, Any]) -> list[list[str]]:
    rows = []
    for finding in report.get("findings") or []:
        rule = str(finding.get("rule") or summary.NOT_AVAILABLE)
        metric = finding.get("metric")
        if metric and metric != rule:
            rule += f" ({metric})"
        rows.append(
            [
                rule,
                summary.format_number(finding.get("value")),
                summary.format_number(finding.get("warn_threshold")),
                summary.format_number(finding.get("fail_threshold")),
                str(finding.get("status") or summary.NOT_AVAILABLE),
                str(finding.get("message") or ""),
            ]
        )
    return rows


def _sensitive_tensor_rows(sharpness: dict[str, Any]) -> list[list[str]]:
    entries = sharpness.get("sensitivity") or []
    return [
        [
            str(entry.get("tensor")),
            summary.format_share(entry.get("share")),
            summary.format_number(entry.get("numel")),
        ]
        for entry in entries[:MAX_SENSITIVE_TENSORS]
    ]


def _waiver_lines(report: dict[str, Any]) -> list[str]:
    """Build the "Waived findings" section, or return no lines when the report has no waivers."""
    rows = issues.waiver_rows(report)
    note = issues.unused_waivers_note(report)
    if not rows and not note:
        return []
    lines = ["", "### Waived findings", ""]
    if rows:
        lines += markdown_table(["rule", "status before waiver", "reason", "expires", "waiver", "message"], rows)
    else:
        lines.append("No finding is waived.")
    if note:
        lines += ["", escape_markdown(note)]
    return lines


def _bullets(items: Sequence[Any]) -> list[str]:
    return [f"- {escape_markdown(item)}" for item in items]


def _verdict_line(report: dict[str, Any], with_reason: bool = True) -> str:
    verdict = str(report.get("verdict") or "error").upper()
    line = f"**RISKGATE {escape_markdown(verdict)}**"
    if with_reason:
        line += f": {escape_markdown(report.get('reason') or '')}"
    return line


def render_shortened(report: dict[str, Any], max_bytes: int, full_report_location: str) -> str:
    """Render the verdict, the failing and warning findings and a pointer to the full report in `max_bytes`.

    Findings are listed most severe first, and rows that do not fit are left out whole and
    counted, so the table is never cut inside a row. When even the verdict with its reason
    does not fit, the reason is left out.

    Raises:
        UsageError: `max_bytes` is too small for the verdict and the pointer line.
    """
    rows = _finding_rows({"findings": issues.attention_findings(report)})
    waived = len(issues.waived_findings(report))
    pointer = (
        f"Shortened to fit {max_bytes:,} bytes; the full report is in {escape_markdown(full_report_location)}."
    )

    def build(row_count: int, with_reason: bool) -> str:
        lines = [_verdict_line(report, with_reason), "", pointer, "", "### Failing and warning findings", ""]
        if row_count:
            lines += markdown_table(["rule", "value", "warn", "fail", "status", "message"], rows[:row_count])
        elif not rows:
            lines.append("No failing or warning findings.")
        left_out = len(rows) - row_count
        if left_out:
            if row_count:
                lines.append("")
            lines.append(f"{left_out:,} more failing or warning findings are left out here.")
        if waived:
            lines += ["", f"{waived:,} waived findings are not listed here."]
        return "\n".join(lines) + "\n"

    for with_reason in (True, False):
        for row_count in range(len(rows), -1, -1):
            text = build(row_count, with_reason)
            if len(text.encode("utf-8")) <= max_bytes:
                return text
    shortest = len(build(0, with_reason=False).encode("utf-8"))
    raise UsageError(f"--max-bytes {max_bytes}: too small; the shortest Markdown summary takes {shortest} bytes")


class MarkdownRenderer(Renderer):
    """Renders the verdict, findings, waived findings, key numbers, caveats, inputs and budget as Markdown.

    The first line is the verdict in bold followed by the one-line reason. With `max_bytes`
    set, a report whose UTF-8 text is longer shrinks to the verdict, the table of failing and
    warning findings (whole rows only) and a line that names `full_report_location`. GitHub's
    API rejects a comment body over 65,536 characters ("Body is too long"), and the Actions
    runner drops a step summary over 1024 KiB ("supports content up to a size of 1024k").
    """

    name = ReportFormat.MARKDOWN.value
    filename = "report.md"

    def __init__(self, max_bytes: int | None = None, full_report_location: str = DEFAULT_FULL_REPORT_LOCATION) -> None:
        if max_bytes is not None and max_bytes < 1:
            raise UsageError(f"--max-bytes {max_bytes}: must be a positive number of bytes")
        self.max_bytes = max_bytes
        self.full_report_location = full_report_location

    def render(self, report: dict[str, Any]) -> str:
        text = self._render_full(report)
        if self.max_bytes is None or len(text.encode("utf-8")) <= self.max_bytes:
            return text
        return render_shortened(report, self.max_bytes, self.full_report_location)

    def _render_full(self, report: dict[str, Any]) -> str:
        lines = [_verdict_line(report), ""]
        lines.append(
            escape_markdown(
                f"riskgate {report.get('riskgate_version')}, schema {report.get('schema_version')},"
                f" created {report.get('created_at')}, seed {report.get('seed')},"
                f" exit code {report.get('exit_code')}"
            )
        )

        lines += ["", "### Findings", ""]
        finding_rows = _finding_rows(report)
        if finding_rows:
            lines += markdown_table(["rule", "value", "warn", "fail", "status", "message"], finding_rows)
        else:
            lines.append("No findings.")
        lines += _waiver_lines(report)

        lines += ["", "### Key numbers", ""]
        lines += markdown_table(["number", "value", "meaning"], summary.key_numbers(report))

        notes = summary.report_notes(report)
        if notes:
            lines += ["", "### Notes", ""]
            lines += _bullets(notes)

        errors = report.get("errors") or []
        if errors:
            lines += ["", "### Errors", ""]
            lines += _bullets(errors)

        sharpness = summary.check(report, "sharpness")
        if sharpness is not None and sharpness.get("sensitivity"):
            lines += ["", "### Most sensitive tensors", ""]
            lines += markdown_table(["tensor", "share of P", "parameters"], _sensitive_tensor_rows(sharpness))

        attribution_rows = summary.attribution_rows(report)
        if attribution_rows:
            lines += ["", "### Riskiest records", "", escape_markdown(summary.attribution_note(report)), ""]
            lines += markdown_table(summary.ATTRIBUTION_HEADER, attribution_rows)
        what_if_rows = summary.what_if_rows(report)
        if what_if_rows:
            lines += ["", "### What if the riskiest records are dropped", "", escape_markdown(summary.what_if_note(report)), ""]
            lines += markdown_table(summary.WHAT_IF_HEADER, what_if_rows)

        lines += ["", "### Inputs", ""]
        lines += markdown_table(["input", "source", "sha256", "details"], summary.input_rows(report))

        lines += ["", "### Budget", ""]
        lines += markdown_table(["quantity", "limit", "used"], summary.budget_rows(report))
        return "\n".join(lines) + "\n"
