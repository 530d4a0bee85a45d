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


import torch

from .fisher import FisherSubspace
from .sketch import CountSketch

# Steps up to this value are all evaluated; beyond it the grid grows geometrically.
DENSE_GRID_STEPS = 32
GRID_RATIO = 1.1


class ClippedAdamPath:
    """x(t) for Adam, with the safety gradients to evaluate the forecast along it.

    The path is evaluated many times by the collapse search, so its vectors are kept once in
    the gradients' dtype. On the sketched path, `gradients` contains S g_i (n, r) and S x(t) is
    formed directly: clipping to [-t, t] commutes with the signs s(i), so
    S x(t) = scatter(clip(s * (-t D g) + s * (t^2/2) D H D g, -t, t)), one O(d) pass per t.
    """

    def __init__(self, *, gradients: torch.Tensor, direction: torch.Tensor, acceleration: torch.Tensor,
                 subspace: FisherSubspace, sketch: CountSketch | None = None) -> None:
        self.gradients = gradients  # G (n, d) or S G (n, r)
        self.subspace = subspace
        self.sketch = sketch
        dtype = gradients.dtype
        self._first = direction.to(dtype)  # D g, (d,)
        self._second = (0.5 * acceleration).to(dtype)  # (1/2) D H D g, (d,)
        if sketch is not None:
            sign = sketch.signs(dtype).to("cpu")
            self._first = self._first * sign
            self._second = self._second * sign
        self._first_norm = float(direction.to(torch.float64).norm())

    def displacement(self, t: float) -> torch.Tensor:
        """x(t), shape (d,), in the gradients' dtype; multiplied by the signs s when sketched."""
        raw = self._first.mul(-t).add_(self._second, alpha=t * t)
        return raw.clamp_(min=-t, max=t)

    def linear_and_drift(self, t: float) -> tuple[float, float]:
        """Return (<gbar_S, x(t)>, (1/2) ||F^{1/2} P x(t)||^2) in nats per response token."""
        x = self.displacement(t)
        if self.sketch is not None:
            x = self.sketch.scatter(x.to(self.sketch.index.device)).cpu()  # S x(t), (r,)
        inner = (self.gradients @ x).to(torch.float64)  # G x(t), (n,)
        coefficients = self.subspace.project(inner)  # V_k^T x(t), (k,)
        drift = 0.5 * float((self.subspace.eigenvalues * coefficients.square()).sum())
        return float(inner.mean()), drift

    def second_order_ratio(self, t: float) -> float:
        """||x(t) + t D g|| / ||t D g||: the size of everything beyond the first-order term."""
        norm = t * self._first_norm
        beyond = self.displacement(t).add_(self._first, alpha=t)
        return float(beyond.to(torch.float64).norm()) / norm if norm > 0 else 0.0


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
