"""The Python API `riskgate.check`: same inputs give the same report, the result type, errors."""

from __future__ import annotations

import json
import math

import pytest
from chat_files import write_chat

import riskgate
from riskgate.budget import Budget


@pytest.fixture(scope="module")
def inputs(tmp_path_factory):
    folder = tmp_path_factory.mktemp("api-data")
    finetune = write_chat(folder / "finetune.jsonl", [(f"Repeat {i}.", f"{i} {i} {i}, as you wish.") for i in range(10)])
    safety = write_chat(folder / "safety.jsonl", [(f"How do I harm person {i}?", "I won't help with that.") for i in range(12)])
    policy = folder / "policy.yaml"
    policy.write_text("schema_version: 1\nname: api\nextends: default\nsamples: {min_safety_examples: 4, min_finetune_examples: 2}\n")
    return finetune, safety, policy


def numbers(value, prefix=""):
    """Flatten every number in a report section into {path: value}."""
    if isinstance(value, dict):
        out = {}
        for key, item in value.items():
            out.update(numbers(item, f"{prefix}.{key}"))
        return out
    if isinstance(value, list):
        out = {}
        for index, item in enumerate(value):
            out.update(numbers(item, f"{prefix}[{index}]"))
        return out
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return {prefix: value}
    return {}


def run(tiny_checkpoint, inputs, **overrides):
    finetune, safety, policy = inputs
    arguments = dict(
        safety_data=safety, learning_rate=1e-3, max_steps=30, batch_size=2,
        budget=Budget(max_safety_examples=8, max_finetune_examples=6, max_seq_len=96), seed=3,
    )
    arguments.update(overrides)
    return riskgate.check(str(tiny_checkpoint), finetune, policy, **arguments)


def test_same_inputs_same_numbers(tiny_checkpoint, inputs):
    first = numbers(run(tiny_checkpoint, inputs).report["checks"])
    second = numbers(run(tiny_checkpoint, inputs).report["checks"])
    assert first.keys() == second.keys()
    assert len(first) > 50
    for key, value in first.items():
        assert math.isclose(value, second[key], rel_tol=1e-6, abs_tol=1e-12), key


def test_seed_changes_sample(tiny_checkpoint, inputs):
    one = run(tiny_checkpoint, inputs, seed=1).report
    two = run(tiny_checkpoint, inputs, seed=2).report
    assert one["seed"] == 1
    assert one["dataset"]["records_sampled_out"] == 4
    assert one["checks"]["sharpness"]["trace"] != two["checks"]["sharpness"]["trace"]


def test_result_carries_verdict_and_writes(tiny_checkpoint, inputs, tmp_path):
    result = run(tiny_checkpoint, inputs)
    assert result.verdict == result.report["verdict"]
    assert result.exit_code == result.report["exit_code"]
    paths = result.write(tmp_path / "out", ["json"])
    assert list(paths) == ["json"]
    assert json.loads(paths["json"].read_text())["checks"] == json.loads(json.dumps(result.report["checks"]))


def test_invalid_input_raises(tiny_checkpoint, inputs, tmp_path):
    with pytest.raises(riskgate.InvalidInputError):
        run(tiny_checkpoint, inputs, safety_data=tmp_path / "absent.jsonl")
    with pytest.raises(riskgate.UsageError, match="--max-seq-len"):
        run(tiny_checkpoint, inputs, budget=Budget(max_seq_len=1))


def test_import_is_light():
    import subprocess
    import sys

    code = "import sys, riskgate, riskgate.cli; print('torch' in sys.modules)"
    output = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert output.strip() == "False"


def test_tokenizer_padding_side_irrelevant(tiny_checkpoint, inputs, tmp_path):
    import shutil

    left = tmp_path / "left-padded"
    shutil.copytree(tiny_checkpoint, left)
    config_path = left / "tokenizer_config.json"
    config = json.loads(config_path.read_text())
    config["padding_side"] = "left"
    config_path.write_text(json.dumps(config))

    right_numbers = numbers(run(tiny_checkpoint, inputs).report["checks"])
    left_numbers = numbers(run(left, inputs).report["checks"])
    assert right_numbers.keys() == left_numbers.keys()
    for key, value in right_numbers.items():
        assert math.isclose(value, left_numbers[key], rel_tol=1e-6, abs_tol=1e-12), key


def test_report_lists_sampled_records(tiny_checkpoint, inputs):
    report = run(tiny_checkpoint, inputs).report
    used = report["dataset"]["records_analysed"]
    assert len(used) == report["dataset"]["records_used"] == 6
    assert used == sorted(used)
    assert len(report["safety_data"]["records_analysed"]) == 8
    assert sorted(r["index"] for r in report["attribution"]["records"]) == used
    again = run(tiny_checkpoint, inputs, seed=4).report
    assert again["dataset"]["records_analysed"] != used


def test_report_names_engine_path_and_method(tiny_checkpoint, inputs):
    report = run(tiny_checkpoint, inputs, hvp_method="double_backward", max_memory="4G").report
    engine = report["engine"]
    assert engine["path"] == "exact"
    assert engine["sketch_width"] is None
    assert engine["error_scale"] == 0.0
    assert engine["hvp_method"] == "double_backward"
    assert report["checks"]["curvature_coupling"]["hvp_method"] == "double_backward"
    assert engine["max_memory_bytes"] == 4 * 2**30
    assert 0 < engine["estimated_bytes"] < engine["max_memory_bytes"]


def test_hvp_methods_agree_through_the_api(tiny_checkpoint, inputs):
    exact = run(tiny_checkpoint, inputs, hvp_method="forward_over_reverse").report["checks"]["curvature_coupling"]
    other = run(tiny_checkpoint, inputs, hvp_method="double_backward").report["checks"]["curvature_coupling"]
    assert math.isclose(exact["gamma_hat"], other["gamma_hat"], rel_tol=1e-4)
    assert exact["gamma_hat"] > 0


def test_memory_limit_too_small_is_a_usage_error(tiny_checkpoint, inputs):
    from riskgate.errors import ExitCode, UsageError

    with pytest.raises(UsageError, match=r"--max-memory: limit 1.0 KiB is too small") as caught:
        run(tiny_checkpoint, inputs, max_memory="1K")
    assert caught.value.exit_code == ExitCode.INVALID_INPUT


def test_default_memory_too_small_is_an_environment_failure(tiny_checkpoint, inputs, monkeypatch):
    from riskgate import api
    from riskgate.errors import EnvironmentFailure, ExitCode

    monkeypatch.setattr(api, "_available_memory_bytes", lambda: 2**20)
    with pytest.raises(EnvironmentFailure, match="too small") as caught:
        run(tiny_checkpoint, inputs)
    assert caught.value.exit_code == ExitCode.RUNTIME_ERROR


@pytest.mark.parametrize("value, message", [("lots", "not a size"), ("0G", "more than 0"), (-5, "positive")])
def test_bad_memory_limit_is_a_usage_error(tiny_checkpoint, inputs, value, message):
    from riskgate.errors import UsageError

    with pytest.raises(UsageError, match=message):
        run(tiny_checkpoint, inputs, max_memory=value)


def test_unknown_hvp_method_is_a_usage_error(tiny_checkpoint, inputs):
    from riskgate.errors import UsageError

    with pytest.raises(UsageError, match="--hvp-method"):
        run(tiny_checkpoint, inputs, hvp_method="magic")


def test_device_is_reported_and_validated(tiny_checkpoint, inputs):
    from riskgate.errors import UsageError

    assert run(tiny_checkpoint, inputs, device="cpu").report["engine"]["device"] == "cpu"
    with pytest.raises(UsageError, match="--device: 'tpu'"):
        run(tiny_checkpoint, inputs, device="tpu")


def test_unavailable_cuda_is_a_usage_error(tiny_checkpoint, inputs, monkeypatch):
    import torch

    from riskgate.errors import UsageError

    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    with pytest.raises(UsageError, match="no CUDA device"):
        run(tiny_checkpoint, inputs, device="cuda:0")
    assert run(tiny_checkpoint, inputs, device="auto").report["engine"]["device"] == "cpu"
