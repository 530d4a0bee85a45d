"""Run the diagnostics on a tiny model under torchrun; rank 0 writes the numbers as JSON.

Usage: python -m torch.distributed.run --standalone --nproc_per_node 2 distributed_worker.py OUT [WIDTH]
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).parent))

from dense_reference import compute_in_float64, random_sequences  # noqa: E402
from riskgate.budget import Deadline  # noqa: E402
from riskgate.diagnostics.distributed import init_from_environment  # noqa: E402
from riskgate.diagnostics.engine import DiagnosticsRun  # noqa: E402
from riskgate.diagnostics.settings import DiagnosticSettings, Optimizer  # noqa: E402
from tiny_models import build_model  # noqa: E402

SCOPE = ["model.layers.1.self_attn.q_proj.weight", "model.layers.1.mlp.down_proj.weight",
         "model.norm.weight", "model.embed_tokens.weight"]


def numbers(width: int | None, optimizer: str) -> dict:
    """Run one analysis in this process and return the numbers the test compares."""
    torch.set_num_threads(1)
    model = compute_in_float64(build_model())
    for name, parameter in model.named_parameters():
        parameter.requires_grad_(name in SCOPE)
    table = dict(model.named_parameters())
    settings = DiagnosticSettings(rho=0.85, k_max=8, orthogonality_level=0.5, tau=1.0, learning_rate=1e-2,
                                  batch_size=4, planned_steps=40, optimizer=Optimizer(optimizer),
                                  sketch_width=width, bootstrap_resamples=0)
    runner = DiagnosticsRun(model, [table[n] for n in SCOPE], SCOPE, settings, pad_token_id=0, deadline=Deadline(None))
    result = runner.run(random_sequences(7, seed=1), random_sequences(5, seed=2, first_index=100))
    return {
        "ranks": 1 if runner.shard is None else runner.shard.world,
        "spectrum": [float(x) for x in result.sharpness.subspace.spectrum],
        "overlap_ratio": result.overlap.overlap_ratio,
        "gamma_hat": result.curvature.gamma_hat,
        "delta_u": result.forecast.at_planned_steps.delta_u,
        "gamma_shares": [r.gamma_share for r in result.records],
        "safety_loss": result.safety.mean_loss,
    }


if __name__ == "__main__":
    shard = init_from_environment()
    width = int(sys.argv[2]) if len(sys.argv) > 2 and sys.argv[2] != "exact" else None
    values = numbers(width, sys.argv[3] if len(sys.argv) > 3 else "sgd")
    if shard is None or shard.rank == 0:
        Path(sys.argv[1]).write_text(json.dumps(values))
