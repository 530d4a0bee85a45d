"""Write a resolved policy back as policy YAML, for `riskgate policy show`."""

from __future__ import annotations

from typing import Any

import yaml

from riskgate.policy.model import METRICS, Policy


def _comment(text: str) -> str:
    """Keep a comment on one line, whatever the file names in it contain."""
    return "# " + " ".join(str(text).splitlines())


def resolved_policy_document(policy: Policy) -> dict[str, Any]:
    """Return the merged policy in the policy file layout, without `extends`, so it loads on its own."""
    thresholds: dict[str, Any] = {}
    for metric in METRICS:
        threshold = policy.threshold(metric)
        if threshold is None:
            continue
        thresholds[metric] = {key: value for key, value in (("warn", threshold.warn), ("fail", threshold.fail)) if value is not None}
    return {
        "schema_version": 1,
        "name": policy.name,
        "description": policy.description,
        "subspace": {
            "rho": policy.rho,
            "k_max": policy.k_max,
            "orthogonality_level": policy.orthogonality_level,
        },
        "forecast": {"tau": policy.tau},
        "thresholds": thresholds,
        "samples": {
            "min_safety_examples": policy.min_safety_examples,
            "min_finetune_examples": policy.min_finetune_examples,
        },
    }


def policy_yaml(policy: Policy) -> str:
    """Render the resolved policy as YAML, headed by comments that name its source and `extends` chain."""
    header = [
        _comment(f"riskgate policy {policy.name!r}, resolved from {policy.source} (sha256 {policy.sha256})"),
        _comment("extends chain, child first: " + " -> ".join(policy.extends_chain)),
        _comment("Every inherited setting is merged in, so this file loads on its own, without extends."),
    ]
    body = yaml.safe_dump(resolved_policy_document(policy), sort_keys=False, allow_unicode=True, default_flow_style=False)
    return "\n".join(header) + "\n" + body
