"""Sampling uncertainty of overlap_ratio, gamma_hat and the collapse step, by bootstrap.

Each resample draws n safety and M fine-tune sequences with replacement and recomputes the
checks from quantities the engine already holds, with no new forward or backward pass:

    K_b   = K[I, I]                           Gram matrix of the resampled safety sequences
    G_b v = mean_{m in J} (G u_m)[I]          inner products with the resampled update direction
    ||v|| = sqrt(mean_{m, m' in J} <u_m, u_m'>)
    G_b h = (G h)[I]                          h = H v is held fixed (one HVP per resample is too dear)

so an interval reflects which sequences happened to be sampled, not the curvature estimate.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from ..errors import AnalysisError
from .curvature import curvature_coupling
from .fisher import fisher_subspace
from .forecast import find_collapse_step, forecast_inputs
from .overlap import initial_overlap

LOW_QUANTILE = 0.05
HIGH_QUANTILE = 0.95


@dataclass(frozen=True)
class Interval:
    """The 5th, 50th and 95th percentiles of a bootstrap distribution."""

    low: float
    median: float
    high: float


@dataclass(frozen=True)
class CollapseInterval:
    """Bootstrap percentiles of the collapse step; None where the step lies past the search."""

    low: int | None
    median: int | None
    high: int | None
    none_fraction: float
    """Share of resamples with no collapse within the search limit."""


@dataclass(frozen=True)
class UncertaintyResult:
    """Bootstrap intervals over safety and fine-tune sequences."""

    resamples: int
    seed: int
    overlap_ratio: Interval
    gamma_hat: Interval
    collapse_step: CollapseInterval | None
    """None for the Adam form, whose clipped path costs a full search per resample."""


@dataclass(frozen=True)
class BootstrapInputs:
    """Quantities from the main pass; shapes use n safety and M fine-tune sequences."""

    gram: torch.Tensor
    """K = (1/n) G G^T, float64, (n, n)."""
    per_example_inner: torch.Tensor
    """G u_m for each fine-tune example, float64, (n, M)."""
    direction_gram: torch.Tensor
    """<u_m, u_m'>, float64, (M, M)."""
    inner_h: torch.Tensor
    """G h, float64, (n,)."""
    hvp_norm: float
    gradient_dtype: torch.dtype


def _interval(values: list[float]) -> Interval:
    ordered = torch.tensor(sorted(values), dtype=torch.float64)
    low, median, high = torch.quantile(ordered, torch.tensor([LOW_QUANTILE, 0.5, HIGH_QUANTILE], dtype=torch.float64))
    return Interval(float(low), float(median), float(high))


def _collapse_interval(steps: list[int | None]) -> CollapseInterval:
    """Percentiles by rank, counting 'no collapse' as later than any step."""
    ordered = sorted(steps, key=lambda step: math.inf if step is None else step)

    def at(quantile: float) -> int | None:
        return ordered[min(len(ordered) - 1, int(quantile * (len(ordered) - 1) + 0.5))]

    return CollapseInterval(
        low=at(LOW_QUANTILE),
        median=at(0.5),
        high=at(HIGH_QUANTILE),
        none_fraction=sum(step is None for step in steps) / len(steps),
    )


def bootstrap(
    inputs: BootstrapInputs,
    *,
    rho: float,
    k_max: int,
    orthogonality_level: float,
    tau: float,
    learning_rate: float,
    batch_size: int,
    search_limit: int,
    with_collapse: bool,
    resamples: int,
    seed: int,
) -> UncertaintyResult:
    """Resample sequences `resamples` times and return percentile intervals."""
    n, m = inputs.per_example_inner.shape
    generator = torch.Generator().manual_seed(seed)
    overlaps: list[float] = []
    gammas: list[float] = []
    collapses: list[int | None] = []

    for _ in range(resamples):
        safety_rows = torch.randint(n, (n,), generator=generator)  # I
        finetune_rows = torch.randint(m, (m,), generator=generator)  # J
        try:
            subspace = fisher_subspace(
                inputs.gram[safety_rows][:, safety_rows], rho=rho, k_max=k_max,
                gradient_dtype=inputs.gradient_dtype,
            )
        except AnalysisError:
            # A resample of only zero-gradient sequences has no subspace, so it is left out.
            continue

        per_example = inputs.per_example_inner[safety_rows][:, finetune_rows]  # (n, M)
        inner_v = per_example.mean(dim=1)  # (n,)
        norm_sq = float(inputs.direction_gram[finetune_rows][:, finetune_rows].mean())
        overlap = initial_overlap(
            subspace, inner_v, math.sqrt(max(norm_sq, 0.0)), orthogonality_level=orthogonality_level
        )
        inner_h = inputs.inner_h[safety_rows]
        curvature = curvature_coupling(subspace, inner_h, inputs.hvp_norm, hvp_method="fixed")
        overlaps.append(overlap.overlap_ratio)
        gammas.append(curvature.gamma_hat)

        if with_collapse:
            resampled = forecast_inputs(subspace, overlap, curvature, inner_v, inner_h, per_example)
            collapses.append(find_collapse_step(
                resampled, tau=tau, learning_rate=learning_rate, batch_size=batch_size,
                search_limit=search_limit,
            ))

    if not overlaps:
        raise AnalysisError("bootstrap: no resample had a nonzero safety Fisher")
    return UncertaintyResult(
        resamples=len(overlaps),
        seed=seed,
        overlap_ratio=_interval(overlaps),
        gamma_hat=_interval(gammas),
        collapse_step=_collapse_interval(collapses) if with_collapse else None,
    )
