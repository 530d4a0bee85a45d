"""Check 4, quartic warning: forecast of the safety-loss increase and the collapse step.

Gradient flow along the update direction v with acceleration h gives, at time t = eta * step,

    theta(t) - theta* = -t v + (t^2 / 2) h + O(t^3)

(v = g, h = H g for SGD; v = D g, h = D H D g for Adam-type optimizers). The forecast of the
safety-loss increase, in nats per response token, is

    Delta_u_hat(t) = linear(t) + (1/2) ||z(t)||^2 + noise(step)
    linear(t)      = <gbar_S, theta(t) - theta*> = -t mean_i(a_i) + (t^2 / 2) mean_i(<g_i, h>)
    z_j(t)         = sqrt(lambda_j) * (-t c_j + (t^2 / 2) b_j)
    noise(step)    = (eta^2 * step / (2 B)) * sum_j lambda_j Var_m(<v_j, u_m>)

with c = V_k^T v, b = V_k^T h, a = G v, u_m the per-example update directions and B the batch
size. The cross term in ||z||^2 is kept, so first- and second-order drift can cancel.

For Adam-type optimizers the displacement is clipped per coordinate (see adam_path.py). The
linear and drift terms then come from a `ClippedAdamPath` instead of the polynomial above.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from .adam_path import ClippedAdamPath, first_step

CURVE_POINTS = 64
SEARCH_CHUNK = 1 << 20


@dataclass(frozen=True)
class ForecastInputs:
    """Everything the forecast needs, reduced to the subspace; all float64 scalars or (k,)."""

    eigenvalues: torch.Tensor
    """lambda_1..lambda_k, shape (k,)."""
    c: torch.Tensor
    """V_k^T v, shape (k,)."""
    b: torch.Tensor
    """V_k^T h, shape (k,)."""
    mean_inner_v: float
    """mean_i <g_i, v>."""
    mean_inner_h: float
    """mean_i <g_i, h>."""
    noise_variance: float
    """sum_j lambda_j Var_m(<v_j, u_m>) (unbiased variance over the M examples)."""
    direction_norm: float
    """||v||."""
    hvp_norm: float
    """||h||."""


def noise_variance(subspace, per_example_inner: torch.Tensor) -> float:
    """Return sum_j lambda_j Var_m(<v_j, u_m>) from G u_m (n, M); zero for a single example."""
    if per_example_inner.shape[1] < 2:
        return 0.0
    projections = subspace.project(per_example_inner)  # (k, M)
    return float((subspace.eigenvalues * projections.var(dim=1, unbiased=True)).sum())


def forecast_inputs(subspace, overlap, curvature, inner_v: torch.Tensor, inner_h: torch.Tensor,
                    per_example_inner: torch.Tensor) -> ForecastInputs:
    """Collect the forecast's inputs from Checks 1-3 and the inner products G v, G h, G u_m."""
    return ForecastInputs(
        eigenvalues=subspace.eigenvalues,
        c=torch.tensor(overlap.coefficients, dtype=torch.float64),
        b=torch.tensor(curvature.coefficients, dtype=torch.float64),
        mean_inner_v=float(inner_v.mean()),
        mean_inner_h=float(inner_h.mean()),
        noise_variance=noise_variance(subspace, per_example_inner),
        direction_norm=overlap.gradient_norm,
        hvp_norm=curvature.hvp_norm,
    )


@dataclass(frozen=True)
class ForecastTerms:
    """Delta_u_hat and its terms at one step, in nats per response token."""

    step: int
    delta_u: float
    linear: float
    drift: float
    """(1/2) ||z(t)||^2."""
    noise: float
    onset_quartic: float
    """(gamma_hat^2 / 8) t^4, the pure onset term of Springer et al. (2026), reported beside the forecast."""


@dataclass(frozen=True)
class ForecastResult:
    """Check 4: when the forecast safety-loss increase reaches tau."""

    tau: float
    learning_rate: float
    batch_size: int
    planned_steps: int
    optimizer_form: str
    """`sgd` (v = g) or `adam` (v = D g with D = diag(1 / (sqrt(v_hat) + eps)))."""
    collapse_step: int | None
    """Smallest step s >= 1 with Delta_u_hat(eta s) >= tau; None if not within search_limit_step."""
    search_limit_step: int
    horizon_step: int | None
    """Smallest step with ||(t^2/2) h|| >= ||t v||; None when h = 0 (no second-order term)."""
    collapse_is_extrapolation: bool
    """True when collapse_step lies past horizon_step, where the expansion is doubtful."""
    at_planned_steps: ForecastTerms
    linear_dominates: bool
    """|linear| exceeds drift + noise at the planned step: the model is not at a safety optimum."""
    curve: tuple[ForecastTerms, ...]


def _terms(
    inputs: ForecastInputs,
    steps: torch.Tensor,
    learning_rate: float,
    batch_size: int,
    path: ClippedAdamPath | None = None,
):
    """Return (linear, drift, noise, onset) for a float64 tensor of steps, each shaped like it."""
    t = learning_rate * steps  # (S,)
    lam = inputs.eigenvalues.to(torch.float64)

    if path is None:
        linear = -t * inputs.mean_inner_v + 0.5 * t.square() * inputs.mean_inner_h

        # z_j(t) / sqrt(lambda_j) = -t c_j + (t^2/2) b_j, shape (S, k)
        displacement = -t[:, None] * inputs.c[None, :] + 0.5 * t.square()[:, None] * inputs.b[None, :]
        drift = 0.5 * (lam[None, :] * displacement.square()).sum(dim=1)
    else:
        pairs = [path.linear_and_drift(float(time)) for time in t]
        linear = torch.tensor([pair[0] for pair in pairs], dtype=torch.float64)
        drift = torch.tensor([pair[1] for pair in pairs], dtype=torch.float64)

    noise = (learning_rate**2) * steps / (2.0 * batch_size) * inputs.noise_variance
    gamma_hat_sq = float((lam * inputs.b.square()).sum())
    onset = gamma_hat_sq / 8.0 * t.pow(4)
    return linear, drift, noise, onset


def evaluate_forecast(
    inputs: ForecastInputs,
    steps: list[int],
    *,
    learning_rate: float,
    batch_size: int,
    path: ClippedAdamPath | None = None,
) -> list[ForecastTerms]:
    """Return the forecast terms at each of `steps`."""
    grid = torch.tensor(steps, dtype=torch.float64)
    linear, drift, noise, onset = _terms(inputs, grid, learning_rate, batch_size, path)
    total = linear + drift + noise
    return [
        ForecastTerms(
            step=int(s),
            delta_u=float(total[i]),
            linear=float(linear[i]),
            drift=float(drift[i]),
            noise=float(noise[i]),
            onset_quartic=float(onset[i]),
        )
        for i, s in enumerate(steps)
    ]


def find_collapse_step(
    inputs: ForecastInputs,
    *,
    tau: float,
    learning_rate: float,
    batch_size: int,
    search_limit: int,
    path: ClippedAdamPath | None = None,
) -> int | None:
    """Return the smallest integer step in [1, search_limit] with Delta_u_hat >= tau, or None.

    The polynomial forecast is evaluated at every integer step; the clipped Adam path, which
    costs one (n, d) product per step, is searched on a grid refined by bisection.
    """
    if path is not None:
        def reaches_tau(step: int) -> bool:
            terms = evaluate_forecast(inputs, [step], learning_rate=learning_rate, batch_size=batch_size, path=path)
            return terms[0].delta_u >= tau

        return first_step(reaches_tau, search_limit)

    for start in range(1, search_limit + 1, SEARCH_CHUNK):
        stop = min(start + SEARCH_CHUNK, search_limit + 1)
        grid = torch.arange(start, stop, dtype=torch.float64)
        linear, drift, noise, _ = _terms(inputs, grid, learning_rate, batch_size)
        hits = torch.nonzero(linear + drift + noise >= tau)
        if len(hits):
            return start + int(hits[0])
    return None


def horizon_step(direction_norm: float, hvp_norm: float, learning_rate: float) -> int | None:
    """Smallest step with (t^2/2) ||h|| >= t ||v||, i.e. step >= 2 ||v|| / (eta ||h||)."""
    if hvp_norm <= 0.0:
        return None
    boundary = 2.0 * direction_norm / (learning_rate * hvp_norm)
    if not math.isfinite(boundary) or boundary > 1e15:
        return None
    return max(1, math.ceil(boundary))


def quartic_forecast(
    inputs: ForecastInputs,
    *,
    tau: float,
    learning_rate: float,
    batch_size: int,
    planned_steps: int,
    optimizer_form: str,
    search_factor: int = 100,
    path: ClippedAdamPath | None = None,
) -> ForecastResult:
    """Compute Check 4: the collapse step within search_factor * planned_steps (at least 1000).

    With `path` (Adam), the horizon is the first step where the clipped second-order part of
    the displacement reaches the size of the first-order part.
    """
    search_limit = max(search_factor * planned_steps, 1000)
    collapse = find_collapse_step(
        inputs, tau=tau, learning_rate=learning_rate, batch_size=batch_size,
        search_limit=search_limit, path=path,
    )
    if path is None:
        horizon = horizon_step(inputs.direction_norm, inputs.hvp_norm, learning_rate)
    else:
        horizon = first_step(lambda step: path.second_order_ratio(learning_rate * step) >= 1.0, search_limit)

    planned = evaluate_forecast(
        inputs, [planned_steps], learning_rate=learning_rate, batch_size=batch_size, path=path
    )[0]
    linear_dominates = abs(planned.linear) > planned.drift + planned.noise

    # The curve spans the planned steps and, when it is not far beyond, the collapse step.
    end = max(planned_steps, min(collapse or 0, 10 * planned_steps))
    end = max(2, math.ceil(end * 1.25))
    curve_steps = sorted({max(1, round(end * i / (CURVE_POINTS - 1))) for i in range(CURVE_POINTS)})
    curve = evaluate_forecast(inputs, curve_steps, learning_rate=learning_rate, batch_size=batch_size, path=path)

    return ForecastResult(
        tau=tau,
        learning_rate=learning_rate,
        batch_size=batch_size,
        planned_steps=planned_steps,
        optimizer_form=optimizer_form,
        collapse_step=collapse,
        search_limit_step=search_limit,
        horizon_step=horizon,
        collapse_is_extrapolation=collapse is not None and horizon is not None and collapse > horizon,
        at_planned_steps=planned,
        linear_dominates=linear_dominates,
        curve=tuple(curve),
    )
