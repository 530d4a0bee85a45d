"""Tests of the policy layer: presets, `extends`, validation problems, evaluation, exit codes."""

from __future__ import annotations

import dataclasses
import hashlib
import math
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from riskgate.errors import ExitCode, PolicyError
from riskgate.policy import (
    Direction,
    FindingStatus,
    Metrics,
    Policy,
    Threshold,
    Verdict,
    evaluate,
    exit_code_for,
    load_policy,
    presets_dir,
)

REPO_ROOT = Path(__file__).resolve().parent.parent

VALID_ROOT = """\
schema_version: 1
name: custom
subspace: {rho: 0.8, k_max: 16, orthogonality_level: 0.2}
forecast: {tau: 0.1}
thresholds:
  overlap_ratio: {warn: 0.3, fail: 0.6}
samples: {min_safety_examples: 10, min_finetune_examples: 5}
"""


def write(folder: Path, name: str, text: str) -> Path:
    path = folder / name
    path.write_text(textwrap.dedent(text), encoding="utf-8")
    return path


def problems_of(spec: str | Path) -> tuple[str, list[str]]:
    with pytest.raises(PolicyError) as caught:
        load_policy(spec)
    return str(caught.value), caught.value.problems


def single_problem(spec: str | Path) -> str:
    _, problems = problems_of(spec)
    assert len(problems) == 1, problems
    return problems[0]


# ---------------------------------------------------------------------------------------------
# presets and extends


def test_preset_default_values() -> None:
    policy = load_policy("default")

    assert policy.name == "default"
    assert policy.source == "preset:default"
    assert policy.extends_chain == ("preset:default",)
    assert policy.rho == 0.9
    assert policy.k_max == 32
    assert policy.orthogonality_level == 0.1
    assert policy.tau == 0.05
    assert policy.min_safety_examples == 32
    assert policy.min_finetune_examples == 8
    assert policy.threshold("overlap_ratio") == Threshold("overlap_ratio", 0.3, 0.6, Direction.MAX)
    assert policy.threshold("collapse_step_ratio") == Threshold(
        "collapse_step_ratio", 1.75, 1.0, Direction.MIN
    )
    assert policy.threshold("delta_u_at_planned_steps") == Threshold(
        "delta_u_at_planned_steps", 0.01, 0.05, Direction.MAX
    )
    assert policy.threshold("gamma_hat") is None
    assert policy.threshold("collapse_step") is None


def test_preset_sha256_of_file() -> None:
    policy = load_policy("default")
    expected = hashlib.sha256((REPO_ROOT / "policies" / "default.yaml").read_bytes()).hexdigest()
    assert policy.sha256 == expected


def test_preset_strict_extends_default() -> None:
    policy = load_policy("strict")

    assert policy.extends_chain == ("preset:strict", "preset:default")
    assert policy.tau == 0.025
    assert policy.min_safety_examples == 64
    # Inherited from default unchanged.
    assert policy.min_finetune_examples == 8
    assert policy.rho == 0.9
    assert policy.k_max == 32
    assert policy.threshold("overlap_ratio") == Threshold("overlap_ratio", 0.2, 0.4, Direction.MAX)
    assert policy.threshold("collapse_step_ratio") == Threshold(
        "collapse_step_ratio", 2.0, 1.0, Direction.MIN
    )
    assert policy.threshold("delta_u_at_planned_steps").fail == 0.025
    # gamma_hat is scale- and optimizer-dependent, so no preset gates it.
    assert policy.threshold("gamma_hat") is None


def test_preset_permissive_extends_default() -> None:
    policy = load_policy("permissive")

    assert policy.extends_chain == ("preset:permissive", "preset:default")
    assert policy.tau == 0.1
    assert policy.min_safety_examples == 16
    assert policy.min_finetune_examples == 4
    assert policy.threshold("overlap_ratio") == Threshold("overlap_ratio", 0.5, 0.8, Direction.MAX)
    assert policy.threshold("collapse_step_ratio") == Threshold(
        "collapse_step_ratio", 1.0, 0.6, Direction.MIN
    )
    assert policy.threshold("delta_u_at_planned_steps") == Threshold(
        "delta_u_at_planned_steps", 0.05, 0.1, Direction.MAX
    )


def test_preset_fail_delta_u_equals_tau() -> None:
    for name in ("default", "strict", "permissive"):
        policy = load_policy(name)
        assert policy.threshold("delta_u_at_planned_steps").fail == policy.tau, name


def test_policy_to_dict_layout() -> None:
    data = load_policy("strict").to_dict()

    assert data["schema_version"] == 1
    assert data["source"] == "preset:strict"
    assert data["extends_chain"] == ["preset:strict", "preset:default"]
    assert data["subspace"] == {"rho": 0.9, "k_max": 32, "orthogonality_level": 0.1}
    assert data["forecast"] == {"tau": 0.025}
    assert "gamma_hat" not in data["thresholds"]
    assert data["thresholds"]["overlap_ratio"] == {"warn": 0.2, "fail": 0.4, "direction": "max"}
    assert data["thresholds"]["collapse_step_ratio"]["direction"] == "min"
    assert data["samples"] == {"min_safety_examples": 64, "min_finetune_examples": 8}


def test_presets_dir_source_checkout(tmp_path: Path) -> None:
    assert presets_dir() == REPO_ROOT / "policies"

    package = tmp_path / "riskgate" / "policy"
    package.mkdir(parents=True)
    assert presets_dir(package) == tmp_path / "policies"

    (package / "presets").mkdir()
    assert presets_dir(package) == package / "presets"


def test_file_policy_fields(tmp_path: Path) -> None:
    path = write(tmp_path, "custom.yaml", VALID_ROOT)
    policy = load_policy(path)

    assert policy.name == "custom"
    assert policy.source == str(path)
    assert policy.extends_chain == (str(path),)
    assert policy.sha256 == hashlib.sha256(path.read_bytes()).hexdigest()
    assert policy.rho == 0.8
    assert policy.k_max == 16
    assert policy.thresholds == (Threshold("overlap_ratio", 0.3, 0.6, Direction.MAX),)


def test_file_name_defaults_to_stem(tmp_path: Path) -> None:
    path = write(tmp_path, "team-gate.yaml", VALID_ROOT.replace("name: custom\n", ""))
    assert load_policy(path).name == "team-gate"


def test_extends_preset_merges_keys(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        "child.yaml",
        """\
        schema_version: 1
        name: child
        extends: strict
        subspace: {k_max: 8}
        thresholds:
          overlap_ratio: {fail: 0.5}
          gamma_hat: null
          collapse_step: {warn: 1000, fail: 200}
        """,
    )
    policy = load_policy(path)

    assert policy.extends_chain == (str(path), "preset:strict", "preset:default")
    assert policy.k_max == 8
    assert policy.rho == 0.9
    assert policy.tau == 0.025
    assert policy.min_safety_examples == 64
    # A child's threshold replaces the parent's whole entry: no warn is inherited.
    assert policy.threshold("overlap_ratio") == Threshold("overlap_ratio", None, 0.5, Direction.MAX)
    assert policy.threshold("gamma_hat") is None
    assert policy.threshold("collapse_step") == Threshold("collapse_step", 1000, 200, Direction.MIN)
    assert policy.threshold("collapse_step_ratio").fail == 1.0


def test_extends_relative_path(tmp_path: Path) -> None:
    base = write(tmp_path, "base.yaml", VALID_ROOT)
    (tmp_path / "teams").mkdir()
    child = write(
        tmp_path / "teams",
        "child.yaml",
        """\
        schema_version: 1
        extends: ../base.yaml
        forecast: {tau: 0.3}
        """,
    )
    policy = load_policy(child)

    assert policy.name == "child"
    assert policy.tau == 0.3
    assert policy.rho == 0.8
    assert len(policy.extends_chain) == 2
    assert Path(policy.extends_chain[1]).resolve() == base.resolve()


# ---------------------------------------------------------------------------------------------
# invalid policies: each problem names the key path


@pytest.mark.parametrize(
    ("text", "key_path", "words"),
    [
        (VALID_ROOT + "colour: red\n", "colour", "unknown key"),
        (
            VALID_ROOT.replace("k_max: 16", "k_max: 16, rank: 4"),
            "subspace.rank",
            "unknown key",
        ),
        (VALID_ROOT.replace("{tau: 0.1}", "{tau: 0.1, tua: 1}"), "forecast.tua", "unknown key"),
        (
            VALID_ROOT.replace("min_finetune_examples: 5", "min_finetune_examples: 5, extra: 1"),
            "samples.extra",
            "unknown key",
        ),
        (
            VALID_ROOT.replace("overlap_ratio:", "overlap_ration:"),
            "thresholds.overlap_ration",
            "did you mean 'overlap_ratio'",
        ),
        (
            VALID_ROOT.replace("{warn: 0.3, fail: 0.6}", "{wran: 0.3, fail: 0.6}"),
            "thresholds.overlap_ratio.wran",
            "unknown key",
        ),
    ],
)
def test_invalid_unknown_key(tmp_path: Path, text: str, key_path: str, words: str) -> None:
    path = write(tmp_path, "policy.yaml", text)
    problem = single_problem(path)

    assert problem.startswith(f"{path}: {key_path}: ")
    assert words in problem


@pytest.mark.parametrize(
    ("old", "new", "key_path", "words"),
    [
        ("rho: 0.8", "rho: true", "subspace.rho", "expected a number, got true (a boolean)"),
        ("rho: 0.8", "rho: '0.8'", "subspace.rho", "expected a number, got '0.8' (a string)"),
        ("k_max: 16", "k_max: 16.0", "subspace.k_max", "expected an integer"),
        ("k_max: 16", "k_max: yes", "subspace.k_max", "expected an integer, got true"),
        ("tau: 0.1", "tau: [0.1]", "forecast.tau", "expected a number, got a list"),
        ("tau: 0.1", "tau: .nan", "forecast.tau", "expected a finite number"),
        ("warn: 0.3", "warn: high", "thresholds.overlap_ratio.warn", "expected a number"),
        (
            "min_safety_examples: 10",
            "min_safety_examples: false",
            "samples.min_safety_examples",
            "expected an integer",
        ),
        ("name: custom", "name: 12", "name", "expected a non-empty string"),
        (
            "overlap_ratio: {warn: 0.3, fail: 0.6}",
            "overlap_ratio: 0.5",
            "thresholds.overlap_ratio",
            "expected a mapping",
        ),
        (
            "forecast: {tau: 0.1}",
            "forecast: [0.1]",
            "forecast",
            "expected a mapping",
        ),
    ],
)
def test_invalid_type(tmp_path: Path, old: str, new: str, key_path: str, words: str) -> None:
    assert old in VALID_ROOT
    path = write(tmp_path, "policy.yaml", VALID_ROOT.replace(old, new))
    problem = single_problem(path)

    assert problem.startswith(f"{path}: {key_path}: ")
    assert words in problem


@pytest.mark.parametrize(
    ("old", "new", "key_path", "words"),
    [
        ("rho: 0.8", "rho: 0", "subspace.rho", "must be in (0, 1], got 0"),
        ("rho: 0.8", "rho: 1.5", "subspace.rho", "must be in (0, 1], got 1.5"),
        ("k_max: 16", "k_max: 0", "subspace.k_max", "must be >= 1, got 0"),
        (
            "orthogonality_level: 0.2",
            "orthogonality_level: 1.2",
            "subspace.orthogonality_level",
            "must be in (0, 1]",
        ),
        ("tau: 0.1", "tau: -0.1", "forecast.tau", "must be > 0, got -0.1"),
        ("fail: 0.6", "fail: 1.2", "thresholds.overlap_ratio.fail", "must be in [0, 1], got 1.2"),
        ("warn: 0.3", "warn: -0.3", "thresholds.overlap_ratio.warn", "must be in [0, 1], got -0.3"),
        (
            "min_safety_examples: 10",
            "min_safety_examples: 0",
            "samples.min_safety_examples",
            "must be >= 1",
        ),
    ],
)
def test_invalid_range(tmp_path: Path, old: str, new: str, key_path: str, words: str) -> None:
    assert old in VALID_ROOT
    path = write(tmp_path, "policy.yaml", VALID_ROOT.replace(old, new))
    problem = single_problem(path)

    assert problem.startswith(f"{path}: {key_path}: ")
    assert words in problem


def test_invalid_negative_threshold(tmp_path: Path) -> None:
    text = VALID_ROOT.replace("thresholds:\n", "thresholds:\n  gamma_hat: {warn: -1}\n")
    path = write(tmp_path, "policy.yaml", text)
    problem = single_problem(path)

    assert problem == f"{path}: thresholds.gamma_hat.warn: must be >= 0, got -1"


@pytest.mark.parametrize(
    ("entry", "key_path", "words"),
    [
        ("overlap_ratio: {warn: 0.7, fail: 0.6}", "thresholds.overlap_ratio", "warn 0.7 must be <= fail 0.6"),
        (
            "collapse_step_ratio: {warn: 1.0, fail: 2.0}",
            "thresholds.collapse_step_ratio",
            "warn 1.0 must be >= fail 2.0",
        ),
        ("collapse_step: {warn: 100, fail: 200}", "thresholds.collapse_step", "warn 100 must be >= fail 200"),
        ("gamma_hat: {}", "thresholds.gamma_hat", "set warn, fail or both"),
    ],
)
def test_invalid_threshold_order(tmp_path: Path, entry: str, key_path: str, words: str) -> None:
    text = VALID_ROOT.replace("  overlap_ratio: {warn: 0.3, fail: 0.6}\n", f"  {entry}\n")
    path = write(tmp_path, "policy.yaml", text)
    problem = single_problem(path)

    assert problem.startswith(f"{path}: {key_path}: ")
    assert words in problem


def test_threshold_order_equal_allowed(tmp_path: Path) -> None:
    text = VALID_ROOT.replace("{warn: 0.3, fail: 0.6}", "{warn: 0.5, fail: 0.5}")
    policy = load_policy(write(tmp_path, "policy.yaml", text))
    assert policy.threshold("overlap_ratio") == Threshold("overlap_ratio", 0.5, 0.5, Direction.MAX)


def test_invalid_three_problems_listed(tmp_path: Path) -> None:
    text = (
        VALID_ROOT.replace("rho: 0.8", "rho: 2")
        .replace("tau: 0.1", "tau: fast")
        .replace("{warn: 0.3, fail: 0.6}", "{warn: 0.9, fail: 0.6}")
    )
    path = write(tmp_path, "policy.yaml", text)
    message, problems = problems_of(path)

    assert len(problems) == 3
    assert any(p.startswith(f"{path}: subspace.rho: ") for p in problems)
    assert any(p.startswith(f"{path}: forecast.tau: ") for p in problems)
    assert any(p.startswith(f"{path}: thresholds.overlap_ratio: ") for p in problems)
    assert message.startswith(f"{path}: invalid policy: ")
    assert message.endswith(" (and 2 more)")
    assert "\n" not in message


def test_invalid_message_one_problem(tmp_path: Path) -> None:
    path = write(tmp_path, "policy.yaml", VALID_ROOT.replace("k_max: 16", "k_max: 0"))
    message, _ = problems_of(path)
    assert message == f"{path}: invalid policy: subspace.k_max: must be >= 1, got 0"


def test_invalid_error_exit_code(tmp_path: Path) -> None:
    path = write(tmp_path, "policy.yaml", VALID_ROOT.replace("k_max: 16", "k_max: 0"))
    with pytest.raises(PolicyError) as caught:
        load_policy(path)
    assert caught.value.exit_code is ExitCode.INVALID_INPUT


def test_invalid_schema_version_missing(tmp_path: Path) -> None:
    path = write(tmp_path, "policy.yaml", VALID_ROOT.replace("schema_version: 1\n", ""))
    problem = single_problem(path)
    assert problem.startswith(f"{path}: schema_version: missing")


@pytest.mark.parametrize(
    ("value", "words"),
    [("2", "unsupported version 2"), ("'1'", "expected the integer 1"), ("true", "expected the integer 1")],
)
def test_invalid_schema_version_value(tmp_path: Path, value: str, words: str) -> None:
    text = VALID_ROOT.replace("schema_version: 1", f"schema_version: {value}")
    problem = single_problem(write(tmp_path, "policy.yaml", text))
    assert "schema_version: " in problem
    assert words in problem


def test_invalid_yaml_line_number(tmp_path: Path) -> None:
    text = "schema_version: 1\nsubspace:\n  rho: 0.9\n  k_max: [1, 2\nforecast: {tau: 0.1}\n"
    path = write(tmp_path, "policy.yaml", text)
    problem = single_problem(path)

    assert problem.startswith(f"{path}: malformed YAML: line 5, column ")


def test_invalid_yaml_duplicate_key(tmp_path: Path) -> None:
    path = write(tmp_path, "policy.yaml", VALID_ROOT + "forecast: {tau: 0.2}\n")
    problem = single_problem(path)

    assert problem.startswith(f"{path}: malformed YAML: line 8, column 1: ")
    assert "duplicate key 'forecast'" in problem


@pytest.mark.parametrize(("text", "words"), [("- 1\n- 2\n", "got a list"), ("", "the file is empty")])
def test_invalid_top_level(tmp_path: Path, text: str, words: str) -> None:
    path = write(tmp_path, "policy.yaml", text)
    problem = single_problem(path)
    assert problem.startswith(f"{path}: ")
    assert words in problem


def test_invalid_missing_settings(tmp_path: Path) -> None:
    path = write(tmp_path, "policy.yaml", "schema_version: 1\nforecast: {tau: 0.1}\n")
    _, problems = problems_of(path)

    assert f"{path}: subspace.rho: missing; set it in this file or in a policy it extends" in problems
    assert any(p.startswith(f"{path}: samples.min_finetune_examples: missing") for p in problems)
    assert len(problems) == 5


def test_invalid_extends_cycle(tmp_path: Path) -> None:
    a = write(tmp_path, "a.yaml", "schema_version: 1\nextends: b.yaml\n")
    b = write(tmp_path, "b.yaml", "schema_version: 1\nextends: a.yaml\n")
    problem = single_problem(a)

    assert problem.startswith(f"{b}: extends: cycle ")
    assert f"{a} -> {b} -> {a}" in problem


def test_invalid_extends_self(tmp_path: Path) -> None:
    a = write(tmp_path, "a.yaml", "schema_version: 1\nextends: ./a.yaml\n")
    problem = single_problem(a)
    assert problem.startswith(f"{a}: extends: cycle ")


def test_invalid_extends_missing_preset(tmp_path: Path) -> None:
    path = write(tmp_path, "policy.yaml", "schema_version: 1\nextends: strikt\n")
    problem = single_problem(path)

    assert problem.startswith(f"{path}: extends: unknown preset 'strikt'")
    assert "did you mean 'strict'" in problem


def test_invalid_extends_missing_file(tmp_path: Path) -> None:
    path = write(tmp_path, "policy.yaml", "schema_version: 1\nextends: base.yaml\n")
    problem = single_problem(path)
    assert problem == f"{path}: extends: policy file {tmp_path / 'base.yaml'} not found"


def test_invalid_parent_problems_named(tmp_path: Path) -> None:
    parent = write(tmp_path, "base.yaml", VALID_ROOT.replace("rho: 0.8", "rho: 3"))
    child = write(tmp_path, "child.yaml", "schema_version: 1\nextends: base.yaml\ncolour: red\n")
    message, problems = problems_of(child)

    assert problems == [
        f"{child}: colour: unknown key; expected one of: schema_version, name, description, "
        "extends, subspace, forecast, thresholds, samples",
        f"{parent}: subspace.rho: must be in (0, 1], got 3",
    ]
    assert message.startswith(f"{child}: invalid policy: colour: unknown key")
    assert message.endswith("(and 1 more)")


def test_invalid_spec_not_found() -> None:
    message, problems = problems_of("defualt")
    assert message.startswith("defualt: policy file not found")
    assert "default, strict, permissive" in message
    assert problems == [message]


# ---------------------------------------------------------------------------------------------
# evaluate


def make_policy(**changes) -> Policy:
    policy = Policy(
        name="test",
        description="",
        source="test",
        sha256="0" * 64,
        extends_chain=("test",),
        rho=0.9,
        k_max=32,
        orthogonality_level=0.1,
        tau=0.1,
        thresholds=(
            Threshold("overlap_ratio", 0.3, 0.6, Direction.MAX),
            Threshold("delta_u_at_planned_steps", 0.05, 0.1, Direction.MAX),
            Threshold("collapse_step_ratio", 2.0, 1.0, Direction.MIN),
        ),
        min_safety_examples=32,
        min_finetune_examples=8,
    )
    return dataclasses.replace(policy, **changes)


def make_metrics(**changes) -> Metrics:
    metrics = Metrics(
        overlap_ratio=0.1,
        gamma_hat=0.5,
        delta_u_at_planned_steps=0.01,
        collapse_step=None,
        collapse_search_limit=10_000,
        planned_steps=1000,
        safety_examples=64,
        finetune_examples=16,
    )
    return dataclasses.replace(metrics, **changes)


def finding(evaluation, rule: str):
    matches = [f for f in evaluation.findings if f.rule == rule]
    assert len(matches) == 1, [f.rule for f in evaluation.findings]
    return matches[0]


def test_evaluate_pass() -> None:
    evaluation = evaluate(make_policy(), make_metrics())

    assert evaluation.verdict is Verdict.PASS
    assert evaluation.reason == "all 7 rules within thresholds"
    assert [f.rule for f in evaluation.findings] == [
        "analysis_complete",
        "min_safety_examples",
        "min_finetune_examples",
        "overlap_ratio",
        "delta_u_at_planned_steps",
        "collapse_step_ratio",
        "linear_term",
    ]
    overlap = finding(evaluation, "overlap_ratio")
    assert overlap.status is FindingStatus.PASS
    assert overlap.level == "info"
    assert overlap.threshold == 0.3
    assert overlap.message == "overlap_ratio 0.1 < warn threshold 0.3"


def test_evaluate_pass_threshold_fail_only() -> None:
    policy = make_policy(thresholds=(Threshold("overlap_ratio", None, 0.6, Direction.MAX),))
    overlap = finding(evaluate(policy, make_metrics()), "overlap_ratio")

    assert overlap.status is FindingStatus.PASS
    assert overlap.threshold == 0.6
    assert overlap.message == "overlap_ratio 0.1 < fail threshold 0.6"


def test_evaluate_warn() -> None:
    evaluation = evaluate(make_policy(), make_metrics(overlap_ratio=0.45))
    overlap = finding(evaluation, "overlap_ratio")

    assert evaluation.verdict is Verdict.WARN
    assert overlap.status is FindingStatus.WARN
    assert overlap.level == "warn"
    assert overlap.threshold == 0.3
    assert evaluation.reason == "overlap_ratio 0.45 >= warn threshold 0.3, fail threshold 0.6"


def test_evaluate_warn_at_threshold() -> None:
    evaluation = evaluate(make_policy(), make_metrics(overlap_ratio=0.3))
    assert finding(evaluation, "overlap_ratio").status is FindingStatus.WARN


def test_evaluate_fail() -> None:
    evaluation = evaluate(make_policy(), make_metrics(overlap_ratio=0.71))
    overlap = finding(evaluation, "overlap_ratio")

    assert evaluation.verdict is Verdict.FAIL
    assert evaluation.reason == "overlap_ratio 0.71 >= fail threshold 0.6"
    assert overlap.status is FindingStatus.FAIL
    assert overlap.level == "fail"
    assert overlap.threshold == 0.6
    assert overlap.warn_threshold == 0.3
    assert overlap.fail_threshold == 0.6
    assert overlap.value == 0.71


def test_evaluate_fail_counts_more() -> None:
    evaluation = evaluate(
        make_policy(), make_metrics(overlap_ratio=0.9, delta_u_at_planned_steps=0.5)
    )
    assert evaluation.verdict is Verdict.FAIL
    assert evaluation.reason == "overlap_ratio 0.9 >= fail threshold 0.6 (and 1 more)"


def test_evaluate_fail_beats_warn() -> None:
    evaluation = evaluate(
        make_policy(), make_metrics(overlap_ratio=0.4, delta_u_at_planned_steps=0.2)
    )
    assert evaluation.verdict is Verdict.FAIL
    assert evaluation.reason.startswith("delta_u_at_planned_steps 0.2 >= fail threshold 0.1")


def test_evaluate_error_beats_fail() -> None:
    evaluation = evaluate(make_policy(), make_metrics(overlap_ratio=0.9, safety_examples=4))
    assert evaluation.verdict is Verdict.ERROR
    assert evaluation.reason.startswith("safety_examples 4 < minimum 32")


@pytest.mark.parametrize(("value", "shown"), [(None, "None"), (math.nan, "NaN")])
def test_evaluate_metric_not_computed(value: float | None, shown: str) -> None:
    evaluation = evaluate(make_policy(), make_metrics(delta_u_at_planned_steps=value))
    delta_u = finding(evaluation, "delta_u_at_planned_steps")

    assert evaluation.verdict is Verdict.ERROR
    assert delta_u.status is FindingStatus.ERROR
    assert delta_u.level == "fail"
    assert delta_u.message == f"delta_u_at_planned_steps not computed (value is {shown})"
    assert delta_u.to_dict()["value"] is None


def test_evaluate_unconfigured_metric_ignored() -> None:
    # gamma_hat has no threshold in this policy, so a missing value is no error.
    evaluation = evaluate(make_policy(), make_metrics(gamma_hat=None))
    assert evaluation.verdict is Verdict.PASS
    assert all(f.rule != "gamma_hat" for f in evaluation.findings)


def test_evaluate_collapse_none_passes() -> None:
    policy = make_policy(
        thresholds=(
            Threshold("collapse_step", 1000, 200, Direction.MIN),
            Threshold("collapse_step_ratio", 2.0, 1.0, Direction.MIN),
        )
    )
    evaluation = evaluate(policy, make_metrics(collapse_step=None, collapse_search_limit=10_000))
    step = finding(evaluation, "collapse_step")
    ratio = finding(evaluation, "collapse_step_ratio")

    assert evaluation.verdict is Verdict.PASS
    assert step.status is FindingStatus.PASS
    assert step.value is None
    assert step.message == "collapse_step: no collapse forecast within the searched 10000 steps"
    assert ratio.status is FindingStatus.PASS
    assert ratio.threshold == 2.0


def test_evaluate_collapse_none_short_search() -> None:
    policy = make_policy(thresholds=(Threshold("collapse_step", 1000, 200, Direction.MIN),))
    step = finding(evaluate(policy, make_metrics(collapse_search_limit=100)), "collapse_step")

    assert step.status is FindingStatus.PASS
    assert "ends before step 1000" in step.message


@pytest.mark.parametrize(
    ("collapse_step", "status", "threshold"),
    [
        (500, FindingStatus.FAIL, 1.0),
        (1000, FindingStatus.FAIL, 1.0),
        (1500, FindingStatus.WARN, 2.0),
        (2000, FindingStatus.WARN, 2.0),
        (2500, FindingStatus.PASS, 2.0),
    ],
)
def test_evaluate_collapse_ratio(collapse_step: int, status: FindingStatus, threshold: float) -> None:
    evaluation = evaluate(make_policy(), make_metrics(collapse_step=collapse_step))
    ratio = finding(evaluation, "collapse_step_ratio")

    assert ratio.status is status
    assert ratio.value == collapse_step / 1000
    assert ratio.threshold == threshold


def test_evaluate_collapse_ratio_message() -> None:
    evaluation = evaluate(make_policy(), make_metrics(collapse_step=500))
    assert evaluation.reason == (
        "collapse_step_ratio 0.5 <= fail threshold 1 (collapse forecast at step 500, 1000 steps planned)"
    )


def test_evaluate_collapse_step_min_direction() -> None:
    policy = make_policy(thresholds=(Threshold("collapse_step", 1000, 200, Direction.MIN),))

    fail = finding(evaluate(policy, make_metrics(collapse_step=200)), "collapse_step")
    warn = finding(evaluate(policy, make_metrics(collapse_step=999)), "collapse_step")
    passed = finding(evaluate(policy, make_metrics(collapse_step=1001)), "collapse_step")

    assert fail.status is FindingStatus.FAIL
    assert fail.message == "collapse_step 200 <= fail threshold 200"
    assert warn.status is FindingStatus.WARN
    assert passed.status is FindingStatus.PASS
    assert passed.message == "collapse_step 1001 > warn threshold 1000"


def test_evaluate_zero_planned_steps() -> None:
    evaluation = evaluate(make_policy(), make_metrics(planned_steps=0, collapse_step=10))
    ratio = finding(evaluation, "collapse_step_ratio")

    assert evaluation.verdict is Verdict.ERROR
    assert ratio.status is FindingStatus.ERROR
    assert "planned_steps is 0" in ratio.message


@pytest.mark.parametrize(
    ("field", "rule", "minimum"),
    [("safety_examples", "min_safety_examples", 32), ("finetune_examples", "min_finetune_examples", 8)],
)
def test_evaluate_sample_minimum(field: str, rule: str, minimum: int) -> None:
    below = evaluate(make_policy(), make_metrics(**{field: minimum - 1}))
    at = evaluate(make_policy(), make_metrics(**{field: minimum}))
    below_finding = finding(below, rule)

    assert below.verdict is Verdict.ERROR
    assert below_finding.status is FindingStatus.ERROR
    assert below_finding.value == minimum - 1
    assert below_finding.threshold == minimum
    assert below.reason.startswith(f"{field} {minimum - 1} < minimum {minimum}")
    assert at.verdict is Verdict.PASS
    assert finding(at, rule).status is FindingStatus.PASS


def test_evaluate_incomplete_never_passes() -> None:
    metrics = make_metrics(complete=False, incomplete_reason="time budget of 600 s exhausted")
    evaluation = evaluate(make_policy(), metrics)
    complete = finding(evaluation, "analysis_complete")

    assert evaluation.verdict is Verdict.ERROR
    assert complete.status is FindingStatus.ERROR
    assert evaluation.reason == (
        "analysis_complete: analysis incomplete: time budget of 600 s exhausted"
    )


def test_evaluate_linear_term_informs() -> None:
    evaluation = evaluate(make_policy(), make_metrics(linear_dominates=True))
    linear = finding(evaluation, "linear_term")

    assert linear.status is FindingStatus.PASS
    assert linear.level == "info"
    assert "does not sit at a safety optimum (informational)" in linear.message
    assert evaluation.verdict is evaluate(make_policy(), make_metrics(linear_dominates=False)).verdict


def test_evaluate_missing_forecast_not_passed() -> None:
    evaluation = evaluate(
        make_policy(),
        make_metrics(collapse_search_limit=None, complete=False, incomplete_reason="time budget exhausted"),
    )

    assert finding(evaluation, "collapse_step_ratio").status is FindingStatus.ERROR
    assert "not computed" in finding(evaluation, "collapse_step_ratio").message
    assert finding(evaluation, "linear_term").status is FindingStatus.ERROR
    assert evaluation.verdict is Verdict.ERROR


def test_evaluation_to_dict() -> None:
    data = evaluate(make_policy(), make_metrics(overlap_ratio=0.71)).to_dict()

    assert data["verdict"] == "fail"
    assert data["reason"] == "overlap_ratio 0.71 >= fail threshold 0.6"
    overlap = next(f for f in data["findings"] if f["rule"] == "overlap_ratio")
    assert overlap == {
        "rule": "overlap_ratio",
        "metric": "overlap_ratio",
        "value": 0.71,
        "warn_threshold": 0.3,
        "fail_threshold": 0.6,
        "threshold": 0.6,
        "level": "fail",
        "status": "fail",
        "message": "overlap_ratio 0.71 >= fail threshold 0.6",
    }


def test_evaluate_preset_end_to_end() -> None:
    metrics = make_metrics(overlap_ratio=0.45, collapse_step=1500)
    assert evaluate(load_policy("default"), metrics).verdict is Verdict.WARN
    assert evaluate(load_policy("strict"), metrics).verdict is Verdict.FAIL
    assert evaluate(load_policy("permissive"), metrics).verdict is Verdict.PASS


@pytest.mark.parametrize(
    ("verdict", "fail_on_warn", "code"),
    [
        (Verdict.PASS, False, ExitCode.PASS),
        (Verdict.PASS, True, ExitCode.PASS),
        (Verdict.WARN, False, ExitCode.PASS),
        (Verdict.WARN, True, ExitCode.POLICY_FAILURE),
        (Verdict.FAIL, False, ExitCode.POLICY_FAILURE),
        (Verdict.FAIL, True, ExitCode.POLICY_FAILURE),
        (Verdict.ERROR, False, ExitCode.RUNTIME_ERROR),
        (Verdict.ERROR, True, ExitCode.RUNTIME_ERROR),
    ],
)
def test_exit_code_for(verdict: Verdict, fail_on_warn: bool, code: ExitCode) -> None:
    assert exit_code_for(verdict, fail_on_warn) is code


def test_import_without_torch() -> None:
    script = (
        "import sys, riskgate.policy; "
        "riskgate.policy.load_policy('strict'); "
        "print(sorted(m for m in ('torch', 'transformers', 'datasets') if m in sys.modules))"
    )
    result = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, cwd=REPO_ROOT, check=True
    )
    assert result.stdout.strip() == "[]"
