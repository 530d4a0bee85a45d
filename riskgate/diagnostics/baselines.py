"""Simple numbers to compare riskgate's checks against, from the same passes.

A gate's checks are worth their cost only if they predict damage better than cheaper signals.
These are the cheaper signals, computed from quantities the checks already have:

- cos(g, g_bar_s): cosine between the fine-tune gradient g and the mean safety gradient
  g_bar_s = (1/n) sum_i g_i. With a = G g (n,) and K = (1/n) G G^T,
  <g_bar_s, g> = mean(a) and ||g_bar_s||^2 = 1^T K 1 / n.
- ||g|| and ||v||: the sizes of the fine-tune gradient and of the update direction.
- The overlap ratio with a random subspace of the same rank k inside the span of the safety
  gradients: R = span(G^T W) for a Gaussian W (n, k). With b = W^T G v (k,) and the basis
  Gram matrix B = W^T G G^T W = n W^T K W (k, k), ||P_R v||^2 = b^T B^+ b. It shows whether
  the top Fisher directions matter, or any k directions the safety gradients span would do.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch


@dataclass(frozen=True)
class BaselineResult:
    """Baseline signals for the validation of the checks; none of them gates the verdict."""

    cosine_to_mean_safety_gradient: float
    """cos(g, g_bar_s), in [-1, 1]; 0 when either gradient is zero."""
    finetune_gradient_norm: float
    """||g||, nats per token per parameter unit."""
    update_direction_norm: float
    """||v|| (equal to ||g|| for SGD)."""
    random_subspace_overlap_ratio: float
    """||P_R v|| / ||v|| for a random rank-k subspace of span(g_1..g_n), in [0, 1]."""
    random_subspace_rank: int


def baseline_signals(
    gram: torch.Tensor,
    inner_g: torch.Tensor,
    inner_v: torch.Tensor,
    *,
    gradient_norm: float,
    direction_norm: float,
    rank: int,
    seed: int,
) -> BaselineResult:
    """Compute the baselines from K (n, n), a = G g (n,), G v (n,), ||g||, ||v|| and k."""
    n = gram.shape[0]
    gram = gram.to(torch.float64)
    ones = torch.ones(n, dtype=torch.float64)
    mean_safety_norm = math.sqrt(max(float(ones @ gram @ ones) / n, 0.0))
    denominator = mean_safety_norm * gradient_norm
    cosine = float(inner_g.to(torch.float64).mean()) / denominator if denominator > 0 else 0.0

    generator = torch.Generator().manual_seed(seed % (2**63))
    weights = torch.randn((n, rank), generator=generator, dtype=torch.float64)  # W, (n, k)
    coefficients = weights.T @ inner_v.to(torch.float64)  # b = W^T G v, (k,)
    basis_gram = n * weights.T @ gram @ weights  # B, (k, k)
    projected = float(coefficients @ torch.linalg.pinv(basis_gram, hermitian=True) @ coefficients)
    ratio = math.sqrt(max(projected, 0.0)) / direction_norm if direction_norm > 0 else 0.0
    return BaselineResult(
        cosine_to_mean_safety_gradient=max(-1.0, min(1.0, cosine)),
        finetune_gradient_norm=gradient_norm,
        update_direction_norm=direction_norm,
        random_subspace_overlap_ratio=min(ratio, 1.0),
        random_subspace_rank=rank,
    )
