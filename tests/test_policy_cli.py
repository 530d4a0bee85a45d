"""`riskgate policy validate` and `riskgate policy show`, and the shipped policy JSON Schema.

Each CLI test asserts the exit code first, then the output.
"""

from __future__ import annotations

import json
import textwrap
from pathlib import Path

import pytest
import yaml
from click.testing import CliRunner

from riskgate.cli import main
from riskgate.errors import PolicyError
from riskgate.policy import METRICS, PRESET_NAMES, load_policy, presets_dir
from riskgate.policy.loader import _SECTIONS, _THRESHOLD_KEYS, _TOP_LEVEL_KEYS
from riskgate.policy.schema import SCHEMA_PATH, policy_json_schema, schema_text

INVALID_POLICY = """\
schema_version: 2
subspace: {rho: 2, kmax: 3}
thresholds: {overlap_ratio: {warn: 0.9, fail: 0.1}}
extends: nothere
"""


def write(folder: Path, name: str, text: str) -> Path:
    path = folder / name
    path.write_text(textwrap.dedent(text), encoding="utf-8")
    return path


def invoke(*args: str):
    return CliRunner().invoke(main, list(args))


# --- policy validate ---------------------------------------------------------------------


@pytest.mark.parametrize("preset", PRESET_NAMES)
def test_validate_preset(preset):
    result = invoke("policy", "validate", preset)
    assert result.exit_code == 0, result.output
    assert result.stdout == f"{preset}: valid policy {preset}\n"


def test_validate_file(tmp_path):
    path = write(tmp_path, "mine.yaml", "schema_version: 1\nname: team gate\nextends: strict\nforecast: {tau: 0.07}\n")
    result = invoke("policy", "validate", str(path))
    assert result.exit_code == 0, result.output
    assert result.stdout == f"{path}: valid policy team gate\n"
    assert result.stderr == ""


def test_validate_lists_every_problem(tmp_path):
    path = write(tmp_path, "bad.yaml", INVALID_POLICY)
    result = invoke("policy", "validate", str(path))
    assert result.exit_code == 2
    assert result.stdout == ""
    assert result.stderr.splitlines() == [
        f"{path}: schema_version: unsupported version 2; this riskgate reads schema_version 1",
        f"{path}: subspace.kmax: unknown key (did you mean 'k_max'?); expected one of: rho, k_max, orthogonality_level",
        f"{path}: subspace.rho: must be in (0, 1], got 2",
        f"{path}: thresholds.overlap_ratio: warn 0.9 must be <= fail 0.1, because higher values are worse",
        f"{path}: extends: unknown preset 'nothere'; use one of default, strict, permissive or a path to a"
        " YAML file relative to this one",
        f"riskgate: error: {path}: invalid policy: 5 problems",
    ]


def test_validate_parent_problems(tmp_path):
    write(tmp_path, "base.yaml", "schema_version: 1\nforecast: {tau: -1}\n")
    child = write(tmp_path, "child.yaml", "schema_version: 1\nextends: ./base.yaml\nsamples: {min_safety_examples: 0}\n")
    result = invoke("policy", "validate", str(child))
    assert result.exit_code == 2
    lines = result.stderr.splitlines()
    assert lines[0] == f"{child}: samples.min_safety_examples: must be >= 1, got 0"
    assert lines[1] == f"{tmp_path / 'base.yaml'}: forecast.tau: must be > 0, got -1"
    assert lines[2] == f"riskgate: error: {child}: invalid policy: 2 problems"
    assert len(lines) == 3


def test_validate_missing_file(tmp_path):
    path = tmp_path / "absent.yaml"
    result = invoke("policy", "validate", str(path))
    assert result.exit_code == 2
    lines = result.stderr.splitlines()
    # A single problem is the whole error: one line, like every other riskgate error.
    assert lines[0].startswith(f"riskgate: error: {path}: policy file not found")
    assert len(lines) == 1


# --- policy show -------------------------------------------------------------------------


def test_show_preset_chain():
    result = invoke("policy", "show", "strict")
    assert result.exit_code == 0, result.output
    lines = result.stdout.splitlines()
    assert lines[0].startswith("# riskgate policy 'strict', resolved from preset:strict (sha256 ")
    assert lines[1] == "# extends chain, child first: preset:strict -> preset:default"
    document = yaml.safe_load(result.stdout)
    assert document["forecast"] == {"tau": 0.025}
    assert document["subspace"] == {"rho": 0.9, "k_max": 32, "orthogonality_level": 0.1}
    assert document["samples"] == {"min_safety_examples": 64, "min_finetune_examples": 8}
    assert document["thresholds"]["collapse_step_ratio"] == {"warn": 2.0, "fail": 1.0}
    assert "extends" not in document


@pytest.mark.parametrize("preset", PRESET_NAMES)
def test_show_output_loads(tmp_path, preset):
    result = invoke("policy", "show", preset)
    assert result.exit_code == 0, result.output
    path = write(tmp_path, "shown.yaml", result.stdout)
    shown = load_policy(path).to_dict()
    original = load_policy(preset).to_dict()
    for key in ("source", "sha256", "extends_chain"):
        shown.pop(key)
        original.pop(key)
    assert shown == original


def test_show_file_with_dropped_threshold(tmp_path):
    path = write(tmp_path, "mine.yaml", "schema_version: 1\nextends: default\nthresholds: {overlap_ratio: null, gamma_hat: {fail: 3}}\n")
    result = invoke("policy", "show", str(path))
    assert result.exit_code == 0, result.output
    document = yaml.safe_load(result.stdout)
    assert document["name"] == "mine"
    assert list(document["thresholds"]) == ["gamma_hat", "delta_u_at_planned_steps", "collapse_step_ratio"]
    assert document["thresholds"]["gamma_hat"] == {"fail": 3}
    assert f"# extends chain, child first: {path} -> preset:default" in result.stdout


def test_show_newline_in_name_stays_comment(tmp_path):
    folder = tmp_path / "odd\nname: injected"
    folder.mkdir()
    path = write(folder, "p.yaml", "schema_version: 1\nextends: default\n")
    result = invoke("policy", "show", str(path))
    assert result.exit_code == 0, result.output
    document = yaml.safe_load(result.stdout)
    assert document["name"] == "p"
    assert sum(1 for line in result.stdout.splitlines() if line.startswith("#")) == 3


def test_show_invalid(tmp_path):
    path = write(tmp_path, "bad.yaml", INVALID_POLICY)
    result = invoke("policy", "show", str(path))
    assert result.exit_code == 2
    assert result.stdout == ""
    assert result.stderr.startswith(f"riskgate: error: {path}: invalid policy: schema_version: unsupported")
    assert result.stderr.rstrip().endswith("(and 4 more)")


# --- JSON Schema -------------------------------------------------------------------------


def test_schema_file_current():
    # Regenerate with: python -m riskgate.policy.schema > riskgate/policy/policy.schema.json
    assert SCHEMA_PATH.read_text(encoding="utf-8") == schema_text()


def test_schema_keys_match_loader():
    schema = json.loads(SCHEMA_PATH.read_text(encoding="utf-8"))
    properties = schema["properties"]
    assert set(properties) == set(_TOP_LEVEL_KEYS)
    for section, fields in _SECTIONS.items():
        assert set(properties[section]["properties"]) == set(fields)
        assert properties[section]["additionalProperties"] is False
    assert set(properties["thresholds"]["properties"]) == set(METRICS)
    for metric in METRICS:
        entry = properties["thresholds"]["properties"][metric]["oneOf"][1]
        assert set(entry["properties"]) == set(_THRESHOLD_KEYS)
    assert schema["additionalProperties"] is False


def schema_errors(document: dict) -> list[str]:
    jsonschema = pytest.importorskip("jsonschema")
    validator = jsonschema.Draft202012Validator(policy_json_schema())
    return [error.message for error in validator.iter_errors(document)]


@pytest.mark.parametrize("preset", PRESET_NAMES)
def test_schema_accepts_presets(preset):
    document = yaml.safe_load((presets_dir() / f"{preset}.yaml").read_text(encoding="utf-8"))
    assert schema_errors(document) == []


@pytest.mark.parametrize(
    "override",
    [
        {"colour": "blue"},
        {"schema_version": 2},
        {"subspace": {"rho": 0}},
        {"subspace": {"rho": 1.5}},
        {"subspace": {"k_max": 2.5}},
        {"subspace": {"kmax": 3}},
        {"forecast": {"tau": "high"}},
        {"samples": {"min_finetune_examples": 0}},
        {"thresholds": {"overlap_ratio": {"warn": 1.5}}},
        {"thresholds": {"overlap_ratio": {"limit": 0.1}}},
        {"thresholds": {"overlap_ratio": {}}},
        {"thresholds": {"gamma_hat": {"fail": -1}}},
        {"thresholds": {"loss": {"fail": 1}}},
        {"thresholds": {"gamma_hat": 3}},
        {"name": ""},
        {"extends": 5},
    ],
)
def test_schema_and_loader_reject(tmp_path, override):
    document = {"schema_version": 1, "extends": "default", **override}
    assert schema_errors(document) != []
    path = tmp_path / "p.yaml"
    path.write_text(yaml.safe_dump(document), encoding="utf-8")
    with pytest.raises(PolicyError):
        load_policy(path)


@pytest.mark.parametrize(
    "override",
    [
        {},
        {"thresholds": {"overlap_ratio": None}},
        {"thresholds": {"gamma_hat": {"fail": 2.0}}},
        {"thresholds": {"collapse_step": {"warn": 500, "fail": 100}}},
        {"subspace": {"k_max": 4}, "samples": {"min_safety_examples": 1}},
        {"description": ""},
    ],
)
def test_schema_and_loader_accept(tmp_path, override):
    document = {"schema_version": 1, "extends": "default", **override}
    assert schema_errors(document) == []
    path = tmp_path / "p.yaml"
    path.write_text(yaml.safe_dump(document), encoding="utf-8")
    assert load_policy(path).name == "p"


def test_validate_folder_is_one_line(tmp_path):
    from click.testing import CliRunner

    from riskgate.cli import main

    result = CliRunner().invoke(main, ["policy", "validate", str(tmp_path)])
    assert result.exit_code == 2
    lines = result.output.strip().splitlines()
    assert len(lines) == 1
    assert lines[0].startswith("riskgate: error: ")
    assert "not a regular file" in lines[0]
