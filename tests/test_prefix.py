"""Caching the hidden states below the scope: same numbers, fewer layers per pass."""

from __future__ import annotations

import pytest
import torch

from dense_reference import compute_in_float64, random_sequences
from riskgate.budget import Deadline
from riskgate.diagnostics.engine import DiagnosticsRun
from riskgate.diagnostics.prefix import PrefixCache
from riskgate.diagnostics.settings import DiagnosticSettings, Optimizer
from test_per_example import _gpt2
from tiny_models import build_model

SETTINGS = DiagnosticSettings(rho=0.85, k_max=8, orthogonality_level=0.5, tau=1.0, learning_rate=1e-2,
                              batch_size=4, planned_steps=40, optimizer=Optimizer.ADAMW, bootstrap_resamples=0)


def _run(model, names, monkeypatch=None, disable=False, width=None):
    for name, parameter in model.named_parameters():
        parameter.requires_grad_(name in names)
    table = dict(model.named_parameters())
    if disable:
        monkeypatch.setattr(PrefixCache, "prepare", lambda self, sequences, pad: None)
    settings = DiagnosticSettings(**{**SETTINGS.__dict__, "sketch_width": width})
    runner = DiagnosticsRun(model, [table[n] for n in names], names, settings, pad_token_id=0, deadline=Deadline(None))
    result = runner.run(random_sequences(7, seed=1), random_sequences(5, seed=2, first_index=100))
    if disable:
        monkeypatch.undo()
    return runner, result


def _numbers(result):
    return [float(result.sharpness.subspace.spectrum[0]), result.overlap.overlap_ratio, result.curvature.gamma_hat,
            result.forecast.at_planned_steps.delta_u, result.safety.mean_loss, result.finetune.mean_loss]


@pytest.mark.parametrize("width", [None, 300])
def test_llama_tail_matches_whole_model(monkeypatch, width):
    model = compute_in_float64(build_model(num_layers=3))
    names = ["model.layers.2.self_attn.q_proj.weight", "model.layers.1.mlp.down_proj.weight"]
    runner, cached = _run(model, names, width=width)
    assert runner.prefix.enabled and runner.prefix.first == 1
    assert len(runner.prefix.states) == 12
    _, whole = _run(model, names, monkeypatch, disable=True, width=width)
    assert _numbers(cached) == pytest.approx(_numbers(whole), rel=1e-10)
    assert len(model.model.layers) == 3
    assert "model.layers.2.self_attn.q_proj.weight" in dict(model.named_parameters())


def test_gpt2_fails_the_check_and_runs_whole():
    model = _gpt2()
    runner, result = _run(model, ["transformer.h.1.mlp.c_fc.weight"])
    assert runner.prefix.possible
    assert not runner.prefix.enabled
    assert result.complete


@pytest.mark.parametrize("names", [["model.embed_tokens.weight"], ["model.layers.0.mlp.up_proj.weight"],
                                   ["model.layers.1.mlp.up_proj.weight", "model.norm.weight"]])
def test_scope_without_frozen_blocks_below(names):
    model = compute_in_float64(build_model())
    assert not PrefixCache(model, names).possible


def test_tail_restores_layers_after_error():
    model = compute_in_float64(build_model(num_layers=3))
    cache = PrefixCache(model, ["model.layers.2.mlp.up_proj.weight"])
    cache.prepare(random_sequences(2, seed=3), 0)
    assert cache.enabled
    with pytest.raises(RuntimeError, match="inside"):
        with cache.tail():
            assert len(model.model.layers) == 1
            raise RuntimeError("inside")
    assert len(model.model.layers) == 3
    assert torch.equal(model.model.layers[2].mlp.up_proj.weight, dict(model.named_parameters())["model.layers.2.mlp.up_proj.weight"])
