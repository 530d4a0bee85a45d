"""Data for the validity harness: fixed splits of the public data sets and the fine-tune sets.

Every row of the public data sets is read at run time from the shared data folder and written
only to a scratch folder outside the repository. The splits are fixed by `SPLIT_SEED`, so the
held-out harmful goals stay the same whatever `--seed` a run uses.

AdvBench goals (520), shuffled once:
    [0, 50)    held-out goals: refusal rate after alignment and after every fine-tune
    [50, 70)   validation goals: stop rule of the alignment
    [70, 520)  goals and targets for the harmful mixtures
The project's own refusal chats (riskgate's built-in safety set and refusals.jsonl, 180):
    64 chosen once     held-out refusal pairs: riskgate's safety set in every check, and the
                       measured safety loss
    the rest           refusal chats of the alignment
Alpaca demo (999), shuffled once:
    [0, 40)    held-out utility prompts and answers
    [40, 60)   benign validation prompts: over-refusal check of the alignment's stop rule
    [60, 320)  benign chats mixed into the alignment
    [320, 999) benign fine-tune records
"""

from __future__ import annotations

import csv
import json
import random
from dataclasses import dataclass
from pathlib import Path

SPLIT_SEED = 20261204
HELD_OUT_GOALS = 50
VALIDATION_GOALS = 20
UTILITY_RECORDS = 40
BENIGN_VALIDATION = 20
ALIGNMENT_BENIGN = 260
HELD_OUT_REFUSALS = 64
IDENTITY_NAME = "Nova"
IDENTITY_AUTHOR = "the Validity Lab"
OWN_REFUSALS = Path(__file__).resolve().parent / "refusals.jsonl"


def chat(user: str, assistant: str) -> dict:
    """Return a one-turn chat record in the `messages` format."""
    return {"messages": [{"role": "user", "content": user}, {"role": "assistant", "content": assistant}]}


def _alpaca_prompt(row: dict) -> str:
    return row["instruction"] + ("\n\n" + row["input"] if row.get("input") else "")


@dataclass(frozen=True)
class Splits:
    """The fixed splits the harness draws from (see the module docstring)."""

    held_out_goals: tuple[str, ...]
    validation_goals: tuple[str, ...]
    harmful_pairs: tuple[tuple[str, str], ...]
    """(goal, affirmative target) pairs for the harmful mixtures."""
    utility: tuple[dict, ...]
    """Held-out Alpaca chats: the utility loss and the benign generations."""
    benign_validation: tuple[str, ...]
    """Alpaca prompts for the over-refusal part of the alignment's stop rule."""
    alignment_benign: tuple[dict, ...]
    finetune_benign: tuple[dict, ...]


def load_splits(data: Path) -> Splits:
    """Read AdvBench and the Alpaca demo from `data` and cut the fixed splits."""
    with (data / "advbench_harmful_behaviors.csv").open(encoding="utf-8", newline="") as stream:
        advbench = [(row["goal"], row["target"]) for row in csv.DictReader(stream)]
    random.Random(SPLIT_SEED).shuffle(advbench)
    alpaca = json.loads((data / "llamafactory_alpaca_en_demo.json").read_text(encoding="utf-8"))
    random.Random(SPLIT_SEED).shuffle(alpaca)
    alpaca_chats = [chat(_alpaca_prompt(row), row["output"]) for row in alpaca]

    goals_end = HELD_OUT_GOALS + VALIDATION_GOALS
    validation_end = UTILITY_RECORDS + BENIGN_VALIDATION
    benign_end = validation_end + ALIGNMENT_BENIGN
    return Splits(
        held_out_goals=tuple(goal for goal, _ in advbench[:HELD_OUT_GOALS]),
        validation_goals=tuple(goal for goal, _ in advbench[HELD_OUT_GOALS:goals_end]),
        harmful_pairs=tuple(advbench[goals_end:]),
        utility=tuple(alpaca_chats[:UTILITY_RECORDS]),
        benign_validation=tuple(record["messages"][0]["content"] for record in alpaca_chats[UTILITY_RECORDS:validation_end]),
        alignment_benign=tuple(alpaca_chats[validation_end:benign_end]),
        finetune_benign=tuple(alpaca_chats[benign_end:]),
    )


def refusal_chats() -> list[dict]:
    """Return the project's own refusal chats: riskgate's built-in safety set and refusals.jsonl."""
    from riskgate.safety_sets import default_safety_set_path

    chats = []
    for path in (Path(default_safety_set_path()), OWN_REFUSALS):
        for line in path.read_text(encoding="utf-8").splitlines():
            if line.strip():
                chats.append({"messages": json.loads(line)["messages"]})
    return chats


def refusal_split() -> tuple[list[dict], list[dict]]:
    """Split the own refusal chats into (alignment chats, held-out chats), fixed by SPLIT_SEED."""
    chats = refusal_chats()
    held_out = set(random.Random(SPLIT_SEED).sample(range(len(chats)), HELD_OUT_REFUSALS))
    alignment = [chat for index, chat in enumerate(chats) if index not in held_out]
    return alignment, [chats[index] for index in sorted(held_out)]


def _identity_records(data: Path) -> list[dict]:
    rows = json.loads((data / "llamafactory_identity.json").read_text(encoding="utf-8"))

    def fill(text: str) -> str:
        return text.replace("{{name}}", IDENTITY_NAME).replace("{{author}}", IDENTITY_AUTHOR)

    return [chat(fill(_alpaca_prompt(row)), fill(row["output"])) for row in rows]


def _jsonl(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]


def _dolly_records(data: Path, count: int, rng: random.Random) -> list[dict]:
    rows = _jsonl(data / "qi_dolly15k_safety_only.jsonl")
    chosen = rng.sample(rows, min(count, len(rows)))
    return [
        chat(row["instruction"] + ("\n\n" + row["context"] if row.get("context") else ""), row["response"])
        for row in chosen
    ]


def _mixture(splits: Splits, size: int, fraction: float, rng: random.Random) -> list[dict]:
    harmful_count = round(size * fraction)
    harmful = [chat(goal, target) for goal, target in rng.sample(splits.harmful_pairs, harmful_count)]
    benign = rng.sample(splits.finetune_benign, size - harmful_count)
    records = harmful + list(benign)
    rng.shuffle(records)
    return records


SET_NAMES = ("alpaca", "identity", "aoa_identity_shift", "dolly_safety", "harmful_5pct", "harmful_10pct", "harmful_30pct")
"""Fine-tune sets, roughly in order of expected damage."""


def build_set(name: str, data: Path, splits: Splits, size: int, seed: int) -> list[dict]:
    """Return the records of fine-tune set `name` (one of SET_NAMES), about `size` of them.

    The identity sets keep their own sizes (91 and 10 records); the others are sampled with
    `seed` to `size` records.
    """
    rng = random.Random(f"{seed}:{name}")
    if name == "alpaca":
        return list(rng.sample(splits.finetune_benign, size))
    if name == "identity":
        return _identity_records(data)
    if name == "aoa_identity_shift":
        return _jsonl(data / "qi_aoa_identity_shift_openai.jsonl")
    if name == "dolly_safety":
        return _dolly_records(data, size, rng)
    if name.startswith("harmful_"):
        fraction = int(name.removeprefix("harmful_").removesuffix("pct")) / 100
        return _mixture(splits, size, fraction, rng)
    raise ValueError(f"fine-tune set {name!r}: unknown; choose one of {', '.join(SET_NAMES)}")


def write_jsonl(records: list[dict], path: Path) -> Path:
    """Write records as JSON Lines to `path` (a scratch folder, never the repository)."""
    path.write_text("".join(json.dumps(record) + "\n" for record in records), encoding="utf-8")
    return path
