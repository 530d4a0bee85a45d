"""Check 2, false sense of security: how much of the fine-tune update lies in the subspace.

Notation: v is the update direction at theta* (the fine-tune gradient g for SGD, the
preconditioned D g for Adam-type optimizers), a = G v (n,), c = V_k^T v (k,).
Only inner products of the safety gradients with v are needed, never explicit eigenvectors.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from .fisher import FisherSubspace


@dataclass(frozen=True)
class OverlapResult:
    """Initial orthogonality of the update direction v to the sensitive subspace."""

    epsilon: float
    """||P v|| = ||c||, in parameter units (the AIC's second condition)."""
    overlap_ratio: float
    """||P v|| / ||v||, dimensionless, in [0, 1]."""
    epsilon_fisher: float
    """||F^{1/2} P v|| = sqrt(sum_j lambda_j c_j^2), in nats per token per parameter unit."""
    gradient_norm: float
    """||v||."""
    quadratic_form: float
    """v^T F v = ||a||^2 / n over the whole Fisher, not only the subspace."""
    second_order_trigger: bool
    """True when overlap_ratio < orthogonality_level: safe at first order, so curvature decides."""
    orthogonality_level: float
    coefficients: tuple[float, ...]
    """c_1..c_k."""


def initial_overlap(
    subspace: FisherSubspace,
    inner_products: torch.Tensor,
    direction_norm: float,
    *,
    orthogonality_level: float,
) -> OverlapResult:
    """Compute Check 2 from a = G v (shape (n,)) and ||v||."""
    coefficients = subspace.project(inner_products)  # (k,)
    epsilon = float(coefficients.norm())
    epsilon_fisher = math.sqrt(float((subspace.eigenvalues * coefficients.square()).sum()))
    overlap_ratio = epsilon / direction_norm if direction_norm > 0 else 0.0
    # Rounding can push the ratio a hair above 1 when v lies inside the subspace.
    overlap_ratio = min(overlap_ratio, 1.0)
    quadratic_form = float(inner_products.to(torch.float64).square().sum()) / subspace.n
    return OverlapResult(
        epsilon=epsilon,
        overlap_ratio=overlap_ratio,
        epsilon_fisher=epsilon_fisher,
        gradient_norm=direction_norm,
        quadratic_form=quadratic_form,
        second_order_trigger=overlap_ratio < orthogonality_level,
        orthogonality_level=orthogonality_level,
        coefficients=tuple(float(c) for c in coefficients),
    )
