"""SARIF, JUnit, GitHub annotation and shortened Markdown output, and `riskgate report`.

The sample report carries hostile strings (HTML, pipes, backticks, mentions, `::error::`
workflow commands, line breaks) in paths, messages and names.
"""

from __future__ import annotations

import copy
import json
import xml.etree.ElementTree as ElementTree
from pathlib import Path

import pytest
from click.testing import CliRunner

from riskgate.cli import main
from riskgate.errors import UsageError
from riskgate.report import RENDERERS
from riskgate.report.github import escape_data, escape_property, workflow_command
from riskgate.report.markdown import MarkdownRenderer

FIXTURE = Path(__file__).resolve().parent / "fixtures" / "report_sample.json"
HOSTILE_SCRIPT = "<script>alert(1)</script>"
FAIL_MESSAGE = "::error::x collapse at step 817 <script>alert(1)</script>"
WARN_MESSAGE = "gamma_hat 1.8 >= warn 1.0 for @mention `x`"
CHECK_NAMES = ("sharpness", "initial_orthogonality", "curvature_coupling", "quartic_forecast")


@pytest.fixture()
def error_report(sample) -> dict:
    report = copy.deepcopy(sample)
    report.update(
        verdict="error",
        exit_code=3,
        reason="analysis stopped: out of memory",
        complete=False,
        errors=["gradients: out of memory <script>alert(1)</script>", "line one\n::error::x"],
        findings=[],
    )
    report["checks"] = {name: None for name in CHECK_NAMES}
    return report


def make_finding(rule: str, status: str, message: str) -> dict:
    return {
        "rule": rule,
        "metric": rule,
        "value": 1.0,
        "warn_threshold": 0.5,
        "fail_threshold": 2.0,
        "threshold": 0.5,
        "level": {"pass": "info", "warn": "warn"}.get(status, "fail"),
        "status": status,
        "message": message,
    }


# --- SARIF -------------------------------------------------------------------------------


def test_sarif_required_keys(sample):
    text = RENDERERS["sarif"].render(sample)
    log = json.loads(text)
    assert log["version"] == "2.1.0"
    assert log["$schema"] == "https://json.schemastore.org/sarif-2.1.0.json"
    assert len(log["runs"]) == 1
    run = log["runs"][0]
    assert set(run) == {"tool", "invocations", "results", "properties"}
    driver = run["tool"]["driver"]
    assert driver["name"] == "riskgate"
    assert driver["version"] == "0.1.0"
    assert [rule["id"] for rule in driver["rules"]] == [
        "sharpness",
        "initial_orthogonality",
        "curvature_coupling",
        "collapse_before_planned",
    ]
    for rule in driver["rules"]:
        assert set(rule) >= {"id", "shortDescription", "defaultConfiguration"}
        assert rule["shortDescription"]["text"]
    assert run["invocations"] == [{"executionSuccessful": True}]
    assert run["properties"]["verdict"] == "fail"


def test_sarif_results(sample):
    run = json.loads(RENDERERS["sarif"].render(sample))["runs"][0]
    location = {"logicalLocations": [{"name": sample["dataset"]["path"], "kind": "resource"}]}
    assert run["results"] == [
        {
            "ruleId": "collapse_before_planned",
            "ruleIndex": 3,
            "level": "error",
            "message": {"text": FAIL_MESSAGE},
            "locations": [location],
            "properties": {"status": "fail", "metric": "collapse_step", "value": 817, "threshold": 1000},
        },
        {
            "ruleId": "curvature_coupling",
            "ruleIndex": 2,
            "level": "warning",
            "message": {"text": WARN_MESSAGE},
            "locations": [location],
            "properties": {"status": "warn", "metric": "gamma_hat", "value": 1.8, "threshold": 1.0},
        },
    ]


def test_sarif_no_raw_html(sample):
    text = RENDERERS["sarif"].render(sample)
    assert "<" not in text
    assert ">" not in text
    assert "&" not in text
    assert "\\u003cscript\\u003e" in text


def test_sarif_relative_dataset_uri(sample):
    sample["dataset"]["path"] = "data/fine tune#1.jsonl"
    run = json.loads(RENDERERS["sarif"].render(sample))["runs"][0]
    location = run["results"][0]["locations"][0]
    assert location["physicalLocation"] == {"artifactLocation": {"uri": "data/fine%20tune%231.jsonl"}}
    assert location["logicalLocations"][0]["name"] == "data/fine tune#1.jsonl"


def test_sarif_error_report(error_report):
    run = json.loads(RENDERERS["sarif"].render(error_report))["runs"][0]
    assert [rule["id"] for rule in run["tool"]["driver"]["rules"]] == ["analysis_complete"]
    assert [result["message"]["text"] for result in run["results"]] == error_report["errors"]
    assert {result["level"] for result in run["results"]} == {"error"}
    assert run["invocations"][0]["executionSuccessful"] is False
    notifications = run["invocations"][0]["toolExecutionNotifications"]
    assert [note["message"]["text"] for note in notifications] == error_report["errors"]


# --- JUnit -------------------------------------------------------------------------------


def test_junit_parses(sample):
    text = RENDERERS["junit"].render(sample)
    assert HOSTILE_SCRIPT not in text
    root = ElementTree.fromstring(text.encode("utf-8"))
    assert root.tag == "testsuites"
    suites = root.findall("testsuite")
    assert len(suites) == 1
    suite = suites[0]
    assert suite.get("name") == "riskgate"
    assert (suite.get("tests"), suite.get("failures"), suite.get("errors"), suite.get("skipped")) == ("4", "1", "0", "0")
    assert suite.get("time") == "41.700"
    cases = suite.findall("testcase")
    assert [case.get("name") for case in cases] == [
        "sharpness",
        "initial_orthogonality",
        "curvature_coupling",
        "collapse_before_planned",
    ]
    assert cases[0].find("failure") is None
    assert cases[2].find("system-out").text == f"warning: {WARN_MESSAGE}"
    failure = cases[3].find("failure")
    assert failure.get("message") == FAIL_MESSAGE
    assert failure.text == "metric collapse_step: value 817, warn n/a, fail 1,000"
    properties = {prop.get("name"): prop.get("value") for prop in suite.find("properties")}
    assert properties["verdict"] == "fail"
    assert properties["exit_code"] == "1"


def test_junit_error_status(sample):
    sample["findings"].append(make_finding("min_safety_examples", "error", "too few <b>examples</b>\nsecond line"))
    root = ElementTree.fromstring(RENDERERS["junit"].render(sample))
    suite = root.find("testsuite")
    assert suite.get("errors") == "1"
    error = suite.findall("testcase")[-1].find("error")
    assert error.get("message") == "too few <b>examples</b>\nsecond line"
    assert error.get("type") == "analysis_error"


def test_junit_control_characters(sample):
    sample["findings"][3]["message"] = "bell\x07 escape\x1b[31m nul\x00 end"
    text = RENDERERS["junit"].render(sample)
    failure = ElementTree.fromstring(text).find("testsuite").findall("testcase")[3].find("failure")
    assert failure.get("message") == "bell\ufffd escape\ufffd[31m nul\ufffd end"


def test_junit_error_report(error_report):
    suite = ElementTree.fromstring(RENDERERS["junit"].render(error_report)).find("testsuite")
    cases = suite.findall("testcase")
    assert [case.get("name") for case in cases] == ["analysis_complete", "analysis_complete"]
    assert [case.find("error").get("message") for case in cases] == error_report["errors"]
    assert suite.get("errors") == "2"


# --- GitHub workflow commands ------------------------------------------------------------


def test_github_whole_output(sample):
    assert RENDERERS["github"].render(sample) == (
        "::error title=riskgate fail%3A collapse_before_planned::"
        "::error::x collapse at step 817 <script>alert(1)</script>\n"
        "::warning title=riskgate warn%3A curvature_coupling::"
        "gamma_hat 1.8 >= warn 1.0 for @mention `x`\n"
    )


def test_github_escape_rules():
    assert escape_data("100% done\r\nnext") == "100%25 done%0D%0Anext"
    assert escape_data("a::b, c") == "a::b, c"
    assert escape_property("a: b, c%\n") == "a%3A b%2C c%25%0A"
    assert workflow_command("notice", "x") == "::notice::x"
    assert workflow_command("error", "m", title="t:1", file="a,b") == "::error title=t%3A1,file=a%2Cb::m"


def test_github_line_breaks(sample):
    sample["findings"][3]["message"] = "first\n::error::injected\r\n%0A literal"
    sample["findings"][3]["rule"] = "rule::x,y\nz"
    lines = RENDERERS["github"].render(sample).splitlines()
    assert len(lines) == 2
    assert lines[0] == (
        "::error title=riskgate fail%3A rule%3A%3Ax%2Cy%0Az::"
        "first%0A::error::injected%0D%0A%250A literal"
    )
    for line in lines:
        head, separator, _ = line.partition("::")[2].partition("::")
        assert separator == "::"
        assert head.startswith(("error title=", "warning title="))


def test_github_caps_per_level(sample):
    sample["findings"] = (
        [make_finding(f"warn_{index}", "warn", f"w{index}") for index in range(12)]
        + [make_finding(f"fail_{index}", "fail", f"f{index}") for index in range(13)]
        + [make_finding(f"error_{index}", "error", f"e{index}") for index in range(2)]
        + [make_finding("fine", "pass", "ok")]
    )
    lines = RENDERERS["github"].render(sample).splitlines()
    assert len(lines) == 21
    assert [line.split("::")[2] for line in lines[:10]] == ["e0", "e1"] + [f"f{index}" for index in range(8)]
    assert all(line.startswith("::error title=") for line in lines[:10])
    assert [line.split("::")[2] for line in lines[10:20]] == [f"w{index}" for index in range(10)]
    assert all(line.startswith("::warning title=") for line in lines[10:20])
    assert lines[20] == (
        "::notice title=riskgate%3A more findings::7 more findings (5 errors, 2 warnings)"
        " are not annotated; report.json lists all of them"
    )


def test_github_error_report(error_report):
    lines = RENDERERS["github"].render(error_report).splitlines()
    assert lines == [
        "::error title=riskgate error%3A analysis_complete::gradients: out of memory <script>alert(1)</script>",
        "::error title=riskgate error%3A analysis_complete::line one%0A::error::x",
    ]


def test_github_pass_is_empty(sample):
    sample["findings"] = [make_finding("fine", "pass", "ok")]
    sample["verdict"] = "pass"
    assert RENDERERS["github"].render(sample) == ""


# --- Markdown with a byte budget ---------------------------------------------------------

SHORTENED_700 = """\
**RISKGATE FAIL**: collapse forecast at step 817, before the planned 1000 steps (tau 0.1)

Shortened to fit 700 bytes; the full report is in report.html and report.json in the report folder.

### Failing and warning findings

| rule | value | warn | fail | status | message |
| --- | --- | --- | --- | --- | --- |
| collapse\\_before\\_planned (collapse\\_step) | 817 | n/a | 1,000 | fail | :\u200d:error::x collapse at step 817 &lt;script&gt;alert(1)&lt;/script&gt; |
| curvature\\_coupling (gamma\\_hat) | 1.8 | 1 | 5 | warn | gamma\\_hat 1.8 &gt;= warn 1.0 for @\u200dmention &#96;x&#96; |
"""


def test_markdown_budget_none_unchanged(sample):
    full = RENDERERS["markdown"].render(sample)
    assert MarkdownRenderer().render(sample) == full
    assert MarkdownRenderer(max_bytes=len(full.encode("utf-8"))).render(sample) == full


def test_markdown_shortened_whole(sample):
    text = MarkdownRenderer(max_bytes=700).render(sample)
    assert text == SHORTENED_700
    assert len(text.encode("utf-8")) <= 700
    assert "<script>" not in text


def test_markdown_shortened_rows_whole(sample):
    full_rows = [line for line in SHORTENED_700.splitlines() if line.startswith("| ")][1:]
    smallest = len(MarkdownRenderer(max_bytes=10_000).render({**sample, "findings": [], "reason": ""}).encode())
    for budget in range(smallest, 720, 7):
        text = MarkdownRenderer(max_bytes=budget).render(sample)
        assert len(text.encode("utf-8")) <= budget
        table = [line for line in text.splitlines() if line.startswith("|")]
        rows = table[2:]
        assert rows == full_rows[: len(rows)]
        left_out = 2 - len(rows)
        if left_out:
            assert f"{left_out} more failing or warning findings are left out here." in text
        if not rows:
            assert table == []


def test_markdown_drops_reason_last(sample):
    sample["reason"] = "x" * 2000
    text = MarkdownRenderer(max_bytes=400).render(sample)
    assert text.startswith("**RISKGATE FAIL**\n")
    assert "2 more failing or warning findings are left out here." in text


def test_markdown_budget_too_small(sample):
    with pytest.raises(UsageError, match="--max-bytes 50: too small"):
        MarkdownRenderer(max_bytes=50).render(sample)
    with pytest.raises(UsageError, match="--max-bytes 0: must be a positive"):
        MarkdownRenderer(max_bytes=0)


def test_markdown_custom_location(sample):
    text = MarkdownRenderer(max_bytes=600, full_report_location="artifact <b>x</b>").render(sample)
    assert "the full report is in artifact &lt;b&gt;x&lt;/b&gt;." in text


# --- riskgate report ---------------------------------------------------------------------


@pytest.mark.parametrize("format_name", ["json", "markdown", "html", "sarif", "junit", "github"])
def test_cli_report_stdout(sample, format_name):
    result = CliRunner().invoke(main, ["report", "--from", str(FIXTURE), "--format", format_name])
    assert result.exit_code == 0, result.output
    assert result.stdout == RENDERERS[format_name].render(sample)


def test_cli_report_output_file(tmp_path, sample):
    output = tmp_path / "nested" / "report.sarif"
    result = CliRunner().invoke(main, ["report", "--from", str(FIXTURE), "--format", "sarif", "--output", str(output)])
    assert result.exit_code == 0, result.output
    assert result.stdout == ""
    assert output.read_text(encoding="utf-8") == RENDERERS["sarif"].render(sample)


def test_cli_report_max_bytes(sample):
    args = ["report", "--from", str(FIXTURE), "--format", "markdown", "--max-bytes", "700"]
    result = CliRunner().invoke(main, args)
    assert result.exit_code == 0, result.output
    assert result.stdout == SHORTENED_700


@pytest.mark.parametrize(
    ("content", "expected"),
    [
        (None, "report file not found"),
        ("{not json", "invalid JSON at line 1, column 2"),
        ("[1, 2]", "expected a JSON object"),
        ('{"schema_version": 2, "verdict": "pass", "reason": "", "findings": []}', "schema_version: unsupported value 2"),
        ('{"schema_version": 1, "verdict": "pass"}', "missing report keys: reason, findings"),
        ('{"schema_version": 1, "verdict": "pass", "reason": "", "findings": {}}', "findings: expected a list"),
    ],
)
def test_cli_report_bad_input(tmp_path, content, expected):
    path = tmp_path / "report.json"
    if content is not None:
        path.write_text(content, encoding="utf-8")
    result = CliRunner().invoke(main, ["report", "--from", str(path), "--format", "sarif"])
    assert result.exit_code == 2
    assert result.stdout == ""
    lines = result.stderr.splitlines()
    assert len(lines) == 1
    assert lines[0].startswith(f"riskgate: error: {path}: ")
    assert expected in lines[0]


def test_cli_report_markdown_flag_elsewhere():
    args = ["report", "--from", str(FIXTURE), "--format", "sarif", "--max-bytes", "100"]
    result = CliRunner().invoke(main, args)
    assert result.exit_code == 2
    assert result.stderr == "riskgate: error: --max-bytes: applies to --format markdown only, not sarif\n"


def test_cli_report_budget_too_small():
    args = ["report", "--from", str(FIXTURE), "--format", "markdown", "--max-bytes", "10"]
    result = CliRunner().invoke(main, args)
    assert result.exit_code == 2
    assert "--max-bytes 10: too small" in result.stderr


def test_cli_report_unwritable(tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("x")
    args = ["report", "--from", str(FIXTURE), "--format", "junit", "--output", str(blocker / "report.xml")]
    result = CliRunner().invoke(main, args)
    assert result.exit_code == 3
    assert result.stderr.startswith(f"riskgate: error: {blocker / 'report.xml'}: cannot write the report")


def test_model_row_names_engine_path():
    from riskgate.report.summary import input_rows

    report = {"model": {"kind": "folder"}, "engine": {"path": "sketched", "sketch_width": 4096,
                                                      "error_scale": 0.0221, "hvp_method": "double_backward"}}
    details = input_rows(report)[0][3]
    assert "gradients sketched (width 4,096, error scale 0.0221)" in details
    assert "Hessian-vector products by double_backward" in details
    assert "gradients" not in input_rows({"model": {"kind": "folder"}})[0][3]


def test_report_with_byte_order_mark_reads(tmp_path):
    from riskgate.report.reading import read_report

    path = tmp_path / "report.json"
    path.write_bytes(b"\xef\xbb\xbf" + FIXTURE.read_bytes())
    assert read_report(path) == read_report(FIXTURE)
