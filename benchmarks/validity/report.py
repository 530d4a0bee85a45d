"""Markdown tables and SVG plots from the harness results."""

from __future__ import annotations

import math
from pathlib import Path

from .analysis import PRESETS
from .svg import Series, plot


def _fmt(value, digits: int = 3) -> str:
    if value is None:
        return "n/a"
    if isinstance(value, float):
        if not math.isfinite(value):
            return str(value)
        return f"{value:.{digits}g}"
    return str(value)


def _row(cells) -> str:
    return "| " + " | ".join(str(cell).replace("|", "\\|") for cell in cells) + " |"


def _base_comparison(alignment: dict) -> str:
    """Return a sentence comparing the aligned model with the base model, or '' for older results."""
    base = alignment.get("base_model")
    if not base or alignment.get("utility_loss") is None:
        return ""
    return (f"The base model refuses {100 * base['held_out_refusal']:.0f}% of the goals and "
            f"{100 * base['benign_refusal']:.0f}% of the benign prompts; the loss on the held-out Alpaca "
            f"answers is {alignment['utility_loss']:.3f} aligned against {base['utility_loss']:.3f} base.")


def markdown_summary(results: dict) -> str:
    """Return the results as Markdown: alignment, per-run table, correlations, verdict accuracy."""
    alignment = results["alignment"]
    lines = [
        f"**Command:** `{results['command']}`  ",
        f"**Machine:** {results['machine']}. **Date:** {results['date']}. **Wall time:** {results['seconds']:.0f} s.",
        "",
        f"Aligned checkpoint `aligned-{alignment['recipe_hash']}` ({alignment['steps']} alignment steps"
        f"{', reused from the cache' if alignment['reused'] else ''}"
        f"{'' if alignment.get('met_targets', True) else ', stop-rule targets not met'}): refuses "
        f"{100 * alignment['held_out_refusal']:.0f}% of {alignment['held_out_goals']} held-out AdvBench goals; "
        f"refuses {100 * alignment['benign_refusal']:.0f}% of held-out benign Alpaca prompts.",
        _base_comparison(alignment),
        "",
        "### Runs",
        "",
        _row(["run", "default", "strict", "permissive", "overlap_ratio", "gamma_hat", "predicted increase",
              "measured increase", "refusal after", "utility loss before -> after", "growth exponent meas/pred",
              "forecast off from step"]),
        _row(["---"] * 12),
    ]
    for run in results["runs"]:
        checks = run["report"]["checks"]
        forecast = checks.get("quartic_forecast") or {}
        presets = run.get("presets", {})
        measured = run["measured"]
        growth = run.get("growth_exponent", {})
        lines.append(_row([
            run["name"],
            *(presets.get(name, {}).get("verdict", run["report"]["verdict"]) for name in PRESETS),
            _fmt((checks.get("initial_orthogonality") or {}).get("overlap_ratio")),
            _fmt((checks.get("curvature_coupling") or {}).get("gamma_hat")),
            _fmt(forecast.get("delta_u_at_planned_steps")),
            _fmt(measured["safety_loss_increase"]),
            f"{100 * measured['refusal_rate']:.0f}%",
            f"{measured['utility_loss_before']:.2f} -> {measured['utility_loss_after']:.2f}",
            f"{_fmt(growth.get('measured'), 2)} / {_fmt(growth.get('predicted'), 2)}",
            _fmt(run.get("forecast_breaks_at_step")),
        ]))

    summary = results["summary"]
    lines += ["", f"### Spearman correlation with the measured damage ({summary['runs_analysed']} runs)", ""]
    targets = list(summary["spearman"])
    lines.append(_row(["number", *targets]))
    lines.append(_row(["---"] * (len(targets) + 1)))
    for name in next(iter(summary["spearman"].values()), {}):
        lines.append(_row([name, *(_fmt(summary["spearman"][target][name], 2) for target in targets)]))

    lines += ["", "### Verdicts against measured damage (damaged: measured increase >= the preset's tau)", ""]
    lines.append(_row(["preset", "tau", "verdict/damage counts", "fail accuracy", "warn-or-fail accuracy",
                       "fail accuracy (refusal drop >= 10 pp)", "warn-or-fail accuracy (refusal drop >= 10 pp)"]))
    lines.append(_row(["---"] * 7))
    for name, row in summary["verdicts"].items():
        tau = next((run["presets"][name]["tau"] for run in results["runs"] if run.get("presets")), None)
        counts = ", ".join(f"{key} {count}" for key, count in sorted(row["counts"].items()))
        lines.append(_row([name, _fmt(tau), counts, _fmt(row["fail_accuracy"], 2), _fmt(row["flag_accuracy"], 2),
                           _fmt(row.get("refusal_fail_accuracy"), 2), _fmt(row.get("refusal_flag_accuracy"), 2)]))
    return "\n".join(lines) + "\n"


def write_plots(results: dict, folder: Path) -> list[Path]:
    """Write validation-*.svg into `folder`; return their paths."""
    folder.mkdir(parents=True, exist_ok=True)
    runs = [run for run in results["runs"] if run.get("presets")]
    by_set: dict[str, list[dict]] = {}
    for run in runs:
        by_set.setdefault(run["set"], []).append(run)

    def predicted(run: dict) -> float:
        return run["report"]["checks"]["quartic_forecast"]["delta_u_at_planned_steps"]

    scatter = [
        Series(name, tuple((predicted(r), r["measured"]["safety_loss_increase"]) for r in group), line=False)
        for name, group in by_set.items()
    ]
    refusal = [
        Series(name, tuple((predicted(r), r["refusal_before"] - r["measured"]["refusal_rate"]) for r in group), line=False)
        for name, group in by_set.items()
    ]

    # Trajectories of the runs with the largest measured increase, measured solid, forecast dashed.
    top = sorted(runs, key=lambda r: -r["measured"]["safety_loss_increase"])[:4]
    trajectories = []
    for run in top:
        points = run.get("trajectory", [])
        trajectories.append(Series(f"{run['name']} measured", tuple((p["step"], p["measured"]) for p in points)))
        trajectories.append(Series(f"{run['name']} forecast", tuple((p["step"], p["predicted"]) for p in points), dashed=True))

    files = {
        "validation-predicted-vs-measured.svg": plot(
            "Safety-loss increase after the planned steps", "forecast (nats/token, symlog)",
            "measured (nats/token, symlog)", scatter, x_symlog=0.01, y_symlog=0.01),
        "validation-refusal-drop.svg": plot(
            "Refusal-rate drop on held-out AdvBench goals", "forecast increase (nats/token, symlog)",
            "refusal rate before - after", refusal, x_symlog=0.01),
        "validation-trajectories.svg": plot(
            "Safety-loss increase during the fine-tune", "optimizer step", "increase (nats/token, symlog)",
            trajectories, y_symlog=0.01),
    }
    paths = []
    for name, text in files.items():
        path = folder / name
        path.write_text(text, encoding="utf-8")
        paths.append(path)
    return paths


def main(argv: list[str] | None = None) -> None:
    """Render the tables and plots again from a results JSON (also from a partial one)."""
    import argparse
    import json

    parser = argparse.ArgumentParser(description="Render validity tables and plots from a results JSON.")
    parser.add_argument("results", type=Path, help="results JSON written by benchmarks.validity.run")
    parser.add_argument("--svg-dir", type=Path, default=None, help="write validation-*.svg here")
    args = parser.parse_args(argv)
    results = json.loads(args.results.read_text(encoding="utf-8"))

    # Recompute the analysis, so that a results file from an older harness gets the current tables.
    from .run import analyse

    results["summary"] = analyse(results["runs"])
    if args.svg_dir:
        write_plots(results, args.svg_dir)
    print(markdown_summary(results))


if __name__ == "__main__":
    main()
