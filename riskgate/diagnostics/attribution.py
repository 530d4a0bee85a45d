"""Per-record attribution: which fine-tune records push the update into the safety subspace.

The fine-tune side of every check is a mean over records m = 1..M: v = mean_m u_m and
h = mean_m h_m, with u_m the record's update direction (g'_m, or D g'_m for Adam) and
h_m = H_m v its Hessian-vector product (D H_m v for Adam). So c = mean_m c_m and b = mean_m b_m
with c_m = V_k^T u_m and b_m = V_k^T h_m, and each squared norm splits exactly over records:

    ||c||^2 = sum_m <c_m, c> / M

A record's share is its term divided by the total; shares sum to 1 and can be negative when a
record pulls against the others. The same split applies to epsilon_fisher^2 (weights lambda_j),
gamma_hat^2 (b in place of c) and the forecast drift ||z||^2 at the planned step, with
z_m = sqrt(lambda) (-t c_m + (t^2 / 2) b_m) and t = eta * planned_steps.

Warning: for Adam the drift share uses the unclipped expansion, not the clipped path of the
forecast, and D comes from all analysed records.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import torch

from .fisher import FisherSubspace


@dataclass(frozen=True)
class RecordScore:
    """Attribution of one fine-tune record (its index in the dataset file)."""

    index: int
    drift_share: float
    """Share of the forecast drift (1/2)||z||^2 at the planned step; the risk ranking uses it."""
    epsilon_share: float
    """Share of ||P v||^2."""
    epsilon_fisher_share: float
    """Share of ||F^{1/2} P v||^2."""
    gamma_share: float
    """Share of gamma_hat^2 = ||F^{1/2} P h||^2, exact from the record's own H_m v."""
    projected_norm: float
    """||P u_m||, in parameter units."""
    overlap_ratio: float
    """||P u_m|| / ||u_m||."""
    cosine_safety: float
    """Cosine between u_m and the mean safety gradient gbar_S."""


def _shares(weights: torch.Tensor, parts: torch.Tensor) -> torch.Tensor:
    """Return <x_m, x>_w / (M ||x||_w^2) for columns x_m of `parts` (k, M), x their mean."""
    total = parts.mean(dim=1)  # (k,)
    denominator = float((weights * total.square()).sum()) * parts.shape[1]
    if denominator <= 0.0:
        return torch.zeros(parts.shape[1], dtype=torch.float64)
    return (weights[:, None] * parts * total[:, None]).sum(dim=0) / denominator


def record_scores(
    subspace: FisherSubspace,
    indices: Sequence[int],
    per_example_inner: torch.Tensor,
    per_record_hvp_inner: torch.Tensor,
    direction_gram: torch.Tensor,
    safety_gram: torch.Tensor,
    *,
    learning_rate: float,
    planned_steps: int,
) -> list[RecordScore]:
    """Score each record from G u_m (n, M), G h_m (n, M), <u_m, u_m'> (M, M) and K (n, n)."""
    eigenvalues = subspace.eigenvalues  # (k,)
    ones = torch.ones_like(eigenvalues)
    c = subspace.project(per_example_inner)  # (k, M)
    b = subspace.project(per_record_hvp_inner)  # (k, M)
    t = learning_rate * planned_steps
    z = eigenvalues.sqrt()[:, None] * (-t * c + 0.5 * t * t * b)  # (k, M)

    drift = _shares(ones, z)
    epsilon = _shares(ones, c)
    epsilon_fisher = _shares(eigenvalues, c)
    gamma = _shares(eigenvalues, b)

    norms = direction_gram.diagonal().clamp(min=0).sqrt()  # ||u_m||, (M,)
    n = safety_gram.shape[0]
    mean_safety_norm = math.sqrt(max(float(safety_gram.sum()) / n, 0.0))  # ||gbar_S||
    inner_mean_safety = per_example_inner.mean(dim=0)  # <gbar_S, u_m>, (M,)

    scores = []
    for m, index in enumerate(indices):
        projected = float(c[:, m].norm())
        norm = float(norms[m])
        denominator = norm * mean_safety_norm
        scores.append(
            RecordScore(
                index=int(index),
                drift_share=float(drift[m]),
                epsilon_share=float(epsilon[m]),
                epsilon_fisher_share=float(epsilon_fisher[m]),
                gamma_share=float(gamma[m]),
                projected_norm=projected,
                overlap_ratio=min(projected / norm, 1.0) if norm > 0 else 0.0,
                cosine_safety=float(inner_mean_safety[m]) / denominator if denominator > 0 else 0.0,
            )
        )
    return scores
