"""Baseline signals against explicit vectors in parameter space."""

from __future__ import annotations

import math

import pytest
import torch

from riskgate.diagnostics.baselines import baseline_signals


def _signals(safety: torch.Tensor, gradient: torch.Tensor, direction: torch.Tensor, rank: int, seed: int = 3):
    n = safety.shape[0]
    return baseline_signals(
        safety @ safety.T / n, safety @ gradient, safety @ direction,
        gradient_norm=float(gradient.norm()), direction_norm=float(direction.norm()), rank=rank, seed=seed,
    )


def test_cosine_matches_explicit_mean_gradient():
    torch.manual_seed(0)
    safety = torch.randn(6, 40, dtype=torch.float64)
    gradient = torch.randn(40, dtype=torch.float64)
    result = _signals(safety, gradient, gradient, rank=2)
    mean = safety.mean(dim=0)
    expected = float(mean @ gradient) / float(mean.norm() * gradient.norm())
    assert result.cosine_to_mean_safety_gradient == pytest.approx(expected, rel=1e-12)
    assert result.finetune_gradient_norm == pytest.approx(float(gradient.norm()))


def test_random_subspace_matches_explicit_projection():
    torch.manual_seed(1)
    safety = torch.randn(7, 30, dtype=torch.float64)
    direction = torch.randn(30, dtype=torch.float64)
    result = _signals(safety, direction, direction, rank=3, seed=11)
    weights = torch.randn((7, 3), generator=torch.Generator().manual_seed(11), dtype=torch.float64)
    basis, _ = torch.linalg.qr(safety.T @ weights)  # orthonormal basis of span(G^T W), (d, k)
    expected = float((basis.T @ direction).norm() / direction.norm())
    assert result.random_subspace_overlap_ratio == pytest.approx(expected, rel=1e-10)
    assert 0.0 < result.random_subspace_overlap_ratio < 1.0


def test_direction_inside_span_gives_ratio_one():
    torch.manual_seed(2)
    safety = torch.randn(4, 25, dtype=torch.float64)
    direction = safety.T @ torch.randn(4, dtype=torch.float64)
    result = _signals(safety, direction, direction, rank=4)
    assert result.random_subspace_overlap_ratio == pytest.approx(1.0, abs=1e-9)


def test_zero_gradient_gives_zero_cosine():
    safety = torch.randn(3, 10, dtype=torch.float64)
    zero = torch.zeros(10, dtype=torch.float64)
    result = _signals(safety, zero, zero, rank=1)
    assert result.cosine_to_mean_safety_gradient == 0.0
    assert result.random_subspace_overlap_ratio == 0.0
    assert not math.isnan(result.update_direction_norm)
