"""riskgate: a pre-fine-tuning safety gate for aligned language models.

`riskgate.check(...)` runs one gate and returns a `CheckResult`; it is imported on first use
so that `import riskgate` (and the CLI's --help) does not load torch.
"""

from __future__ import annotations

from .errors import (
    AnalysisError,
    CheckpointError,
    DatasetError,
    EnvironmentFailure,
    ExitCode,
    InvalidInputError,
    PlanError,
    PolicyError,
    RiskgateError,
    UsageError,
    WaiverError,
)

__version__ = "0.1.0"

__all__ = [
    "AnalysisError",
    "Budget",
    "CheckResult",
    "CheckpointError",
    "DatasetError",
    "EnvironmentFailure",
    "ExitCode",
    "InvalidInputError",
    "PlanError",
    "PolicyError",
    "RiskgateError",
    "UsageError",
    "WaiverError",
    "SubspaceSummary",
    "__version__",
    "build_subspace",
    "check",
]


def __getattr__(name: str):
    if name in ("check", "CheckResult", "build_subspace", "SubspaceSummary"):
        from . import api

        return getattr(api, name)
    if name == "Budget":
        from .budget import Budget

        return Budget
    raise AttributeError(f"module 'riskgate' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))
