"""Training plans from flags, config files and defaults."""

from __future__ import annotations

import json

import pytest

from riskgate.diagnostics.settings import Optimizer
from riskgate.errors import PlanError, UsageError
from riskgate.plan import resolve_plan, steps_for_epochs


def resolve(**overrides):
    arguments = dict(train_config=None, learning_rate=None, max_steps=None, batch_size=None,
                     optimizer=None, num_records=100)
    arguments.update(overrides)
    return resolve_plan(**arguments)


def test_defaults_are_listed():
    plan = resolve()
    assert plan.source == "defaults"
    assert plan.learning_rate == 5e-5
    assert plan.batch_size == 8
    assert plan.optimizer is Optimizer.ADAMW
    # 3 epochs over 100 records at batch size 8: ceil(100 / 8) * 3 = 39 steps.
    assert plan.max_steps == 39
    assert set(plan.defaults_used) == {"learning_rate", "batch_size", "max_steps", "optimizer"}


def test_flags_override_defaults():
    plan = resolve(learning_rate=1e-4, max_steps=200, batch_size=4, optimizer="sgd")
    assert (plan.learning_rate, plan.max_steps, plan.batch_size) == (1e-4, 200, 4)
    assert plan.optimizer is Optimizer.SGD
    assert plan.source == "flags"
    assert plan.defaults_used == ()


def test_yaml_config_with_accumulation(tmp_path):
    path = tmp_path / "train.yaml"
    path.write_text(
        "learning_rate: 2.0e-5\nper_device_train_batch_size: 4\ngradient_accumulation_steps: 8\n"
        "num_train_epochs: 2\noptim: adamw_torch\noutput_dir: out\nlogging_steps: 10\n"
    )
    plan = resolve(train_config=path, num_records=1000)
    assert plan.batch_size == 32
    assert plan.max_steps == steps_for_epochs(2, 1000, 32) == 64
    assert plan.optimizer is Optimizer.ADAMW
    assert plan.source == f"config:{path}"


def test_json_config_max_steps_wins(tmp_path):
    path = tmp_path / "train.json"
    path.write_text(json.dumps({"learning_rate": 1e-3, "max_steps": 50, "num_train_epochs": 9, "optim": "sgd"}))
    plan = resolve(train_config=path)
    assert plan.max_steps == 50
    assert plan.optimizer is Optimizer.SGD
    assert "batch_size" in plan.defaults_used


def test_config_and_flags_conflict(tmp_path):
    path = tmp_path / "train.yaml"
    path.write_text("learning_rate: 1.0e-5\n")
    with pytest.raises(UsageError, match="--train-config conflicts with --learning-rate"):
        resolve(train_config=path, learning_rate=1e-4)


@pytest.mark.parametrize(
    ("flags", "expected"),
    [
        ({"learning_rate": 0.0}, "--learning-rate"),
        ({"learning_rate": -1e-5}, "--learning-rate"),
        ({"learning_rate": float("nan")}, "--learning-rate"),
        ({"max_steps": 0}, "--max-steps"),
        ({"max_steps": -5}, "--max-steps"),
        ({"batch_size": 0}, "--batch-size"),
    ],
)
def test_invalid_flags(flags, expected):
    with pytest.raises(PlanError, match=expected):
        resolve(**flags)


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("learning_rate: -1\n", "'learning_rate' must be a positive number"),
        ("max_steps: 0\n", "'max_steps' must be a positive integer"),
        ("max_steps: 2.5\n", "'max_steps' must be a positive integer"),
        ("per_device_train_batch_size: true\n", "'per_device_train_batch_size'"),
        ("optim: adafactor\n", "optimizer 'adafactor' is not supported"),
        ("- a\n- b\n", "must be a mapping"),
        ("learning_rate: [1\n", "invalid YAML at line"),
    ],
)
def test_invalid_config(tmp_path, text, expected):
    path = tmp_path / "train.yaml"
    path.write_text(text)
    with pytest.raises(PlanError, match=expected) as caught:
        resolve(train_config=path)
    assert str(path) in str(caught.value)


def test_missing_config(tmp_path):
    with pytest.raises(PlanError, match="training config file not found"):
        resolve(train_config=tmp_path / "absent.yaml")


def test_yaml_exponent_learning_rate(tmp_path):
    path = tmp_path / "train.yaml"
    path.write_text("learning_rate: 1e-3\nmax_steps: 10\n")
    plan = resolve(train_config=path)
    assert plan.learning_rate == 1e-3


def test_misspelt_key_rejected(tmp_path):
    path = tmp_path / "train.yaml"
    path.write_text("learning_rate: 1.0e-4\nmax_stpes: 10\n")
    with pytest.raises(PlanError, match="unknown key 'max_stpes'; did you mean 'max_steps'"):
        resolve(train_config=path)


def test_unmodelled_keys_listed(tmp_path):
    path = tmp_path / "train.yaml"
    path.write_text("learning_rate: 1.0e-4\nwarmup_steps: 100\nlr_scheduler_type: cosine\noutput_dir: out\n")
    plan = resolve(train_config=path)
    assert plan.unmodelled == ("lr_scheduler_type", "warmup_steps")
    assert plan.to_dict()["unmodelled"] == ["lr_scheduler_type", "warmup_steps"]


@pytest.mark.parametrize("name", ["lion_32bit", "adafactor", "rmsprop"])
def test_unsupported_optimizers(tmp_path, name):
    path = tmp_path / "train.yaml"
    path.write_text(f"optim: {name}\n")
    with pytest.raises(PlanError, match=f"optimizer '{name}' is not supported"):
        resolve(train_config=path)


def test_unsupported_config_type(tmp_path):
    path = tmp_path / "train.toml"
    path.write_text("learning_rate = 1e-4\n")
    with pytest.raises(PlanError, match="unsupported training config type '.toml'"):
        resolve(train_config=path)


@pytest.mark.parametrize("overrides, key", [
    (dict(learning_rate=1e-300), "--learning-rate"),
    (dict(learning_rate=50.0), "--learning-rate"),
    (dict(max_steps=10**12), "--max-steps"),
    (dict(batch_size=10**9), "--batch-size"),
])
def test_implausible_flags_rejected(overrides, key):
    from riskgate.errors import PlanError
    from riskgate.plan import resolve_plan

    arguments = dict(train_config=None, learning_rate=None, max_steps=None, batch_size=None, optimizer=None,
                     num_records=10)
    arguments.update(overrides)
    with pytest.raises(PlanError, match=f"'{key}' = .* outside the plausible range"):
        resolve_plan(**arguments)


def test_implausible_config_value_names_key(tmp_path):
    from riskgate.errors import PlanError
    from riskgate.plan import resolve_plan

    config = tmp_path / "train.yaml"
    config.write_text("learning_rate: 1.0e-300\nmax_steps: 10\n")
    with pytest.raises(PlanError, match="'learning_rate' = 1e-300"):
        resolve_plan(train_config=config, learning_rate=None, max_steps=None, batch_size=None, optimizer=None,
                     num_records=10)
