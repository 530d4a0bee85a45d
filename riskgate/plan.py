"""The training plan the forecast assumes: learning rate, steps, batch size and optimizer.

A plan comes from command-line flags or from a training config file that uses the names of
transformers' `TrainingArguments`. Values that neither sets follow the `TrainingArguments`
defaults: learning rate 5e-5, batch size 8, AdamW, 3 epochs over the fine-tune set.
The report lists which values were defaults.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from pathlib import Path

from .diagnostics.settings import Optimizer
from .errors import PlanError, UsageError

DEFAULT_LEARNING_RATE = 5e-5
DEFAULT_BATCH_SIZE = 8
DEFAULT_EPOCHS = 3.0
DEFAULT_OPTIMIZER = Optimizer.ADAMW
DEFAULT_ADAM_EPSILON = 1e-8

# transformers' `optim` values that the forecast treats as Adam-type or as SGD.
_ADAM_PREFIXES = ("adamw", "adam", "paged_adamw")
_SGD_NAMES = ("sgd",)

# Keys of a training config that riskgate reads; other keys are listed in the plan as ignored.
_READ_KEYS = (
    "learning_rate",
    "max_steps",
    "num_train_epochs",
    "per_device_train_batch_size",
    "gradient_accumulation_steps",
    "optim",
    "adam_epsilon",
)
# Keys that change the real run's trajectory but that the forecast does not model.
_UNMODELLED_KEYS = ("lr_scheduler_type", "warmup_steps", "warmup_ratio", "weight_decay", "max_grad_norm")


@dataclass(frozen=True)
class TrainingPlan:
    """The planned fine-tune, as far as the forecast models it."""

    learning_rate: float
    """Peak learning rate eta; the forecast's time is t = eta * step."""
    max_steps: int
    """Planned optimizer steps."""
    batch_size: int
    """Sequences per optimizer step (per-device batch size times gradient accumulation)."""
    optimizer: Optimizer
    adam_epsilon: float = DEFAULT_ADAM_EPSILON
    source: str = "defaults"
    """`flags`, `config:<path>` or `defaults`."""
    defaults_used: tuple[str, ...] = field(default=())
    """Fields that took their default value because nothing set them."""
    unmodelled: tuple[str, ...] = field(default=())
    """Config keys that shape the real run but that the forecast leaves out (warm-up, decay)."""

    def to_dict(self) -> dict:
        return {
            "learning_rate": self.learning_rate,
            "max_steps": self.max_steps,
            "batch_size": self.batch_size,
            "optimizer": self.optimizer.value,
            "adam_epsilon": self.adam_epsilon,
            "source": self.source,
            "defaults_used": list(self.defaults_used),
            "unmodelled": list(self.unmodelled),
        }


def _as_number(value):
    """Return `value` as a float when it is a numeric string such as '1e-3'.

    PyYAML follows YAML 1.1, which reads `1e-3` (no dot) as a string, while training configs
    commonly write learning rates that way.
    """
    if isinstance(value, str):
        try:
            return float(value)
        except ValueError:
            return value
    return value


PLAUSIBLE_RANGES = {
    "learning_rate": (1e-12, 10.0),
    "max_steps": (1, 10**9),
    "batch_size": (1, 10**7),
    "gradient_accumulation_steps": (1, 10**6),
    "num_train_epochs": (1e-6, 10**6),
    "adam_epsilon": (1e-30, 1.0),
}
"""Bounds beyond which a plan value is almost surely a typo (1e-300, 1e12 steps), keyed by the
TrainingArguments name; the flags share them."""


def _check_positive(name: str, value, where: str, *, integer: bool) -> None:
    kind = "integer" if integer else "number"
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise PlanError(f"{where}: '{name}' must be a positive {kind}, got {value!r}")
    if integer and not float(value).is_integer():
        raise PlanError(f"{where}: '{name}' must be a positive integer, got {value!r}")
    if not math.isfinite(value) or value <= 0:
        raise PlanError(f"{where}: '{name}' must be a positive {kind}, got {value!r}")
    key = name.lstrip("-").replace("-", "_")
    key = "batch_size" if key == "per_device_train_batch_size" else key
    low, high = PLAUSIBLE_RANGES.get(key, (0, math.inf))
    if not low <= value <= high:
        raise PlanError(
            f"{where}: '{name}' = {value!r} is outside the plausible range [{low:g}, {high:g}]; "
            "check the value (a typo in the exponent?)"
        )


def _parse_optimizer(value, where: str) -> Optimizer:
    if isinstance(value, Optimizer):
        return value
    name = str(value).strip().lower()
    if name.startswith(_ADAM_PREFIXES):
        return Optimizer.ADAMW
    if name in _SGD_NAMES:
        return Optimizer.SGD
    raise PlanError(
        f"{where}: optimizer {value!r} is not supported; use an Adam-type optimizer "
        "(adamw_torch, adamw_hf, ...) or sgd"
    )


def steps_for_epochs(epochs: float, num_records: int, batch_size: int) -> int:
    """Optimizer steps of `epochs` passes over `num_records`, as transformers' Trainer counts them."""
    return max(1, math.ceil(math.ceil(num_records / batch_size) * epochs))


def plan_from_flags(
    *,
    learning_rate: float | None,
    max_steps: int | None,
    batch_size: int | None,
    optimizer: Optimizer | str | None,
    num_records: int,
) -> TrainingPlan:
    """Build a plan from flags; unset values take the defaults and are listed as such."""
    defaults: list[str] = []
    where = "training plan flags"
    if learning_rate is None:
        learning_rate = DEFAULT_LEARNING_RATE
        defaults.append("learning_rate")
    _check_positive("--learning-rate", learning_rate, where, integer=False)
    if batch_size is None:
        batch_size = DEFAULT_BATCH_SIZE
        defaults.append("batch_size")
    _check_positive("--batch-size", batch_size, where, integer=True)
    if max_steps is None:
        max_steps = steps_for_epochs(DEFAULT_EPOCHS, num_records, int(batch_size))
        defaults.append("max_steps")
    _check_positive("--max-steps", max_steps, where, integer=True)
    if optimizer is None:
        optimizer = DEFAULT_OPTIMIZER
        defaults.append("optimizer")
    source = "defaults" if len(defaults) == 4 else "flags"
    return TrainingPlan(
        learning_rate=float(learning_rate),
        max_steps=int(max_steps),
        batch_size=int(batch_size),
        optimizer=_parse_optimizer(optimizer, where),
        source=source,
        defaults_used=tuple(defaults),
    )


def read_config_file(path: Path, kind: str = "training config", keys: str = "TrainingArguments names") -> dict:
    """Read a YAML or JSON mapping for a plan file; raise PlanError naming the file and the line at fault.

    `kind` names the file in messages ("training config"), `keys` what the mapping should contain.
    """
    try:
        text = path.read_text(encoding="utf-8-sig")
    except FileNotFoundError:
        raise PlanError(f"{path}: {kind} file not found") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise PlanError(f"{path}: cannot read {kind}: {exc}") from None

    suffix = path.suffix.lower()
    if suffix not in (".json", ".yaml", ".yml"):
        raise PlanError(f"{path}: unsupported {kind} type '{suffix}'; use a .yaml, .yml or .json file")
    if suffix == ".json":
        try:
            data = json.loads(text)
        except json.JSONDecodeError as exc:
            raise PlanError(f"{path}: invalid JSON at line {exc.lineno}: {exc.msg}") from None
    else:
        import yaml

        try:
            data = yaml.safe_load(text)
        except yaml.YAMLError as exc:
            mark = getattr(exc, "problem_mark", None)
            line = f" at line {mark.line + 1}" if mark is not None else ""
            problem = getattr(exc, "problem", None) or "malformed YAML"
            raise PlanError(f"{path}: invalid YAML{line}: {problem}") from None
    if not isinstance(data, dict):
        raise PlanError(f"{path}: a {kind} must be a mapping of {keys} to values")
    return data


def plan_from_config(path: str | Path, *, num_records: int) -> TrainingPlan:
    """Read a YAML or JSON file with `TrainingArguments` names.

    Reads learning_rate, max_steps (or num_train_epochs), per_device_train_batch_size,
    gradient_accumulation_steps, optim and adam_epsilon. Other keys are ignored, because a full
    TrainingArguments dump carries many that do not affect the forecast.
    """
    path = Path(path)
    data = {key: _as_number(value) for key, value in read_config_file(path).items()}
    where = str(path)
    defaults: list[str] = []
    _reject_misspelt_keys(data, where)

    learning_rate = data.get("learning_rate")
    if learning_rate is None:
        learning_rate = DEFAULT_LEARNING_RATE
        defaults.append("learning_rate")
    _check_positive("learning_rate", learning_rate, where, integer=False)

    per_device = data.get("per_device_train_batch_size", DEFAULT_BATCH_SIZE)
    if "per_device_train_batch_size" not in data:
        defaults.append("batch_size")
    _check_positive("per_device_train_batch_size", per_device, where, integer=True)
    accumulation = data.get("gradient_accumulation_steps", 1)
    _check_positive("gradient_accumulation_steps", accumulation, where, integer=True)
    batch_size = int(per_device) * int(accumulation)

    # transformers: max_steps > 0 overrides num_train_epochs; -1 (its default) means "unset".
    max_steps = data.get("max_steps")
    if max_steps is not None and max_steps != -1:
        _check_positive("max_steps", max_steps, where, integer=True)
        steps = int(max_steps)
    else:
        epochs = data.get("num_train_epochs")
        if epochs is None:
            epochs = DEFAULT_EPOCHS
            defaults.append("max_steps")
        _check_positive("num_train_epochs", epochs, where, integer=False)
        steps = steps_for_epochs(float(epochs), num_records, batch_size)

    optimizer_name = data.get("optim")
    if optimizer_name is None:
        defaults.append("optimizer")
        optimizer = DEFAULT_OPTIMIZER
    else:
        optimizer = _parse_optimizer(optimizer_name, f"{where}: 'optim'")

    adam_epsilon = data.get("adam_epsilon", DEFAULT_ADAM_EPSILON)
    _check_positive("adam_epsilon", adam_epsilon, where, integer=False)

    return TrainingPlan(
        learning_rate=float(learning_rate),
        max_steps=steps,
        batch_size=batch_size,
        optimizer=optimizer,
        adam_epsilon=float(adam_epsilon),
        source=f"config:{path}",
        defaults_used=tuple(defaults),
        unmodelled=tuple(key for key in _UNMODELLED_KEYS if key in data),
    )


def _reject_misspelt_keys(data: dict, where: str) -> None:
    """Raise PlanError for an unknown key that is one typo away from a key riskgate reads."""
    import difflib

    for key in data:
        if key in _READ_KEYS or not isinstance(key, str):
            continue
        close = difflib.get_close_matches(key, _READ_KEYS, n=1, cutoff=0.85)
        if close:
            raise PlanError(f"{where}: unknown key '{key}'; did you mean '{close[0]}'?")


def resolve_plan(
    *,
    train_config: str | Path | None,
    learning_rate: float | None,
    max_steps: int | None,
    batch_size: int | None,
    optimizer: Optimizer | str | None,
    num_records: int,
) -> TrainingPlan:
    """Take the plan from a config file or from flags, never from both."""
    flags_set = [
        name
        for name, value in (
            ("--learning-rate", learning_rate),
            ("--max-steps", max_steps),
            ("--batch-size", batch_size),
            ("--optimizer", optimizer),
        )
        if value is not None
    ]
    if train_config is not None:
        if flags_set:
            raise UsageError(
                f"--train-config conflicts with {', '.join(flags_set)}; "
                "set the plan in the config file or with flags, not both"
            )
        return plan_from_config(train_config, num_records=num_records)
    return plan_from_flags(
        learning_rate=learning_rate,
        max_steps=max_steps,
        batch_size=batch_size,
        optimizer=optimizer,
        num_records=num_records,
    )
