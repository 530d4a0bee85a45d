"""The streamed path: exact gradient rows kept in memory-mapped files under --spill-dir.

It must give the exact path's numbers, keep its rows in files under the spill folder, leave no
file behind, and be chosen only when the rows do not fit the memory limit but fit the disk.
"""

from __future__ import annotations

import dataclasses
import math

import pytest
import torch

import riskgate
from chat_files import write_chat
from dense_reference import random_sequences
from riskgate.budget import Budget, Deadline
from riskgate.diagnostics.engine import DiagnosticsRun
from riskgate.diagnostics.fisher import fisher_subspace, gram_matrix, sensitivity_map
from riskgate.diagnostics.memory import plan_memory
from riskgate.diagnostics.settings import DiagnosticSettings, Optimizer
from riskgate.errors import UsageError
from tiny_models import build_model

SMOLLM2 = dict(parameters_total=134_515_008, model_itemsize=4, itemsize=4)
SCOPE = ["model.layers.1.self_attn.q_proj.weight", "model.layers.1.mlp.down_proj.weight"]


def test_streamed_chosen_when_rows_fit_the_disk_only():
    rows_bytes = 192 * 7_077_888 * 4
    streamed = plan_memory(numel=7_077_888, rows=192, limit_bytes=8 * 2**30, spill_free_bytes=rows_bytes, **SMOLLM2)
    assert streamed.path == "streamed"
    assert streamed.sketch_width is None
    assert streamed.estimated_bytes <= 8 * 2**30


def test_sketched_when_the_disk_is_too_small():
    rows_bytes = 192 * 7_077_888 * 4
    plan = plan_memory(numel=7_077_888, rows=192, limit_bytes=8 * 2**30, spill_free_bytes=rows_bytes - 1, **SMOLLM2)
    assert plan.path == "sketched"


def test_exact_preferred_when_rows_fit_memory():
    plan = plan_memory(numel=7_077_888, rows=192, limit_bytes=16 * 2**30, spill_free_bytes=10**15, **SMOLLM2)
    assert plan.path == "exact"


def _run(spill_dir, optimizer):
    model = build_model()
    table = dict(model.named_parameters())
    for name, parameter in table.items():
        parameter.requires_grad_(name in SCOPE)
    settings = DiagnosticSettings(rho=0.85, k_max=4, orthogonality_level=0.5, tau=1.0, learning_rate=1e-2,
                                  batch_size=2, planned_steps=30, optimizer=optimizer,
                                  spill_dir=None if spill_dir is None else str(spill_dir))
    runner = DiagnosticsRun(model, [table[name] for name in SCOPE], SCOPE, settings, pad_token_id=0,
                            deadline=Deadline(None))
    allocated = []
    original = runner._allocate

    def recording(shape, dtype):
        rows = original(shape, dtype)
        allocated.append(rows)
        return rows

    runner._allocate = recording
    result = runner.run(random_sequences(8, seed=21), random_sequences(5, seed=22, first_index=50))
    return runner, result, allocated


@pytest.mark.parametrize("optimizer", [Optimizer.SGD, Optimizer.ADAMW])
def test_streamed_equals_exact(tmp_path, optimizer):
    _, exact, _ = _run(None, optimizer)
    runner, streamed, allocated = _run(tmp_path, optimizer)

    assert runner.engine_info().path == "streamed"
    assert [rows.untyped_storage().filename.startswith(str(tmp_path)) for rows in allocated] == [True, True]
    assert list(tmp_path.iterdir()) == []  # the row files are unlinked as soon as they are mapped
    pairs = [
        ("lambda_1", streamed.sharpness.subspace.eigenvalues[0], exact.sharpness.subspace.eigenvalues[0]),
        ("overlap_ratio", streamed.overlap.overlap_ratio, exact.overlap.overlap_ratio),
        ("gamma_hat", streamed.curvature.gamma_hat, exact.curvature.gamma_hat),
        ("delta_u", streamed.forecast.at_planned_steps.delta_u, exact.forecast.at_planned_steps.delta_u),
    ]
    for name, got, expected in pairs:
        assert math.isclose(float(got), float(expected), rel_tol=1e-12, abs_tol=1e-300), name
    assert streamed.sharpness.top_entries == exact.sharpness.top_entries


def test_streamed_what_if_equals_exact(tmp_path):
    exact_runner, _, _ = _run(None, Optimizer.SGD)
    streamed_runner, _, _ = _run(tmp_path, Optimizer.SGD)
    exact = exact_runner.rerun_without({50, 52})
    streamed = streamed_runner.rerun_without({50, 52})
    assert math.isclose(streamed.curvature.gamma_hat, exact.curvature.gamma_hat, rel_tol=1e-12)
    assert list(tmp_path.iterdir()) == []


def test_sensitivity_map_chunks_within_a_tensor():
    generator = torch.Generator().manual_seed(3)
    gradients = torch.randn((6, 40), generator=generator, dtype=torch.float64)
    subspace = fisher_subspace(gram_matrix(gradients), rho=0.9, k_max=3, gradient_dtype=torch.float64)
    names, shapes = ["a", "b"], [(4, 5), (20,)]
    whole = sensitivity_map(gradients, subspace, names, shapes)
    chunked = sensitivity_map(gradients, subspace, names, shapes, chunk=7)

    assert [row.tensor for row in chunked[0]] == [row.tensor for row in whole[0]]
    for got, expected in zip(chunked[0], whole[0]):
        assert math.isclose(got.share, expected.share, rel_tol=1e-12)
    assert [(e.eigenvector, e.tensor, e.index) for e in chunked[1]] == \
        [(e.eigenvector, e.tensor, e.index) for e in whole[1]]


@pytest.fixture(scope="module")
def inputs(tmp_path_factory):
    folder = tmp_path_factory.mktemp("streamed-data")
    finetune = write_chat(folder / "finetune.jsonl", [(f"Count to {i}.", f"{i}, done.") for i in range(8)])
    safety = write_chat(folder / "safety.jsonl", [(f"Injure person {i}.", "I won't help with that.") for i in range(8)])
    policy = folder / "policy.yaml"
    policy.write_text("schema_version: 1\nname: s\nextends: default\nsamples: {min_safety_examples: 4, min_finetune_examples: 2}\n")
    return finetune, safety, policy


def test_check_streams_rows_under_a_tight_limit(tiny_checkpoint, inputs, tmp_path):
    finetune, safety, policy = inputs
    arguments = dict(safety_data=safety, learning_rate=1e-3, max_steps=20, batch_size=2, optimizer="sgd",
                     budget=Budget(max_safety_examples=6, max_finetune_examples=4, max_seq_len=64))
    exact = riskgate.check(str(tiny_checkpoint), finetune, policy, **arguments).report
    limit = exact["engine"]["estimated_bytes"] - 1  # the rows no longer fit, everything else does
    streamed = riskgate.check(str(tiny_checkpoint), finetune, policy, max_memory=limit, spill_dir=tmp_path,
                              **arguments).report

    assert exact["engine"]["path"] == "exact"
    assert streamed["engine"]["path"] == "streamed"
    assert streamed["engine"]["estimated_bytes"] <= limit
    for section in ("initial_orthogonality", "curvature_coupling"):
        for key, value in exact["checks"][section].items():
            if isinstance(value, float):
                assert math.isclose(value, streamed["checks"][section][key], rel_tol=1e-12, abs_tol=1e-300), key


def test_spill_dir_must_be_a_writable_folder(tiny_checkpoint, inputs, tmp_path):
    finetune, safety, policy = inputs
    with pytest.raises(UsageError, match="--spill-dir .*missing: not a folder"):
        riskgate.check(str(tiny_checkpoint), finetune, policy, safety_data=safety, spill_dir=tmp_path / "missing")
    with pytest.raises(UsageError, match="--spill-dir: empty path"):
        riskgate.check(str(tiny_checkpoint), finetune, policy, safety_data=safety, spill_dir="")


def test_settings_default_keeps_rows_in_memory():
    settings = DiagnosticSettings(rho=0.9, k_max=2, orthogonality_level=0.5, tau=1.0, learning_rate=1e-3,
                                  batch_size=1, planned_steps=1)
    assert dataclasses.asdict(settings)["spill_dir"] is None
