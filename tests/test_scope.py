"""Tests for riskgate.loading.scope: default scope, patterns and gradient switches."""

from __future__ import annotations

import pytest

from riskgate.errors import UsageError
from riskgate.loading import scope as scope_module
from riskgate.loading.scope import enable_grad_for_scope, select_scope

BLOCK_MATRICES = (
    "self_attn.q_proj.weight",
    "self_attn.k_proj.weight",
    "self_attn.v_proj.weight",
    "self_attn.o_proj.weight",
    "mlp.gate_proj.weight",
    "mlp.up_proj.weight",
    "mlp.down_proj.weight",
)
# hidden 8, 2 heads of 4, 1 key-value head, intermediate 16: q 64 + k 32 + v 32 + o 64 + 3 x 128
BLOCK_MATRIX_NUMEL = 576


@pytest.fixture(scope="module")
def model():
    from tiny_models import build_model

    return build_model(num_layers=3)


def test_default_last_two_blocks(model):
    scope = select_scope(model, None)

    expected = tuple(f"model.layers.{layer}.{name}" for layer in (1, 2) for name in BLOCK_MATRICES)
    assert scope.names == expected
    assert scope.numel == 2 * BLOCK_MATRIX_NUMEL
    assert scope.default_used is True
    assert scope.shapes[0] == (8, 8)
    assert scope.shapes[6] == (8, 16)


def test_default_patterns_reproduce_scope(model):
    default = select_scope(model, None)

    again = select_scope(model, default.patterns)

    assert again.names == default.names
    assert again.default_used is False


def test_default_excludes_untied_head():
    from tiny_models import build_model

    untied = build_model(num_layers=2, tie_word_embeddings=False)

    scope = select_scope(untied, None)

    assert "lm_head.weight" not in scope.names
    assert not any("embed" in name or "norm" in name for name in scope.names)
    assert scope.numel == 2 * BLOCK_MATRIX_NUMEL


def test_empty_patterns_mean_default(model):
    assert select_scope(model, []).names == select_scope(model, None).names


def test_default_gpt2_style_blocks():
    from transformers import GPT2Config, GPT2LMHeadModel

    gpt2 = GPT2LMHeadModel(GPT2Config(n_layer=3, n_embd=8, n_head=2, vocab_size=50, n_positions=16))

    scope = select_scope(gpt2, None)

    assert scope.names == tuple(
        f"transformer.h.{layer}.{name}"
        for layer in (1, 2)
        for name in ("attn.c_attn.weight", "attn.c_proj.weight", "mlp.c_fc.weight", "mlp.c_proj.weight")
    )
    assert scope.numel == 2 * (8 * 24 + 8 * 8 + 8 * 32 + 32 * 8)


def test_fallback_without_blocks():
    import torch

    plain = torch.nn.Sequential(torch.nn.Embedding(10, 4), torch.nn.Linear(4, 6), torch.nn.LayerNorm(6))

    scope = select_scope(plain, None)

    assert scope.names == ("1.weight",)
    assert scope.numel == 24


def test_fallback_too_large(monkeypatch):
    import torch

    monkeypatch.setattr(scope_module, "FALLBACK_MAX_PARAMETERS", 10)
    plain = torch.nn.Sequential(torch.nn.Linear(4, 6))

    with pytest.raises(UsageError, match="--params") as caught:
        select_scope(plain, None)

    assert "24 parameters" in str(caught.value)


def test_glob_pattern(model):
    scope = select_scope(model, ["*.mlp.*"])

    assert len(scope.names) == 9
    assert all(".mlp." in name for name in scope.names)
    assert scope.numel == 3 * 3 * 128
    assert scope.patterns == ("*.mlp.*",)


def test_glob_matches_whole_name(model):
    with pytest.raises(UsageError, match="no parameter"):
        select_scope(model, ["mlp"])


def test_regex_pattern(model):
    scope = select_scope(model, [r"re:layers\.0\.self_attn\.[qk]_proj"])

    assert scope.names == ("model.layers.0.self_attn.q_proj.weight", "model.layers.0.self_attn.k_proj.weight")
    assert scope.numel == 64 + 32


def test_patterns_union_in_model_order(model):
    scope = select_scope(model, ["model.layers.2.*", "re:layers\\.0\\.mlp", "model.layers.2.mlp.*"])

    layer_numbers = [int(name.split(".")[2]) for name in scope.names]
    assert layer_numbers == sorted(layer_numbers)
    assert len(scope.names) == len(set(scope.names))
    assert len(scope.names) == 3 + 9  # layer 0 MLP, then all of layer 2 (7 matrices + 2 norms)


def test_pattern_without_match(model):
    with pytest.raises(UsageError) as caught:
        select_scope(model, ["*.layers.0.*", "*.q_prog.*"])

    message = str(caught.value)
    assert "'*.q_prog.*'" in message
    assert "model.embed_tokens.weight" in message


def test_regex_invalid(model):
    with pytest.raises(UsageError, match="invalid regular expression"):
        select_scope(model, ["re:layers.(0"])


def test_tied_embeddings_counted_once(model):
    everything = select_scope(model, ["*"])

    assert everything.numel == sum(parameter.numel() for parameter in model.parameters())
    assert everything.names.count("model.embed_tokens.weight") == 1
    assert "lm_head.weight" not in everything.names
    with pytest.raises(UsageError, match="lm_head"):
        select_scope(model, ["lm_head.weight"])


def test_enable_grad_for_scope(model):
    scope = select_scope(model, ["*.layers.2.mlp.*"])

    tensors = enable_grad_for_scope(model, scope)

    named = dict(model.named_parameters())
    assert [tensor.data_ptr() for tensor in tensors] == [named[name].data_ptr() for name in scope.names]
    assert {name for name, parameter in named.items() if parameter.requires_grad} == set(scope.names)
    model.requires_grad_(False)


def test_enable_grad_foreign_scope(model):
    from tiny_models import build_model

    scope = select_scope(build_model(num_layers=4), ["*.layers.3.*"])

    with pytest.raises(UsageError, match="model.layers.3"):
        enable_grad_for_scope(model, scope)
