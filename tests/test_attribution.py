"""Per-record attribution and the what-if rerun, against a dense float64 reference."""

from __future__ import annotations

import math

import pytest
import torch
from dense_reference import (
    compute_in_float64,
    dense_fisher,
    flat_parameters,
    gradient_matrix,
    hessian_matrix,
    random_sequences,
)

from riskgate.budget import Deadline
from riskgate.diagnostics.engine import DiagnosticsRun, run_diagnostics
from riskgate.diagnostics.settings import DiagnosticSettings, Optimizer
from tiny_models import build_model

RTOL = 1e-7
SCOPE = [
    "model.layers.1.self_attn.v_proj.weight",
    "model.layers.1.self_attn.o_proj.weight",
    "model.layers.1.mlp.down_proj.weight",
]
SETTINGS = DiagnosticSettings(
    rho=0.9, k_max=6, orthogonality_level=0.1, tau=0.05, learning_rate=5e-2, batch_size=2,
    planned_steps=20, optimizer=Optimizer.SGD, bootstrap_resamples=0,
)


@pytest.fixture(scope="module")
def setup():
    model = compute_in_float64(build_model())
    for name, parameter in model.named_parameters():
        parameter.requires_grad_(name in SCOPE)
    table = dict(model.named_parameters())
    params = [table[name] for name in SCOPE]
    safety = random_sequences(9, seed=11)
    finetune = random_sequences(5, seed=12, first_index=40)
    return model, params, safety, finetune


def make_run(setup, settings=SETTINGS) -> DiagnosticsRun:
    model, params, _, _ = setup
    return DiagnosticsRun(model, params, SCOPE, settings, pad_token_id=0, deadline=Deadline(None))


def close(actual: float, expected: float, scale: float = 1.0) -> bool:
    return math.isclose(actual, expected, rel_tol=RTOL, abs_tol=RTOL * scale)


def test_record_shares_match_dense(setup):
    model, _, safety, finetune = setup
    result = make_run(setup).run(safety, finetune)
    k = result.sharpness.subspace.k

    theta = flat_parameters(model, SCOPE)
    fisher = dense_fisher(gradient_matrix(model, SCOPE, theta, safety))
    updates = gradient_matrix(model, SCOPE, theta, finetune)  # u_m, (M, d)
    direction = updates.mean(dim=0)
    accelerations = torch.stack([hessian_matrix(model, SCOPE, theta, [s]) @ direction for s in finetune])
    t = SETTINGS.learning_rate * SETTINGS.planned_steps
    mean_safety = fisher.gradients.mean(dim=0)

    def shares(parts: torch.Tensor) -> torch.Tensor:
        total = parts.mean(dim=0)
        return (parts @ total) / (len(parts) * float(total @ total))

    projected = fisher.project(updates, k)
    expected = {
        "epsilon_share": shares(projected),
        "epsilon_fisher_share": shares(fisher.whiten(updates, k)),
        "gamma_share": shares(fisher.whiten(accelerations, k)),
        "drift_share": shares(fisher.whiten(-t * updates + 0.5 * t * t * accelerations, k)),
    }

    assert [score.index for score in result.records] == [s.index for s in finetune]
    for m, score in enumerate(result.records):
        for field, values in expected.items():
            assert close(getattr(score, field), float(values[m])), (field, m)
        assert close(score.projected_norm, float(projected[m].norm()))
        assert close(score.overlap_ratio, float(projected[m].norm() / updates[m].norm()))
        cosine = float(mean_safety @ updates[m] / (mean_safety.norm() * updates[m].norm()))
        assert close(score.cosine_safety, cosine)


@pytest.mark.parametrize("optimizer", [Optimizer.SGD, Optimizer.ADAMW])
def test_shares_sum_to_one(setup, optimizer):
    _, _, safety, finetune = setup
    settings = DiagnosticSettings(**{**SETTINGS.__dict__, "optimizer": optimizer})
    result = make_run(setup, settings).run(safety, finetune)
    for field in ("drift_share", "epsilon_share", "epsilon_fisher_share", "gamma_share"):
        assert math.isclose(sum(getattr(s, field) for s in result.records), 1.0, rel_tol=1e-9), field


@pytest.mark.parametrize("optimizer", [Optimizer.SGD, Optimizer.ADAMW])
def test_rerun_without_matches_fresh_run(setup, optimizer):
    model, params, safety, finetune = setup
    settings = DiagnosticSettings(**{**SETTINGS.__dict__, "optimizer": optimizer})
    runner = make_run(setup, settings)
    full = runner.run(safety, finetune)
    dropped = {finetune[1].index, finetune[3].index}
    what_if = runner.rerun_without(dropped)
    kept = [s for s in finetune if s.index not in dropped]
    fresh = run_diagnostics(model, params, SCOPE, safety, kept, settings, pad_token_id=0, deadline=Deadline(None))

    assert what_if.finetune.sequences == 3
    assert [r.index for r in what_if.records] == [s.index for s in kept]
    assert close(what_if.overlap.overlap_ratio, fresh.overlap.overlap_ratio)
    assert close(what_if.curvature.gamma_hat, fresh.curvature.gamma_hat)
    assert close(what_if.forecast.at_planned_steps.delta_u, fresh.forecast.at_planned_steps.delta_u, 1e-12)
    assert what_if.forecast.collapse_step == fresh.forecast.collapse_step
    assert not close(what_if.overlap.overlap_ratio, full.overlap.overlap_ratio)
