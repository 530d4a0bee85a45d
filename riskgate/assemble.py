"""Assemble the canonical report (a JSON-able dict) from the results of each layer.

This is the only place where diagnostics results become report fields; renderers read the
dict and never recompute numbers. Schema version 1 is documented in docs/report-schema.md.
"""

from __future__ import annotations

import datetime as _dt
from dataclasses import asdict, dataclass
from typing import TYPE_CHECKING

from . import __version__
from .budget import Budget
from .loading.records import EncodedSet, SkippedRecord
from .plan import TrainingPlan

if TYPE_CHECKING:
    from .diagnostics.engine import DiagnosticsResult

SCHEMA_VERSION = 1
MAX_LISTED_SKIPS = 100


@dataclass(frozen=True)
class DataSummary:
    """Record counts of one dataset from its file to the diagnostics."""

    path: str
    sha256: str
    format: str
    records_total: int
    """Rows in the file."""
    records_sampled_out: int
    """Valid records left out by --max-*-examples sampling."""
    skipped: tuple[SkippedRecord, ...]
    """Records left out while loading or tokenising, with reasons."""
    duplicates: int
    encoded: EncodedSet | None
    builtin: bool = False


def data_section(summary: DataSummary, mean_loss: float | None, used: int) -> dict:
    encoded = summary.encoded
    section = {
        "path": summary.path,
        "sha256": summary.sha256,
        "format": summary.format,
        "records_total": summary.records_total,
        "records_used": used,
        "records_sampled_out": summary.records_sampled_out,
        "records_skipped": len(summary.skipped),
        "skipped": [{"index": s.index, "reason": s.reason} for s in summary.skipped[:MAX_LISTED_SKIPS]],
        "duplicates": summary.duplicates,
        "sequences_truncated": encoded.num_truncated if encoded else 0,
        "tokens": encoded.num_tokens if encoded else 0,
        "loss_tokens": encoded.num_loss_tokens if encoded else 0,
        "template": encoded.template if encoded else None,
        "mean_loss_at_base": mean_loss,
        # Which records the seeded sample chose, so a run can be reproduced and audited.
        "records_analysed": [sequence.index for sequence in encoded.sequences] if encoded else [],
    }
    if summary.builtin:
        section["builtin"] = True
    return section


def _sharpness(result: DiagnosticsResult) -> dict | None:
    if result.sharpness is None:
        return None
    subspace = result.sharpness.subspace
    return {
        "k": subspace.k,
        "eigenvalues": [float(x) for x in subspace.eigenvalues],
        "lambda_k": float(subspace.eigenvalues[-1]),
        "trace": subspace.trace,
        "tail_mass": subspace.tail_mass,
        "explained_fraction": subspace.explained_fraction,
        "effective_rank": subspace.effective_rank,
        "rho": subspace.rho,
        "k_max": subspace.k_max,
        "numerical_rank": subspace.numerical_rank,
        "spectrum": [float(x) for x in subspace.spectrum],
        "sensitivity": [
            {"tensor": row.tensor, "share": row.share, "numel": row.numel}
            for row in result.sharpness.sensitivity
        ],
        "top_entries": [
            {"eigenvector": e.eigenvector, "tensor": e.tensor, "index": list(e.index), "value": e.value}
            for e in result.sharpness.top_entries
        ],
        "sequences": result.safety.sequences,
        "tokens": result.safety.tokens,
    }


def _usage_fields(result: DiagnosticsResult) -> dict:
    return {
        "sequences": {"safety": result.safety.sequences, "finetune": result.finetune.sequences},
        "tokens": {"safety": result.safety.loss_tokens, "finetune": result.finetune.loss_tokens},
    }


def _overlap(result: DiagnosticsResult) -> dict | None:
    overlap = result.overlap
    if overlap is None:
        return None
    return {
        "epsilon": overlap.epsilon,
        "overlap_ratio": overlap.overlap_ratio,
        "epsilon_fisher": overlap.epsilon_fisher,
        "gradient_norm": overlap.gradient_norm,
        "quadratic_form": overlap.quadratic_form,
        "second_order_trigger": overlap.second_order_trigger,
        "orthogonality_level": overlap.orthogonality_level,
        "optimizer_form": result.optimizer_form,
        **_usage_fields(result),
    }


def _curvature(result: DiagnosticsResult) -> dict | None:
    curvature = result.curvature
    if curvature is None:
        return None
    return {
        "gamma_hat": curvature.gamma_hat,
        "gamma_euclidean": curvature.gamma_euclidean,
        "hvp_norm": curvature.hvp_norm,
        "projected_fraction": curvature.projected_fraction,
        "hvp_method": curvature.hvp_method,
        "optimizer_form": result.optimizer_form,
        **_usage_fields(result),
    }


def _terms(terms) -> dict:
    return {
        "step": terms.step,
        "delta_u": terms.delta_u,
        "linear": terms.linear,
        "drift": terms.drift,
        "noise": terms.noise,
        "onset_quartic": terms.onset_quartic,
    }


def _forecast(result: DiagnosticsResult) -> dict | None:
    forecast = result.forecast
    if forecast is None:
        return None
    planned = _terms(forecast.at_planned_steps)
    return {
        "tau": forecast.tau,
        "collapse_step": forecast.collapse_step,
        "collapse_is_extrapolation": forecast.collapse_is_extrapolation,
        "horizon_step": forecast.horizon_step,
        "search_limit_step": forecast.search_limit_step,
        "planned_steps": forecast.planned_steps,
        "learning_rate": forecast.learning_rate,
        "batch_size": forecast.batch_size,
        "optimizer_form": forecast.optimizer_form,
        "delta_u_at_planned_steps": planned["delta_u"],
        "terms_at_planned_steps": {key: planned[key] for key in ("linear", "drift", "noise", "onset_quartic")},
        "linear_dominates": forecast.linear_dominates,
        "curve": [_terms(point) for point in forecast.curve],
        **_usage_fields(result),
    }


def _uncertainty(result: DiagnosticsResult) -> dict | None:
    uncertainty = result.uncertainty
    if uncertainty is None:
        return None

    def interval(value) -> dict:
        return {"p05": value.low, "p50": value.median, "p95": value.high}

    collapse = uncertainty.collapse_step
    return {
        "method": "bootstrap over safety and fine-tune sequences; H v held fixed",
        "resamples": uncertainty.resamples,
        "seed": uncertainty.seed,
        "overlap_ratio": interval(uncertainty.overlap_ratio),
        "gamma_hat": interval(uncertainty.gamma_hat),
        "collapse_step": None if collapse is None else {
            "p05": collapse.low, "p50": collapse.median, "p95": collapse.high,
            "none_fraction": collapse.none_fraction,
        },
    }


def checks_section(result: DiagnosticsResult | None) -> dict:
    if result is None:
        return {
            "sharpness": None, "initial_orthogonality": None, "curvature_coupling": None,
            "quartic_forecast": None, "uncertainty": None,
        }
    return {
        "sharpness": _sharpness(result),
        "initial_orthogonality": _overlap(result),
        "curvature_coupling": _curvature(result),
        "quartic_forecast": _forecast(result),
        "uncertainty": _uncertainty(result),
    }


def baselines_section(result: DiagnosticsResult | None) -> dict | None:
    """Baseline signals for validating the checks (diagnostics/baselines.py); they never gate."""
    if result is None or result.baselines is None:
        return None
    return asdict(result.baselines)


def build_report(
    *,
    verdict: str,
    exit_code: int,
    reason: str,
    errors: list[str],
    model: dict | None,
    dataset: dict | None,
    safety_data: dict | None,
    policy: dict | None,
    plan: TrainingPlan | None,
    budget: Budget,
    budget_used: dict,
    seed: int,
    diagnostics: DiagnosticsResult | None,
    findings: list[dict],
) -> dict:
    """Return the canonical report dict (schema version 1)."""
    return {
        "schema_version": SCHEMA_VERSION,
        "riskgate_version": __version__,
        "created_at": _dt.datetime.now(_dt.timezone.utc).replace(microsecond=0).isoformat().replace("+00:00", "Z"),
        "verdict": verdict,
        "exit_code": exit_code,
        "reason": reason,
        "complete": diagnostics is not None and diagnostics.complete and not errors,
        "errors": errors,
        "model": model,
        "dataset": dataset,
        "safety_data": safety_data,
        "policy": policy,
        "training_plan": plan.to_dict() if plan else None,
        "budget": {"limits": budget.to_dict(), "used": budget_used},
        "seed": seed,
        "checks": checks_section(diagnostics),
        "baselines": baselines_section(diagnostics),
        "findings": findings,
    }
