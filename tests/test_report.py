"""Tests of the report layer: JSON, Markdown and HTML renderers, SVG charts and the writer."""

from __future__ import annotations

import copy
import json
import math
import os
import re
import subprocess
import sys
from html.parser import HTMLParser
from pathlib import Path

import pytest

from riskgate.errors import EnvironmentFailure, UsageError
from riskgate.report import RENDERERS, ReportFormat, escape_markdown, svg, write_reports
from riskgate.report.json_format import replace_non_finite
from riskgate.report.writer import write_atomically

FIXTURE = Path(__file__).resolve().parent / "fixtures" / "report_sample.json"
REPO_ROOT = Path(__file__).resolve().parent.parent
ZWJ = "\u200d"
HOSTILE_SCRIPT = "<script>alert(1)</script>"
CHECK_NAMES = ("sharpness", "initial_orthogonality", "curvature_coupling", "quartic_forecast")
VOID_ELEMENTS = {"meta", "br", "hr", "img", "input", "link", "area", "base", "col", "embed", "source", "wbr"}
SVG_CHILDREN = {"rect", "line", "polyline", "circle", "text", "g", "title"}


@pytest.fixture()
def error_report(sample) -> dict:
    report = copy.deepcopy(sample)
    report.update(
        verdict="error",
        exit_code=3,
        reason="analysis stopped: out of memory",
        complete=False,
        errors=["gradients: out of memory | pipes | <script>alert(1)</script>", "::error::x @mention"],
        findings=[],
    )
    report["checks"] = {name: None for name in CHECK_NAMES}
    return report


def render(name: str, report: dict) -> str:
    return RENDERERS[name].render(report)


def markdown_tables(text: str) -> list[list[str]]:
    """Group consecutive lines that start with `|` into tables."""
    tables: list[list[str]] = []
    current: list[str] = []
    for line in text.splitlines():
        if line.startswith("|"):
            current.append(line)
        elif current:
            tables.append(current)
            current = []
    if current:
        tables.append(current)
    return tables


def table_cells(row: str) -> list[str]:
    return [cell.strip() for cell in row.strip().strip("|").split("|")]


class PageParser(HTMLParser):
    """Collects start tags, attributes, text and nesting errors of an HTML page."""

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.tags: list[str] = []
        self.attributes: list[tuple[str, str, str | None]] = []
        self.text: list[str] = []
        self.stack: list[str] = []
        self.nesting_errors: list[str] = []

    def handle_starttag(self, tag, attrs):
        self.tags.append(tag)
        self.attributes += [(tag, name, value) for name, value in attrs]
        if tag not in VOID_ELEMENTS:
            self.stack.append(tag)

    def handle_startendtag(self, tag, attrs):
        self.tags.append(tag)
        self.attributes += [(tag, name, value) for name, value in attrs]

    def handle_endtag(self, tag):
        if not self.stack or self.stack[-1] != tag:
            self.nesting_errors.append(f"</{tag}> closes {self.stack[-1] if self.stack else 'nothing'}")
            return
        self.stack.pop()

    def handle_data(self, data):
        self.text.append(data)


def parse_page(text: str) -> PageParser:
    parser = PageParser()
    parser.feed(text)
    parser.close()
    return parser


# --- Markdown escaping -------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("plain text", "plain text"),
        ("a | b", "a &#124; b"),
        ("`code`", "&#96;code&#96;"),
        (HOSTILE_SCRIPT, "&lt;script&gt;alert(1)&lt;/script&gt;"),
        ("&amp;", "&amp;amp;"),
        ("one\ntwo\r\nthree\rfour", "one two three four"),
        ("ping @mention now", f"ping @{ZWJ}mention now"),
        ("@org/team", f"@{ZWJ}org/team"),
        ("a @ b", "a @ b"),
        ("::error::x", f":{ZWJ}:error::x"),
        ("  ::warning::y", f"  :{ZWJ}:warning::y"),
        ("text ::error::x", "text ::error::x"),
        ("line\n::error::x", "line ::error::x"),
        ("[link](http://example.invalid)", "\\[link\\](http://example.invalid)"),
        ("![image](x.png)", "!\\[image\\](x.png)"),
        ("*bold* _it_ ~strike~", "\\*bold\\* \\_it\\_ \\~strike\\~"),
        ("C:\\data\\x", "C:\\\\data\\\\x"),
        ("\x1b[31mred", "\ufffd\\[31mred"),
        ("abc\u202edef", "abc\ufffddef"),
        (3, "3"),
    ],
)
def test_escape_markdown_cases(text, expected):
    assert escape_markdown(text) == expected


def test_escape_markdown_no_raw_specials():
    hostile = f"{HOSTILE_SCRIPT} | pipes | `x` @mention\n::error::x &amp;"
    escaped = escape_markdown(hostile)
    for character in "|`<>\n":
        assert character not in escaped


# --- JSON --------------------------------------------------------------------------------


def test_json_round_trip(sample):
    text = render("json", sample)
    assert json.loads(text) == sample
    assert text.startswith('{\n  "schema_version": 1,')
    assert list(json.loads(text)) == list(sample)


def test_json_non_finite_null(sample):
    report = copy.deepcopy(sample)
    report["checks"]["sharpness"]["spectrum"][0] = float("nan")
    report["checks"]["quartic_forecast"]["delta_u_at_planned_steps"] = float("inf")
    report["checks"]["quartic_forecast"]["curve"][0]["delta_u"] = float("-inf")

    parsed = json.loads(render("json", report))

    assert parsed["checks"]["sharpness"]["spectrum"][0] is None
    assert parsed["checks"]["sharpness"]["spectrum"][1] == 0.9
    assert parsed["checks"]["quartic_forecast"]["delta_u_at_planned_steps"] is None
    assert parsed["checks"]["quartic_forecast"]["curve"][0]["delta_u"] is None
    assert math.isnan(report["checks"]["sharpness"]["spectrum"][0])
    assert report["checks"]["quartic_forecast"]["delta_u_at_planned_steps"] == float("inf")


def test_replace_non_finite_tuple():
    assert replace_non_finite({"a": (1.0, float("nan")), "b": "NaN"}) == {"a": [1.0, None], "b": "NaN"}


# --- Markdown ----------------------------------------------------------------------------


def test_markdown_verdict_first_line(sample):
    lines = render("markdown", sample).splitlines()
    assert lines[0] == "**RISKGATE FAIL**: collapse forecast at step 817, before the planned 1000 steps (tau 0.1)"


def test_markdown_findings_rows(sample):
    tables = markdown_tables(render("markdown", sample))
    findings = tables[0]
    assert table_cells(findings[0]) == ["rule", "value", "warn", "fail", "status", "message"]
    rows = [table_cells(row) for row in findings[2:]]
    assert len(rows) == len(sample["findings"])
    assert rows[1] == [
        "initial\\_orthogonality (overlap\\_ratio)",
        "0.012",
        "0.2",
        "0.5",
        "pass",
        "overlap\\_ratio 0.012 &#124; pipes &#124; below warn 0.2",
    ]
    assert rows[3][:5] == ["collapse\\_before\\_planned (collapse\\_step)", "817", "n/a", "1,000", "fail"]
    assert rows[3][5] == f":{ZWJ}:error::x collapse at step 817 &lt;script&gt;alert(1)&lt;/script&gt;"


def test_markdown_column_counts(sample):
    tables = markdown_tables(render("markdown", sample))
    assert len(tables) == 5
    for table in tables:
        columns = table[0].count("|")
        assert re.fullmatch(r"\|( --- \|)+", table[1])
        for row in table:
            assert row.count("|") == columns, row


def test_markdown_hostile_text_neutralised(sample):
    text = render("markdown", sample)
    assert "<script>" not in text
    assert "<b>" not in text
    assert "`" not in text
    assert re.search(r"@(?!\u200d)[A-Za-z]", text) is None
    assert all(not line.lstrip().startswith("::") for line in text.splitlines())
    assert (
        "| dataset | data/&lt;script&gt;alert(1)&lt;/script&gt; &#124; pipes &#124; &#96;rm -rf&#96;"
        f" @{ZWJ}mention ::error::x &amp;amp;.jsonl | a1b2c3d4e5f6 |"
    ) in text
    assert f"| safety data | :{ZWJ}:error::x safety &lt;script&gt;alert(1)&lt;/script&gt;.jsonl |" in text
    assert f"| policy | strict &amp; &lt;b&gt;bold&lt;/b&gt; @{ZWJ}mention (policies/strict.yaml) | ffeeddccbbaa |" in text


def test_markdown_key_numbers(sample):
    tables = markdown_tables(render("markdown", sample))
    key_numbers = {table_cells(row)[0]: table_cells(row)[1] for row in tables[1][2:]}
    assert key_numbers["k"] == "3 (rho 0.9, k\\_max 32)"
    assert key_numbers["overlap\\_ratio"] == "0.012"
    assert key_numbers["epsilon"] == "0.0042"
    assert key_numbers["gamma\\_hat"] == "1.8"
    assert key_numbers["collapse\\_step"] == "817 (extrapolation: past the horizon step)"
    assert key_numbers["delta\\_u at step 1,000"] == "0.2 (tau 0.1)"
    assert key_numbers["horizon\\_step"] == "600"


def test_markdown_notes(sample):
    text = render("markdown", sample)
    assert "- The collapse step lies past the horizon step (600)" in text
    assert "- The training plan used defaults for batch\\_size;" in text
    assert "- 5 dataset records were skipped (#3: record 3: missing assistant turn;" in text
    assert "- 4 dataset sequences were truncated to max\\_seq\\_len tokens." in text
    assert "linear term dominates" not in text
    assert "safety data records were skipped" not in text


def test_markdown_linear_note(sample):
    sample["checks"]["quartic_forecast"]["linear_dominates"] = True
    sample["checks"]["quartic_forecast"]["collapse_is_extrapolation"] = False
    text = render("markdown", sample)
    assert "- The linear term dominates the forecast at the planned steps" in text
    assert "- The collapse step lies past the horizon step" not in text


def test_markdown_collapse_not_reached(sample):
    sample["checks"]["quartic_forecast"]["collapse_step"] = None
    tables = markdown_tables(render("markdown", sample))
    key_numbers = {table_cells(row)[0]: table_cells(row)[1] for row in tables[1][2:]}
    assert key_numbers["collapse\\_step"] == "not reached by step 100,000"


def test_markdown_budget_rows(sample):
    budget = markdown_tables(render("markdown", sample))[-1]
    rows = [table_cells(row) for row in budget[2:]]
    assert rows[0] == ["safety examples", "64", "64"]
    assert rows[-1] == ["time (s)", "no limit", "41.7"]


# --- HTML --------------------------------------------------------------------------------


def test_html_no_active_content(sample):
    page = parse_page(render("html", sample))
    assert "script" not in page.tags
    for tag in ("link", "img", "iframe", "object", "embed", "b"):
        assert tag not in page.tags
    for _tag, name, value in page.attributes:
        assert name not in ("src", "href")
        assert not name.startswith("on")
        assert "http" not in (value or "") or name == "content"


def test_html_well_formed(sample):
    page = parse_page(render("html", sample))
    assert page.nesting_errors == []
    assert page.stack == []
    assert page.tags[:1] == ["html"]


def test_html_three_charts(sample):
    page = parse_page(render("html", sample))
    assert page.tags.count("svg") == 3
    assert "url(" not in render("html", sample)


def test_html_hostile_text_escaped(sample):
    text = render("html", sample)
    page = parse_page(text)
    visible = "".join(page.text)
    assert "<script" not in text
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in text
    assert HOSTILE_SCRIPT in visible
    assert "<b>bold</b>" in visible
    assert "&amp;amp;" in text


def test_html_verdict_banner(sample):
    text = render("html", sample)
    assert '<section class="banner fail">' in text
    assert "<h1>riskgate verdict: FAIL</h1>" in text
    assert "seed 1234" in text


def test_html_unknown_verdict_class(sample):
    sample["verdict"] = '"><x onload="y'
    text = render("html", sample)
    assert '<section class="banner error">' in text
    assert 'onload="y' not in text


# --- Incomplete report -------------------------------------------------------------------


def test_error_report_json(error_report):
    parsed = json.loads(render("json", error_report))
    assert parsed["checks"] == {name: None for name in CHECK_NAMES}
    assert parsed["complete"] is False


def test_error_report_markdown(error_report):
    text = render("markdown", error_report)
    lines = text.splitlines()
    assert lines[0] == "**RISKGATE ERROR**: analysis stopped: out of memory"
    assert "No findings." in text
    tables = markdown_tables(text)
    key_numbers = {table_cells(row)[0]: table_cells(row)[1] for row in tables[0][2:]}
    assert key_numbers["k"] == "not computed"
    assert key_numbers["collapse\\_step"] == "not computed"
    assert key_numbers["delta\\_u at planned steps"] == "not computed"
    assert (
        "- The analysis did not finish; not computed: alignment sharpness, initial orthogonality,"
        " curvature coupling, quartic forecast."
    ) in text
    assert "- gradients: out of memory &#124; pipes &#124; &lt;script&gt;alert(1)&lt;/script&gt;" in text
    assert f"- :{ZWJ}:error::x @{ZWJ}mention" in text
    for table in tables:
        for row in table:
            assert row.count("|") == table[0].count("|")


def test_error_report_html(error_report):
    text = render("html", error_report)
    page = parse_page(text)
    assert page.tags.count("svg") == 0
    assert "script" not in page.tags
    assert text.count("Not computed: the analysis stopped before this check.") == 4
    assert "analysis incomplete" in text
    assert page.nesting_errors == []


def test_error_report_null_sections(error_report):
    for key in ("model", "dataset", "safety_data", "policy", "training_plan", "budget"):
        error_report[key] = None
    for name in RENDERERS:
        assert render(name, error_report)
    assert "| model | n/a | n/a |" in render("markdown", error_report)


# --- SVG charts --------------------------------------------------------------------------


def test_spectrum_top_k(sample):
    sharpness = sample["checks"]["sharpness"]
    chart = svg.spectrum_chart(sharpness["spectrum"], sharpness["k"], sharpness["rho"])
    assert chart.count(f'fill="{svg.COLOR_TOP_K}"') == 3
    assert chart.count(f'fill="{svg.COLOR_REST}"') == 11
    assert "rho cut: k = 3, rho = 0.9" in chart


def test_spectrum_all_zero():
    chart = svg.spectrum_chart([0.0, 0.0, 0.0], 0, 0.9)
    assert "Every eigenvalue is zero" in chart
    assert "<rect" in chart
    assert svg.COLOR_TOP_K not in chart


def test_spectrum_empty_and_nan():
    assert "No eigenvalues" in svg.spectrum_chart([], None, None)
    chart = svg.spectrum_chart([float("nan"), 1.0, None], 1, None)
    assert chart.count(f'fill="{svg.COLOR_TOP_K}"') == 0
    assert chart.count(f'fill="{svg.COLOR_REST}"') == 1
    assert "rho = n/a" in chart


def test_sensitivity_other_bar(sample):
    entries = sample["checks"]["sharpness"]["sensitivity"]
    chart = svg.sensitivity_chart(entries, max_rows=20)
    assert chart.count("<g>") == 21
    assert "other (5 tensors)" in chart
    other_share = sum(entry["share"] for entry in entries[20:])
    assert f"{100 * other_share:.1f}%" in chart
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in chart
    assert "<script" not in chart


def test_sensitivity_empty_and_zero():
    assert "No sensitivity map" in svg.sensitivity_chart([])
    chart = svg.sensitivity_chart([{"tensor": "a", "share": 0.0}])
    assert 'width="0"' in chart
    assert "0.0%" in chart


def test_forecast_markers(sample):
    forecast = sample["checks"]["quartic_forecast"]
    chart = svg.forecast_chart(
        forecast["curve"],
        tau=forecast["tau"],
        collapse_step=forecast["collapse_step"],
        collapse_is_extrapolation=True,
        planned_steps=forecast["planned_steps"],
        horizon_step=forecast["horizon_step"],
    )
    assert "collapse (extrapolation): 817" in chart
    assert "planned steps: 1,000" in chart
    assert "horizon: 600" in chart
    assert "tau = 0.1" in chart
    assert "training step (log scale)" in chart
    assert "(log scale)</text>" in chart
    assert chart.count("<polyline") == 1


def test_forecast_single_point():
    chart = svg.forecast_chart([{"step": 5, "delta_u": 0.0}], tau=None, collapse_step=None,
                               collapse_is_extrapolation=False, planned_steps=None, horizon_step=None)
    assert "<polyline" not in chart
    assert chart.count("<circle") == 1
    assert "nan" not in chart.lower()


def test_forecast_negative_values():
    curve = [{"step": step, "delta_u": value} for step, value in ((1, -0.01), (10, -0.05), (100, 0.3))]
    chart = svg.forecast_chart(curve, tau=0.1, collapse_step=50, collapse_is_extrapolation=False,
                               planned_steps=100, horizon_step=None)
    assert "linear within +-0.01, log beyond" in chart
    assert "collapse: 50" in chart
    assert "training step (log scale)" in chart


def test_forecast_empty_curve():
    chart = svg.forecast_chart([], tau=0.1, collapse_step=None, collapse_is_extrapolation=False,
                               planned_steps=10, horizon_step=None)
    assert "No forecast curve" in chart


def test_svg_well_formed(sample):
    sharpness = sample["checks"]["sharpness"]
    chart = svg.sensitivity_chart(sharpness["sensitivity"]) + svg.spectrum_chart(sharpness["spectrum"], 3, 0.9)
    page = PageParser()
    page.feed(chart)
    assert page.nesting_errors == []
    assert page.stack == []
    assert set(page.tags) <= SVG_CHILDREN | {"svg"}


# --- Writer ------------------------------------------------------------------------------


def test_writer_three_files(sample, tmp_path):
    output_dir = tmp_path / "nested" / "out"
    written = write_reports(sample, output_dir)
    assert written == {
        "json": output_dir / "report.json",
        "markdown": output_dir / "report.md",
        "html": output_dir / "report.html",
    }
    assert sorted(path.name for path in output_dir.iterdir()) == ["report.html", "report.json", "report.md"]
    for name, path in written.items():
        assert path.read_text(encoding="utf-8") == render(name, sample)


def test_writer_overwrites(sample, tmp_path):
    (tmp_path / "report.md").write_text("old", encoding="utf-8")
    write_reports(sample, tmp_path, formats=["markdown", "markdown"])
    assert sorted(path.name for path in tmp_path.iterdir()) == ["report.md"]
    assert (tmp_path / "report.md").read_text(encoding="utf-8").startswith("**RISKGATE FAIL**")


def test_writer_enum_format(sample, tmp_path):
    written = write_reports(sample, tmp_path, formats=[ReportFormat.HTML])
    assert written == {"html": tmp_path / "report.html"}


def test_writer_unknown_format(sample, tmp_path):
    with pytest.raises(
        UsageError, match=r"--format 'pdf': unknown report format; choose from json, markdown, html, sarif, junit, github"
    ):
        write_reports(sample, tmp_path / "out", formats=["json", "pdf"])
    assert not (tmp_path / "out").exists()


def test_writer_unwritable_dir(sample, tmp_path):
    blocker = tmp_path / "a-file"
    blocker.write_text("not a folder", encoding="utf-8")
    output_dir = blocker / "reports"
    with pytest.raises(EnvironmentFailure) as caught:
        write_reports(sample, output_dir)
    message = str(caught.value)
    assert message.startswith(f"{output_dir}: cannot write the report (")
    assert message.endswith("choose a writable --output-dir")
    assert "\n" not in message
    assert isinstance(caught.value.__cause__, OSError)


def test_writer_failed_replace(sample, tmp_path, monkeypatch):
    (tmp_path / "report.json").write_text("previous", encoding="utf-8")

    def failing_replace(source, target):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(os, "replace", failing_replace)
    with pytest.raises(EnvironmentFailure, match=r"report\.json: cannot write the report \(No space left on device\)"):
        write_reports(sample, tmp_path, formats=["json"])
    assert [path.name for path in tmp_path.iterdir()] == ["report.json"]
    assert (tmp_path / "report.json").read_text(encoding="utf-8") == "previous"


def test_write_atomically_text(tmp_path):
    path = tmp_path / "x.md"
    write_atomically(path, "a\nb \u00e9\n")
    assert path.read_bytes() == "a\nb \u00e9\n".encode()
    assert [entry.name for entry in tmp_path.iterdir()] == ["x.md"]


def test_write_atomically_mode(tmp_path):
    umask = os.umask(0o022)
    os.umask(umask)
    path = tmp_path / "report.json"
    write_atomically(path, "{}")
    assert path.stat().st_mode & 0o777 == 0o666 & ~umask


def test_renderer_registry():
    assert {name: renderer.filename for name, renderer in RENDERERS.items()} == {
        "json": "report.json",
        "markdown": "report.md",
        "html": "report.html",
        "sarif": "report.sarif",
        "junit": "report.junit.xml",
        "github": "report.github.txt",
    }
    assert all(renderer.name == name for name, renderer in RENDERERS.items())


# --- Imports -----------------------------------------------------------------------------


def test_import_without_torch():
    code = (
        "import sys, riskgate.report\n"
        "heavy = sorted(m for m in ('torch', 'transformers', 'datasets') if m in sys.modules)\n"
        "print(','.join(heavy))\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], cwd=REPO_ROOT, capture_output=True, text=True, timeout=60, check=False
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == ""
