"""A self-contained HTML report (`report.html`) with inline SVG charts, readable offline.

The page is rendered by jinja2 with autoescaping on, so every piece of report text is escaped.
The only markup inserted unescaped is the SVG that `riskgate.report.svg` builds, which escapes
its own labels. The page loads nothing: no scripts, external style sheets, fonts or images,
and its Content-Security-Policy forbids them.
"""

from __future__ import annotations

import functools
import json
from typing import Any

import jinja2

from riskgate.report import issues, summary, svg
from riskgate.report.interface import Renderer, ReportFormat

TEMPLATE_NAME = "report.html.j2"
MAX_SENSITIVITY_BARS = 20
MAX_LISTED_VALUES = 64
"""Maximum length of a list of numbers shown inline in a table; longer ones (the spectrum) are charted."""
STATUS_CLASSES = frozenset({"pass", "warn", "fail", "error", "info", "waived"})


@functools.lru_cache(maxsize=1)
def _environment() -> jinja2.Environment:
    return jinja2.Environment(
        loader=jinja2.PackageLoader("riskgate.report", "templates"),
        autoescape=True,
        undefined=jinja2.StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
    )


def _status_class(value: Any) -> str:
    """CSS class for a verdict or status; anything unexpected is shown as an error."""
    return value if value in STATUS_CLASSES else "error"


def _list_text(values: list[Any]) -> str | None:
    """Join a short list of scalars; return None for lists of records, which get their own table or chart."""
    if any(isinstance(value, (dict, list)) for value in values):
        return None
    if len(values) > MAX_LISTED_VALUES:
        return f"{len(values)} values (all of them are in report.json)"
    return ", ".join(summary.format_number(value) for value in values) or "none"


def _scalar_rows(result: dict[str, Any]) -> list[tuple[str, str]]:
    """Return (name, value) rows for the scalars and short lists of a section, nested dicts one level deep."""
    rows = []
    for key, value in result.items():
        if isinstance(value, dict):
            rows += [
                (f"{key}.{inner_key}", summary.format_number(inner_value))
                for inner_key, inner_value in value.items()
                if not isinstance(inner_value, (dict, list))
            ]
        elif isinstance(value, list):
            text = _list_text(value)
            if text is not None:
                rows.append((key, text))
        else:
            rows.append((key, summary.format_number(value)))
    return rows


def _finding_rows(report: dict[str, Any]) -> list[dict[str, str]]:
    return [
        {
            "rule": str(finding.get("rule") or summary.NOT_AVAILABLE),
            "metric": str(finding.get("metric") or summary.NOT_AVAILABLE),
            "value": summary.format_number(finding.get("value")),
            "warn": summary.format_number(finding.get("warn_threshold")),
            "fail": summary.format_number(finding.get("fail_threshold")),
            "threshold": summary.format_number(finding.get("threshold")),
            "level": str(finding.get("level") or summary.NOT_AVAILABLE),
            "status": str(finding.get("status") or summary.NOT_AVAILABLE),
            "status_class": _status_class(finding.get("status")),
            "message": str(finding.get("message") or ""),
        }
        for finding in report.get("findings") or []
    ]


def _waived_rows(report: dict[str, Any]) -> list[dict[str, str]]:
    return [
        {
            "rule": rule,
            "original_status": original_status,
            "status_class": _status_class(original_status),
            "reason": reason,
            "expires": expires,
            "entry": entry,
            "message": message,
        }
        for rule, original_status, reason, expires, entry, message in issues.waiver_rows(report)
    ]


def _top_entry_rows(sharpness: dict[str, Any]) -> list[tuple[str, str, str, str]]:
    return [
        (
            summary.format_number(entry.get("eigenvector")),
            str(entry.get("tensor")),
            ", ".join(str(position) for position in entry.get("index") or []),
            summary.format_number(entry.get("value")),
        )
        for entry in sharpness.get("top_entries") or []
    ]


def _check_sections(report: dict[str, Any]) -> list[dict[str, Any]]:
    """Build one entry per check: its title, whether it was computed, its charts and its numbers."""
    sharpness = summary.check(report, "sharpness")
    forecast = summary.check(report, "quartic_forecast")
    sections = []

    spectrum_svg = sensitivity_svg = None
    if sharpness is not None:
        spectrum_svg = svg.spectrum_chart(sharpness.get("spectrum") or [], sharpness.get("k"), sharpness.get("rho"))
        sensitivity_svg = svg.sensitivity_chart(sharpness.get("sensitivity") or [], MAX_SENSITIVITY_BARS)
    forecast_svg = None
    if forecast is not None:
        forecast_svg = svg.forecast_chart(
            forecast.get("curve") or [],
            tau=forecast.get("tau"),
            collapse_step=forecast.get("collapse_step"),
            collapse_is_extrapolation=bool(forecast.get("collapse_is_extrapolation")),
            planned_steps=forecast.get("planned_steps"),
            horizon_step=forecast.get("horizon_step"),
        )

    charts = {
        "sharpness": [
            ("Fisher spectrum", spectrum_svg),
            (f"Sensitivity map (top {MAX_SENSITIVITY_BARS} tensors by share of P)", sensitivity_svg),
        ],
        "initial_orthogonality": [],
        "curvature_coupling": [],
        "quartic_forecast": [("Forecast curve", forecast_svg)],
    }
    for name, title in summary.CHECK_TITLES.items():
        result = summary.check(report, name)
        sections.append(
            {
                "name": name,
                "title": title,
                "computed": result is not None,
                "charts": charts[name] if result is not None else [],
                "rows": _scalar_rows(result) if result is not None else [],
                "top_entries": _top_entry_rows(result) if name == "sharpness" and result is not None else [],
            }
        )
    return sections


def _context(report: dict[str, Any]) -> dict[str, Any]:
    model = summary.section(report, "model")
    policy = summary.section(report, "policy")
    plan = summary.section(report, "training_plan")
    return {
        "verdict": str(report.get("verdict") or "error"),
        "verdict_class": _status_class(report.get("verdict")),
        "reason": str(report.get("reason") or ""),
        "exit_code": summary.format_number(report.get("exit_code")),
        "complete": bool(report.get("complete")),
        "errors": [str(error) for error in report.get("errors") or []],
        "created_at": str(report.get("created_at") or summary.NOT_AVAILABLE),
        "riskgate_version": str(report.get("riskgate_version") or summary.NOT_AVAILABLE),
        "schema_version": summary.format_number(report.get("schema_version")),
        "seed": str(report.get("seed")),
        "findings": _finding_rows(report),
        "waived": _waived_rows(report),
        "unused_waivers": issues.unused_waivers_note(report),
        "key_numbers": summary.key_numbers(report),
        "attribution_header": summary.ATTRIBUTION_HEADER,
        "attribution_rows": summary.attribution_rows(report),
        "attribution_note": summary.attribution_note(report),
        "what_if_header": summary.WHAT_IF_HEADER,
        "what_if_rows": summary.what_if_rows(report),
        "what_if_note": summary.what_if_note(report),
        "notes": summary.report_notes(report),
        "checks": _check_sections(report),
        "inputs": summary.input_rows(report),
        "budget": summary.budget_rows(report),
        "plan_rows": _scalar_rows(plan),
        "scope_patterns": [str(pattern) for pattern in model.get("scope_patterns") or []],
        "scope_tensors": [str(tensor) for tensor in model.get("scope_tensors") or []],
        "policy_resolved": json.dumps(policy.get("resolved"), indent=2, default=str),
    }


class HtmlRenderer(Renderer):
    """Renders the report as one HTML page with the spectrum, sensitivity and forecast charts."""

    name = ReportFormat.HTML.value
    filename = "report.html"

    def render(self, report: dict[str, Any]) -> str:
        template = _environment().get_template(TEMPLATE_NAME)
        return template.render(_context(report))
