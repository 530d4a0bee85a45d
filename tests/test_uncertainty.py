"""Bootstrap intervals of overlap_ratio, gamma_hat and the collapse step."""

from __future__ import annotations

import dataclasses

import pytest
from dense_reference import random_sequences

from riskgate.budget import Deadline
from riskgate.diagnostics.engine import run_diagnostics
from riskgate.diagnostics.settings import DiagnosticSettings, Optimizer
from tiny_models import build_model


@pytest.fixture(scope="module")
def scoped_model():
    model = build_model()
    for parameter in model.parameters():
        parameter.requires_grad_(False)
    names = [name for name, p in model.named_parameters() if ".layers.1." in name and p.ndim == 2]
    params = [dict(model.named_parameters())[name] for name in names]
    for parameter in params:
        parameter.requires_grad_(True)
    return model, params, names


SETTINGS = DiagnosticSettings(
    rho=0.9, k_max=8, orthogonality_level=0.1, tau=0.05, learning_rate=1e-2, batch_size=2,
    planned_steps=50, optimizer=Optimizer.SGD, bootstrap_resamples=100, seed=7,
)


def run(scoped_model, safety, finetune, settings=SETTINGS):
    model, params, names = scoped_model
    return run_diagnostics(model, params, names, safety, finetune, settings, pad_token_id=0, deadline=Deadline(None))


def test_identical_sequences_give_point_intervals(scoped_model):
    # Every resample of copies of one sequence is the original sample, so no spread is possible.
    safety = [dataclasses.replace(random_sequences(1, seed=1)[0], index=i) for i in range(6)]
    finetune = [dataclasses.replace(random_sequences(1, seed=2)[0], index=i) for i in range(4)]
    result = run(scoped_model, safety, finetune)
    intervals = result.uncertainty

    assert intervals.resamples == 100
    for bound in (intervals.overlap_ratio.low, intervals.overlap_ratio.median, intervals.overlap_ratio.high):
        assert bound == pytest.approx(result.overlap.overlap_ratio, rel=1e-9)
    for bound in (intervals.gamma_hat.low, intervals.gamma_hat.high):
        assert bound == pytest.approx(result.curvature.gamma_hat, rel=1e-9)
    assert intervals.collapse_step.low == result.forecast.collapse_step
    assert intervals.collapse_step.high == result.forecast.collapse_step


def test_intervals_ordered_and_seeded(scoped_model):
    safety = random_sequences(10, seed=3)
    finetune = random_sequences(6, seed=4, first_index=100)
    first = run(scoped_model, safety, finetune).uncertainty
    again = run(scoped_model, safety, finetune).uncertainty
    other = run(scoped_model, safety, finetune, dataclasses.replace(SETTINGS, seed=8)).uncertainty

    assert first.overlap_ratio.low <= first.overlap_ratio.median <= first.overlap_ratio.high
    assert first.gamma_hat.low <= first.gamma_hat.median <= first.gamma_hat.high
    assert first.overlap_ratio.low < first.overlap_ratio.high
    assert first == again
    assert other.overlap_ratio != first.overlap_ratio
    assert 0.0 <= first.collapse_step.none_fraction <= 1.0


def test_adam_form_skips_collapse_interval(scoped_model):
    settings = dataclasses.replace(SETTINGS, optimizer=Optimizer.ADAMW)
    result = run(scoped_model, random_sequences(8, seed=5), random_sequences(4, seed=6, first_index=50), settings)
    assert result.uncertainty.collapse_step is None
    assert result.uncertainty.gamma_hat.low <= result.uncertainty.gamma_hat.high


def test_zero_resamples_skip_bootstrap(scoped_model):
    settings = dataclasses.replace(SETTINGS, bootstrap_resamples=0)
    result = run(scoped_model, random_sequences(6, seed=5), random_sequences(3, seed=6, first_index=50), settings)
    assert result.uncertainty is None
    assert result.complete
