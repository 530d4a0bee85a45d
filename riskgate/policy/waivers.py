"""Waivers: accept a known failing or warning finding for one exact model and dataset.

A waivers file is YAML with `schema_version: 1` and a `waivers` list. Each entry names a
policy rule, the sha256 (or a prefix of at least 12 hex digits) of the model weights and of
the fine-tune dataset, a non-empty reason and an optional `expires` date:

    schema_version: 1
    waivers:
      - rule: overlap_ratio
        model_sha256: 3f2a9c0d4b5e
        dataset_sha256: a1b2c3d4e5f6
        reason: reviewed by the safety team; the overlap comes from refusal-style replies
        expires: 2026-12-31

`apply_waivers` runs after `evaluate`: a fail or warn finding whose rule and hashes match an
entry that has not expired gets status `waived` and no longer counts toward the verdict.
Error findings are never waived, because an incomplete analysis must never pass. An expired
entry that still matches a fail or warn finding raises `WaiverError`, so that a stale waiver
is renewed or removed instead of silently ending.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import hashlib
import re
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, NoReturn

import yaml

from riskgate.errors import WaiverError
from riskgate.policy.evaluate import decide_verdict
from riskgate.policy.loader import (
    _describe,
    _describe_yaml_error,
    _did_you_mean,
    _schema_version_problems,
    _UniqueKeyLoader,
    _unknown_keys,
)
from riskgate.policy.model import METRICS, Evaluation, Finding, FindingStatus, WaivedBy

SCHEMA_VERSION = 1
MIN_HASH_PREFIX = 12
"""Minimum number of hex digits in a hash prefix. With 12 digits an accidental match is unlikely."""

WAIVABLE_RULES: tuple[str, ...] = (*METRICS, "linear_term")
"""Rules whose findings can fail or warn, and so can be waived."""
UNWAIVABLE_RULES: tuple[str, ...] = ("analysis_complete", "min_safety_examples", "min_finetune_examples")
"""Rules that only pass or error: an incomplete or undersized analysis is never waived."""
WAIVABLE_STATUSES = (FindingStatus.FAIL, FindingStatus.WARN)

_TOP_LEVEL_KEYS = ("schema_version", "waivers")
_ENTRY_KEYS = ("rule", "model_sha256", "dataset_sha256", "reason", "expires")
_REQUIRED_ENTRY_KEYS = ("rule", "model_sha256", "dataset_sha256", "reason")
_REQUIRED_HINTS = {
    "rule": f"name the finding's rule, one of: {', '.join(WAIVABLE_RULES)}",
    "model_sha256": f"copy model.sha256 from report.json (at least the first {MIN_HASH_PREFIX} hex digits)",
    "dataset_sha256": f"copy dataset.sha256 from report.json (at least the first {MIN_HASH_PREFIX} hex digits)",
    "reason": "say why the finding is acceptable for this model and dataset",
}
_HEX = re.compile(r"[0-9a-fA-F]+")
_ISO_DATE = re.compile(r"[0-9]{4}-[0-9]{2}-[0-9]{2}")
_HOW_TO_FIX_EXPIRED = (
    "renew it with a later `expires` date after a new review, or remove the entry and fix the finding"
)


@dataclass(frozen=True)
class Waiver:
    """One validated entry of a waivers file."""

    index: int
    """Position in the file's `waivers` list, counted from 0."""
    rule: str
    model_sha256: str
    """Lower-case hex: the full sha256 of the model weights or a prefix of it."""
    dataset_sha256: str
    """Lower-case hex: the full sha256 of the fine-tune dataset or a prefix of it."""
    reason: str
    expires: dt.date | None
    """Last day (UTC) on which the waiver applies, or None when it does not expire."""

    def matches(self, finding: Finding, model_sha256: str | None, dataset_sha256: str | None) -> bool:
        """Return True when the rule and both hashes match. An unknown hash never matches."""
        if finding.rule != self.rule or not model_sha256 or not dataset_sha256:
            return False
        return model_sha256.lower().startswith(self.model_sha256) and dataset_sha256.lower().startswith(
            self.dataset_sha256
        )

    def expired(self, today: dt.date) -> bool:
        return self.expires is not None and today > self.expires

    def to_dict(self) -> dict[str, Any]:
        return {
            "index": self.index,
            "rule": self.rule,
            "model_sha256": self.model_sha256,
            "dataset_sha256": self.dataset_sha256,
            "reason": self.reason,
            "expires": _iso(self.expires),
        }


@dataclass(frozen=True)
class WaiverSet:
    """A validated waivers file."""

    source: str
    """The file path as given."""
    sha256: str
    """SHA-256 of the file's bytes."""
    waivers: tuple[Waiver, ...]


@dataclass(frozen=True)
class AppliedWaiver:
    """A waiver entry together with the finding it waived."""

    waiver: Waiver
    finding: Finding
    """The finding as `evaluate` returned it, before the waiver."""

    def to_dict(self) -> dict[str, Any]:
        return {
            "index": self.waiver.index,
            "rule": self.waiver.rule,
            "original_status": self.finding.status.value,
            "reason": self.waiver.reason,
            "expires": _iso(self.waiver.expires),
            "message": self.finding.message,
        }


@dataclass(frozen=True)
class WaiverOutcome:
    """An evaluation after the waivers: findings with status waived, and the verdict recomputed."""

    evaluation: Evaluation
    waiver_set: WaiverSet | None
    """None when no waivers file was given."""
    applied: tuple[AppliedWaiver, ...] = ()
    unused: tuple[Waiver, ...] = ()
    """Entries that matched no fail or warn finding of this check, in file order."""
    today: dt.date | None = None
    """The UTC date that expiry was checked against."""

    def to_dict(self) -> dict[str, Any] | None:
        """Return the report's `waivers` section, or None when no waivers file was given."""
        if self.waiver_set is None:
            return None
        unused = []
        for waiver in self.unused:
            entry = waiver.to_dict()
            entry["expired"] = self.today is not None and waiver.expired(self.today)
            unused.append(entry)
        return {
            "source": self.waiver_set.source,
            "sha256": self.waiver_set.sha256,
            "applied": [applied.to_dict() for applied in self.applied],
            "unused": unused,
        }


def load_waivers(path: str | Path) -> WaiverSet:
    """Read and validate a waivers file.

    Raises:
        WaiverError: the file is missing, unreadable or invalid; `problems` lists every
            problem found, each starting with the file name.
    """
    label = str(path)
    file_path = Path(path)
    if not file_path.is_file():
        _raise(label, ["waivers file not found; give the path of a YAML waivers file"])
    try:
        data = file_path.read_bytes()
    except OSError as error:
        _raise(label, [f"cannot read the file: {error.strerror or error}"])
    sha256 = hashlib.sha256(data).hexdigest()

    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as error:
        _raise(label, [f"not UTF-8 text (byte {error.start}); save it as UTF-8"])
    try:
        raw = yaml.load(text, Loader=_WaiverLoader)  # noqa: S506 (a SafeLoader subclass)
    except yaml.YAMLError as error:
        _raise(label, [f"malformed YAML: {_describe_yaml_error(error)}"])

    if raw is None:
        _raise(label, ["the file is empty; a waivers file needs `schema_version: 1` and a `waivers` list"])
    if not isinstance(raw, dict):
        _raise(label, [f"the top level must be a mapping with schema_version and waivers, got {_describe(raw)}"])

    waivers, problems = _validate(raw)
    if problems:
        _raise(label, problems)
    return WaiverSet(source=label, sha256=sha256, waivers=tuple(waivers))


def apply_waivers(
    evaluation: Evaluation,
    waiver_set: WaiverSet | None,
    *,
    model_sha256: str | None,
    dataset_sha256: str | None,
    today: dt.date | None = None,
) -> WaiverOutcome:
    """Waive the fail and warn findings that a current entry of `waiver_set` matches.

    A finding is waived by the first matching entry in file order, and later matching entries
    stay unused. `today` defaults to the current UTC date, and an entry applies through its
    `expires` day. Returns `evaluation` unchanged when `waiver_set` is None.

    Raises:
        WaiverError: an expired entry matches a fail or warn finding. The message names the
            file, the entry index, the rule and the expiry date; `problems` lists every such entry.
    """
    if waiver_set is None:
        return WaiverOutcome(evaluation=evaluation, waiver_set=None)
    today = today or dt.datetime.now(dt.timezone.utc).date()

    def matching(finding: Finding) -> list[Waiver]:
        if finding.status not in WAIVABLE_STATUSES:
            return []
        return [waiver for waiver in waiver_set.waivers if waiver.matches(finding, model_sha256, dataset_sha256)]

    expired = [
        (waiver, finding)
        for finding in evaluation.findings
        for waiver in matching(finding)
        if waiver.expired(today)
    ]
    if expired:
        problems = [_expired_problem(waiver_set.source, waiver, finding) for waiver, finding in expired]
        more = f" (and {len(problems) - 1} more)" if len(problems) > 1 else ""
        raise WaiverError(problems[0] + more, problems)

    findings: list[Finding] = []
    applied: list[AppliedWaiver] = []
    for finding in evaluation.findings:
        candidates = matching(finding)
        if not candidates:
            findings.append(finding)
            continue
        waiver = candidates[0]
        applied.append(AppliedWaiver(waiver=waiver, finding=finding))
        findings.append(_waive(finding, waiver, waiver_set.source))

    used = {entry.waiver.index for entry in applied}
    unused = tuple(waiver for waiver in waiver_set.waivers if waiver.index not in used)
    verdict, reason = decide_verdict(findings)
    return WaiverOutcome(
        evaluation=Evaluation(verdict=verdict, reason=reason, findings=tuple(findings)),
        waiver_set=waiver_set,
        applied=tuple(applied),
        unused=unused,
        today=today,
    )


class _WaiverLoader(_UniqueKeyLoader):
    """The policy's duplicate-rejecting SafeLoader, with dates left as strings.

    PyYAML turns `2026-02-30` into a ValueError outside its own error types, so `expires`
    stays a string here and is validated with `date.fromisoformat`.
    """


_WaiverLoader.yaml_implicit_resolvers = {
    first: [(tag, pattern) for tag, pattern in resolvers if tag != "tag:yaml.org,2002:timestamp"]
    for first, resolvers in _UniqueKeyLoader.yaml_implicit_resolvers.items()
}


def _raise(label: str, problems: Sequence[str]) -> NoReturn:
    rendered = [f"{label}: {problem}" for problem in problems]
    more = f" (and {len(rendered) - 1} more)" if len(rendered) > 1 else ""
    raise WaiverError(f"{label}: invalid waivers file: {problems[0]}{more}", rendered)


def _expired_problem(source: str, waiver: Waiver, finding: Finding) -> str:
    return (
        f"{source}: waivers[{waiver.index}] (rule {waiver.rule}) expired on {_iso(waiver.expires)}"
        f" and still matches a {finding.status.value} finding ({finding.message}); {_HOW_TO_FIX_EXPIRED}"
    )


def _waive(finding: Finding, waiver: Waiver, source: str) -> Finding:
    waived_by = WaivedBy(
        source=source,
        index=waiver.index,
        reason=waiver.reason,
        expires=_iso(waiver.expires),
        original_status=finding.status,
    )
    return dataclasses.replace(finding, status=FindingStatus.WAIVED, level="info", waived_by=waived_by)


def _iso(day: dt.date | None) -> str | None:
    return None if day is None else day.isoformat()


def _validate(raw: dict[Any, Any]) -> tuple[list[Waiver], list[str]]:
    """Check the whole file and return the valid entries and every problem found."""
    problems = _unknown_keys(raw, _TOP_LEVEL_KEYS, prefix="")
    problems.extend(_schema_version_problems(raw, SCHEMA_VERSION))

    if "waivers" not in raw:
        problems.append("waivers: missing; add a `waivers:` list of entries (it may be empty: `waivers: []`)")
        return [], problems
    entries = raw["waivers"]
    if not isinstance(entries, list):
        problems.append(f"waivers: expected a list of entries, got {_describe(entries)}")
        return [], problems

    waivers: list[Waiver] = []
    seen: dict[tuple[str, str, str], int] = {}
    for index, entry in enumerate(entries):
        waiver, entry_problems = _validate_entry(index, entry)
        problems.extend(entry_problems)
        if waiver is None:
            continue
        key = (waiver.rule, waiver.model_sha256, waiver.dataset_sha256)
        if key in seen:
            problems.append(
                f"waivers[{index}]: same rule, model_sha256 and dataset_sha256 as waivers[{seen[key]}];"
                " remove one of them"
            )
            continue
        seen[key] = index
        waivers.append(waiver)
    return waivers, problems



def _validate_entry(index: int, entry: Any) -> tuple[Waiver | None, list[str]]:
    path = f"waivers[{index}]"
    if not isinstance(entry, dict):
        return None, [f"{path}: expected a mapping with {', '.join(_REQUIRED_ENTRY_KEYS)}, got {_describe(entry)}"]

    problems = _unknown_keys(entry, _ENTRY_KEYS, prefix=f"{path}.")
    for key in _REQUIRED_ENTRY_KEYS:
        if key not in entry:
            problems.append(f"{path}.{key}: missing; {_REQUIRED_HINTS[key]}")

    rule_problem = _rule_problem(entry["rule"]) if "rule" in entry else None
    model_problem = _hash_problem(entry["model_sha256"], "model weights") if "model_sha256" in entry else None
    dataset_problem = _hash_problem(entry["dataset_sha256"], "fine-tune dataset") if "dataset_sha256" in entry else None
    reason_problem = _reason_problem(entry["reason"]) if "reason" in entry else None
    expires, expires_problem = _parse_expires(entry.get("expires"))
    for key, problem in (
        ("rule", rule_problem),
        ("model_sha256", model_problem),
        ("dataset_sha256", dataset_problem),
        ("reason", reason_problem),
        ("expires", expires_problem),
    ):
        if problem:
            problems.append(f"{path}.{key}: {problem}")

    if problems:
        return None, problems
    waiver = Waiver(
        index=index,
        rule=entry["rule"],
        model_sha256=entry["model_sha256"].lower(),
        dataset_sha256=entry["dataset_sha256"].lower(),
        reason=entry["reason"].strip(),
        expires=expires,
    )
    return waiver, []


def _rule_problem(rule: Any) -> str | None:
    if not isinstance(rule, str) or not rule.strip():
        return f"expected a rule name, got {_describe(rule)}"
    if rule in UNWAIVABLE_RULES:
        return (
            f"{rule} cannot be waived: it only errors, and an incomplete or undersized analysis"
            " must never pass; fix the analysis instead"
        )
    if rule not in WAIVABLE_RULES:
        hint = _did_you_mean(rule, WAIVABLE_RULES)
        return f"unknown rule {rule!r}{hint}; expected one of: {', '.join(WAIVABLE_RULES)}"
    return None


def _hash_problem(value: Any, hashed: str) -> str | None:
    if isinstance(value, bool) or isinstance(value, (int, float)):
        return f"expected hex digits as a quoted string, got {_describe(value)}; put the hash in quotes"
    if not isinstance(value, str):
        return f"expected the sha256 of the {hashed} as hex digits, got {_describe(value)}"
    if not _HEX.fullmatch(value):
        return f"expected hex digits (0-9, a-f), got {value!r}"
    if not MIN_HASH_PREFIX <= len(value) <= 64:
        return (
            f"expected the sha256 of the {hashed} or a prefix of {MIN_HASH_PREFIX} to 64 hex digits,"
            f" got {len(value)} digits"
        )
    return None


def _reason_problem(value: Any) -> str | None:
    if not isinstance(value, str) or not value.strip():
        return f"expected a non-empty string that says why the finding is acceptable, got {_describe(value)}"
    return None


def _parse_expires(value: Any) -> tuple[dt.date | None, str | None]:
    """Return the expiry date or the problem with it. A null or missing `expires` means no expiry."""
    if value is None:
        return None, None
    if not isinstance(value, str) or not _ISO_DATE.fullmatch(value):
        return None, f"expected a date as YYYY-MM-DD, got {_describe(value)}"
    try:
        return dt.date.fromisoformat(value), None
    except ValueError as error:
        return None, f"invalid date {value!r} ({error}); use YYYY-MM-DD"
