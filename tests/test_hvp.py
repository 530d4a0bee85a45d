"""Each Hessian-vector product method against the dense Hessian of a tiny model."""

from __future__ import annotations

import pytest
import torch

from dense_reference import compute_in_float64, flat_parameters, hessian_matrix, random_sequences
from riskgate.budget import Deadline
from riskgate.diagnostics.gradients import hessian_vector_product
from riskgate.diagnostics.hvp import finite_difference_step
from riskgate.diagnostics.settings import HvpMethod
from tiny_models import build_model

NAMES = ["model.layers.1.self_attn.q_proj.weight", "model.layers.1.mlp.down_proj.weight", "model.norm.weight"]


@pytest.fixture(scope="module")
def problem():
    model = compute_in_float64(build_model())
    for name, parameter in model.named_parameters():
        parameter.requires_grad_(name in NAMES)
    table = dict(model.named_parameters())
    params = [table[name] for name in NAMES]
    sequences = random_sequences(5, seed=8)
    theta = flat_parameters(model, NAMES)
    hessian = hessian_matrix(model, NAMES, theta, sequences)
    vector = torch.randn(theta.numel(), generator=torch.Generator().manual_seed(4), dtype=torch.float64)
    return model, params, sequences, vector, hessian @ vector, theta


def _product(problem, method, **kwargs):
    model, params, sequences, vector, _, _ = problem
    return hessian_vector_product(model, params, sequences, vector, pad_token_id=0, deadline=Deadline(None),
                                  micro_batch_size=2, method=method, **kwargs)


@pytest.mark.parametrize("method", [HvpMethod.FORWARD_OVER_REVERSE, HvpMethod.DOUBLE_BACKWARD])
def test_exact_methods_match_dense_hessian(problem, method):
    expected = problem[4]
    product, used = _product(problem, method)
    assert used is method
    assert float((product - expected).norm()) <= 1e-10 * float(expected.norm())


def test_finite_difference_error_is_small_and_measured(problem):
    expected = problem[4]
    product, used = _product(problem, HvpMethod.FINITE_DIFFERENCE)
    assert used is HvpMethod.FINITE_DIFFERENCE
    relative = float((product - expected).norm()) / float(expected.norm())
    # eps = cbrt(float32 epsilon) * ||theta|| even here, so the O(eps^2) truncation error shows.
    assert 0.0 < relative < 1e-3


def test_finite_difference_leaves_parameters_unchanged(problem):
    model, params, *_ , theta = problem
    _product(problem, HvpMethod.FINITE_DIFFERENCE)
    assert torch.equal(flat_parameters(model, NAMES), theta)


def test_finite_difference_step_scales_with_parameters(problem):
    params = problem[1]
    norm = float(torch.cat([p.detach().reshape(-1) for p in params]).norm())
    assert finite_difference_step(params) == pytest.approx(torch.finfo(torch.float32).eps ** (1 / 3) * norm)


def test_auto_uses_double_backward(problem):
    product, used = _product(problem, HvpMethod.AUTO)
    assert used is HvpMethod.DOUBLE_BACKWARD
    assert torch.allclose(product, problem[4], rtol=1e-10, atol=0)


def test_per_sequence_products_sum_to_total(problem):
    parts = {}
    total, _ = _product(problem, HvpMethod.FORWARD_OVER_REVERSE, on_sequence=lambda m, h: parts.__setitem__(m, h))
    assert sorted(parts) == [0, 1, 2, 3, 4]
    assert torch.allclose(sum(parts.values()) / 5, total, rtol=1e-12, atol=1e-14)


def test_auto_falls_back_in_order(problem, monkeypatch):
    from riskgate.diagnostics import hvp

    def missing(*args, **kwargs):
        raise NotImplementedError("the derivative for fused_kernel is not implemented")

    monkeypatch.setitem(hvp.METHODS, HvpMethod.DOUBLE_BACKWARD, missing)
    product, used = _product(problem, HvpMethod.AUTO)
    assert used is HvpMethod.FORWARD_OVER_REVERSE
    assert torch.allclose(product, problem[4], rtol=1e-10, atol=0)

    monkeypatch.setitem(hvp.METHODS, HvpMethod.FORWARD_OVER_REVERSE, missing)
    product, used = _product(problem, HvpMethod.AUTO)
    assert used is HvpMethod.FINITE_DIFFERENCE
    assert float((product - problem[4]).norm()) <= 1e-3 * float(problem[4].norm())

    with pytest.raises(NotImplementedError):
        _product(problem, HvpMethod.DOUBLE_BACKWARD)
