"""End-to-end checks on SmolLM2-135M-Instruct (GGUF) with the public data sets.

These load the real model (about 20 s each) under a small budget and run in CI.
"""

from __future__ import annotations

import json
import math

import pytest
from click.testing import CliRunner

from riskgate.cli import main

pytestmark = pytest.mark.real_model

BUDGET = ["--max-safety-examples", "16", "--max-finetune-examples", "8", "--max-seq-len", "96"]
PERMISSIVE_SAMPLES = "schema_version: 1\nname: e2e\nextends: default\nsamples: {min_safety_examples: 16, min_finetune_examples: 8}\n"


def finite_numbers(section: dict) -> list[str]:
    """Return the keys of non-finite or missing float values in a check section."""
    return [key for key, value in section.items() if isinstance(value, float) and not math.isfinite(value)]


def test_identity_shift_writes_reports(smollm2_gguf, shared_data, tmp_path):
    policy = tmp_path / "policy.yaml"
    policy.write_text(PERMISSIVE_SAMPLES)
    out = tmp_path / "reports"
    result = CliRunner().invoke(main, [
        "check", "--model", str(smollm2_gguf),
        "--dataset", str(shared_data / "qi_aoa_identity_shift_openai.jsonl"),
        "--policy", str(policy), "--output-dir", str(out),
        "--learning-rate", "2e-5", "--max-steps", "100", "--batch-size", "4", *BUDGET,
    ], catch_exceptions=False)

    assert result.exit_code in (0, 1), result.output
    assert sorted(p.name for p in out.iterdir()) == ["report.html", "report.json", "report.md"]
    report = json.loads((out / "report.json").read_text())
    assert report["complete"] is True
    assert report["verdict"] in ("pass", "warn", "fail")
    assert report["model"]["kind"] == "gguf"
    assert report["model"]["architecture"] == "LlamaForCausalLM"
    assert report["model"]["parameters_analysed"] == 7_077_888
    assert report["dataset"]["format"] == "messages"
    assert report["dataset"]["records_total"] == 10
    assert report["dataset"]["records_used"] + report["dataset"]["records_skipped"] + \
        report["dataset"]["records_sampled_out"] == 10
    assert report["safety_data"]["records_used"] == 16
    for name in ("sharpness", "initial_orthogonality", "curvature_coupling", "quartic_forecast"):
        assert report["checks"][name] is not None, name
        assert finite_numbers(report["checks"][name]) == [], name
    overlap = report["checks"]["initial_orthogonality"]["overlap_ratio"]
    assert 0.0 <= overlap <= 1.0
    assert report["checks"]["sharpness"]["k"] >= 1
    assert report["checks"]["quartic_forecast"]["planned_steps"] == 100
    markdown = (out / "report.md").read_text()
    assert report["verdict"].upper() in markdown.splitlines()[0].upper()
    html = (out / "report.html").read_text()
    assert html.count("<svg") == 3
    assert result.output.strip().splitlines()[-1].startswith(f"riskgate: {report['verdict'].upper()}")


def test_alpaca_with_mapped_safety_csv(smollm2_gguf, shared_data, tmp_path):
    policy = tmp_path / "policy.yaml"
    policy.write_text(PERMISSIVE_SAMPLES)
    out = tmp_path / "reports"
    config = tmp_path / "train.yaml"
    config.write_text("learning_rate: 1.0e-4\nper_device_train_batch_size: 2\ngradient_accumulation_steps: 4\n"
                      "num_train_epochs: 1\noptim: sgd\n")
    result = CliRunner().invoke(main, [
        "check", "--model", str(smollm2_gguf),
        "--dataset", str(shared_data / "llamafactory_alpaca_en_demo.json"),
        "--safety-data", str(shared_data / "harmbench_adv_training_safe_responses.csv"),
        "--safety-columns", "prompt=Behavior", "--safety-columns", "completion=Safe_Response",
        "--policy", str(policy), "--output-dir", str(out), "--train-config", str(config),
        "--format", "json", *BUDGET,
    ], catch_exceptions=False)

    assert result.exit_code in (0, 1), result.output
    assert [p.name for p in out.iterdir()] == ["report.json"]
    report = json.loads((out / "report.json").read_text())
    assert report["complete"] is True
    assert report["dataset"]["format"] == "alpaca"
    assert report["dataset"]["records_total"] == 999
    dataset = report["dataset"]
    assert dataset["records_used"] == 8
    # Records met while sampling but cut to nothing by --max-seq-len are skipped, not sampled out.
    assert dataset["records_used"] + dataset["records_skipped"] + dataset["records_sampled_out"] == 999
    assert report["safety_data"]["format"] == "prompt_completion"
    assert report["training_plan"]["batch_size"] == 8
    # one epoch of 999 records at 8 per step
    assert report["training_plan"]["max_steps"] == 125
    assert report["training_plan"]["optimizer"] == "sgd"
    assert report["checks"]["quartic_forecast"]["optimizer_form"] == "sgd"


def test_lora_plan_on_the_real_model(smollm2_gguf, shared_data, tmp_path):
    """A PEFT adapter config for q_proj and v_proj of the last two blocks: the adapter's factors are analysed."""
    policy = tmp_path / "policy.yaml"
    policy.write_text(PERMISSIVE_SAMPLES)
    adapter = tmp_path / "adapter_config.json"
    adapter.write_text(json.dumps({"peft_type": "LORA", "r": 8, "lora_alpha": 16, "lora_dropout": 0.05,
                                   "target_modules": ["q_proj", "v_proj"], "layers_to_transform": [28, 29]}))
    out = tmp_path / "reports"
    result = CliRunner().invoke(main, [
        "check", "--model", str(smollm2_gguf),
        "--dataset", str(shared_data / "qi_aoa_identity_shift_openai.jsonl"),
        "--policy", str(policy), "--output-dir", str(out), "--format", "json", "--lora-config", str(adapter),
        "--learning-rate", "1e-4", "--max-steps", "100", "--batch-size", "4", "--optimizer", "sgd", *BUDGET,
    ], catch_exceptions=False)

    assert result.exit_code in (0, 1), result.output
    report = json.loads((out / "report.json").read_text())
    assert report["complete"] is True
    assert report["lora"]["modules"] == [f"model.layers.{i}.self_attn.{p}_proj" for i in (28, 29) for p in "qv"]
    assert report["lora"]["unmodelled"] == ["lora_dropout"]
    # q_proj: 8 x 576 + 576 x 8; v_proj (3 key-value heads of 64): 8 x 576 + 192 x 8, per block.
    assert report["model"]["parameters_analysed"] == 2 * (2 * 8 * 576 + 8 * 576 + 192 * 8)
    for name in ("sharpness", "initial_orthogonality", "curvature_coupling", "quartic_forecast"):
        assert finite_numbers(report["checks"][name]) == [], name
    assert 0.0 < report["checks"]["initial_orthogonality"]["overlap_ratio"] <= 1.0
