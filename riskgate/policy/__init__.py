"""The policy layer: load and validate policy YAML (presets, `extends`), evaluate metrics.

Imports nothing heavy, so that policy validation and `riskgate --help` start instantly.
"""

from __future__ import annotations

from riskgate.policy.evaluate import evaluate, exit_code_for
from riskgate.policy.loader import PRESET_NAMES, SCHEMA_VERSION, load_policy, presets_dir
from riskgate.policy.model import (
    METRICS,
    Direction,
    Evaluation,
    Finding,
    FindingStatus,
    MetricSpec,
    Metrics,
    Policy,
    Threshold,
    Verdict,
)

__all__ = [
    "METRICS",
    "PRESET_NAMES",
    "SCHEMA_VERSION",
    "Direction",
    "Evaluation",
    "Finding",
    "FindingStatus",
    "MetricSpec",
    "Metrics",
    "Policy",
    "Threshold",
    "Verdict",
    "evaluate",
    "exit_code_for",
    "load_policy",
    "presets_dir",
]
