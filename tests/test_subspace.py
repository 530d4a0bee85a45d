"""Saving the safety side with `build_subspace` and reusing it in `check(subspace=...)`."""

from __future__ import annotations

import json
import math

import pytest

import riskgate
from chat_files import write_chat
from riskgate.budget import Budget
from riskgate.errors import ExitCode, SubspaceError

BUDGET = Budget(max_safety_examples=8, max_finetune_examples=6, max_seq_len=96)


@pytest.fixture(scope="module")
def inputs(tmp_path_factory):
    folder = tmp_path_factory.mktemp("subspace-data")
    finetune = write_chat(folder / "finetune.jsonl", [(f"Repeat {i}.", f"{i} {i} {i}, as you wish.") for i in range(10)])
    safety = write_chat(folder / "safety.jsonl", [(f"How do I harm person {i}?", "I won't help with that.") for i in range(12)])
    policy = folder / "policy.yaml"
    policy.write_text("schema_version: 1\nname: sub\nextends: default\nsamples: {min_safety_examples: 4, min_finetune_examples: 2}\n")
    return folder, finetune, safety, policy


@pytest.fixture(scope="module")
def built(tiny_checkpoint, inputs):
    folder, _, safety, _ = inputs
    return riskgate.build_subspace(str(tiny_checkpoint), folder / "safety.subspace", safety_data=safety,
                                   budget=BUDGET, seed=3)


def _check(tiny_checkpoint, inputs, **overrides):
    _, finetune, safety, policy = inputs
    arguments = dict(safety_data=safety, learning_rate=1e-3, max_steps=30, batch_size=2, budget=BUDGET, seed=3,
                     optimizer="sgd")
    arguments.update(overrides)
    return riskgate.check(str(tiny_checkpoint), finetune, policy, **arguments).report


def test_cached_check_equals_full_check(tiny_checkpoint, inputs, built):
    full = _check(tiny_checkpoint, inputs)
    cached = _check(tiny_checkpoint, inputs, subspace=built.path)
    for section in ("sharpness", "initial_orthogonality", "curvature_coupling"):
        for key, value in full["checks"][section].items():
            if isinstance(value, float):
                assert math.isclose(value, cached["checks"][section][key], rel_tol=1e-9, abs_tol=1e-15), key
    assert cached["verdict"] == full["verdict"]
    assert built.sequences == 8
    assert built.path_kind == "exact"
    assert built.k == full["checks"]["sharpness"]["k"]


def test_cached_check_skips_safety_pass(tiny_checkpoint, inputs, built, monkeypatch):
    from riskgate.diagnostics.engine import DiagnosticsRun

    def no_safety_pass(self, safety):
        raise AssertionError("the safety pass ran although a subspace file was given")

    monkeypatch.setattr(DiagnosticsRun, "_safety_pass", no_safety_pass)
    report = _check(tiny_checkpoint, inputs, subspace=built.path)
    assert report["complete"]


@pytest.mark.parametrize("change, key", [
    (dict(seed=4), "seed"),
    (dict(budget=Budget(max_safety_examples=8, max_finetune_examples=6, max_seq_len=80)), "max_seq_len"),
    (dict(params=["model.layers.1.mlp.*"]), "scope"),
])
def test_mismatch_names_key(tiny_checkpoint, inputs, built, change, key):
    with pytest.raises(SubspaceError, match=f"{key} is .* in the subspace file but") as caught:
        _check(tiny_checkpoint, inputs, subspace=built.path, **change)
    assert caught.value.exit_code == ExitCode.INVALID_INPUT


def test_other_safety_data_rejected(tiny_checkpoint, inputs, built, tmp_path):
    other = write_chat(tmp_path / "other.jsonl", [(f"How to hurt {i}?", "No.") for i in range(12)])
    with pytest.raises(SubspaceError, match="safety_sha256"):
        _check(tiny_checkpoint, inputs, subspace=built.path, safety_data=other)


def test_not_a_subspace_file(tiny_checkpoint, inputs, tmp_path):
    bogus = tmp_path / "bogus.subspace"
    bogus.write_bytes(b"not safetensors at all")
    with pytest.raises(SubspaceError, match="cannot read the subspace file"):
        _check(tiny_checkpoint, inputs, subspace=bogus)
    with pytest.raises(SubspaceError, match="not found"):
        _check(tiny_checkpoint, inputs, subspace=tmp_path / "missing.subspace")
    with pytest.raises(SubspaceError, match="is a folder, not a subspace file"):
        _check(tiny_checkpoint, inputs, subspace=tmp_path)


def test_unwritable_output_fails_before_the_pass(tiny_checkpoint, inputs, monkeypatch, tmp_path):
    import tempfile

    from riskgate.errors import UsageError

    def refuse(*args, **kwargs):
        raise PermissionError(13, "Permission denied")

    monkeypatch.setattr(tempfile, "NamedTemporaryFile", refuse)
    with pytest.raises(UsageError, match="cannot write there"):
        riskgate.build_subspace(str(tiny_checkpoint), tmp_path / "x.subspace", safety_data=inputs[2], budget=BUDGET)


def test_other_safetensors_file_rejected(tiny_checkpoint, inputs):
    with pytest.raises(SubspaceError, match="not a riskgate subspace file"):
        _check(tiny_checkpoint, inputs, subspace=tiny_checkpoint / "model.safetensors")


def test_cli_build_then_check(tiny_checkpoint, inputs, tmp_path):
    from click.testing import CliRunner

    from riskgate.cli import main

    folder, finetune, safety, policy = inputs
    target = tmp_path / "cli.subspace"
    common = ["--model", str(tiny_checkpoint), "--safety-data", str(safety), "--max-safety-examples", "8",
              "--max-seq-len", "96", "--seed", "3"]
    built = CliRunner().invoke(main, ["subspace", "build", *common, "--output", str(target)])
    assert built.exit_code == 0, built.output
    assert "8 safety sequences" in built.output
    assert target.is_file()
    checked = CliRunner().invoke(main, ["check", *common, "--dataset", str(finetune), "--policy", str(policy),
                                        "--max-finetune-examples", "6", "--subspace", str(target),
                                        "--output-dir", str(tmp_path / "out"), "-q"])
    assert checked.exit_code in (0, 1), checked.output
    report = json.loads((tmp_path / "out" / "report.json").read_text())
    assert report["complete"]
    stale = CliRunner().invoke(main, ["check", *common[:-1], "5", "--dataset", str(finetune), "--policy",
                                      str(policy), "--subspace", str(target), "--output-dir", str(tmp_path / "o2")])
    assert stale.exit_code == 2
    assert "seed is 3 in the subspace file but 5" in stale.output


def test_sketched_cache_reuses_the_same_sketch(tiny_checkpoint, inputs, tmp_path, monkeypatch):
    from riskgate import api
    from riskgate.diagnostics.memory import MemoryPlan

    monkeypatch.setattr(api, "_memory_plan", lambda *args: MemoryPlan("sketched", 600, 2**34, 0))
    folder, _, safety, _ = inputs
    summary = riskgate.build_subspace(str(tiny_checkpoint), tmp_path / "sketched.subspace", safety_data=safety,
                                      budget=BUDGET, seed=3)
    assert summary.path_kind == "sketched"
    assert summary.sketch_width >= 600
    full = _check(tiny_checkpoint, inputs)
    cached = _check(tiny_checkpoint, inputs, subspace=summary.path)
    assert full["engine"]["path"] == cached["engine"]["path"] == "sketched"
    assert cached["engine"]["sketch_width"] == full["engine"]["sketch_width"] == summary.sketch_width
    for key in ("overlap_ratio", "epsilon"):
        value = full["checks"]["initial_orthogonality"][key]
        assert math.isclose(value, cached["checks"]["initial_orthogonality"][key], rel_tol=1e-9), key
    assert math.isclose(full["checks"]["curvature_coupling"]["gamma_hat"],
                        cached["checks"]["curvature_coupling"]["gamma_hat"], rel_tol=1e-9)


def test_limit_below_the_file_estimate_is_rejected(tiny_checkpoint, inputs, built):
    from riskgate.errors import UsageError

    estimated = _check(tiny_checkpoint, inputs, subspace=built.path)["engine"]["estimated_bytes"]
    with pytest.raises(UsageError, match="built for a run estimated at .* above the memory limit"):
        _check(tiny_checkpoint, inputs, subspace=built.path, max_memory=estimated - 1)
