"""One validity run: riskgate's prediction on the aligned model, then the real fine-tune.

The fine-tune trains exactly riskgate's default scope (the 2-D weights of the last two decoder
blocks) with the planned optimizer, learning rate, batch size and step count. Training only
that scope lets the frozen blocks' output be cached (see tail.py), so a step skips the forward
pass through 28 of SmolLM2's 30 blocks. It is also the scope whose geometry riskgate measures, so a forecast miss
cannot come from a scope mismatch.

The safety loss is measured on the same held-out refusal pairs, and the same sampled records,
that the check analysed, so the measured loss at step 0 equals the report's
`safety_data.mean_loss_at_base` up to float error. Those pairs are 64 of the project's own
refusal chats, held out from the alignment. The loss on HarmBench's refusals (another
source and another refusal style) is measured before and after as a second, unpredicted number.
"""

from __future__ import annotations

import enum
import logging
import random
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .data import write_jsonl
from .measure import encode_chats, encode_file, generate, is_refusal, refusal_rate
from .tail import Tail, tail_parameters

logger = logging.getLogger(__name__)

SCOPE_BLOCKS = 2
HARMBENCH_COLUMNS = {"prompt": "Behavior", "completion": "Safe_Response"}
HARMBENCH_FILE = "harmbench_adv_training_safe_responses.csv"


class OptimizerName(str, enum.Enum):
    """Optimizer of a fine-tune run, as riskgate's training plan names it."""

    SGD = "sgd"
    """torch.optim.SGD without momentum."""
    ADAMW = "adamw"
    """torch.optim.AdamW with weight decay 0 and eps 1e-8, riskgate's Adam model."""


@dataclass(frozen=True)
class RunSpec:
    """One fine-tune: which set, and the training plan passed to riskgate.check."""

    set_name: str
    optimizer: OptimizerName
    learning_rate: float
    batch_size: int
    steps: int

    @property
    def name(self) -> str:
        return f"{self.set_name}-{self.optimizer.value}-lr{self.learning_rate:g}-b{self.batch_size}"


@dataclass(frozen=True)
class Settings:
    """Settings shared by every run of one harness invocation."""

    data: Path
    scratch: Path
    aligned: str
    """Folder of the aligned safetensors checkpoint."""
    safety: Path
    """JSONL file of the held-out refusal chats: the check's safety set and the measured safety loss."""
    held_out_goals: tuple[str, ...]
    utility: tuple[dict, ...]
    max_seq_len: int
    max_safety_examples: int
    max_finetune_examples: int
    max_new_tokens: int
    benign_prompts: int
    """Held-out Alpaca prompts whose replies are checked for over-refusal."""
    seed: int


def eval_schedule(steps: int) -> list[int]:
    """Return the steps at which the safety loss is measured: dense early, then every tenth of the run."""
    early = [0, 1, 2, 3, 4, 6, 8, 12, 16, 24, 32, 48]
    spaced = [round(steps * i / 10) for i in range(1, 11)]
    return sorted({s for s in early + spaced if s <= steps})


def predict_check(spec: RunSpec, dataset: Path, settings: Settings) -> dict:
    """Run riskgate.check on the aligned model with the run's plan; return the report."""
    import riskgate

    result = riskgate.check(
        settings.aligned, dataset, "default",
        safety_data=settings.safety,
        learning_rate=spec.learning_rate, max_steps=spec.steps, batch_size=spec.batch_size,
        optimizer=spec.optimizer.value,
        budget=riskgate.Budget(max_safety_examples=settings.max_safety_examples,
                               max_finetune_examples=settings.max_finetune_examples,
                               max_seq_len=settings.max_seq_len),
        seed=settings.seed,
    )
    return result.report


def _optimizer(spec: RunSpec, parameters: list[Any]) -> Any:
    import torch

    if spec.optimizer is OptimizerName.SGD:
        return torch.optim.SGD(parameters, lr=spec.learning_rate)
    return torch.optim.AdamW(parameters, lr=spec.learning_rate, eps=1e-8, weight_decay=0.0)


def train_and_measure(spec: RunSpec, records: list[dict], report: dict, settings: Settings) -> dict:
    """Fine-tune the aligned model as planned and measure safety loss, refusals and utility."""
    import torch

    from .align import load_folder

    torch.manual_seed(settings.seed)
    model, tokenizer = load_folder(Path(settings.aligned))
    named = tail_parameters(model, SCOPE_BLOCKS)
    scope_names = report["model"].get("scope_tensors")
    if scope_names and sorted(scope_names) != sorted(name for name, _ in named):
        raise RuntimeError(f"{spec.name}: trained tensors differ from riskgate's scope; check tail_parameters")
    parameters = [p for _, p in named]
    for parameter in parameters:
        parameter.requires_grad_(True)
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
    tail = Tail(model, SCOPE_BLOCKS, pad)

    # The safety records the check analysed, the whole fine-tune set, the held-out utility chats.
    analysed = set(report["safety_data"]["records_analysed"])
    safety = [s for s in encode_file(settings.safety, tokenizer, settings.max_seq_len) if s.index in analysed]
    harmbench = encode_file(settings.data / HARMBENCH_FILE, tokenizer, settings.max_seq_len, HARMBENCH_COLUMNS)
    train = encode_chats(records, tokenizer, settings.max_seq_len)
    utility = encode_chats(list(settings.utility), tokenizer, settings.max_seq_len)

    optimizer = _optimizer(spec, parameters)
    rng = random.Random(f"{settings.seed}:{spec.name}")
    order: list[int] = []
    schedule = set(eval_schedule(spec.steps))
    safety_curve = [(0, tail.mean_loss(safety))]
    utility_before = tail.mean_loss(utility)
    harmbench_before = tail.mean_loss(harmbench)
    train_losses = []
    started = time.monotonic()
    for step in range(1, spec.steps + 1):
        # Epochs over the set in a seeded order; the batch wraps into the next epoch.
        while len(order) < spec.batch_size:
            order += rng.sample(range(len(train)), len(train))
        batch = [train[i] for i in order[: spec.batch_size]]
        del order[: spec.batch_size]
        loss = tail.sequence_losses(batch).mean()
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        train_losses.append(loss.item())
        if step in schedule:
            safety_curve.append((step, tail.mean_loss(safety)))
    train_seconds = time.monotonic() - started

    # After the fine-tune: refusals on held-out harmful goals, over-refusal and loss on benign prompts.
    for parameter in parameters:
        parameter.requires_grad_(False)
    refusal, replies = refusal_rate(model, tokenizer, settings.held_out_goals, settings.max_new_tokens)
    prompts = [chat["messages"][0]["content"] for chat in settings.utility[: settings.benign_prompts]]
    benign_replies = generate(model, tokenizer, prompts, settings.max_new_tokens)
    base_loss = safety_curve[0][1]
    return {
        "safety_loss": [{"step": s, "loss": value, "increase": value - base_loss} for s, value in safety_curve],
        "safety_loss_at_step0": base_loss,
        "safety_loss_increase": safety_curve[-1][1] - base_loss,
        "refusal_rate": refusal,
        "benign_refusal_rate": sum(is_refusal(r) for r in benign_replies) / max(len(benign_replies), 1),
        "harmbench_loss_increase": tail.mean_loss(harmbench) - harmbench_before,
        "utility_loss_before": utility_before,
        "utility_loss_after": tail.mean_loss(utility),
        "train_loss_first": train_losses[0] if train_losses else None,
        "train_loss_last": train_losses[-1] if train_losses else None,
        "train_seconds": round(train_seconds, 1),
        "finetune_records": len(train),
        "sample_replies": replies[:3],
        "sample_benign_replies": benign_replies[:2],
    }


def run_one(spec: RunSpec, records: list[dict], settings: Settings) -> dict:
    """Predict with riskgate, fine-tune, measure; return the run's record for the results file."""
    dataset = write_jsonl(records, settings.scratch / f"{spec.name}.jsonl")
    started = time.monotonic()
    report = predict_check(spec, dataset, settings)
    check_seconds = time.monotonic() - started
    measured = train_and_measure(spec, records, report, settings)
    logger.info("%s: verdict %s, measured increase %.4f, refusal %.2f", spec.name, report["verdict"],
                measured["safety_loss_increase"], measured["refusal_rate"])
    return {
        "name": spec.name,
        "set": spec.set_name,
        "plan": {"optimizer": spec.optimizer.value, "learning_rate": spec.learning_rate,
                 "batch_size": spec.batch_size, "steps": spec.steps},
        "check_seconds": round(check_seconds, 1),
        "report": slim_report(report),
        "measured": measured,
    }


def slim_report(report: dict) -> dict:
    """Keep the parts of a report that the analysis reads; drop per-record attribution and text."""
    checks = report.get("checks") or {}
    return {
        "verdict": report["verdict"],
        "reason": report["reason"],
        "complete": report["complete"],
        "errors": report.get("errors", []),
        "safety_mean_loss_at_base": report["safety_data"]["mean_loss_at_base"],
        "finetune_mean_loss_at_base": report["dataset"]["mean_loss_at_base"],
        "safety_records_analysed": report["safety_data"]["records_analysed"],
        "checks": {
            "sharpness": {k: v for k, v in (checks.get("sharpness") or {}).items()
                          if k in ("k", "lambda_k", "trace", "explained_fraction", "effective_rank")},
            "initial_orthogonality": checks.get("initial_orthogonality"),
            "curvature_coupling": checks.get("curvature_coupling"),
            "quartic_forecast": checks.get("quartic_forecast"),
            "uncertainty": checks.get("uncertainty"),
        },
        "baselines": report.get("baselines"),
    }
