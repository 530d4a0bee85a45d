"""Hessian-vector products of a micro-batch's summed loss, by three methods.

For a micro-batch b with summed loss L_b(theta) = sum_{m in b} l_m(theta) and a direction v
(d,), each method returns H_b v = grad^2 L_b(theta*) v, shape (d,):

- forward over reverse: the directional derivative of the gradient,
  H_b v = d/ds grad L_b(theta* + s v) at s = 0, by torch.func.jvp of torch.func.grad. One
  forward pass with dual numbers and one backward pass; no second graph is kept.
- double backward (reverse over reverse, the default): H_b v = grad_theta <grad L_b(theta), v>,
  with the graph of the first backward kept for the second. On CPU it measured about twice as
  fast as forward over reverse through torch.func (docs/benchmarks.md).
- central finite differences: H_b v ~ (grad L_b(theta* + eps u) - grad L_b(theta* - eps u))
  ||v|| / (2 eps) with u = v / ||v||, for kernels without second derivatives and for sharded
  models. The truncation error is O(eps^2) and the rounding error O(r ||grad L_b|| / eps) for a
  relative gradient rounding r, so eps = cbrt(machine epsilon) * max(||theta*||, 1) balances
  them. Its error against the exact methods is measured in the tests and benchmarks.

Every method leaves the parameters exactly as they were.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch

from .settings import HvpMethod


LossFn = Callable[[torch.nn.Module], torch.Tensor]
"""loss_fn(model) returns the micro-batch's summed loss through a forward pass of `model`."""


def _named(model: torch.nn.Module, params: Sequence[torch.Tensor]) -> list[str]:
    by_id = {id(p): name for name, p in model.named_parameters()}
    return [by_id[id(p)] for p in params]


def forward_over_reverse(
    model: torch.nn.Module, params: Sequence[torch.Tensor], direction: Sequence[torch.Tensor], loss_fn: LossFn
) -> list[torch.Tensor]:
    """Return H v per parameter by jvp of grad (torch.func)."""
    from torch.func import functional_call, grad, jvp

    names = _named(model, params)

    def summed_loss(values: tuple[torch.Tensor, ...]) -> torch.Tensor:
        replaced = dict(zip(names, values))
        return loss_fn(lambda **kwargs: functional_call(model, replaced, args=(), kwargs=kwargs))

    primals = tuple(p.detach() for p in params)
    tangents = tuple(v.to(dtype=p.dtype, device=p.device) for v, p in zip(direction, params))
    _, hvp = jvp(grad(summed_loss), (primals,), (tangents,))
    return list(hvp)


def double_backward(
    model: torch.nn.Module, params: Sequence[torch.Tensor], direction: Sequence[torch.Tensor], loss_fn: LossFn
) -> list[torch.Tensor]:
    """Return H v per parameter as the gradient of <grad L, v>."""
    loss = loss_fn(lambda **kwargs: model(**kwargs))
    grads = torch.autograd.grad(loss, params, create_graph=True, allow_unused=True)
    inner = sum((g * v).sum() for g, v in zip(grads, direction) if g is not None)
    # When <grad L, v> does not depend on the parameters, the product is zero.
    if not (isinstance(inner, torch.Tensor) and inner.requires_grad):
        return [torch.zeros_like(p) for p in params]
    result = torch.autograd.grad(inner, params, allow_unused=True)
    return [torch.zeros_like(p) if r is None else r for r, p in zip(result, params)]


def finite_difference_step(params: Sequence[torch.Tensor]) -> float:
    """eps = cbrt(u) * max(||theta*||, 1), with u the float32 machine epsilon or a coarser one.

    u is at least float32's epsilon even for float64 parameters, because transformers models
    compute norms and attention softmax in float32 whatever the parameter dtype. So the
    gradients' rounding, not the parameters', sets the balance with the truncation error.
    """
    norm = float(torch.sqrt(sum(p.detach().to(torch.float64).square().sum() for p in params)))
    unit = max(torch.finfo(params[0].dtype).eps, torch.finfo(torch.float32).eps)
    return unit ** (1.0 / 3.0) * max(norm, 1.0)


def finite_difference(
    model: torch.nn.Module,
    params: Sequence[torch.Tensor],
    direction: Sequence[torch.Tensor],
    loss_fn: LossFn,
    *,
    step: float | None = None,
) -> list[torch.Tensor]:
    """Return H v per parameter by central differences of gradients along v."""
    norm = float(torch.sqrt(sum(v.to(torch.float64).square().sum() for v in direction)))
    if norm == 0.0:
        return [torch.zeros_like(p) for p in params]
    eps = finite_difference_step(params) if step is None else step
    saved = [p.detach().clone() for p in params]
    unit = [v.to(dtype=p.dtype, device=p.device) / norm for v, p in zip(direction, params)]

    def gradient_at(sign: float) -> list[torch.Tensor]:
        with torch.no_grad():
            for p, original, u in zip(params, saved, unit):
                p.copy_(original + sign * eps * u)
        loss = loss_fn(lambda **kwargs: model(**kwargs))
        grads = torch.autograd.grad(loss, params, allow_unused=True)
        return [torch.zeros_like(p) if g is None else g.to(torch.float64) for g, p in zip(grads, params)]

    try:
        plus = gradient_at(1.0)
        minus = gradient_at(-1.0)
    finally:
        with torch.no_grad():
            for p, original in zip(params, saved):
                p.copy_(original)
    return [((a - b) * (norm / (2.0 * eps))).to(p.dtype) for a, b, p in zip(plus, minus, params)]


METHODS = {
    HvpMethod.FORWARD_OVER_REVERSE: forward_over_reverse,
    HvpMethod.DOUBLE_BACKWARD: double_backward,
    HvpMethod.FINITE_DIFFERENCE: finite_difference,
}
