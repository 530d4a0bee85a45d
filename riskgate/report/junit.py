"""JUnit XML output (`report.junit.xml`) for the test views of CI systems.

One test suite named "riskgate" with one test case per finding. A fail finding carries a
`<failure>` and an error finding an `<error>`. A warn finding passes with its message in
`<system-out>`, and a waived finding is `<skipped>` with the waiver's reason. ElementTree
escapes all text and attribute values; characters that XML 1.0 cannot contain at all (most
control characters) become U+FFFD first.
"""

from __future__ import annotations

import math
import re
import xml.etree.ElementTree as ElementTree
from typing import Any

from riskgate.report import issues, summary
from riskgate.report.interface import Renderer, ReportFormat

SUITE_NAME = "riskgate"
REPLACEMENT_CHARACTER = "\ufffd"
# Characters outside the XML 1.0 `Char` production, plus the discouraged C1 controls.
_INVALID_XML_CHARACTERS = re.compile("[\x00-\x08\x0b\x0c\x0e-\x1f\x7f-\x84\x86-\x9f\ud800-\udfff\ufffe\uffff]")


def xml_text(value: Any) -> str:
    """Turn report text into a string that XML 1.0 can contain; ElementTree escapes the rest."""
    return _INVALID_XML_CHARACTERS.sub(REPLACEMENT_CHARACTER, str(value))


def _details(finding: dict[str, Any]) -> str:
    return (
        f"metric {finding.get('metric')}: value {summary.format_number(finding.get('value'))},"
        f" warn {summary.format_number(finding.get('warn_threshold'))},"
        f" fail {summary.format_number(finding.get('fail_threshold'))}"
    )


class JunitRenderer(Renderer):
    """Writes one JUnit test case per finding: fail and error findings fail it, waived ones skip it."""

    name = ReportFormat.JUNIT.value
    filename = "report.junit.xml"

    def render(self, report: dict[str, Any]) -> str:
        cases: list[ElementTree.Element] = []
        for finding in issues.findings(report):
            rule = xml_text(finding.get("rule") or "unknown")
            status = str(finding.get("status") or "")
            message = xml_text(finding.get("message") or "")
            case = ElementTree.Element("testcase", name=rule, classname=f"{SUITE_NAME}.{rule}")
            if status == "fail":
                child = ElementTree.SubElement(case, "failure", message=message, type="policy_fail")
                child.text = xml_text(_details(finding))
            elif status == "error":
                child = ElementTree.SubElement(case, "error", message=message, type="analysis_error")
                child.text = xml_text(_details(finding))
            elif status == "warn":
                ElementTree.SubElement(case, "system-out").text = f"warning: {message}"
            elif status == "waived":
                waiver = issues.waiver_of(finding)
                reason = xml_text(waiver.get("reason") or "")
                child = ElementTree.SubElement(case, "skipped", message=f"waived: {reason}")
                child.text = xml_text(f"{waiver.get('original_status')} finding waived: {finding.get('message') or ''}")
            cases.append(case)
        for error in issues.unreported_errors(report):
            case = ElementTree.Element("testcase", name="analysis_complete", classname=f"{SUITE_NAME}.analysis_complete")
            ElementTree.SubElement(case, "error", message=xml_text(error), type="analysis_error")
            cases.append(case)

        failures = sum(1 for case in cases if case.find("failure") is not None)
        errors = sum(1 for case in cases if case.find("error") is not None)
        skipped = sum(1 for case in cases if case.find("skipped") is not None)
        counts = {"tests": str(len(cases)), "failures": str(failures), "errors": str(errors), "skipped": str(skipped)}
        suites = ElementTree.Element("testsuites", name=SUITE_NAME, **counts)
        suite = ElementTree.SubElement(suites, "testsuite", name=SUITE_NAME, **counts)
        if report.get("created_at"):
            suite.set("timestamp", xml_text(report["created_at"]))
        elapsed = summary.section(summary.section(report, "budget"), "used").get("elapsed_s")
        if isinstance(elapsed, (int, float)) and not isinstance(elapsed, bool) and math.isfinite(elapsed):
            suite.set("time", f"{elapsed:.3f}")

        properties = ElementTree.SubElement(suite, "properties")
        for key in ("verdict", "reason", "exit_code", "riskgate_version", "schema_version"):
            ElementTree.SubElement(properties, "property", name=key, value=xml_text(report.get(key)))
        suite.extend(cases)

        ElementTree.indent(suites)
        return '<?xml version="1.0" encoding="UTF-8"?>\n' + ElementTree.tostring(suites, encoding="unicode") + "\n"
