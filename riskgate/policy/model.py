"""Data types of the policy layer: the resolved policy, the metrics it gates, the findings.

Nothing here imports torch; the policy layer must load and validate instantly.
"""

from __future__ import annotations

import enum
import math
from dataclasses import dataclass
from typing import Any


class Direction(str, enum.Enum):
    """The worse side of a threshold for a metric."""

    MAX = "max"
    """Higher is worse: a value at or above a threshold trips it (warn must be <= fail)."""
    MIN = "min"
    """Lower is worse: a value at or below a threshold trips it (warn must be >= fail)."""


@dataclass(frozen=True)
class MetricSpec:
    """Direction, valid threshold range and unit of one gated metric."""

    name: str
    direction: Direction
    unit: str
    minimum: float = 0.0
    """Smallest valid threshold (inclusive)."""
    maximum: float | None = None
    """Largest valid threshold (inclusive), or None for no upper bound."""


METRICS: dict[str, MetricSpec] = {
    spec.name: spec
    for spec in (
        MetricSpec("overlap_ratio", Direction.MAX, "fraction ||P g|| / ||g||", maximum=1.0),
        MetricSpec("gamma_hat", Direction.MAX, "||F^1/2 P H g||"),
        MetricSpec("delta_u_at_planned_steps", Direction.MAX, "nats per response token"),
        MetricSpec("collapse_step", Direction.MIN, "optimizer steps"),
        MetricSpec("collapse_step_ratio", Direction.MIN, "collapse_step / planned_steps"),
    )
}
"""The metrics a policy may set thresholds for, in the order findings are reported."""


@dataclass(frozen=True)
class Threshold:
    """The warn and fail limits of one metric. At least one of them is set."""

    metric: str
    warn: float | None
    fail: float | None
    direction: Direction

    def to_dict(self) -> dict[str, Any]:
        return {"warn": self.warn, "fail": self.fail, "direction": self.direction.value}


@dataclass(frozen=True)
class Policy:
    """A validated policy with its `extends` chain merged in."""

    name: str
    description: str
    source: str
    """Origin of the requested policy: "preset:NAME", or the file path as given."""
    sha256: str
    """SHA-256 of the requested file's bytes (of the preset file for a preset).

    Files it extends are not hashed in, but `extends_chain` names them.
    """
    extends_chain: tuple[str, ...]
    """Every policy resolved, child first. The first entry equals `source`."""
    rho: float
    """Fraction of tr(F) the Fisher subspace must explain, in (0, 1]."""
    k_max: int
    """Maximum rank k of the Fisher subspace."""
    orthogonality_level: float
    """overlap_ratio below this sets the second-order (curvature) trigger."""
    tau: float
    """Tolerated safety-loss increase in nats per response token, which defines the collapse step."""
    thresholds: tuple[Threshold, ...]
    min_safety_examples: int
    min_finetune_examples: int

    def threshold(self, metric: str) -> Threshold | None:
        """Return the threshold set for `metric`, or None when the policy sets none."""
        for threshold in self.thresholds:
            if threshold.metric == metric:
                return threshold
        return None

    def to_dict(self) -> dict[str, Any]:
        """Return the resolved policy as plain JSON types, in the policy file's layout."""
        return {
            "schema_version": 1,
            "name": self.name,
            "description": self.description,
            "source": self.source,
            "sha256": self.sha256,
            "extends_chain": list(self.extends_chain),
            "subspace": {
                "rho": self.rho,
                "k_max": self.k_max,
                "orthogonality_level": self.orthogonality_level,
            },
            "forecast": {"tau": self.tau},
            "thresholds": {t.metric: t.to_dict() for t in self.thresholds},
            "samples": {
                "min_safety_examples": self.min_safety_examples,
                "min_finetune_examples": self.min_finetune_examples,
            },
        }


@dataclass(frozen=True)
class Metrics:
    """The numbers a policy gates, taken from one analysis."""

    overlap_ratio: float | None
    """||P g|| / ||g||, in [0, 1]; None when not computed."""
    gamma_hat: float | None
    """||F^1/2 P H g||; None when not computed."""
    delta_u_at_planned_steps: float | None
    """Forecast safety-loss increase after the planned steps, nats per response token."""
    collapse_step: int | None
    """First step whose forecast reaches tau, or None when no searched step reaches it."""
    collapse_search_limit: int | None
    """Last step the collapse search covered, or None when unknown."""
    planned_steps: int
    safety_examples: int
    """Number of safety sequences the analysis used."""
    finetune_examples: int
    """Number of fine-tune sequences the analysis used."""
    linear_dominates: bool = False
    """True when the first-order safety-loss term dominates the forecast."""
    complete: bool = True
    """False when the analysis stopped early (budget, numerical failure)."""
    incomplete_reason: str | None = None


class Verdict(str, enum.Enum):
    """Outcome of a policy evaluation."""

    PASS = "pass"
    """Every rule is within its thresholds."""
    WARN = "warn"
    """At least one rule reached its warn threshold and none failed."""
    FAIL = "fail"
    """At least one rule reached its fail threshold."""
    ERROR = "error"
    """The analysis is incomplete or untrustworthy (too few samples, a metric not computed)."""


class FindingStatus(str, enum.Enum):
    """Outcome of one rule."""

    PASS = "pass"
    """The value is within the thresholds."""
    WARN = "warn"
    """The value reached the warn threshold (or an informational condition holds)."""
    FAIL = "fail"
    """The value reached the fail threshold."""
    ERROR = "error"
    """The rule could not be checked: value missing, NaN, or from too few samples."""
    WAIVED = "waived"
    """The rule failed or warned, but a waiver for this model and dataset accepts it, so it
    does not count toward the verdict. Error findings are never waived."""


@dataclass(frozen=True)
class WaivedBy:
    """The waiver entry that turned a failing or warning finding into a waived one."""

    source: str
    """The waivers file as given."""
    index: int
    """Position of the entry in the file's `waivers` list, counted from 0."""
    reason: str
    expires: str | None
    """Last day the waiver applies (YYYY-MM-DD, UTC), or None when it does not expire."""
    original_status: FindingStatus
    """The finding's status before the waiver: fail or warn."""

    def to_dict(self) -> dict[str, Any]:
        return {
            "source": self.source,
            "index": self.index,
            "reason": self.reason,
            "expires": self.expires,
            "original_status": self.original_status.value,
        }


@dataclass(frozen=True)
class Finding:
    """The result of one policy rule."""

    rule: str
    """Rule name: the metric name for thresholds, else e.g. "min_safety_examples"."""
    metric: str
    value: float | int | bool | None
    warn_threshold: float | None
    fail_threshold: float | None
    threshold: float | None
    """The threshold that decided the status. For a pass, the warn threshold if set, else fail."""
    level: str
    """Severity for annotations: "fail" (status fail or error), "warn" (status warn), or
    "info" (status pass or waived, or an informational finding that never changes the verdict)."""
    status: FindingStatus
    message: str
    """One line, starting with the metric or rule name."""
    waived_by: WaivedBy | None = None
    """The waiver that accepts this finding; set only when `status` is waived."""

    def to_dict(self) -> dict[str, Any]:
        """Return the finding as plain JSON types, with a non-finite value as None.

        The `waived_by` key is present only on waived findings.
        """
        data = {
            "rule": self.rule,
            "metric": self.metric,
            "value": _json_number(self.value),
            "warn_threshold": self.warn_threshold,
            "fail_threshold": self.fail_threshold,
            "threshold": self.threshold,
            "level": self.level,
            "status": self.status.value,
            "message": self.message,
        }
        if self.waived_by is not None:
            data["waived_by"] = self.waived_by.to_dict()
        return data


@dataclass(frozen=True)
class Evaluation:
    """A policy verdict with the findings behind it."""

    verdict: Verdict
    reason: str
    """One line: the verdict and its main cause."""
    findings: tuple[Finding, ...]

    def to_dict(self) -> dict[str, Any]:
        return {
            "verdict": self.verdict.value,
            "reason": self.reason,
            "findings": [finding.to_dict() for finding in self.findings],
        }


def _json_number(value: float | int | bool | None) -> float | int | bool | None:
    # Strict JSON has no NaN or Infinity. The finding's message keeps the original value.
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value
