"""Validity harness: does riskgate's verdict predict the safety damage a fine-tune really does?

    python -m benchmarks.validity.run --out benchmarks/results/validity.json [--threads 2] [--quick]

Aligns SmolLM2-135M-Instruct with the project's refusal data (cached), then for each fine-tune
run calls riskgate.check on the aligned model with the run's plan, performs the fine-tune, and
measures the safety-loss trajectory, the refusal rate on held-out harmful goals and the utility.
Writes the results JSON, SVG plots (--svg-dir) and Markdown tables (--markdown, and stdout).
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import platform
import sys
import tempfile
import time
from dataclasses import asdict
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

from benchmarks.validity.align import (  # noqa: E402
    AlignRecipe, aligned_checkpoint, load_folder, load_gguf_as_plain, locate_smollm2,
)
from benchmarks.validity.analysis import (  # noqa: E402
    forecast_breaks_at, forecast_function, growth_exponent, preset_verdicts, spearman, verdict_table,
)
from benchmarks.validity.data import SET_NAMES, build_set, load_splits, refusal_split, write_jsonl  # noqa: E402
from benchmarks.validity.finetune import OptimizerName, RunSpec, Settings, run_one  # noqa: E402
from benchmarks.validity.measure import generate, is_refusal, refusal_rate  # noqa: E402
from benchmarks.validity.report import markdown_summary, write_plots  # noqa: E402

logger = logging.getLogger("benchmarks.validity")

SGD_RATES = (5e-3, 2e-2)
ADAMW_RATE = 3e-5
ADAMW_SETS = ("alpaca", "aoa_identity_shift", "harmful_10pct", "harmful_30pct")
BATCH_SETS = ("harmful_10pct", "harmful_30pct")
"""Sets run again at half the batch size (SGD, the higher rate), for the minibatch-noise term."""


def full_matrix(steps: int, batch_size: int) -> list[RunSpec]:
    """Return the full run list: every set under SGD at two rates, four sets under AdamW, two batch-size pairs."""
    specs = [RunSpec(name, OptimizerName.SGD, rate, batch_size, steps) for name in SET_NAMES for rate in SGD_RATES]
    specs += [RunSpec(name, OptimizerName.ADAMW, ADAMW_RATE, batch_size, steps) for name in ADAMW_SETS]
    specs += [RunSpec(name, OptimizerName.SGD, SGD_RATES[1], batch_size // 2, steps) for name in BATCH_SETS]
    return specs


def quick_matrix() -> list[RunSpec]:
    """Return the quick run list: two sets, a handful of SGD steps."""
    return [RunSpec("alpaca", OptimizerName.SGD, SGD_RATES[1], 4, 4),
            RunSpec("harmful_30pct", OptimizerName.SGD, SGD_RATES[1], 4, 4)]


def organism_profile(model, tokenizer, goals, benign_prompts, utility_chats, budgets: dict) -> dict:
    """Measure a model's refusals of the held-out goals, refusals of benign prompts and utility loss.

    The `replies` entry contains (held-out refusal rate, goal replies, benign replies) for the caller.
    """
    from benchmarks.validity.measure import encode_chats
    from benchmarks.validity.tail import Tail

    refusal, replies = refusal_rate(model, tokenizer, goals, budgets["max_new_tokens"])
    benign = generate(model, tokenizer, benign_prompts, budgets["max_new_tokens"])
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
    utility = Tail(model, 2, pad).mean_loss(encode_chats(list(utility_chats), tokenizer, budgets["max_seq_len"]))
    return {
        "held_out_refusal": refusal,
        "benign_refusal": sum(is_refusal(reply) for reply in benign) / max(len(benign), 1),
        "utility_loss": utility,
        "replies": (refusal, replies, benign),
    }


def analyse(runs: list[dict]) -> dict:
    """Add trajectories and preset verdicts to each run; return the cross-run correlations."""
    for run in runs:
        report = run["report"]
        forecast = report["checks"]["quartic_forecast"]
        if forecast is None:
            run["presets"] = {}
            continue
        predict = forecast_function(forecast)
        trajectory = [(p["step"], p["increase"], predict(p["step"])) for p in run["measured"]["safety_loss"]]
        early = [t for t in trajectory if 0 < t[0] <= max(1, run["plan"]["steps"] // 2)]
        run["trajectory"] = [{"step": s, "measured": m, "predicted": p} for s, m, p in trajectory]
        run["growth_exponent"] = {
            "measured": growth_exponent([(s, m) for s, m, _ in early]),
            "predicted": growth_exponent([(s, p) for s, _, p in early]),
        }
        run["forecast_breaks_at_step"] = forecast_breaks_at(trajectory)
        run["presets"] = preset_verdicts(report, predict)

    usable = [run for run in runs if run.get("presets")]
    damage = {
        "safety_loss_increase": [run["measured"]["safety_loss_increase"] for run in usable],
        "refusal_drop": [run["refusal_before"] - run["measured"]["refusal_rate"] for run in usable],
        "harmbench_loss_increase": [run["measured"].get("harmbench_loss_increase") for run in usable],
    }
    predictors = predictor_values(usable)
    correlations = {
        target: {name: spearman(values, measured) for name, values in predictors.items()}
        for target, measured in damage.items()
    }
    return {"runs_analysed": len(usable), "spearman": correlations, "verdicts": verdict_table(usable)}


def predictor_values(runs: list[dict]) -> dict[str, list]:
    """Return each riskgate number and each baseline across runs, aligned with `runs`."""
    def checks(run: dict, check: str, key: str):
        section = run["report"]["checks"].get(check) or {}
        return section.get(key)

    values = {
        "delta_u_at_planned_steps": [checks(r, "quartic_forecast", "delta_u_at_planned_steps") for r in runs],
        "overlap_ratio": [checks(r, "initial_orthogonality", "overlap_ratio") for r in runs],
        "gamma_hat": [checks(r, "curvature_coupling", "gamma_hat") for r in runs],
        # Simple numbers from the same pass, for comparison.
        "baseline: update direction norm x lr x steps": [
            (checks(r, "initial_orthogonality", "gradient_norm") or 0.0) * r["plan"]["learning_rate"] * r["plan"]["steps"]
            for r in runs
        ],
        "baseline: fine-tune loss at base": [r["report"]["finetune_mean_loss_at_base"] for r in runs],
    }
    baseline_keys = ("cosine_to_mean_safety_gradient", "update_direction_norm", "finetune_gradient_norm",
                     "random_subspace_overlap_ratio")
    if any(r["report"].get("baselines") for r in runs):
        for key in baseline_keys:
            values[f"baseline: {key}"] = [_scalar((r["report"].get("baselines") or {}).get(key)) for r in runs]
    return values


def _scalar(value):
    """Return a number from a baseline entry, which is a number or an object with a `value`."""
    if isinstance(value, dict):
        value = value.get("value")
    return value if isinstance(value, (int, float)) and not isinstance(value, bool) else None


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=Path(os.environ.get("RISKGATE_SHARED_DATA", REPO.parent / "shared" / "data")),
                        help="folder with the public data sets")
    parser.add_argument("--out", type=Path, required=True, help="results JSON file to write")
    parser.add_argument("--cache-dir", type=Path, default=Path.home() / ".cache" / "riskgate-validity",
                        help="folder for the aligned checkpoint (outside git)")
    parser.add_argument("--svg-dir", type=Path, default=None, help="write docs plots validation-*.svg here")
    parser.add_argument("--markdown", type=Path, default=None, help="also write the Markdown tables to this file")
    parser.add_argument("--threads", type=int, default=1, help="torch CPU threads")
    parser.add_argument("--quick", action="store_true", help="2 runs, a few steps, tiny budgets (for the test suite)")
    parser.add_argument("--steps", type=int, default=40, help="planned steps per fine-tune run (full mode)")
    parser.add_argument("--batch-size", type=int, default=8, help="batch size per run (full mode)")
    parser.add_argument("--set-size", type=int, default=160, help="records per sampled fine-tune set")
    parser.add_argument("--only", nargs="*", default=None, help="run only specs whose name contains one of these")
    parser.add_argument("--seed", type=int, default=0)
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> dict:
    args = parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    import torch

    torch.set_num_threads(args.threads)
    started = time.monotonic()
    splits = load_splits(args.data)

    # Quick mode keeps every code path but shrinks each budget.
    if args.quick:
        recipe = AlignRecipe(max_steps=6, check_every=6, max_seq_len=64, max_new_tokens=16, seed=args.seed)
        specs, goals, set_size = quick_matrix(), splits.held_out_goals[:8], 24
        budgets = {"max_seq_len": 64, "max_safety_examples": 16, "max_finetune_examples": 8, "max_new_tokens": 16,
                   "benign_prompts": 4}
    else:
        recipe = AlignRecipe(seed=args.seed)
        specs, goals, set_size = full_matrix(args.steps, args.batch_size), splits.held_out_goals, args.set_size
        budgets = {"max_seq_len": 96, "max_safety_examples": 64, "max_finetune_examples": 16, "max_new_tokens": 32,
                   "benign_prompts": 20}
    if args.only:
        specs = [spec for spec in specs if any(part in spec.name for part in args.only)]
    if not specs:
        raise SystemExit(f"--only {' '.join(args.only or [])}: matches no run name; names look like alpaca-sgd-lr0.005-b8")

    alignment = aligned_checkpoint(args.cache_dir, recipe, splits)
    logger.info("aligned checkpoint %s (reused: %s, %d steps)", alignment.folder, alignment.reused, alignment.steps)
    benign_prompts = [c["messages"][0]["content"] for c in splits.utility[: budgets["benign_prompts"]]]
    model, tokenizer = load_folder(Path(alignment.folder))
    aligned = organism_profile(model, tokenizer, goals, benign_prompts, splits.utility, budgets)
    refusal_before, replies_before, benign_before = aligned.pop("replies")
    del model
    # The same measurements on the unaligned model show what the alignment costs benign replies.
    model, tokenizer = load_gguf_as_plain(locate_smollm2())
    base = organism_profile(model, tokenizer, goals, benign_prompts, splits.utility, budgets)
    base.pop("replies")
    del model
    logger.info("aligned model refuses %.0f%% of %d held-out goals (base model %.0f%%)",
                100 * refusal_before, len(goals), 100 * base["held_out_refusal"])

    runs = []
    with tempfile.TemporaryDirectory(prefix="riskgate-validity-") as scratch:
        safety = write_jsonl(refusal_split()[1], Path(scratch) / "held-out-refusals.jsonl")
        settings = Settings(
            data=args.data, scratch=Path(scratch), aligned=alignment.folder, safety=safety, held_out_goals=tuple(goals),
            utility=splits.utility, max_seq_len=budgets["max_seq_len"],
            max_safety_examples=budgets["max_safety_examples"], max_finetune_examples=budgets["max_finetune_examples"],
            max_new_tokens=budgets["max_new_tokens"], benign_prompts=budgets["benign_prompts"],
            seed=args.seed,
        )
        # The results file is rewritten after every run, so an interrupted harness leaves usable results.
        for spec in specs:
            records = build_set(spec.set_name, args.data, splits, set_size, args.seed)
            run = run_one(spec, records, settings)
            run["refusal_before"] = refusal_before
            runs.append(run)
            results = {
                "command": "python -m benchmarks.validity.run " + " ".join(argv if argv is not None else sys.argv[1:]),
                "machine": f"{platform.platform()}, {os.cpu_count()} CPUs, torch threads {args.threads}",
                "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
                "quick": args.quick,
                "seconds": round(time.monotonic() - started, 1),
                "runs_planned": len(specs),
                "alignment": {**asdict(alignment), **aligned, "held_out_goals": len(goals),
                              "sample_replies": replies_before[:3], "benign_replies": benign_before, "base_model": base},
                "budgets": budgets,
                "summary": analyse(runs),
                "runs": runs,
            }
            args.out.parent.mkdir(parents=True, exist_ok=True)
            args.out.write_text(json.dumps(results, indent=1) + "\n", encoding="utf-8")
    if args.svg_dir:
        write_plots(results, args.svg_dir)
    text = markdown_summary(results)
    if args.markdown:
        args.markdown.write_text(text, encoding="utf-8")
    print(text)
    return results


if __name__ == "__main__":
    main()
