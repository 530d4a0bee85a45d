"""The interface every report format implements, and the names of the formats.

A renderer turns the canonical report dict (schema version 1, see `riskgate.report`) into the
text of one file. Renderers only format what the report contains: they never recompute a
diagnostic, and they escape every piece of report text for the format they write.
"""

from __future__ import annotations

import abc
import enum
from typing import Any


class ReportFormat(str, enum.Enum):
    """Report file formats that the renderers write (`riskgate check` writes the first three)."""

    JSON = "json"
    """The canonical report as JSON (`report.json`), non-finite numbers written as null."""
    MARKDOWN = "markdown"
    """A summary for a pull-request comment (`report.md`)."""
    HTML = "html"
    """A self-contained page with charts, readable offline (`report.html`)."""
    SARIF = "sarif"
    """SARIF 2.1.0 for code-scanning tools (`report.sarif`): one result per failing or warning finding."""
    JUNIT = "junit"
    """JUnit XML for CI test views (`report.junit.xml`): one test case per finding."""
    GITHUB = "github"
    """GitHub Actions workflow commands (`report.github.txt`) that create error and warning annotations."""


class Renderer(abc.ABC):
    """Base class of the report renderers.

    Subclasses set `name` (the `ReportFormat` value that selects them) and `filename` (the
    file written in the output folder), and implement `render`.
    """

    name: str
    filename: str

    @abc.abstractmethod
    def render(self, report: dict[str, Any]) -> str:
        """Render the canonical report as the text of this format's file.

        The report dict is read, never modified.
        """
