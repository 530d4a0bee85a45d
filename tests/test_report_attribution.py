"""Attribution and what-if sections in the Markdown and HTML reports, with hostile snippets."""

from __future__ import annotations

import copy
import json
from html.parser import HTMLParser
from pathlib import Path

from riskgate.report.html import HtmlRenderer
from riskgate.report.markdown import MarkdownRenderer

FIXTURE = Path(__file__).parent / "fixtures" / "report_sample.json"
HOSTILE = "<script>alert(1)</script> | `x` @team ::error::boom"


def sample_with_attribution() -> dict:
    report = copy.deepcopy(json.loads(FIXTURE.read_text()))
    records = [
        {"index": i, "snippet": HOSTILE if i == 7 else f"request {i}", "drift_share": share,
         "epsilon_share": 0.1, "epsilon_fisher_share": 0.1, "gamma_share": share / 2,
         "projected_norm": 1.0, "overlap_ratio": 0.2, "cosine_safety": -0.1}
        for i, share in ((7, 0.6), (2, 0.3), (5, 0.1))
    ]
    report["attribution"] = {"ranked_by": "drift_share", "records_scored": 3, "top_share": 1.0, "records": records}
    report["what_if"] = {
        "dropped": [7],
        "before": {"verdict": "fail", "overlap_ratio": 0.7, "gamma_hat": 2.0, "delta_u_at_planned_steps": 0.3,
                   "collapse_step": 40, "finetune_examples": 3},
        "after": {"verdict": "pass", "overlap_ratio": 0.1, "gamma_hat": 0.5, "delta_u_at_planned_steps": 0.01,
                  "collapse_step": None, "finetune_examples": 2},
        "export": {"path": "filtered|<b>.jsonl", "records_written": 2},
    }
    return report


def section(markdown: str, title: str) -> list[str]:
    lines = markdown.splitlines()
    start = lines.index(title)
    end = next((i for i in range(start + 1, len(lines)) if lines[i].startswith("### ")), len(lines))
    return lines[start:end]


def test_markdown_attribution_table():
    markdown = MarkdownRenderer().render(sample_with_attribution())
    rows = [line for line in section(markdown, "### Riskiest records") if line.startswith("| #")]
    assert [row.split(" | ")[0] for row in rows] == ["| #7", "| #2", "| #5"]
    # Every row keeps the header's column count: the pipe in the snippet is escaped.
    assert all(row.count(" | ") == 5 for row in rows)
    assert "<script>" not in markdown
    assert "&lt;script&gt;" in rows[0]
    assert "60.0%" in rows[0]
    assert not any(line.startswith("::") for line in markdown.splitlines())


def test_markdown_what_if_table():
    markdown = MarkdownRenderer().render(sample_with_attribution())
    lines = section(markdown, "### What if the riskiest records are dropped")
    assert "| verdict | fail | pass |" in lines
    assert "| finetune\\_examples | 3 | 2 |" in lines
    assert any("filtered&#124;&lt;b&gt;.jsonl" in line for line in lines)


def test_html_attribution_escaped():
    html = HtmlRenderer().render(sample_with_attribution())

    class Collector(HTMLParser):
        def __init__(self):
            super().__init__()
            self.tags = []
            self.text = []

        def handle_starttag(self, tag, attrs):
            self.tags.append(tag)

        def handle_data(self, data):
            self.text.append(data)

    collector = Collector()
    collector.feed(html)
    assert "script" not in collector.tags
    assert "b" not in collector.tags
    assert HOSTILE in "".join(collector.text)
    assert "Riskiest records" in html
    assert "What if the riskiest records are dropped" in html


def test_sections_absent_without_attribution():
    report = json.loads(FIXTURE.read_text())
    assert "Riskiest records" not in MarkdownRenderer().render(report)
    assert "Riskiest records" not in HtmlRenderer().render(report)
