"""Batched per-sequence gradients against the unpadded one-sequence-at-a-time reference."""

from __future__ import annotations

import pytest
import torch

from dense_reference import compute_in_float64, flat_parameters, gradient_matrix, random_sequences
from riskgate.budget import Deadline
from riskgate.diagnostics.gradients import per_sequence_gradients
from riskgate.diagnostics.per_example import BatchedGradients
from tiny_models import build_model


def _scoped(model, names):
    for name, parameter in model.named_parameters():
        parameter.requires_grad_(name in names)
    table = dict(model.named_parameters())
    return [table[name] for name in names]


def _gpt2(seed: int = 0):
    from transformers import GPT2Config, GPT2LMHeadModel

    config = GPT2Config(vocab_size=259, n_positions=64, n_embd=8, n_layer=2, n_head=2,
                        attn_implementation="eager", pad_token_id=0)
    torch.manual_seed(seed)
    model = GPT2LMHeadModel(config).to(torch.float64)
    with torch.no_grad():
        for p in model.parameters():
            p.add_(0.3 * torch.randn_like(p))
    return model.eval()


def _compare(model, names, micro_batch_size: int = 3, rtol: float = 1e-9):
    params = _scoped(model, names)
    sequences = random_sequences(7, seed=5)
    batched, losses = per_sequence_gradients(
        model, params, sequences, pad_token_id=0, deadline=Deadline(None), stage="test",
        micro_batch_size=micro_batch_size,
    )
    reference = gradient_matrix(model, names, flat_parameters(model, names), sequences)
    scale = float(reference.abs().max())
    assert scale > 0
    error = float((batched.to(torch.float64) - reference).abs().max())
    assert error <= rtol * scale, f"max error {error:.3g} against scale {scale:.3g}"
    return params


def test_llama_every_parameter_type():
    model = compute_in_float64(build_model())
    names = [name for name, _ in model.named_parameters()]
    params = _compare(model, names)
    engine = BatchedGradients(model, params)
    assert engine.looped == []


def test_untied_head_and_embedding():
    model = compute_in_float64(build_model(tie_word_embeddings=False))
    _compare(model, ["model.embed_tokens.weight", "lm_head.weight", "model.norm.weight",
                     "model.layers.0.input_layernorm.weight"])


def test_gpt2_conv1d_layer_norm_and_positions():
    model = _gpt2()
    names = [name for name, _ in model.named_parameters()]
    params = _compare(model, names, rtol=1e-8)
    assert BatchedGradients(model, params).looped == []


@pytest.mark.parametrize("size", [1, 7])
def test_micro_batch_size_does_not_change_gradients(size):
    model = compute_in_float64(build_model())
    _compare(model, ["model.layers.1.mlp.up_proj.weight", "model.embed_tokens.weight"], micro_batch_size=size)


def test_unsupported_module_falls_back_to_loop():
    model = compute_in_float64(build_model())

    class Scale(torch.nn.Module):
        """Multiply by a learned scalar: a module type with no batched rule."""

        def __init__(self, inner):
            super().__init__()
            self.inner = inner
            self.factor = torch.nn.Parameter(torch.tensor(1.3, dtype=torch.float64))

        def forward(self, x):
            return self.inner(x) * self.factor

    model.model.layers[1].mlp.down_proj = Scale(model.model.layers[1].mlp.down_proj)
    names = ["model.layers.1.mlp.down_proj.factor", "model.layers.1.mlp.down_proj.inner.weight"]
    params = _compare(model, names)
    engine = BatchedGradients(model, params)
    assert engine.looped == [0]
    assert engine.hooked == [1]


def test_norm_with_other_formula_falls_back():
    model = compute_in_float64(build_model())
    norm = model.model.norm

    def squared_weight_norm(self, hidden):
        """y = w^2 * x_hat: named like an RMSNorm, but the RMSNorm rule's gradient is wrong for it."""
        variance = hidden.pow(2).mean(-1, keepdim=True)
        return self.weight.square() * (hidden * torch.rsqrt(variance + self.variance_epsilon))

    import types

    norm.forward = types.MethodType(squared_weight_norm, norm)
    params = _compare(model, ["model.norm.weight"])
    assert BatchedGradients(model, params).looped == [0]


def test_bfloat16_model_accumulates_in_float32():
    model = build_model(dtype="float32").to(torch.bfloat16)
    params = _scoped(model, ["model.layers.1.mlp.down_proj.weight"])
    grads, _ = per_sequence_gradients(model, params, random_sequences(3, seed=1), pad_token_id=0,
                                      deadline=Deadline(None), stage="test")
    assert grads.dtype == torch.float32
    assert torch.isfinite(grads).all()
    assert float(grads.abs().max()) > 0


def test_tied_parameter_reaches_sink_whole():
    model = compute_in_float64(build_model(tie_word_embeddings=True))
    params = _scoped(model, ["model.embed_tokens.weight", "model.layers.0.mlp.up_proj.weight"])
    from riskgate.diagnostics.gradients import make_batch, sequence_losses

    calls = []
    engine = BatchedGradients(model, params)
    batch = make_batch(random_sequences(3, seed=2), 0)
    engine.run(batch, torch.arange(3), lambda rows, index, grads: calls.append(index), sequence_losses)
    assert sorted(calls) == [0, 1]


def test_losses_run_lm_head_on_response_positions_only():
    from riskgate.diagnostics.gradients import make_batch, sequence_losses

    model = compute_in_float64(build_model())
    sequences = random_sequences(4, seed=6)
    batch = make_batch(sequences, 0)
    seen = []
    handle = model.lm_head.register_forward_hook(lambda module, inputs, output: seen.append(inputs[0].shape[1]))
    trimmed = sequence_losses(model, batch)
    handle.remove()
    longest = max(sum(s.loss_mask[1:]) for s in sequences)
    assert seen == [longest]
    assert longest < batch.input_ids.shape[1] - 1

    def without_option(**kwargs):
        if "logits_to_keep" in kwargs:
            raise TypeError("forward() got an unexpected keyword argument 'logits_to_keep'")
        return model(**kwargs)

    full = sequence_losses(without_option, batch)
    assert torch.allclose(trimmed, full, rtol=1e-12, atol=0)
