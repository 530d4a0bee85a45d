"""Check 3, smoke detector: how the fine-tune curvature pulls the update into the subspace.

Notation: h = H v (d,) is one Hessian-vector product of the fine-tune loss L along the update
direction v (for SGD v = g and h = H g, the acceleration of gradient flow; for Adam-type
optimizers h = D H D g). b = V_k^T h (k,) comes from the inner products G h (n,).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from .fisher import FisherSubspace


@dataclass(frozen=True)
class CurvatureResult:
    """Curvature coupling of the fine-tune trajectory into the sensitive subspace."""

    gamma_hat: float
    """||F^{1/2} P h|| = sqrt(sum_j lambda_j b_j^2) (the AIC's third condition)."""
    gamma_euclidean: float
    """||P h|| = ||b||."""
    hvp_norm: float
    """||h||."""
    projected_fraction: float
    """||P h|| / ||h||, in [0, 1]."""
    hvp_method: str
    """Method that computed h, e.g. `double_backward`."""
    coefficients: tuple[float, ...]
    """b_1..b_k."""


def curvature_coupling(
    subspace: FisherSubspace,
    inner_products: torch.Tensor,
    hvp_norm: float,
    *,
    hvp_method: str,
) -> CurvatureResult:
    """Compute Check 3 from G h (shape (n,)) and ||h||."""
    coefficients = subspace.project(inner_products)  # (k,)
    gamma_euclidean = float(coefficients.norm())
    gamma_hat = math.sqrt(float((subspace.eigenvalues * coefficients.square()).sum()))
    fraction = min(gamma_euclidean / hvp_norm, 1.0) if hvp_norm > 0 else 0.0
    return CurvatureResult(
        gamma_hat=gamma_hat,
        gamma_euclidean=gamma_euclidean,
        hvp_norm=hvp_norm,
        projected_fraction=fraction,
        hvp_method=hvp_method,
        coefficients=tuple(float(b) for b in coefficients),
    )
