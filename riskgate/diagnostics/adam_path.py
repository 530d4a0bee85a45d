"""The Adam trajectory the forecast uses: the second-order expansion, clipped per coordinate.

With a fixed preconditioner D = diag(1 / (sqrt(v_hat) + eps)), Adam's flow expands as

    x(t) = theta(t) - theta* = -t D g + (t^2 / 2) D H D g + O(t^3),   t = eta * step.

D g is bounded (|g_i| <= sqrt(v_hat_i), so |(D g)_i| <= 1), but D H D g is not: where every
per-example gradient of coordinate i is tiny, D_i is up to 1/eps, and the expansion predicts a
displacement that real Adam never makes. Adam renormalises each coordinate by its running
second moment, so a coordinate moves by about eta per step at most while its gradient keeps
one sign (|m_hat / sqrt(v_hat)| <= 1). riskgate therefore forecasts with

    x_i(t) = clip(-t (D g)_i + (t^2 / 2) (D H D g)_i, -t, t).

The clipped path is not a polynomial in t, so the safety-side terms are evaluated from the
inner products G x(t) (n,), one (n, d) product per step evaluated.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch

from .fisher import FisherSubspace

# Steps up to this value are all evaluated; beyond it the grid grows geometrically.
DENSE_GRID_STEPS = 32
GRID_RATIO = 1.1


@dataclass(frozen=True)
class ClippedAdamPath:
    """x(t) for Adam, with the safety gradients to evaluate the forecast along it."""

    gradients: torch.Tensor
    """G, per-sequence safety gradients, shape (n, d)."""
    direction: torch.Tensor
    """D g, shape (d,)."""
    acceleration: torch.Tensor
    """D H D g, shape (d,)."""
    subspace: FisherSubspace
    project: Callable[[torch.Tensor], torch.Tensor] | None = None
    """x -> S x when `gradients` holds sketched rows S g_i (n, r); None when they are exact."""

    def displacement(self, t: float) -> torch.Tensor:
        """x(t), shape (d,), in the gradients' dtype."""
        raw = -t * self.direction + (0.5 * t * t) * self.acceleration
        return raw.clamp(min=-t, max=t).to(self.gradients.dtype)

    def linear_and_drift(self, t: float) -> tuple[float, float]:
        """Return (<gbar_S, x(t)>, (1/2) ||F^{1/2} P x(t)||^2) in nats per response token."""
        x = self.displacement(t)
        if self.project is not None:
            x = self.project(x).to(self.gradients.dtype)
        inner = (self.gradients @ x).to(torch.float64)  # G x(t), (n,)
        coefficients = self.subspace.project(inner)  # V_k^T x(t), (k,)
        drift = 0.5 * float((self.subspace.eigenvalues * coefficients.square()).sum())
        return float(inner.mean()), drift

    def second_order_ratio(self, t: float) -> float:
        """||x(t) + t D g|| / ||t D g||: the size of everything beyond the first-order term."""
        first = t * self.direction
        beyond = self.displacement(t).to(first.dtype) + first
        norm = float(first.norm())
        return float(beyond.norm()) / norm if norm > 0 else 0.0


def search_grid(limit: int) -> list[int]:
    """Steps 1..DENSE_GRID_STEPS, then a geometric grid up to `limit` (inclusive)."""
    steps = list(range(1, min(limit, DENSE_GRID_STEPS) + 1))
    step = float(steps[-1])
    while steps[-1] < limit:
        step *= GRID_RATIO
        steps.append(min(limit, max(steps[-1] + 1, round(step))))
    return steps


def first_step(predicate, limit: int) -> int | None:
    """Return the smallest step in [1, limit] where `predicate(step)` is true, or None.

    The search walks `search_grid` and bisects the first cell where the predicate turns true.
    NOTE: a forecast that crosses tau and falls back within one grid cell is missed.
    """
    previous = 0
    for step in search_grid(limit):
        if predicate(step):
            low, high = previous, step  # predicate false at low (or low == 0), true at high
            while high - low > 1:
                middle = (low + high) // 2
                if predicate(middle):
                    high = middle
                else:
                    low = middle
            return high
        previous = step
    return None
