"""The riskgate error hierarchy and the exit codes the CLI maps it to.

Library code raises these and never exits or prints. Each message is one line that starts
with the file, record or key at fault and ends with the fix.
"""

from __future__ import annotations

import enum


class ExitCode(enum.IntEnum):
    """Process exit codes of the `riskgate` command line."""

    PASS = 0
    """The policy passed (warnings included, unless --fail-on-warn)."""
    POLICY_FAILURE = 1
    """At least one finding failed the policy (or warned, with --fail-on-warn)."""
    INVALID_INPUT = 2
    """A model, dataset, policy, waivers file, training plan or command-line flag is invalid,
    or a matching waiver has expired."""
    RUNTIME_ERROR = 3
    """The analysis could not run or did not finish; the verdict is `error`."""


class RiskgateError(Exception):
    """Base class of every error riskgate raises on purpose."""

    exit_code: ExitCode = ExitCode.RUNTIME_ERROR


class InvalidInputError(RiskgateError):
    """An input the user supplied is invalid; exit code 2."""

    exit_code = ExitCode.INVALID_INPUT


class CheckpointError(InvalidInputError):
    """The model checkpoint or its tokenizer cannot be loaded as requested."""


class DatasetError(InvalidInputError):
    """A dataset file or one of its records is invalid."""


class PolicyError(InvalidInputError):
    """A policy file is invalid. `problems` lists every problem found, one line each."""

    def __init__(self, message: str, problems: list[str] | None = None) -> None:
        super().__init__(message)
        self.problems: list[str] = list(problems or [])


class WaiverError(InvalidInputError):
    """A waivers file is invalid, or one of its entries expired while it still matches a finding.

    `problems` lists every problem found, one line each, starting with the file name.
    """

    def __init__(self, message: str, problems: list[str] | None = None) -> None:
        super().__init__(message)
        self.problems: list[str] = list(problems or [])


class PlanError(InvalidInputError):
    """The training plan (flags or training config file) is invalid."""


class UsageError(InvalidInputError):
    """Command-line flags or API arguments conflict or are out of range."""


class SubspaceError(InvalidInputError):
    """A subspace file is unreadable, from another version, or does not match the check's inputs."""


class AnalysisError(RiskgateError):
    """The diagnostics could not be computed (numerical failure, budget exhausted); exit code 3."""


class EnvironmentFailure(RiskgateError):
    """The machine got in the way: output folder not writable, disk full, out of memory; exit code 3."""
