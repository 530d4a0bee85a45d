"""Report files rendered from the canonical report dict: JSON, Markdown and HTML.

The canonical report (schema version 1) is a JSON-able dict. It contains the verdict, the
inputs (model, dataset, safety data, policy, training plan, budget), the results of the four
checks and the policy findings. A check is null when the analysis stopped before it.
Renderers only format the report: they never import torch and never recompute a number.
"""

from __future__ import annotations

from riskgate.report.interface import Renderer, ReportFormat
from riskgate.report.markdown import escape_markdown
from riskgate.report.writer import DEFAULT_FORMATS, RENDERERS, select_renderers, write_reports

SCHEMA_VERSION = 1

__all__ = [
    "DEFAULT_FORMATS",
    "RENDERERS",
    "SCHEMA_VERSION",
    "Renderer",
    "ReportFormat",
    "escape_markdown",
    "select_renderers",
    "write_reports",
]
