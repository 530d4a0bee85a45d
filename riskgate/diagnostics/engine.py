"""Run the four checks on a model and two tokenised sets.

Passes, in order (n safety sequences, M fine-tune sequences, d scoped parameters):
1. safety: per-sequence gradients G (n, d) -> Gram matrix -> Fisher subspace (Check 1);
2. fine-tune: per-example gradients (M, d) -> update direction v and per-example directions
   u_m -> inner products G v and G u_m (Check 2 and the noise term);
3. curvature: h = H v (or D H D g for Adam) by double backward -> G h (Checks 3 and 4).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch

from ..budget import BudgetExhausted, Deadline
from ..loading.records import EncodedSequence
from .adam_path import ClippedAdamPath
from .curvature import CurvatureResult, curvature_coupling
from .fisher import EigenvectorEntry, FisherSubspace, TensorSensitivity, fisher_subspace, gram_matrix, sensitivity_map
from .forecast import ForecastInputs, ForecastResult, quartic_forecast
from .gradients import hessian_vector_product, per_sequence_gradients
from .overlap import OverlapResult, initial_overlap
from .settings import DiagnosticSettings, Optimizer, Stage
from .uncertainty import BootstrapInputs, UncertaintyResult, bootstrap

COLUMN_CHUNK = 1 << 20


@dataclass(frozen=True)
class SetUsage:
    """Sequence and token counts of one set, and its mean loss at theta*."""

    sequences: int
    tokens: int
    loss_tokens: int
    mean_loss: float | None
    """Mean per-sequence loss at theta*, nats per response token; None if not computed."""


@dataclass(frozen=True)
class SharpnessResult:
    """Check 1: the Fisher subspace plus its sensitivity map."""

    subspace: FisherSubspace
    sensitivity: tuple[TensorSensitivity, ...]
    top_entries: tuple[EigenvectorEntry, ...]


@dataclass(frozen=True)
class DiagnosticsResult:
    """Everything the diagnostics produced; a check is None when the run stopped before it."""

    sharpness: SharpnessResult | None
    overlap: OverlapResult | None
    curvature: CurvatureResult | None
    forecast: ForecastResult | None
    uncertainty: UncertaintyResult | None
    safety: SetUsage
    finetune: SetUsage
    optimizer_form: str
    complete: bool
    incomplete_reason: str | None
    elapsed_s: float


ProgressCallback = Callable[[Stage, int, int], None]


def _usage(sequences: Sequence[EncodedSequence], losses: torch.Tensor | None) -> SetUsage:
    return SetUsage(
        sequences=len(sequences),
        tokens=sum(s.num_tokens for s in sequences),
        loss_tokens=sum(s.num_loss_tokens for s in sequences),
        mean_loss=float(losses.mean()) if losses is not None and len(losses) else None,
    )


def _inner_products(left: torch.Tensor, right: torch.Tensor, scale: torch.Tensor | None = None) -> torch.Tensor:
    """Return left @ (right * scale).T in float64, shapes (n, d) x (M, d) -> (n, M), by chunks."""
    result = torch.zeros((left.shape[0], right.shape[0]), dtype=torch.float64)
    for start in range(0, left.shape[1], COLUMN_CHUNK):
        columns = slice(start, start + COLUMN_CHUNK)
        block = right[:, columns].to(torch.float64)
        if scale is not None:
            block = block * scale[columns]
        result += left[:, columns].to(torch.float64) @ block.T
    return result


def _direction_gram(gradients: torch.Tensor, scale: torch.Tensor | None) -> torch.Tensor:
    """Return <u_m, u_m'> for u_m = scale * g'_m, float64, (M, d) -> (M, M), by chunks."""
    result = torch.zeros((gradients.shape[0], gradients.shape[0]), dtype=torch.float64)
    for start in range(0, gradients.shape[1], COLUMN_CHUNK):
        columns = slice(start, start + COLUMN_CHUNK)
        block = gradients[:, columns].to(torch.float64)
        if scale is not None:
            block = block * scale[columns]
        result += block @ block.T
    return result


def run_diagnostics(
    model: torch.nn.Module,
    params: Sequence[torch.Tensor],
    names: Sequence[str],
    safety: Sequence[EncodedSequence],
    finetune: Sequence[EncodedSequence],
    settings: DiagnosticSettings,
    *,
    pad_token_id: int,
    deadline: Deadline,
    progress: ProgressCallback | None = None,
) -> DiagnosticsResult:
    """Run Checks 1-4. A spent time budget gives a result with complete=False, never a pass."""
    shapes = [tuple(p.shape) for p in params]
    state: dict = {"safety_losses": None, "finetune_losses": None}

    def report(stage: Stage):
        return None if progress is None else (lambda done, total: progress(stage, done, total))

    sharpness = overlap = curvature = forecast = uncertainty = None
    optimizer_form = "adam" if settings.optimizer is Optimizer.ADAMW else "sgd"
    incomplete_reason = None
    try:
        # Check 1: per-sequence safety gradients and the Fisher subspace.
        safety_grads, state["safety_losses"] = per_sequence_gradients(
            model, params, safety, pad_token_id=pad_token_id, deadline=deadline,
            stage=Stage.SAFETY_GRADIENTS.value, progress=report(Stage.SAFETY_GRADIENTS),
        )  # (n, d)
        gram = gram_matrix(safety_grads)  # K, (n, n)
        subspace = fisher_subspace(
            gram, rho=settings.rho, k_max=settings.k_max, gradient_dtype=safety_grads.dtype
        )
        rows, entries = sensitivity_map(safety_grads, subspace, names, shapes)
        sharpness = SharpnessResult(subspace, tuple(rows), tuple(entries))

        # Check 2: the update direction v and its overlap with the subspace.
        finetune_grads, state["finetune_losses"] = per_sequence_gradients(
            model, params, finetune, pad_token_id=pad_token_id, deadline=deadline,
            stage=Stage.FINETUNE_GRADIENTS.value, progress=report(Stage.FINETUNE_GRADIENTS),
        )  # (M, d)
        mean_grad = finetune_grads.to(torch.float64).mean(dim=0)  # (d,)
        if settings.optimizer is Optimizer.ADAMW:
            second_moment = finetune_grads.to(torch.float64).square().mean(dim=0)  # (d,)
            preconditioner = 1.0 / (second_moment.sqrt() + settings.adam_epsilon)  # D, (d,)
        else:
            preconditioner = None
        direction = mean_grad if preconditioner is None else preconditioner * mean_grad  # v, (d,)
        inner_v = _inner_products(safety_grads, direction[None, :])[:, 0]  # G v, (n,)
        overlap = initial_overlap(
            subspace, inner_v, float(direction.norm()), orthogonality_level=settings.orthogonality_level
        )

        # Noise: variance over examples of <v_j, u_m>, u_m = D g'_m (or g'_m for SGD).
        per_example = _inner_products(safety_grads, finetune_grads, preconditioner)  # (n, M)
        projections = subspace.project(per_example)  # (k, M)
        if projections.shape[1] > 1:
            variance = projections.var(dim=1, unbiased=True)  # (k,)
            noise_variance = float((subspace.eigenvalues * variance).sum())
        else:
            noise_variance = 0.0
        direction_gram = _direction_gram(finetune_grads, preconditioner)  # <u_m, u_m'>, (M, M)
        del finetune_grads

        # Check 3: h = H v for SGD, h = D H v = D H D g for Adam.
        hvp = hessian_vector_product(
            model, params, finetune, direction, pad_token_id=pad_token_id, deadline=deadline,
            micro_batch_size=settings.micro_batch_size,
            progress=report(Stage.CURVATURE),
        ).to(torch.float64)
        if preconditioner is not None:
            hvp = preconditioner * hvp
        inner_h = _inner_products(safety_grads, hvp[None, :])[:, 0]  # G h, (n,)
        curvature = curvature_coupling(subspace, inner_h, float(hvp.norm()), hvp_method="double_backward")

        # Check 4: the forecast.
        inputs = ForecastInputs(
            eigenvalues=subspace.eigenvalues,
            c=torch.tensor(overlap.coefficients, dtype=torch.float64),
            b=torch.tensor(curvature.coefficients, dtype=torch.float64),
            mean_inner_v=float(inner_v.mean()),
            mean_inner_h=float(inner_h.mean()),
            noise_variance=noise_variance,
            direction_norm=overlap.gradient_norm,
            hvp_norm=curvature.hvp_norm,
        )
        path = None
        if preconditioner is not None:
            path = ClippedAdamPath(
                gradients=safety_grads, direction=direction, acceleration=hvp, subspace=subspace
            )
        deadline.check("forecast")
        forecast = quartic_forecast(
            inputs, tau=settings.tau, learning_rate=settings.learning_rate,
            batch_size=settings.batch_size, planned_steps=settings.planned_steps,
            optimizer_form=optimizer_form, path=path,
        )

        # Sampling uncertainty, from the quantities above without new passes.
        if settings.bootstrap_resamples > 0:
            deadline.check("bootstrap")
            uncertainty = bootstrap(
                BootstrapInputs(gram, per_example, direction_gram, inner_h, curvature.hvp_norm, safety_grads.dtype),
                rho=settings.rho, k_max=settings.k_max, orthogonality_level=settings.orthogonality_level,
                tau=settings.tau, learning_rate=settings.learning_rate, batch_size=settings.batch_size,
                search_limit=forecast.search_limit_step, with_collapse=path is None,
                resamples=settings.bootstrap_resamples, seed=settings.seed,
            )
    except BudgetExhausted as exc:
        incomplete_reason = str(exc)

    return DiagnosticsResult(
        sharpness=sharpness,
        overlap=overlap,
        curvature=curvature,
        forecast=forecast,
        uncertainty=uncertainty,
        safety=_usage(safety, state["safety_losses"]),
        finetune=_usage(finetune, state["finetune_losses"]),
        optimizer_form=optimizer_form,
        complete=incomplete_reason is None,
        incomplete_reason=incomplete_reason,
        elapsed_s=deadline.elapsed_s,
    )
