"""Load a policy from a preset name or a YAML file, resolve `extends`, validate every key.

Validation collects every problem in the requested file and in the files it extends, then
raises one `PolicyError` that lists them all, each with its file and key path.
"""

from __future__ import annotations

import difflib
import hashlib
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from riskgate.errors import PolicyError
from riskgate.policy.model import METRICS, Direction, Policy, Threshold

SCHEMA_VERSION = 1
PRESET_NAMES = ("default", "strict", "permissive")

_TOP_LEVEL_KEYS = (
    "schema_version",
    "name",
    "description",
    "extends",
    "subspace",
    "forecast",
    "thresholds",
    "samples",
)
_THRESHOLD_KEYS = ("warn", "fail")


@dataclass(frozen=True)
class _Field:
    """A scalar setting in one of the plain sections (subspace, forecast, samples)."""

    integer: bool
    minimum: float
    minimum_open: bool
    maximum: float | None = None


_SECTIONS: dict[str, dict[str, _Field]] = {
    "subspace": {
        "rho": _Field(integer=False, minimum=0.0, minimum_open=True, maximum=1.0),
        "k_max": _Field(integer=True, minimum=1, minimum_open=False),
        "orthogonality_level": _Field(integer=False, minimum=0.0, minimum_open=True, maximum=1.0),
    },
    "forecast": {
        "tau": _Field(integer=False, minimum=0.0, minimum_open=True),
    },
    "samples": {
        "min_safety_examples": _Field(integer=True, minimum=1, minimum_open=False),
        "min_finetune_examples": _Field(integer=True, minimum=1, minimum_open=False),
    },
}


def presets_dir(package_dir: Path | None = None) -> Path:
    """Return the folder that contains the preset YAML files.

    An installed wheel carries them inside the package: hatch's force-include copies the
    repository's `policies/` folder to `riskgate/policy/presets/`. A source checkout or an
    editable install has no such folder, so the lookup falls back to `policies/` at the
    repository root, two levels above this package.
    """
    package_dir = package_dir or Path(__file__).resolve().parent
    packaged = package_dir / "presets"
    if packaged.is_dir():
        return packaged
    return package_dir.parent.parent / "policies"


def load_policy(spec: str | Path) -> Policy:
    """Load, merge and validate a policy given by preset name or by YAML file path.

    A string equal to a preset name ("default", "strict", "permissive") selects that preset,
    even when a file of that name exists in the working directory. To load such a file, pass
    a Path or "./default".

    Raises:
        PolicyError: the file is missing or invalid; `problems` lists every problem found.
    """
    path, label = _locate(spec)
    documents, problems = _resolve_chain(path, label, visited=())

    merged: dict[str, Any] = {}
    if not problems:
        merged = _merge(documents)
        problems.extend(_missing_settings(merged, label))

    if problems:
        first = problems[0].render(relative_to=label)
        more = f" (and {len(problems) - 1} more)" if len(problems) > 1 else ""
        raise PolicyError(
            f"{label}: invalid policy: {first}{more}",
            [problem.render() for problem in problems],
        )

    requested = documents[0]
    return Policy(
        name=requested.values.get("name") or _default_name(path, label),
        description=requested.values.get("description", ""),
        source=label,
        sha256=requested.sha256,
        extends_chain=tuple(document.label for document in documents),
        rho=float(merged["subspace"]["rho"]),
        k_max=merged["subspace"]["k_max"],
        orthogonality_level=float(merged["subspace"]["orthogonality_level"]),
        tau=float(merged["forecast"]["tau"]),
        thresholds=tuple(
            merged["thresholds"][metric] for metric in METRICS if metric in merged["thresholds"]
        ),
        min_safety_examples=merged["samples"]["min_safety_examples"],
        min_finetune_examples=merged["samples"]["min_finetune_examples"],
    )


@dataclass(frozen=True)
class _Problem:
    file: str
    text: str
    """Starts with the key path, e.g. "thresholds.overlap_ratio.warn: expected a number"."""

    def render(self, relative_to: str | None = None) -> str:
        if self.file == relative_to:
            return self.text
        return f"{self.file}: {self.text}"


@dataclass(frozen=True)
class _Document:
    """One policy file, parsed and validated on its own (before merging)."""

    path: Path
    label: str
    sha256: str
    values: dict[str, Any]
    """Valid settings only. Sections map keys to values, and thresholds map metrics to Threshold or None."""


def _locate(spec: str | Path) -> tuple[Path, str]:
    if isinstance(spec, str) and spec in PRESET_NAMES:
        return _preset_path(spec), f"preset:{spec}"

    path = Path(spec)
    if path.exists() and not path.is_file():
        message = f"{spec}: not a regular file (a folder or a device); give the path of a YAML policy file"
        raise PolicyError(message, [message])
    if not path.is_file():
        presets = ", ".join(PRESET_NAMES)
        message = (
            f"{spec}: policy file not found; give the path of a YAML policy file "
            f"or a preset name ({presets})"
        )
        raise PolicyError(message, [message])
    return path, str(spec)


def _preset_path(name: str) -> Path:
    path = presets_dir() / f"{name}.yaml"
    if not path.is_file():
        message = f"preset:{name}: preset file {path} not found; reinstall riskgate"
        raise PolicyError(message, [message])
    return path


def _default_name(path: Path, label: str) -> str:
    return label.removeprefix("preset:") if label.startswith("preset:") else path.stem


def _resolve_chain(
    path: Path, label: str, visited: tuple[tuple[Path, str], ...]
) -> tuple[list[_Document], list[_Problem]]:
    """Read `path` and, recursively, the policies it extends, and return them child first."""
    document, problems = _read_document(path, label)
    if document is None:
        return [], problems

    extends = document.values.get("extends")
    if extends is None:
        return [document], problems

    visited = visited + ((path.resolve(), label),)
    parent = _locate_parent(extends, path, label)
    if isinstance(parent, _Problem):
        return [document], problems + [parent]

    parent_path, parent_label = parent
    visited_paths = [visited_path for visited_path, _ in visited]
    if parent_path.resolve() in visited_paths:
        start = visited_paths.index(parent_path.resolve())
        cycle = " -> ".join([visited_label for _, visited_label in visited[start:]] + [parent_label])
        problems.append(_Problem(label, f"extends: cycle {cycle}; remove one of these extends"))
        return [document], problems

    parents, parent_problems = _resolve_chain(parent_path, parent_label, visited)
    return [document, *parents], problems + parent_problems


def _locate_parent(extends: str, child_path: Path, child_label: str) -> tuple[Path, str] | _Problem:
    presets = ", ".join(PRESET_NAMES)
    if extends in PRESET_NAMES:
        path = presets_dir() / f"{extends}.yaml"
        if not path.is_file():
            return _Problem(child_label, f"extends: preset file {path} not found; reinstall riskgate")
        return path, f"preset:{extends}"

    # A bare word that is not a preset is most likely a misspelt preset, not a file name.
    looks_like_path = "/" in extends or "\\" in extends or extends.endswith((".yaml", ".yml"))
    if not looks_like_path:
        hint = _did_you_mean(extends, PRESET_NAMES)
        return _Problem(
            child_label,
            f"extends: unknown preset {extends!r}{hint}; use one of {presets} or a path "
            f"to a YAML file relative to this one",
        )

    path = child_path.parent / extends
    if not path.is_file():
        return _Problem(child_label, f"extends: policy file {path} not found")
    return path, str(path)


def _read_document(path: Path, label: str) -> tuple[_Document | None, list[_Problem]]:
    try:
        data = path.read_bytes()
    except OSError as error:
        return None, [_Problem(label, f"cannot read the file: {error.strerror or error}")]
    sha256 = hashlib.sha256(data).hexdigest()

    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as error:
        return None, [_Problem(label, f"not UTF-8 text (byte {error.start}); save it as UTF-8")]

    try:
        raw = yaml.load(text, Loader=_UniqueKeyLoader)  # noqa: S506 (a SafeLoader subclass)
    except yaml.YAMLError as error:
        return None, [_Problem(label, f"malformed YAML: {_describe_yaml_error(error)}")]

    if raw is None:
        return None, [_Problem(label, "the file is empty; a policy needs at least `schema_version: 1`")]
    if not isinstance(raw, dict):
        return None, [
            _Problem(label, f"the top level must be a mapping of policy keys, got {_describe(raw)}")
        ]

    values, texts = _validate(raw)
    return _Document(path, label, sha256, values), [_Problem(label, text) for text in texts]


class _UniqueKeyLoader(yaml.SafeLoader):
    """A SafeLoader that rejects duplicate keys instead of keeping the last one silently."""

    def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> dict[Any, Any]:
        seen: set[tuple[str, str]] = set()
        for key_node, _ in node.value:
            if not isinstance(key_node, yaml.ScalarNode) or key_node.tag == "tag:yaml.org,2002:merge":
                continue
            key = (key_node.tag, key_node.value)
            if key in seen:
                raise yaml.constructor.ConstructorError(
                    None, None, f"duplicate key {key_node.value!r}", key_node.start_mark
                )
            seen.add(key)
        return super().construct_mapping(node, deep=deep)


def _describe_yaml_error(error: yaml.YAMLError) -> str:
    mark = getattr(error, "problem_mark", None)
    problem = getattr(error, "problem", None)
    if mark is None or problem is None:
        return " ".join(str(error).split())
    return f"line {mark.line + 1}, column {mark.column + 1}: {problem}"


def _validate(raw: dict[Any, Any]) -> tuple[dict[str, Any], list[str]]:
    """Check one file's keys and values, and return the valid settings and every problem."""
    values: dict[str, Any] = {}
    problems: list[str] = []

    problems.extend(_unknown_keys(raw, _TOP_LEVEL_KEYS, prefix=""))
    problems.extend(_schema_version_problems(raw))

    for key in ("name", "description", "extends"):
        if key not in raw:
            continue
        value = raw[key]
        if not isinstance(value, str) or (key != "description" and not value.strip()):
            problems.append(f"{key}: expected a non-empty string, got {_describe(value)}")
        else:
            values[key] = value

    for section, fields in _SECTIONS.items():
        if section not in raw:
            continue
        content = raw[section]
        if not isinstance(content, dict):
            problems.append(f"{section}: expected a mapping, got {_describe(content)}")
            continue
        problems.extend(_unknown_keys(content, tuple(fields), prefix=f"{section}."))
        values[section] = {}
        for key, field in fields.items():
            if key not in content:
                continue
            problem = _field_problem(content[key], field)
            if problem:
                problems.append(f"{section}.{key}: {problem}")
            else:
                values[section][key] = content[key]

    if "thresholds" in raw:
        thresholds, threshold_problems = _validate_thresholds(raw["thresholds"])
        values["thresholds"] = thresholds
        problems.extend(threshold_problems)

    return values, problems


def _schema_version_problems(raw: dict[Any, Any], supported: int = SCHEMA_VERSION) -> list[str]:
    """Return the problems of `raw`'s schema_version against the `supported` version."""
    if "schema_version" not in raw:
        return [f"schema_version: missing; add `schema_version: {supported}` at the top"]
    version = raw["schema_version"]
    if isinstance(version, bool) or not isinstance(version, int):
        return [f"schema_version: expected the integer {supported}, got {_describe(version)}"]
    if version != supported:
        return [f"schema_version: unsupported version {version}; this riskgate reads schema_version {supported}"]
    return []


def _validate_thresholds(content: Any) -> tuple[dict[str, Threshold | None], list[str]]:
    """Check the thresholds section. A metric set to null maps to None, which drops the inherited one."""
    if not isinstance(content, dict):
        return {}, [f"thresholds: expected a mapping of metric names, got {_describe(content)}"]

    thresholds: dict[str, Threshold | None] = {}
    problems = _unknown_keys(content, tuple(METRICS), prefix="thresholds.", what="metric")
    for metric, spec in METRICS.items():
        if metric not in content:
            continue
        entry = content[metric]
        path = f"thresholds.{metric}"
        if entry is None:
            thresholds[metric] = None
            continue
        if not isinstance(entry, dict):
            problems.append(
                f"{path}: expected a mapping with warn and/or fail, or null to drop it, "
                f"got {_describe(entry)}"
            )
            continue
        problems.extend(_unknown_keys(entry, _THRESHOLD_KEYS, prefix=f"{path}."))

        limits: dict[str, float | None] = {}
        entry_valid = True
        for key in _THRESHOLD_KEYS:
            value = entry.get(key)
            if value is None:
                limits[key] = None
                continue
            field = _Field(
                integer=False, minimum=spec.minimum, minimum_open=False, maximum=spec.maximum
            )
            problem = _field_problem(value, field)
            if problem:
                problems.append(f"{path}.{key}: {problem}")
                entry_valid = False
            else:
                limits[key] = value
        if not entry_valid:
            continue

        warn, fail = limits["warn"], limits["fail"]
        if warn is None and fail is None:
            problems.append(f"{path}: set warn, fail or both (or null to drop an inherited threshold)")
            continue
        order_problem = _order_problem(warn, fail, spec.direction)
        if order_problem:
            problems.append(f"{path}: {order_problem}")
            continue
        thresholds[metric] = Threshold(metric, warn, fail, spec.direction)
    return thresholds, problems


def _order_problem(warn: float | None, fail: float | None, direction: Direction) -> str | None:
    if warn is None or fail is None:
        return None
    if direction is Direction.MAX and warn > fail:
        return f"warn {warn} must be <= fail {fail}, because higher values are worse"
    if direction is Direction.MIN and warn < fail:
        return f"warn {warn} must be >= fail {fail}, because lower values are worse"
    return None


def _field_problem(value: Any, field: _Field) -> str | None:
    """Return what is wrong with a numeric setting, or None when it is valid."""
    if field.integer:
        if isinstance(value, bool) or not isinstance(value, int):
            return f"expected an integer, got {_describe(value)}"
    elif isinstance(value, bool) or not isinstance(value, (int, float)):
        return f"expected a number, got {_describe(value)}"
    elif not math.isfinite(value):
        return f"expected a finite number, got {value}"

    low_ok = value > field.minimum if field.minimum_open else value >= field.minimum
    high_ok = field.maximum is None or value <= field.maximum
    if low_ok and high_ok:
        return None
    low_bracket = "(" if field.minimum_open else "["
    low = _format_bound(field.minimum)
    if field.maximum is None:
        operator = ">" if field.minimum_open else ">="
        return f"must be {operator} {low}, got {value}"
    return f"must be in {low_bracket}{low}, {_format_bound(field.maximum)}], got {value}"


def _format_bound(bound: float) -> str:
    return str(int(bound)) if float(bound).is_integer() else str(bound)


def _unknown_keys(
    mapping: dict[Any, Any], known: tuple[str, ...], prefix: str, what: str = "key"
) -> list[str]:
    problems = []
    for key in mapping:
        if key in known:
            continue
        hint = _did_you_mean(key, known) if isinstance(key, str) else ""
        expected = ", ".join(known)
        problems.append(f"{prefix}{key}: unknown {what}{hint}; expected one of: {expected}")
    return problems


def _did_you_mean(word: str, choices: tuple[str, ...]) -> str:
    matches = difflib.get_close_matches(word, choices, n=1)
    return f" (did you mean {matches[0]!r}?)" if matches else ""


def _describe(value: Any) -> str:
    """Name a YAML value and its type for an error message, e.g. "'high' (a string)"."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return f"{str(value).lower()} (a boolean)"
    if isinstance(value, str):
        return f"{value!r} (a string)"
    if isinstance(value, (int, float)):
        return f"{value} (a number)"
    if isinstance(value, list):
        return "a list"
    if isinstance(value, dict):
        return "a mapping"
    return f"a {type(value).__name__}"


def _merge(documents: list[_Document]) -> dict[str, Any]:
    """Merge the chain (child first) so that each child overrides its parent key by key."""
    merged: dict[str, Any] = {section: {} for section in _SECTIONS}
    merged["thresholds"] = {}
    for document in reversed(documents):
        for section in _SECTIONS:
            merged[section].update(document.values.get(section, {}))
        for metric, threshold in document.values.get("thresholds", {}).items():
            if threshold is None:
                merged["thresholds"].pop(metric, None)
            else:
                merged["thresholds"][metric] = threshold
    return merged


def _missing_settings(merged: dict[str, Any], label: str) -> list[_Problem]:
    problems = []
    for section, fields in _SECTIONS.items():
        for key in fields:
            if key not in merged[section]:
                problems.append(
                    _Problem(
                        label,
                        f"{section}.{key}: missing; set it in this file or in a policy it extends",
                    )
                )
    return problems
