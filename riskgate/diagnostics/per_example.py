"""Per-sequence gradients from one batched backward pass per micro-batch.

A micro-batch of B right-padded sequences gives the summed loss sum_b l_b. Since no sequence
attends to another, the gradient of l_b flows only through row b of every activation. For a
module y = f(x; W) applied token by token, the per-sequence gradient of its weight is then a
sum over the tokens of that row (shapes per sequence: x (t, d_in), dy = dl_b/dy (t, d_out)):

    Linear        y = x W^T + c      dW_b = dy^T x           (d_out, d_in)    dc_b = sum_t dy
    Conv1D        y = x W + c        dW_b = x^T dy           (d_in, d_out)    dc_b = sum_t dy
    Embedding     y = W[ids]         dW_b[r] = sum_{t: ids_t = r} dy_t        (vocab, dim)
    RMSNorm       y = w * x_hat      dw_b = sum_t dy_t * x_hat_t              (dim,)
    LayerNorm     y = w * x_hat + c  dw_b = sum_t dy_t * x_hat_t, dc_b = sum_t dy_t

The forward pass records x and y of each module that owns a scoped parameter; one call to
torch.autograd.grad then returns dy for all of them at once, and the formulas above give every
sequence's gradient without a backward pass per sequence. A tied parameter (an embedding
shared with the LM head) receives the contributions of both modules.

Parameters of any other module type, and norms whose forward does not match the formula
(checked on a probe input before the pass), fall back to one backward pass per sequence.
Products are formed in float32 (float64 for float64 models), whatever the model's dtype.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch


GradientSink = Callable[[torch.Tensor, int, torch.Tensor], None]
"""sink(rows, parameter_index, grads): add grads (B, numel) to the gradients of sequences `rows`."""

ProgressFn = Callable[[int, int], None]

_NORM_PROBE_TOLERANCE = 1e-4


@dataclass(frozen=True)
class _Rule:
    """How to turn one module's recorded (x, dy) into per-sequence gradients of its parameters."""

    kind: str
    """One of linear, conv1d, embedding, rms_norm, layer_norm."""
    weight: int | None
    """Index of the module's weight in the scoped parameter list, or None when out of scope."""
    bias: int | None
    """Index of the module's bias in the scoped parameter list, or None."""


def _rms_norm_epsilon(module: torch.nn.Module) -> float | None:
    for attribute in ("variance_epsilon", "eps", "epsilon"):
        value = getattr(module, attribute, None)
        if isinstance(value, float):
            return value
    return None


def _rms_normalise(module: torch.nn.Module, x: torch.Tensor) -> torch.Tensor:
    """x_hat of a Llama-style RMSNorm, computed as the module does (float32, cast back)."""
    hidden = x.to(torch.float32) if x.dtype in (torch.float16, torch.bfloat16) else x
    variance = hidden.pow(2).mean(-1, keepdim=True)
    return (hidden * torch.rsqrt(variance + _rms_norm_epsilon(module))).to(x.dtype)


def _layer_normalise(module: torch.nn.LayerNorm, x: torch.Tensor) -> torch.Tensor:
    return torch.nn.functional.layer_norm(x, module.normalized_shape, None, None, module.eps)


def _norm_matches(module: torch.nn.Module, kind: str) -> bool:
    """True when the module's forward equals w * x_hat (+ c) on a random probe input.

    The probe uses random weights (torch.func.functional_call), so a formula that agrees with
    w * x_hat only at the current weights (w = 1 at initialisation, say) is still caught.
    """
    from torch.func import functional_call

    weight = module.weight
    generator = torch.Generator(device=weight.device).manual_seed(0)
    probe = torch.randn((1, 3, weight.shape[0]), dtype=weight.dtype, device=weight.device, generator=generator)
    values = {"weight": 0.5 + torch.rand(weight.shape, dtype=weight.dtype, device=weight.device, generator=generator)}
    if kind == "layer_norm":
        values["bias"] = torch.randn(weight.shape, dtype=weight.dtype, device=weight.device, generator=generator)
    with torch.no_grad():
        actual = functional_call(module, values, (probe,))
        if kind == "rms_norm":
            expected = values["weight"] * _rms_normalise(module, probe)
        else:
            expected = values["weight"] * _layer_normalise(module, probe) + values["bias"]
    if not isinstance(actual, torch.Tensor) or actual.shape != expected.shape:
        return False
    scale = float(expected.abs().max()) or 1.0
    return float((actual - expected).abs().max()) <= _NORM_PROBE_TOLERANCE * scale


def _rule_for(module: torch.nn.Module, index_of: dict[int, int]) -> _Rule | None:
    """Return the rule for a module owning scoped parameters, or None if it is unsupported."""
    own = dict(module.named_parameters(recurse=False))
    weight = own.get("weight")
    bias = own.get("bias")
    w_index = index_of.get(id(weight)) if weight is not None else None
    b_index = index_of.get(id(bias)) if bias is not None else None
    if set(own) - {"weight", "bias"}:
        return None
    name = type(module).__name__
    if isinstance(module, torch.nn.Linear):
        return _Rule("linear", w_index, b_index)
    if name == "Conv1D" and weight is not None and weight.ndim == 2:
        return _Rule("conv1d", w_index, b_index)
    if isinstance(module, torch.nn.Embedding):
        if module.max_norm is not None or module.scale_grad_by_freq or module.sparse:
            return None
        return _Rule("embedding", w_index, None)
    if name.endswith("RMSNorm") and bias is None and weight is not None and weight.ndim == 1:
        if _rms_norm_epsilon(module) is not None and _norm_matches(module, "rms_norm"):
            return _Rule("rms_norm", w_index, None)
        return None
    if isinstance(module, torch.nn.LayerNorm) and weight is not None and bias is not None:
        if len(module.normalized_shape) == 1 and _norm_matches(module, "layer_norm"):
            return _Rule("layer_norm", w_index, b_index)
    return None


class BatchedGradients:
    """Per-sequence gradients of the scoped parameters of one model, batched.

    `hooked` parameters get their per-sequence gradients from the batched pass; `looped`
    ones (unsupported module types) from one backward pass per sequence.
    """

    def __init__(self, model: torch.nn.Module, params: Sequence[torch.Tensor]) -> None:
        self.model = model
        self.params = list(params)
        index_of = {id(p): i for i, p in enumerate(self.params)}
        self.rules: dict[torch.nn.Module, _Rule] = {}
        covered: set[int] = set()
        for module in model.modules():
            owned = [index_of[id(p)] for p in module.parameters(recurse=False) if id(p) in index_of]
            if not owned:
                continue
            rule = _rule_for(module, index_of)
            if rule is None:
                continue
            self.rules[module] = rule
            covered.update(i for i in (rule.weight, rule.bias) if i is not None)
        # A parameter also used by an unsupported module needs the loop for all its uses.
        for module in model.modules():
            if module in self.rules:
                continue
            for p in module.parameters(recurse=False):
                covered.discard(index_of.get(id(p), -1))
        self.rules = {
            m: _Rule(r.kind, r.weight if r.weight in covered else None, r.bias if r.bias in covered else None)
            for m, r in self.rules.items()
            if (r.weight in covered) or (r.bias in covered)
        }
        self.hooked = sorted(covered)
        self.looped = [i for i in range(len(self.params)) if i not in covered]

    def run(
        self,
        batch,
        rows: torch.Tensor,
        sink: GradientSink,
        losses_of: Callable[[torch.nn.Module, object], torch.Tensor],
    ) -> torch.Tensor:
        """One forward and one backward pass over `batch`; returns the per-sequence losses (B,).

        `losses_of(model, batch)` returns the per-sequence losses. The sink receives each hooked
        parameter's per-sequence gradients once per micro-batch, whole.
        """
        records: list[tuple[_Rule, torch.nn.Module, torch.Tensor, torch.Tensor]] = []

        def record(module, inputs, output):
            if isinstance(output, torch.Tensor) and output.requires_grad:
                records.append((self.rules[module], module, inputs[0].detach(), output))

        handles = [m.register_forward_hook(record) for m in self.rules]
        try:
            losses = losses_of(self.model, batch)
        finally:
            for handle in handles:
                handle.remove()
        if not records:
            return losses.detach()
        outputs = [r[3] for r in records]
        output_grads = torch.autograd.grad(losses.sum(), outputs, allow_unused=True)
        # A tied parameter gets parts from several modules. They are summed before the sink
        # receives them, so that sinks may square or scale a whole per-sequence gradient.
        parts_left: dict[int, int] = {}
        for rule, *_ in records:
            for index in (rule.weight, rule.bias):
                if index is not None:
                    parts_left[index] = parts_left.get(index, 0) + 1
        pending: dict[int, torch.Tensor] = {}

        def collect(batch_rows: torch.Tensor, index: int, grads: torch.Tensor) -> None:
            pending[index] = grads if index not in pending else pending[index] + grads
            parts_left[index] -= 1
            if parts_left[index] == 0:
                sink(batch_rows, index, pending.pop(index))

        for (rule, module, x, _), dy in zip(records, output_grads):
            if dy is not None:
                self._consume(rule, module, x, dy, rows, collect)
            else:
                for index in (rule.weight, rule.bias):
                    if index is not None:
                        parts_left[index] -= 1
                        if parts_left[index] == 0 and index in pending:
                            sink(rows, index, pending.pop(index))
        return losses.detach()

    def _consume(self, rule: _Rule, module, x: torch.Tensor, dy: torch.Tensor, rows, sink: GradientSink) -> None:
        dtype = torch.float64 if self.params[0].dtype == torch.float64 else torch.float32
        size = dy.shape[0]
        dy = dy.to(dtype).reshape(size, -1, dy.shape[-1])  # (B, t, d_out)
        if rule.kind == "embedding":
            ids = x.reshape(size, -1)  # (B, t)
            vocab, dim = module.weight.shape
            grads = torch.zeros((size, vocab, dim), dtype=dtype, device=dy.device)
            for b in range(size):
                grads[b].index_add_(0, ids[b], dy[b])
            if module.padding_idx is not None:
                grads[:, module.padding_idx] = 0
            sink(rows, rule.weight, grads.reshape(size, -1))
            return
        x = x.to(dtype).reshape(size, -1, x.shape[-1])  # (B, t, d_in)
        if rule.weight is not None:
            if rule.kind == "linear":
                grads = torch.einsum("bto,bti->boi", dy, x)
            elif rule.kind == "conv1d":
                grads = torch.einsum("bti,bto->bio", x, dy)
            elif rule.kind == "rms_norm":
                grads = (dy * _rms_normalise(module, x)).sum(dim=1)
            else:
                grads = (dy * _layer_normalise(module, x)).sum(dim=1)
            sink(rows, rule.weight, grads.reshape(size, -1))
        if rule.bias is not None:
            sink(rows, rule.bias, dy.sum(dim=1))
