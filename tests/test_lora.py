"""LoRA plans: reading a PEFT LoraConfig, attaching the adapter, and the diagnostics in adapter space.

The adapter math is checked against the base weight's own derivatives: at B = 0,
dL/dB = s (dL/dW) A^T, dL/dA = 0, and the (A, B) cross block of the Hessian gives
(H v)_A = s v_B^T (dL/dW) for v = (0, v_B). The diagnostics on an adapted tiny model are
checked against the dense float64 reference in the adapter's parameters.
"""

from __future__ import annotations

import json
import math

import pytest
import torch

import riskgate
from chat_files import write_chat
from dense_reference import compute_in_float64, random_sequences, sequence_loss, flat_parameters
from riskgate.budget import Budget
from riskgate.diagnostics.settings import Optimizer
from riskgate.errors import ExitCode, PlanError
from riskgate.report.summary import input_rows
from riskgate.loading.lora import attach_adapter, lora_plan_from_dict, read_lora_config
from test_diagnostics_dense import RTOL, Scenario, assert_close, make_settings
from tiny_models import build_model

CONFIG = {"peft_type": "LORA", "r": 2, "lora_alpha": 4, "target_modules": ["q_proj", "v_proj", "down_proj"],
          "layers_to_transform": [1], "lora_dropout": 0.0, "bias": "none"}


def _adapted(config=None, seed=0):
    model = compute_in_float64(build_model())
    adapter = attach_adapter(model, lora_plan_from_dict(config or CONFIG), seed=seed)
    return model, adapter


# Reading configs.


def test_reads_peft_adapter_config(tmp_path):
    path = tmp_path / "adapter_config.json"
    path.write_text(json.dumps({**CONFIG, "use_rslora": True, "rank_pattern": {"down_proj": 4}}))
    plan = read_lora_config(tmp_path)  # a folder means its adapter_config.json

    assert plan.r == 2
    assert plan.target_modules == ("q_proj", "v_proj", "down_proj")
    assert plan.rank_and_scaling("model.layers.1.self_attn.q_proj") == (2, 4 / math.sqrt(2))
    assert plan.rank_and_scaling("model.layers.1.mlp.down_proj") == (4, 4 / 2)
    assert plan.unmodelled == ()


def test_reads_yaml_and_lists_unmodelled_keys(tmp_path):
    path = tmp_path / "lora.yaml"
    path.write_text("r: 4\nlora_alpha: 8\ntarget_modules: all-linear\nlora_dropout: 0.05\nbias: lora_only\n")
    plan = read_lora_config(path)

    assert plan.target_modules == "all-linear"
    assert plan.unmodelled == ("lora_dropout", "bias")
    assert plan.rank_and_scaling("x") == (4, 2.0)


@pytest.mark.parametrize(("change", "message"), [
    ({"r": 0}, "'r' must be a positive integer, got 0"),
    ({"lora_alpha": "big"}, "'lora_alpha' must be a positive number"),
    ({"target_modules": None}, "'target_modules' is missing"),
    ({"target_modules": "q_proj("}, "'target_modules' is not a valid regular expression"),
    ({"use_dora": True}, "'use_dora' is set"),
    ({"init_lora_weights": "pissa"}, "'init_lora_weights' = 'pissa' is not supported"),
    ({"peft_type": "IA3"}, "only LORA adapters are supported"),
    ({"layers_to_transform": "last"}, "'layers_to_transform' must be a layer index"),
    ({"rank_pattern": {"q_proj": -1}}, "'rank_pattern' entry 'q_proj' must be a positive integer"),
    ({"lora_alhpa": 64}, "unknown key 'lora_alhpa'; did you mean 'lora_alpha'?"),
    ({"lora_dropout": 2}, "'lora_dropout' must be a probability in [0, 1), got 2"),
])
def test_bad_config_names_key(tmp_path, change, message):
    path = tmp_path / "adapter_config.json"
    config = {**CONFIG, **change}
    path.write_text(json.dumps({k: v for k, v in config.items() if v is not None}))
    with pytest.raises(PlanError) as caught:
        read_lora_config(path)
    assert str(path) in str(caught.value)
    assert message in str(caught.value)
    assert "\n" not in str(caught.value)


def test_unreadable_config(tmp_path):
    with pytest.raises(PlanError, match="--lora-config .*missing.json: file not found"):
        read_lora_config(tmp_path / "missing.json")
    broken = tmp_path / "broken.yaml"
    broken.write_text("r: [1\n")
    with pytest.raises(PlanError, match="invalid YAML at line"):
        read_lora_config(broken)


# Attaching the adapter.


def test_targets_follow_peft_matching():
    model, adapter = _adapted()
    assert adapter.modules == ("model.layers.1.self_attn.q_proj", "model.layers.1.self_attn.v_proj",
                               "model.layers.1.mlp.down_proj")
    assert adapter.parameter_names[:2] == ("model.layers.1.self_attn.q_proj.lora_A.weight",
                                           "model.layers.1.self_attn.q_proj.lora_B.weight")
    trainable = [name for name, p in model.named_parameters() if p.requires_grad]
    assert trainable == list(adapter.parameter_names)
    # Factor sizes: q_proj 2x8 + 8x2, v_proj 2x8 + 4x2, down_proj 2x16 + 8x2.
    assert adapter.numel == 32 + 24 + 48


def test_all_linear_and_regex_targets():
    _, every = _adapted({"r": 1, "target_modules": "all-linear"})
    assert len(every.modules) == 2 * 7
    assert not any("lm_head" in name for name in every.modules)


    _, regex = _adapted({"r": 1, "target_modules": r".*\.0\.mlp\.(up|gate)_proj",
                         "exclude_modules": ["gate_proj"]})
    assert regex.modules == ("model.layers.0.mlp.up_proj",)


def test_layers_outside_the_model_are_named():
    model = build_model()
    plan = lora_plan_from_dict({"r": 2, "target_modules": ["q_proj"], "layers_to_transform": [1, 99]})
    with pytest.raises(PlanError, match=r"'layers_to_transform' \[1, 99\] must list layers of this model, 0 to 1"):
        attach_adapter(model, plan, seed=0)


def test_bookkeeping_keys_are_listed_as_ignored():
    plan = lora_plan_from_dict({**CONFIG, "task_type": "CAUSAL_LM", "newer_peft_option": 1})
    assert plan.ignored == ("task_type", "newer_peft_option")


def test_string_target_hints_at_a_list():
    model = build_model()
    with pytest.raises(PlanError, match=r'write \["q_proj"\] for a list'):
        attach_adapter(model, lora_plan_from_dict({"r": 2, "target_modules": "q_proj"}), seed=0)


def test_no_matching_module_is_a_plan_error():
    model = build_model()
    with pytest.raises(PlanError, match="matches no linear layer.*end in .*q_proj"):
        attach_adapter(model, lora_plan_from_dict({"r": 2, "target_modules": ["query"]}), seed=0)


def test_adapter_starts_at_the_base_model():
    base = compute_in_float64(build_model())
    ids = torch.tensor([random_sequences(1, seed=5)[0].input_ids])
    expected = base(ids).logits
    adapted, _ = _adapted()
    assert torch.equal(adapted(ids).logits, expected)


def test_seed_fixes_the_a_factor():
    first, _ = _adapted(seed=1)
    again, _ = _adapted(seed=1)
    other, _ = _adapted(seed=2)
    name = "model.layers.1.self_attn.q_proj.lora_A.weight"
    a = dict(first.named_parameters())[name]
    assert torch.equal(a, dict(again.named_parameters())[name])
    assert not torch.equal(a, dict(other.named_parameters())[name])
    assert float(a.detach().abs().max()) <= 1 / math.sqrt(8)  # kaiming-uniform bound 1/sqrt(in)


def test_factor_gradients_match_the_base_weight_gradient():
    """dL/dB = s (dL/dW) A^T and dL/dA = 0 at B = 0, against the unadapted model's dL/dW."""
    sequence = random_sequences(1, seed=6)[0]
    base = compute_in_float64(build_model())
    weight = "model.layers.1.self_attn.q_proj.weight"
    grad_w = torch.func.grad(lambda x: sequence_loss(base, [weight], x, sequence))(flat_parameters(base, [weight]))
    grad_w = grad_w.view(8, 8)

    adapted, adapter = _adapted()
    names = list(adapter.parameter_names[:2])
    table = dict(adapted.named_parameters())
    a = table[names[0]].detach()
    grads = torch.func.grad(lambda x: sequence_loss(adapted, names, x, sequence))(flat_parameters(adapted, names))
    grad_a, grad_b = grads[:16].view(2, 8), grads[16:].view(8, 2)
    scaling = 4 / 2

    assert float(grad_a.abs().max()) == 0.0
    torch.testing.assert_close(grad_b, scaling * grad_w @ a.T, rtol=1e-10, atol=1e-14)


def test_hessian_cross_block_carries_the_factor_product():
    """For v = (0, v_B): (H v)_A = s v_B^T (dL/dW), the second-order effect of B A."""
    sequence = random_sequences(1, seed=7)[0]
    base = compute_in_float64(build_model())
    weight = "model.layers.1.self_attn.q_proj.weight"
    grad_w = torch.func.grad(lambda x: sequence_loss(base, [weight], x, sequence))(flat_parameters(base, [weight]))

    adapted, adapter = _adapted()
    names = list(adapter.parameter_names[:2])
    theta = flat_parameters(adapted, names)
    v_b = torch.linspace(-1.0, 1.0, 16, dtype=torch.float64)
    vector = torch.cat([torch.zeros(16, dtype=torch.float64), v_b])
    gradient = torch.func.grad(lambda x: sequence_loss(adapted, names, x, sequence))
    hvp = torch.func.jvp(gradient, (theta,), (vector,))[1]

    expected = (4 / 2) * v_b.view(8, 2).T @ grad_w.view(8, 8)  # (r, in)
    torch.testing.assert_close(hvp[:16].view(2, 8), expected, rtol=1e-9, atol=1e-13)


# The diagnostics in adapter space, against the dense reference.


@pytest.fixture(scope="module")
def adapter_scenario() -> Scenario:
    model, adapter = _adapted()
    return Scenario(model, adapter.parameter_names, random_sequences(10, seed=11),
                    random_sequences(6, seed=12, first_index=100), dense_hessian=True)


@pytest.mark.parametrize("optimizer", [Optimizer.SGD, Optimizer.ADAMW])
def test_diagnostics_match_dense_in_adapter_space(adapter_scenario, optimizer):
    settings = make_settings(optimizer, k_max=4)
    result = adapter_scenario.run(settings)
    reference = adapter_scenario.fisher
    k = reference.rank(settings.rho, settings.k_max)
    update = adapter_scenario.update(optimizer)

    assert result.sharpness.subspace.k == k
    for j in range(k):
        assert_close(f"lambda_{j + 1}", result.sharpness.subspace.eigenvalues[j], reference.eigenvalues[j], RTOL)
    direction = update.direction
    assert_close("overlap_ratio", result.overlap.overlap_ratio,
                 float(reference.project(direction, k).norm() / direction.norm()), RTOL)
    assert_close("gamma_hat", result.curvature.gamma_hat, float(reference.whiten(update.acceleration, k).norm()),
                 1e-7)
    # The A factors carry no gradient at B = 0; their curvature comes from the cross block alone.
    a_numel = 16
    assert float(update.per_example[:, :a_numel].abs().max()) == 0.0
    assert float(update.acceleration[:a_numel].abs().max()) > 0.0


# Through the API and the CLI.


@pytest.fixture(scope="module")
def inputs(tmp_path_factory):
    folder = tmp_path_factory.mktemp("lora-data")
    finetune = write_chat(folder / "finetune.jsonl", [(f"Say {i}.", f"{i}, as asked.") for i in range(8)])
    safety = write_chat(folder / "safety.jsonl", [(f"Hurt person {i}.", "I won't help with that.") for i in range(8)])
    policy = folder / "policy.yaml"
    policy.write_text("schema_version: 1\nname: lora\nextends: default\nsamples: {min_safety_examples: 4, min_finetune_examples: 2}\n")
    config = folder / "adapter_config.json"
    config.write_text(json.dumps({"r": 2, "lora_alpha": 4, "target_modules": ["q_proj", "v_proj"]}))
    return folder, finetune, safety, policy, config


BUDGET = Budget(max_safety_examples=6, max_finetune_examples=4, max_seq_len=64)


def test_check_reports_the_adapter(tiny_checkpoint, inputs):
    _, finetune, safety, policy, config = inputs
    report = riskgate.check(str(tiny_checkpoint), finetune, policy, safety_data=safety, lora_config=config,
                            learning_rate=1e-3, max_steps=20, batch_size=2, budget=BUDGET, seed=4).report

    lora = report["lora"]
    assert lora["modules_adapted"] == 4  # q_proj and v_proj in each of 2 layers
    assert lora["modules_targeted"] == 4
    assert lora["seed"] == 4
    assert report["model"]["parameters_analysed"] == lora["parameters"] == 2 * (2 * 8 + 8 * 2 + 2 * 8 + 4 * 2)
    assert all(".lora_" in name for name in report["model"]["scope_tensors"])
    assert report["checks"]["curvature_coupling"]["gamma_hat"] > 0
    model_row, plan_row = input_rows(report)[0], input_rows(report)[-1]
    assert f"{lora['parameters']} adapter parameters analysed (base model" in model_row[3]
    assert "LoRA adapter r 2, alpha 4 on 4 modules (A drawn with seed 4)" in plan_row[3]


def test_params_restricts_the_adapted_modules(tiny_checkpoint, inputs):
    _, finetune, safety, policy, config = inputs
    report = riskgate.check(str(tiny_checkpoint), finetune, policy, safety_data=safety, lora_config=config,
                            params=["model.layers.1.*"], learning_rate=1e-3, max_steps=20, batch_size=2,
                            budget=BUDGET).report
    assert report["lora"]["modules"] == ["model.layers.1.self_attn.q_proj", "model.layers.1.self_attn.v_proj"]
    assert report["lora"]["modules_targeted"] == 4


def test_subspace_of_another_adapter_is_rejected(tiny_checkpoint, inputs, tmp_path):
    from riskgate.errors import SubspaceError

    folder, finetune, safety, policy, config = inputs
    built = riskgate.build_subspace(str(tiny_checkpoint), tmp_path / "lora.subspace", safety_data=safety,
                                    budget=BUDGET, lora_config=config)
    changes = {"lora_alpha": 8, "alpha_pattern": {"v_proj": 64}, "rank_pattern": {"q_proj": 1}}
    for key, value in changes.items():
        other = tmp_path / f"{key}.json"
        other.write_text(json.dumps({"r": 2, "lora_alpha": 4, "target_modules": ["q_proj", "v_proj"], key: value}))
        with pytest.raises(SubspaceError, match=f"lora.{key} is .* in the subspace file but"):
            riskgate.check(str(tiny_checkpoint), finetune, policy, safety_data=safety, lora_config=other,
                           subspace=built.path, learning_rate=1e-3, max_steps=20, batch_size=2, budget=BUDGET)


def test_cli_bad_lora_config_exits_with_input_error(tiny_checkpoint, inputs, tmp_path):
    from click.testing import CliRunner

    from riskgate.cli import main

    _, finetune, safety, policy, _ = inputs
    bad = tmp_path / "adapter_config.json"
    bad.write_text(json.dumps({"r": 2, "target_modules": ["query_key_value"]}))
    result = CliRunner().invoke(main, ["check", "--model", str(tiny_checkpoint), "--dataset", str(finetune),
                                       "--policy", str(policy), "--safety-data", str(safety),
                                       "--lora-config", str(bad), "--output-dir", str(tmp_path / "out")])
    assert result.exit_code == ExitCode.INVALID_INPUT
    assert "matches no linear layer" in result.output
    assert "Traceback" not in result.output


def test_gpt2_conv1d_factor_gradient():
    """GPT-2's Conv1D stores W as (in, out): dL/dB = s (dL/dW)^T A^T, and the adapter starts at the base model."""
    from transformers import GPT2Config, GPT2LMHeadModel

    def build():
        torch.manual_seed(0)
        config = GPT2Config(vocab_size=259, n_positions=64, n_embd=8, n_layer=1, n_head=2)
        return GPT2LMHeadModel(config).to(torch.float64).eval()

    sequence = random_sequences(1, seed=8)[0]
    base = build()
    weight = "transformer.h.0.attn.c_attn.weight"
    grad_w = torch.func.grad(lambda x: sequence_loss(base, [weight], x, sequence))(flat_parameters(base, [weight]))
    grad_w = grad_w.view(8, 24)  # (in, out)

    adapted = build()
    adapter = attach_adapter(adapted, lora_plan_from_dict({"r": 2, "lora_alpha": 4, "target_modules": ["c_attn"]}),
                             seed=0)
    ids = torch.tensor([sequence.input_ids])
    assert torch.equal(adapted(ids).logits, base(ids).logits)

    names = list(adapter.parameter_names)
    a = dict(adapted.named_parameters())[names[0]].detach()  # (r, in)
    grads = torch.func.grad(lambda x: sequence_loss(adapted, names, x, sequence))(flat_parameters(adapted, names))
    grad_b = grads[16:].view(24, 2)
    torch.testing.assert_close(grad_b, 2.0 * grad_w.T @ a.T, rtol=1e-10, atol=1e-14)
