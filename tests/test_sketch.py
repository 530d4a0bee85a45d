"""The CountSketch and the sketched engine path against exact computations."""

from __future__ import annotations

import math

import pytest
import torch

from dense_reference import compute_in_float64, random_sequences
from riskgate.budget import Deadline
from riskgate.diagnostics.engine import DiagnosticsRun
from riskgate.diagnostics.settings import DiagnosticSettings, HvpMethod, Optimizer
from riskgate.diagnostics.sketch import CountSketch, plan_layout
from tiny_models import build_model


def test_layout_copies_small_tensors_exactly():
    layout = plan_layout([1000, 10, 3000], width=400)
    assert layout.exact == (False, True, False)
    assert layout.offsets == (0, 400, 410, 810)
    assert layout.min_sketched_width == 400
    assert layout.error_scale == pytest.approx(math.sqrt(2 / 400))
    wide = plan_layout([10**6, 3 * 10**6], width=2**16)
    assert wide.offsets == (0, 2**14, 2**16)
    assert wide.exact == (False, False)


def test_wide_sketch_is_a_copy():
    sketch = CountSketch([5, 7], width=100, seed=0)
    vector = torch.arange(12, dtype=torch.float64)
    assert torch.equal(sketch.apply_vector(vector), vector)
    assert sketch.layout.error_scale == 0.0


def test_sketch_is_linear_and_matches_per_tensor_apply():
    sketch = CountSketch([300, 500], width=200, seed=3)
    a, b = torch.randn(800, dtype=torch.float64), torch.randn(800, dtype=torch.float64)
    assert torch.allclose(sketch.apply_vector(a + 2 * b), sketch.apply_vector(a) + 2 * sketch.apply_vector(b))
    rows = torch.stack([a[:300], b[:300]])
    assert torch.allclose(sketch.apply(0, rows)[1], sketch.apply_vector(b)[sketch.columns(0)])


def test_inner_products_are_unbiased_within_the_stated_deviation():
    generator = torch.Generator().manual_seed(0)
    a = torch.randn(4000, generator=generator, dtype=torch.float64)
    b = 0.3 * a + torch.randn(4000, generator=generator, dtype=torch.float64)
    exact = float(a @ b)
    errors = []
    for seed in range(200):
        sketch = CountSketch([4000], width=256, seed=seed)
        errors.append(float(sketch.apply_vector(a) @ sketch.apply_vector(b)) - exact)
    errors = torch.tensor(errors)
    bound = sketch.layout.error_scale * float(a.norm() * b.norm())  # one standard deviation, at most
    assert abs(float(errors.mean())) < 3 * bound / math.sqrt(200)
    assert float(errors.std()) <= bound
    assert float(errors.std()) > 0.2 * bound


SCOPE = ["model.layers.1.self_attn.q_proj.weight", "model.layers.1.mlp.down_proj.weight",
         "model.layers.1.post_attention_layernorm.weight", "model.embed_tokens.weight"]


@pytest.fixture(scope="module")
def model_and_data():
    model = compute_in_float64(build_model())
    for name, parameter in model.named_parameters():
        parameter.requires_grad_(name in SCOPE)
    table = dict(model.named_parameters())
    return model, [table[n] for n in SCOPE], random_sequences(10, seed=1), random_sequences(6, seed=2, first_index=100)


def _runner(model_and_data, optimizer, width):
    model, params, safety, finetune = model_and_data
    settings = DiagnosticSettings(rho=0.85, k_max=8, orthogonality_level=0.5, tau=1.0, learning_rate=1e-2,
                                  batch_size=4, planned_steps=40, optimizer=optimizer, sketch_width=width,
                                  hvp_method=HvpMethod.FORWARD_OVER_REVERSE, bootstrap_resamples=0)
    runner = DiagnosticsRun(model, params, SCOPE, settings, pad_token_id=0, deadline=Deadline(None))
    return runner, runner.run(safety, finetune)


def _run(model_and_data, optimizer, width):
    return _runner(model_and_data, optimizer, width)[1]


@pytest.mark.parametrize("optimizer", [Optimizer.SGD, Optimizer.ADAMW])
def test_sketch_wider_than_scope_reproduces_exact_path(model_and_data, optimizer):
    exact = _run(model_and_data, optimizer, None)
    sketched = _run(model_and_data, optimizer, 10**6)
    assert exact.engine.path == "exact"
    assert sketched.engine.path == "sketched"
    assert sketched.engine.error_scale == 0.0
    for a, b in [
        (exact.sharpness.subspace.spectrum, sketched.sharpness.subspace.spectrum),
        (torch.tensor(exact.overlap.overlap_ratio), torch.tensor(sketched.overlap.overlap_ratio)),
        (torch.tensor(exact.curvature.gamma_hat), torch.tensor(sketched.curvature.gamma_hat)),
        (torch.tensor(exact.forecast.at_planned_steps.delta_u), torch.tensor(sketched.forecast.at_planned_steps.delta_u)),
    ]:
        assert torch.allclose(a, b, rtol=1e-9, atol=1e-12)
    assert [r.share for r in exact.sharpness.sensitivity] == pytest.approx([r.share for r in sketched.sharpness.sensitivity])
    assert sketched.sharpness.top_entries == exact.sharpness.top_entries


def test_narrow_sketch_stays_within_its_error_scale(model_and_data):
    exact_runner, exact = _runner(model_and_data, Optimizer.SGD, None)
    runner, sketched = _runner(model_and_data, Optimizer.SGD, 600)
    scale = sketched.engine.error_scale
    assert 0 < scale < 0.2
    # Each Gram entry is an inner product with a standard deviation of at most
    # sqrt(2 / r) sqrt(K_ii K_jj). In those units the errors have a root mean square below 1,
    # and Chebyshev puts each beyond 10 with probability 1% at most.
    gram, estimate = exact_runner.safety_side.gram, runner.safety_side.gram
    norms = gram.diagonal().sqrt()
    units = (estimate - gram).abs() / (scale * norms[:, None] * norms[None, :])
    assert float(units.square().mean().sqrt()) <= 1.5
    assert float(units.max()) <= 10
    assert not torch.allclose(estimate, gram, rtol=1e-6)
    trace = exact.sharpness.subspace.trace
    top_error = abs(float(sketched.sharpness.subspace.spectrum[0] - exact.sharpness.subspace.spectrum[0]))
    assert top_error <= 3 * scale * trace
    assert sketched.sharpness.top_entries == ()
    assert sketched.curvature.hvp_norm == pytest.approx(exact.curvature.hvp_norm, rel=1e-9)
    # G v is recomputed exactly by one more safety pass, so v^T F v = ||G v||^2 / n matches.
    assert sketched.overlap.quadratic_form == pytest.approx(exact.overlap.quadratic_form, rel=1e-9)
    assert sketched.baselines.cosine_to_mean_safety_gradient != pytest.approx(0.0)
