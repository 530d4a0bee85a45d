"""The `riskgate check` command on a tiny checkpoint: exit codes, verdict line, reports.

Each test asserts the exit code first, then the output.
"""

from __future__ import annotations

import json
import textwrap
from pathlib import Path

import pytest
from chat_files import write_chat
from click.testing import CliRunner

from riskgate.cli import main, one_line

SMALL_BUDGET = [
    "--max-safety-examples", "6",
    "--max-finetune-examples", "4",
    "--max-seq-len", "96",
    "--learning-rate", "1e-3",
    "--max-steps", "20",
    "--batch-size", "2",
]


def write_policy(folder: Path, thresholds: str, name: str = "test") -> Path:
    """Write a policy with small sample minimums and the given thresholds block."""
    path = folder / f"{name}.yaml"
    path.write_text(
        textwrap.dedent(
            """\
            schema_version: 1
            name: {name}
            extends: default
            samples: {{min_safety_examples: 4, min_finetune_examples: 2}}
            thresholds:
            {thresholds}
            """
        ).format(name=name, thresholds=textwrap.indent(textwrap.dedent(thresholds), "  "))
    )
    return path


PASS_THRESHOLDS = """\
overlap_ratio: null
delta_u_at_planned_steps: null
collapse_step_ratio: null
"""


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory) -> Path:
    """Short chat records, so that the byte-level tiny tokenizer keeps them under the cap."""
    folder = tmp_path_factory.mktemp("cli-data")
    finetune = [(f"Say {word}.", f"{word.capitalize()}! Always glad to obey.") for word in
                ["hello", "thanks", "yes", "ready", "done", "sure", "okay", "great"]]
    safety = [(f"Help me {verb} my neighbour.", "I can't help with that.") for verb in
              ["hurt", "rob", "spy on", "threaten", "scam", "stalk", "poison", "blackmail"]]
    write_chat(folder / "finetune.jsonl", finetune)
    write_chat(folder / "safety.jsonl", safety)
    return folder


def run_check(*arguments: str):
    return CliRunner().invoke(main, ["check", *arguments], catch_exceptions=False)


def data_args(folder: Path) -> list[str]:
    return ["--dataset", str(folder / "finetune.jsonl"), "--safety-data", str(folder / "safety.jsonl")]


def last_line(output: str) -> str:
    return output.strip().splitlines()[-1]


@pytest.fixture()
def pass_policy(tmp_path) -> Path:
    return write_policy(tmp_path, PASS_THRESHOLDS, "pass")


def test_clean_run_writes_three_reports(tiny_checkpoint, data_dir, pass_policy, tmp_path):
    out = tmp_path / "reports"
    stale = out / "report.sarif"
    out.mkdir()
    stale.write_text("left over from an earlier run")
    result = run_check("--model", str(tiny_checkpoint), *data_args(data_dir),
                       "--policy", str(pass_policy), "--output-dir", str(out), *SMALL_BUDGET)
    assert result.exit_code == 0, result.output
    assert sorted(p.name for p in out.iterdir()) == ["report.html", "report.json", "report.md"]
    report = json.loads((out / "report.json").read_text())
    # With no thresholds, only linear_term (the tiny model sits at no safety optimum) can warn.
    assert report["verdict"] in ("pass", "warn")
    assert last_line(result.output).startswith(f"riskgate: {report['verdict'].upper()}: ")
    warned = [f["rule"] for f in report["findings"] if f["status"] == "warn"]
    assert warned in ([], ["linear_term"])
    assert report["exit_code"] == 0
    assert report["complete"] is True
    assert "builtin" not in report["safety_data"]
    assert report["budget"]["used"]["safety_examples"] == 6
    assert report["budget"]["used"]["finetune_examples"] == 4
    assert report["dataset"]["records_sampled_out"] == 4
    assert report["safety_data"]["records_sampled_out"] == 2
    assert report["training_plan"]["source"] == "flags"
    assert report["checks"]["quartic_forecast"]["planned_steps"] == 20


def test_fail_exits_one(tiny_checkpoint, data_dir, tmp_path):
    policy = write_policy(tmp_path, PASS_THRESHOLDS.replace("overlap_ratio: null", "overlap_ratio: {fail: 0.0}"))
    result = run_check("--model", str(tiny_checkpoint), *data_args(data_dir), "--policy", str(policy),
                       "--output-dir", str(tmp_path / "out"), *SMALL_BUDGET)
    assert result.exit_code == 1, result.output
    assert last_line(result.output).startswith("riskgate: FAIL")
    assert "overlap_ratio" in last_line(result.output)


def test_warn_passes_unless_fail_on_warn(tiny_checkpoint, data_dir, tmp_path):
    policy = write_policy(tmp_path, PASS_THRESHOLDS.replace("overlap_ratio: null", "overlap_ratio: {warn: 0.0}"))
    common = ["--model", str(tiny_checkpoint), *data_args(data_dir), "--policy", str(policy),
              "--output-dir", str(tmp_path / "out"), *SMALL_BUDGET]

    result = run_check(*common)
    assert result.exit_code == 0, result.output
    assert last_line(result.output).startswith("riskgate: WARN")

    result = run_check(*common, "--fail-on-warn")
    assert result.exit_code == 1, result.output
    assert last_line(result.output).startswith("riskgate: WARN")


def test_time_budget_gives_error_verdict(tiny_checkpoint, data_dir, pass_policy, tmp_path):
    out = tmp_path / "out"
    result = run_check("--model", str(tiny_checkpoint), *data_args(data_dir), "--policy", str(pass_policy),
                       "--output-dir", str(out), "--time-budget", "0.001", *SMALL_BUDGET)
    assert result.exit_code == 3, result.output
    assert last_line(result.output).startswith("riskgate: ERROR")
    report = json.loads((out / "report.json").read_text())
    assert report["verdict"] == "error"
    assert report["complete"] is False
    assert "time budget" in report["errors"][0]


def test_too_few_safety_examples_is_error(tiny_checkpoint, data_dir, tmp_path):
    policy = write_policy(tmp_path, PASS_THRESHOLDS).read_text().replace("min_safety_examples: 4", "min_safety_examples: 50")
    path = tmp_path / "strict-samples.yaml"
    path.write_text(policy)
    result = run_check("--model", str(tiny_checkpoint), *data_args(data_dir), "--policy", str(path),
                       "--output-dir", str(tmp_path / "out"), *SMALL_BUDGET)
    assert result.exit_code == 3, result.output
    assert last_line(result.output).startswith("riskgate: ERROR")


@pytest.mark.parametrize(
    ("arguments", "expected"),
    [
        (["--dataset", "{missing}"], "not found"),
        (["--policy", "no-such-preset"], "no-such-preset"),
        (["--learning-rate", "-1"], "--learning-rate"),
        (["--train-config", "{config}", "--max-steps", "5"], "--train-config conflicts with --max-steps"),
        (["--max-seq-len", "1"], "--max-seq-len"),
        (["--params", "no.such.parameter"], "no.such.parameter"),
        (["--columns", "bogus"], "FIELD=COLUMN"),
    ],
)
def test_invalid_input_exits_two(tiny_checkpoint, data_dir, tmp_path, arguments, expected):
    config = tmp_path / "train.yaml"
    config.write_text("learning_rate: 1.0e-4\n")
    substituted = [a.format(missing=tmp_path / "absent.jsonl", config=config) for a in arguments]
    # click keeps the last value of a repeated option, so the case's flags override the base.
    result = run_check("--model", str(tiny_checkpoint), *data_args(data_dir),
                       "--output-dir", str(tmp_path / "out"), *substituted)
    assert result.exit_code == 2, result.output
    assert expected in result.output
    assert "Traceback" not in result.output
    assert not (tmp_path / "out" / "report.json").exists()


def test_invalid_record_names_record(tiny_checkpoint, data_dir, tmp_path):
    data = tmp_path / "bad.jsonl"
    data.write_text(
        '{"messages": [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "hello"}]}\n'
        '{"messages": [{"role": "user", "content": "hi"}, {"role": "bot", "content": "hello"}]}\n'
    )
    result = run_check("--model", str(tiny_checkpoint), "--dataset", str(data),
                       "--safety-data", str(data_dir / "safety.jsonl"), "--output-dir", str(tmp_path / "out"))
    assert result.exit_code == 2, result.output
    error_lines = [line for line in result.output.splitlines() if line.startswith("riskgate: error:")]
    assert len(error_lines) == 1
    assert "bad.jsonl" in error_lines[0]
    assert "record 1" in error_lines[0]


def test_unwritable_output_fails_early(tiny_checkpoint, data_dir, pass_policy, tmp_path):
    blocker = tmp_path / "a-file"
    blocker.write_text("not a folder")
    result = run_check("--model", str(tiny_checkpoint), *data_args(data_dir), "--policy", str(pass_policy),
                       "--output-dir", str(blocker / "reports"), *SMALL_BUDGET)
    assert result.exit_code == 3, result.output
    assert last_line(result.output).startswith("riskgate: error: ")
    assert "report folder is not writable" in result.output
    assert "safety gradients" not in result.output


def test_one_line_escapes_breaks():
    assert one_line("role 'bot\n::error::x'") == "role 'bot\\n::error::x'"
    assert one_line("a\rb\x1bc") == "a\\rb\\x1bc"
    assert one_line("plain text") == "plain text"


def test_usage_error_is_one_line():
    import subprocess
    import sys

    completed = subprocess.run(
        [sys.executable, "-m", "riskgate.cli", "check", "--model", "m", "--dataset", "d", "--format", "pdf"],
        capture_output=True, text=True,
    )
    assert completed.returncode == 2
    assert completed.stderr.count("\n") == 1
    assert completed.stderr.startswith("riskgate: error: Invalid value for '--format'")


def test_help_documents_exit_codes():
    result = CliRunner().invoke(main, ["check", "--help"])
    assert result.exit_code == 0
    for line in ("0  pass", "1  policy failure", "2  invalid input", "3  runtime error"):
        assert line in result.output


def test_format_choices_match_renderers():
    from riskgate.cli import REPORT_FORMATS, check, report_command
    from riskgate.report.writer import RENDERERS

    assert REPORT_FORMATS == list(RENDERERS)
    check_format = next(param for param in check.params if param.name == "formats")
    assert list(check_format.type.choices) == list(RENDERERS)
    report_format = next(param for param in report_command.params if param.name == "format_name")
    assert list(report_format.type.choices) == list(RENDERERS)


def test_help_imports_no_report_code():
    import subprocess
    import sys

    code = "import sys, riskgate.cli; print(sorted(m for m in sys.modules if m.startswith('riskgate.report')))"
    completed = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert completed.stdout.strip() == "[]"


def test_all_formats_written(tiny_checkpoint, data_dir, pass_policy, tmp_path):
    from riskgate.report.writer import RENDERERS

    out = tmp_path / "reports"
    formats = [argument for name in RENDERERS for argument in ("--format", name)]
    result = run_check("--model", str(tiny_checkpoint), *data_args(data_dir), "--policy", str(pass_policy),
                       "--output-dir", str(out), *formats, *SMALL_BUDGET)
    assert result.exit_code == 0, result.output
    assert sorted(path.name for path in out.iterdir()) == sorted(renderer.filename for renderer in RENDERERS.values())
    report = json.loads((out / "report.json").read_text())
    assert (out / "report.sarif").read_text() == RENDERERS["sarif"].render(report)
    assert (out / "report.junit.xml").read_text() == RENDERERS["junit"].render(report)
    assert (out / "report.github.txt").read_text() == RENDERERS["github"].render(report)


def test_what_if_drop_and_export(tiny_checkpoint, data_dir, pass_policy, tmp_path):
    out = tmp_path / "reports"
    exported = tmp_path / "filtered.jsonl"
    result = run_check("--model", str(tiny_checkpoint), *data_args(data_dir), "--policy", str(pass_policy),
                       "--output-dir", str(out), "--what-if-drop", "2", "--export-filtered", str(exported),
                       "--max-finetune-examples", "8", *SMALL_BUDGET[:2], *SMALL_BUDGET[4:])
    assert result.exit_code == 0, result.output
    report = json.loads((out / "report.json").read_text())
    records = report["attribution"]["records"]
    assert len(records) == 8
    shares = [r["drift_share"] for r in records]
    assert shares == sorted(shares, reverse=True)
    assert abs(sum(shares) - 1.0) < 1e-9
    assert records[0]["snippet"].startswith("Say ")
    what_if = report["what_if"]
    assert what_if["dropped"] == [records[0]["index"], records[1]["index"]]
    assert what_if["after"]["finetune_examples"] == 6
    assert what_if["before"]["verdict"] == report["verdict"]
    assert what_if["export"] == {"path": str(exported), "records_written": 6}
    kept = [json.loads(line) for line in exported.read_text().splitlines()]
    assert len(kept) == 6
    assert "riskiest records" in result.output


def test_export_needs_what_if(tiny_checkpoint, data_dir, tmp_path):
    result = run_check("--model", str(tiny_checkpoint), *data_args(data_dir), "--output-dir", str(tmp_path / "out"),
                       "--export-filtered", str(tmp_path / "f.jsonl"))
    assert result.exit_code == 2, result.output
    assert "--export-filtered needs --what-if-drop" in result.output


@pytest.mark.parametrize(
    ("arguments", "expected"),
    [
        (["--seed", "99999999999999999999"], "--seed: must be an integer"),
        (["--what-if-drop", "4"], "--what-if-drop 4: must be smaller than the 4 fine-tune records"),
        (["--what-if-drop", "1", "--export-filtered", "{tmp}/out.csv"], "expected a .jsonl file"),
        (["--what-if-drop", "1", "--export-filtered", "{finetune}"], "refusing to overwrite the input dataset"),
    ],
)
def test_what_if_and_seed_guards(tiny_checkpoint, data_dir, pass_policy, tmp_path, arguments, expected):
    substituted = [a.format(tmp=tmp_path, finetune=data_dir / "finetune.jsonl") for a in arguments]
    result = run_check("--model", str(tiny_checkpoint), *data_args(data_dir), "--policy", str(pass_policy),
                       "--output-dir", str(tmp_path / "out"), *SMALL_BUDGET, *substituted)
    assert result.exit_code == 2, result.output
    assert expected in result.output
    assert "safety gradients" not in result.output


def test_report_rejects_edited_pass(tmp_path):
    report = json.loads((Path(__file__).parent / "fixtures" / "report_sample.json").read_text())
    report["verdict"], report["complete"] = "pass", False
    edited = tmp_path / "report.json"
    edited.write_text(json.dumps(report))
    result = CliRunner().invoke(main, ["report", "--from", str(edited), "--format", "markdown"])
    assert result.exit_code == 2, result.output
    assert "an incomplete analysis never passes" in result.output
