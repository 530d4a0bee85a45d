"""The policy layer: load and validate policy YAML (presets, `extends`), evaluate metrics,
apply waivers.

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
    WaivedBy,
)
from riskgate.policy.waivers import WaiverOutcome, WaiverSet, apply_waivers, load_waivers

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
    "WaivedBy",
    "WaiverOutcome",
    "WaiverSet",
    "apply_waivers",
    "evaluate",
    "exit_code_for",
    "load_policy",
    "load_waivers",
    "presets_dir",
]
