"""Plain-text summaries of a report, shared by the Markdown and HTML renderers.

Every function here reads the canonical report dict and returns unescaped text: each
renderer escapes it for its own format. Nothing is recomputed from the diagnostics; the
functions only pick, format and phrase the numbers the report already contains.
"""

from __future__ import annotations

import math
from typing import Any

NOT_AVAILABLE = "n/a"
NOT_COMPUTED = "not computed"
SHA256_PREFIX_LENGTH = 12
MAX_LISTED_SKIPS = 5
"""Skipped records listed by index and reason in a note; the rest are counted."""

CHECK_TITLES = {
    "sharpness": "alignment sharpness",
    "initial_orthogonality": "initial orthogonality",
    "curvature_coupling": "curvature coupling",
    "quartic_forecast": "quartic forecast",
}


def section(report: dict[str, Any], key: str) -> dict[str, Any]:
    """Return `report[key]`, or an empty dict when the key is missing or null."""
    value = report.get(key)
    return value if isinstance(value, dict) else {}


def check(report: dict[str, Any], name: str) -> dict[str, Any] | None:
    """Return the result of one check, or None when the analysis stopped before it."""
    value = section(report, "checks").get(name)
    return value if isinstance(value, dict) else None


def format_number(value: Any, digits: int = 4) -> str:
    """Format a report number: ints with thousands separators, floats to `digits` significant digits."""
    if value is None:
        return NOT_AVAILABLE
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, int):
        return f"{value:,}"
    if isinstance(value, float):
        if math.isnan(value):
            return "NaN"
        if math.isinf(value):
            return "inf" if value > 0 else "-inf"
        return f"{value:.{digits}g}"
    return str(value)


def format_share(value: Any) -> str:
    """Format a fraction in [0, 1] as a percentage with one decimal."""
    if isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value):
        return f"{100.0 * value:.1f}%"
    return format_number(value)


def sha256_prefix(value: Any) -> str:
    """Shorten a sha256 hex digest to its first 12 characters for display."""
    if not value:
        return NOT_AVAILABLE
    return str(value)[:SHA256_PREFIX_LENGTH]


def collapse_step_text(forecast: dict[str, Any] | None) -> str:
    """Describe the collapse step: the step, whether it is an extrapolation, or that it was not reached."""
    if forecast is None:
        return NOT_COMPUTED
    step = forecast.get("collapse_step")
    if step is None:
        return f"not reached by step {format_number(forecast.get('search_limit_step'))}"
    text = format_number(step)
    if forecast.get("collapse_is_extrapolation"):
        text += " (extrapolation: past the horizon step)"
    return text


def horizon_step_text(forecast: dict[str, Any] | None) -> str:
    if forecast is None:
        return NOT_COMPUTED
    step = forecast.get("horizon_step")
    if step is None:
        return f"not reached by step {format_number(forecast.get('search_limit_step'))}"
    return format_number(step)


def key_numbers(report: dict[str, Any]) -> list[tuple[str, str, str]]:
    """Return the headline numbers as (name, value, meaning) rows, "not computed" for missing checks."""
    sharpness = check(report, "sharpness")
    orthogonality = check(report, "initial_orthogonality")
    coupling = check(report, "curvature_coupling")
    forecast = check(report, "quartic_forecast")

    def value_of(result: dict[str, Any] | None, key: str) -> str:
        return NOT_COMPUTED if result is None else format_number(result.get(key))

    rank_text = value_of(sharpness, "k")
    if sharpness is not None:
        rank_text += f" (rho {format_number(sharpness.get('rho'))}, k_max {format_number(sharpness.get('k_max'))})"
        explained, rho = sharpness.get("explained_fraction"), sharpness.get("rho")
        if isinstance(explained, (int, float)) and isinstance(rho, (int, float)) and explained < rho:
            rank_text += f"; explains {format_number(explained)} of tr(F), capped before rho"

    if forecast is None:
        delta_u_name = "delta_u at planned steps"
        delta_u_text = NOT_COMPUTED
    else:
        delta_u_name = f"delta_u at step {format_number(forecast.get('planned_steps'))}"
        delta_u_text = (
            f"{format_number(forecast.get('delta_u_at_planned_steps'))}"
            f" (tau {format_number(forecast.get('tau'))})"
        )

    uncertainty = check(report, "uncertainty")

    def with_interval(text: str, key: str) -> str:
        """Append the bootstrap 90% interval of `key` when the report has one."""
        interval = (uncertainty or {}).get(key)
        if not isinstance(interval, dict):
            return text
        low, high = interval.get("p05"), interval.get("p95")
        if key == "collapse_step":
            low = "none" if low is None else format_number(low)
            high = "none" if high is None else format_number(high)
        else:
            low, high = format_number(low), format_number(high)
        return f"{text} (90% bootstrap interval {low} to {high})"

    return [
        ("k", rank_text, "rank of the sensitive subspace of the safety Fisher"),
        ("overlap_ratio", with_interval(value_of(orthogonality, "overlap_ratio"), "overlap_ratio"),
         "||P g|| / ||g||, share of the fine-tune gradient inside it"),
        ("epsilon", value_of(orthogonality, "epsilon"), "||P g||, initial overlap"),
        ("gamma_hat", with_interval(value_of(coupling, "gamma_hat"), "gamma_hat"), "||F^1/2 P H g||, curvature coupling"),
        ("collapse_step", with_interval(collapse_step_text(forecast), "collapse_step"),
         "first step where the forecast delta_u reaches tau"),
        (delta_u_name, delta_u_text, "forecast safety-loss increase, nats per response token"),
        ("horizon_step", horizon_step_text(forecast), "step where the second-order expansion becomes doubtful"),
    ]


def missing_checks(report: dict[str, Any]) -> list[str]:
    """Return the titles of the checks that are null in the report."""
    return [title for name, title in CHECK_TITLES.items() if check(report, name) is None]


def _data_notes(label: str, data: dict[str, Any]) -> list[str]:
    notes = []
    skipped_count = data.get("records_skipped") or 0
    if skipped_count:
        skipped = data.get("skipped") or []
        listed = "; ".join(
            f"#{entry.get('index')}: {entry.get('reason')}" for entry in skipped[:MAX_LISTED_SKIPS]
        )
        more = len(skipped) - MAX_LISTED_SKIPS
        if more > 0:
            listed += f"; and {more} more"
        notes.append(f"{format_number(skipped_count)} {label} records were skipped ({listed}).")
    truncated = data.get("sequences_truncated") or 0
    if truncated:
        notes.append(f"{format_number(truncated)} {label} sequences were truncated to max_seq_len tokens.")
    sampled_out = data.get("records_sampled_out") or 0
    if sampled_out:
        notes.append(f"{format_number(sampled_out)} {label} records were left out by the budget sample.")
    duplicates = data.get("duplicates") or 0
    if duplicates:
        notes.append(f"{format_number(duplicates)} {label} records are duplicates.")
    return notes


def report_notes(report: dict[str, Any]) -> list[str]:
    """Return the caveats a reader must see next to the numbers, one sentence each."""
    notes = []
    if not report.get("complete", False):
        missing = missing_checks(report)
        if missing:
            notes.append(f"The analysis did not finish; not computed: {', '.join(missing)}.")
        else:
            notes.append("The analysis did not finish.")

    forecast = check(report, "quartic_forecast")
    if forecast is not None:
        if forecast.get("collapse_step") is not None and forecast.get("collapse_is_extrapolation"):
            notes.append(
                f"The collapse step lies past the horizon step ({horizon_step_text(forecast)}),"
                " where the second-order expansion is doubtful: treat it as an extrapolation."
            )
        if forecast.get("linear_dominates"):
            notes.append(
                "The linear term dominates the forecast at the planned steps, so the model is not"
                " at a safety optimum and the first-order term, not the quartic onset, drives delta_u."
            )

    orthogonality = check(report, "initial_orthogonality")
    if orthogonality is not None and orthogonality.get("second_order_trigger"):
        notes.append(
            "The fine-tune gradient is nearly orthogonal to the sensitive subspace"
            f" (overlap_ratio below {format_number(orthogonality.get('orthogonality_level'))}):"
            " it looks safe at first order, so the curvature coupling decides."
        )

    defaults = section(report, "training_plan").get("defaults_used") or []
    if defaults:
        notes.append(
            f"The training plan used defaults for {', '.join(str(name) for name in defaults)};"
            " pass the values of the real run to forecast that run."
        )

    notes.extend(_data_notes("dataset", section(report, "dataset")))
    notes.extend(_data_notes("safety data", section(report, "safety_data")))
    return notes


def _data_details(data: dict[str, Any]) -> str:
    return (
        f"format {data.get('format') or NOT_AVAILABLE};"
        f" {format_number(data.get('records_used'))} of {format_number(data.get('records_total'))} records used,"
        f" {format_number(data.get('records_skipped'))} skipped,"
        f" {format_number(data.get('records_sampled_out'))} sampled out,"
        f" {format_number(data.get('sequences_truncated'))} truncated;"
        f" {format_number(data.get('tokens'))} tokens ({format_number(data.get('loss_tokens'))} in the loss)"
    )


def input_rows(report: dict[str, Any]) -> list[tuple[str, str, str, str]]:
    """Return (input, source, sha256 prefix, details) rows for model, data, policy and plan."""
    model = section(report, "model")
    dataset = section(report, "dataset")
    safety = section(report, "safety_data")
    policy = section(report, "policy")
    plan = section(report, "training_plan")

    lora = report.get("lora") if isinstance(report.get("lora"), dict) else None
    analysed = (
        f" {format_number(model.get('parameters_analysed'))} adapter parameters analysed (base model"
        f" {format_number(model.get('parameters_total'))})" if lora else
        f" {format_number(model.get('parameters_analysed'))} of"
        f" {format_number(model.get('parameters_total'))} parameters analysed"
    )
    model_details = (
        f"{model.get('kind') or NOT_AVAILABLE}, {model.get('architecture') or NOT_AVAILABLE},"
        f" {model.get('dtype') or NOT_AVAILABLE};{analysed}"
        f" ({format_number(len(model.get('scope_tensors') or []))} tensors);"
        f" attention {model.get('attention') or NOT_AVAILABLE}"
    )
    engine = report.get("engine") if isinstance(report.get("engine"), dict) else None
    if engine:
        model_details += f"; gradients {engine.get('path') or NOT_AVAILABLE}"
        if engine.get("path") == "sketched":
            model_details += (f" (width {format_number(engine.get('sketch_width'))},"
                              f" error scale {format_number(engine.get('error_scale'))})")
        model_details += f", Hessian-vector products by {engine.get('hvp_method') or NOT_AVAILABLE}"
        placement = engine.get("device_map")
        if isinstance(placement, dict) and placement:
            spread = ", ".join(f"{device} {format_number(count)}" for device, count in placement.items())
            model_details += f"; spread by a device map (parameters per device: {spread})"
    safety_source = str(safety.get("path") or NOT_AVAILABLE)
    if safety.get("builtin"):
        safety_source += " (built-in)"
    # The chain starts with the policy itself; its parents follow.
    extends = (policy.get("extends_chain") or [])[1:]
    policy_details = "extends " + " -> ".join(str(name) for name in extends) if extends else "extends nothing"
    plan_details = (
        f"learning rate {format_number(plan.get('learning_rate'))}, {format_number(plan.get('max_steps'))} steps,"
        f" batch size {format_number(plan.get('batch_size'))}, optimizer {plan.get('optimizer') or NOT_AVAILABLE}"
    )
    defaults = plan.get("defaults_used") or []
    if defaults:
        plan_details += f"; defaults used for {', '.join(str(name) for name in defaults)}"
    if lora:
        plan_details += (
            f"; LoRA adapter r {format_number(lora.get('r'))}, alpha {format_number(lora.get('lora_alpha'))}"
            f" on {format_number(lora.get('modules_adapted'))} modules (A drawn with seed {lora.get('seed')});"
            " the diagnostics analyse the adapter's factors"
        )
        if lora.get("rank_pattern") or lora.get("alpha_pattern"):
            plan_details += "; per-module ranks or alphas from rank_pattern and alpha_pattern"
        if lora.get("unmodelled"):
            plan_details += f"; not modelled: {', '.join(str(key) for key in lora['unmodelled'])}"

    return [
        ("model", str(model.get("source") or NOT_AVAILABLE), sha256_prefix(model.get("sha256")), model_details),
        ("dataset", str(dataset.get("path") or NOT_AVAILABLE), sha256_prefix(dataset.get("sha256")), _data_details(dataset)),
        ("safety data", safety_source, sha256_prefix(safety.get("sha256")), _data_details(safety)),
        (
            "policy",
            f"{policy.get('name') or NOT_AVAILABLE} ({policy.get('source') or NOT_AVAILABLE})",
            sha256_prefix(policy.get("sha256")),
            policy_details,
        ),
        ("training plan", str(plan.get("source") or NOT_AVAILABLE), NOT_AVAILABLE, plan_details),
    ]


def budget_rows(report: dict[str, Any]) -> list[tuple[str, str, str]]:
    """Return (quantity, limit, used) rows; a null limit reads "no limit"."""
    budget = section(report, "budget")
    limits = budget.get("limits") or {}
    used = budget.get("used") or {}

    def limit_text(key: str) -> str:
        value = limits.get(key)
        return "no limit" if value is None else format_number(value)

    return [
        ("safety examples", limit_text("max_safety_examples"), format_number(used.get("safety_examples"))),
        ("fine-tune examples", limit_text("max_finetune_examples"), format_number(used.get("finetune_examples"))),
        ("tokens per sequence", limit_text("max_seq_len"), f"{format_number(used.get('sequences_truncated'))} sequences truncated"),
        ("safety tokens", "no limit", format_number(used.get("safety_tokens"))),
        ("fine-tune tokens", "no limit", format_number(used.get("finetune_tokens"))),
        ("time (s)", limit_text("time_budget_s"), format_number(used.get("elapsed_s"))),
    ]


ATTRIBUTION_HEADER = ["record", "request", "share of drift", "share of gamma_hat^2", "overlap_ratio", "cosine to safety gradient"]
WHAT_IF_HEADER = ["number", "all records", "without the riskiest"]
TOP_ATTRIBUTED = 10


def attribution_rows(report: dict[str, Any]) -> list[list[str]]:
    """Rows of the riskiest records (plain text; each renderer escapes it)."""
    attribution = report.get("attribution") or {}
    rows = []
    for record in (attribution.get("records") or [])[:TOP_ATTRIBUTED]:
        rows.append([
            f"#{record.get('index')}",
            str(record.get("snippet") or ""),
            f"{100 * float(record.get('drift_share') or 0):.1f}%",
            f"{100 * float(record.get('gamma_share') or 0):.1f}%",
            format_number(record.get("overlap_ratio")),
            format_number(record.get("cosine_safety")),
        ])
    return rows


def attribution_note(report: dict[str, Any]) -> str | None:
    attribution = report.get("attribution")
    if not attribution:
        return None
    shown = min(TOP_ATTRIBUTED, attribution.get("records_scored") or 0)
    return (
        f"The {shown} records below carry {100 * float(attribution.get('top_share') or 0):.1f}% of the "
        f"forecast drift at the planned step ({attribution.get('records_scored')} records scored; "
        "shares can be negative for records that pull the other way)."
    )


def what_if_rows(report: dict[str, Any]) -> list[list[str]]:
    """Rows comparing the checks with and without the dropped records."""
    what_if = report.get("what_if")
    if not what_if:
        return []
    before, after = what_if.get("before") or {}, what_if.get("after") or {}
    keys = ["verdict", "overlap_ratio", "gamma_hat", "delta_u_at_planned_steps", "collapse_step", "finetune_examples"]
    return [[key, format_number(before.get(key)), format_number(after.get(key))] for key in keys]


def what_if_note(report: dict[str, Any]) -> str | None:
    what_if = report.get("what_if")
    if not what_if:
        return None
    dropped = ", ".join(f"#{index}" for index in what_if.get("dropped") or [])
    note = f"Dropping records {dropped} (the riskiest by share of the forecast drift)."
    export = what_if.get("export")
    if export:
        note += f" The filtered dataset was written to {export.get('path')} ({export.get('records_written')} records)."
    return note
