"""Dense float64 reference for every number the diagnostics report, built from their definitions.

Notation: n safety sequences, M fine-tune sequences, d scoped parameters, k eigenpairs,
S forecast steps.

Nothing here calls riskgate's diagnostics. Each sequence is forwarded on its own, unpadded and
without an attention mask, through `torch.func.functional_call` over one flat vector of the
scoped parameters. G, F = G^T G / n with its full d x d eigendecomposition, and the Hessian H of
the mean fine-tune loss are formed densely, so d must stay small: the eigendecomposition costs
O(d^3), and the dense Hessian one forward-over-reverse pass per parameter and sequence. For
larger scopes, `hessian_vector_product` gives H x without forming H.
"""

from __future__ import annotations

import random
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch

from riskgate.loading.records import EncodedSequence

STEP_CHUNK = 4096


def random_sequences(
    count: int, *, seed: int, first_index: int = 0, min_length: int = 6, max_length: int = 14
) -> list[EncodedSequence]:
    """Build sequences of random token ids in 3..258 whose loss masks cover one or two spans.

    Every sequence ends with a response span. Every third one also has an earlier two-token
    response span (a second assistant turn), so that masks with gaps are covered.
    """
    rng = random.Random(seed)
    sequences = []
    for offset in range(count):
        length = rng.randint(min_length, max_length)
        ids = tuple(rng.randint(3, 258) for _ in range(length))
        mask = [False] * length
        for position in range(rng.randint(length // 2 + 1, length - 2), length):
            mask[position] = True
        if offset % 3 == 2:
            mask[1] = mask[2] = True
        sequences.append(EncodedSequence(index=first_index + offset, input_ids=ids, loss_mask=tuple(mask)))
    return sequences


def flat_parameters(model: torch.nn.Module, names: Sequence[str]) -> torch.Tensor:
    """Return the named parameters concatenated into one detached float64 vector, shape (d,)."""
    table = dict(model.named_parameters())
    return torch.cat([table[name].detach().reshape(-1) for name in names]).to(torch.float64)


def _split(flat: torch.Tensor, model: torch.nn.Module, names: Sequence[str]) -> dict[str, torch.Tensor]:
    table = dict(model.named_parameters())
    pieces, offset = {}, 0
    for name in names:
        shape = table[name].shape
        pieces[name] = flat[offset : offset + table[name].numel()].view(shape)
        offset += table[name].numel()
    return pieces


def sequence_loss(
    model: torch.nn.Module, names: Sequence[str], flat: torch.Tensor, sequence: EncodedSequence
) -> torch.Tensor:
    """Return the mean NLL over the response tokens of one unpadded sequence at `flat`.

    Token t (loss_mask[t] True, t >= 1) is predicted from tokens 0..t-1. `functional_call`
    keeps tied weights tied, so replacing the embedding also replaces a tied LM head.
    """
    from torch.func import functional_call

    ids = torch.tensor([sequence.input_ids], dtype=torch.long)  # (1, t)
    logits = functional_call(model, _split(flat, model, names), (ids,), {"use_cache": False}).logits[0]
    log_probs = torch.log_softmax(logits.to(torch.float64), dim=-1)  # (t, vocab)
    positions = [t for t in range(1, sequence.num_tokens) if sequence.loss_mask[t]]
    picked = torch.stack([log_probs[t - 1, sequence.input_ids[t]] for t in positions])
    return -picked.mean()


def gradient_matrix(
    model: torch.nn.Module, names: Sequence[str], flat: torch.Tensor, sequences: Sequence[EncodedSequence]
) -> torch.Tensor:
    """Return the per-sequence gradients as rows, shape (len(sequences), d)."""
    from torch.func import grad

    return torch.stack([grad(lambda x, s=s: sequence_loss(model, names, x, s))(flat) for s in sequences])


def hessian_matrix(
    model: torch.nn.Module, names: Sequence[str], flat: torch.Tensor, sequences: Sequence[EncodedSequence]
) -> torch.Tensor:
    """Return the dense Hessian of the mean loss over `sequences` (forward over reverse), shape (d, d)."""
    from torch.func import hessian

    total = torch.zeros((flat.numel(), flat.numel()), dtype=torch.float64)
    for s in sequences:
        total += hessian(lambda x, s=s: sequence_loss(model, names, x, s))(flat)
    return total / len(sequences)


def hessian_vector_product(
    model: torch.nn.Module,
    names: Sequence[str],
    flat: torch.Tensor,
    sequences: Sequence[EncodedSequence],
    vector: torch.Tensor,
) -> torch.Tensor:
    """Return H vector for the mean loss over `sequences` by forward over reverse (jvp of grad)."""
    from torch.func import grad, jvp

    def mean_gradient(x: torch.Tensor) -> torch.Tensor:
        gradients = [grad(lambda y, s=s: sequence_loss(model, names, y, s))(x) for s in sequences]
        return torch.stack(gradients).mean(dim=0)

    return jvp(mean_gradient, (flat,), (vector,))[1]


@dataclass(frozen=True)
class DenseFisher:
    """F = G^T G / n and its full eigendecomposition, eigenvalues descending."""

    gradients: torch.Tensor
    """G, shape (n, d)."""
    fisher: torch.Tensor
    """F, shape (d, d)."""
    eigenvalues: torch.Tensor
    """All d eigenvalues of F, descending, shape (d,)."""
    eigenvectors: torch.Tensor
    """Matching unit eigenvectors v_j as columns, shape (d, d)."""

    @property
    def trace(self) -> float:
        return float(torch.trace(self.fisher))

    @property
    def numerical_rank(self) -> int:
        return int(torch.linalg.matrix_rank(self.gradients))

    def rank(self, rho: float, k_max: int) -> int:
        """Return the smallest k with sum_{j<=k} lambda_j >= rho tr(F), capped by k_max and rank(G)."""
        cumulative = torch.cumsum(self.eigenvalues, dim=0)
        reached = [j + 1 for j in range(len(cumulative)) if cumulative[j] >= rho * self.trace]
        k = reached[0] if reached else len(cumulative)
        return min(k, k_max, self.numerical_rank)

    def project(self, vectors: torch.Tensor, k: int) -> torch.Tensor:
        """Return P x = V_k V_k^T x for each row x of `vectors`, shape (..., d)."""
        basis = self.eigenvectors[:, :k]  # (d, k)
        return vectors @ basis @ basis.T

    def sqrt_fisher(self, vectors: torch.Tensor) -> torch.Tensor:
        """Return F^{1/2} x for each row x, with F^{1/2} = V diag(sqrt(max(lambda, 0))) V^T."""
        roots = self.eigenvalues.clamp(min=0).sqrt()  # (d,)
        return ((vectors @ self.eigenvectors) * roots) @ self.eigenvectors.T

    def whiten(self, vectors: torch.Tensor, k: int) -> torch.Tensor:
        """Return F^{1/2} P x for each row x."""
        return self.sqrt_fisher(self.project(vectors, k))


def dense_fisher(gradients: torch.Tensor) -> DenseFisher:
    n = gradients.shape[0]
    fisher = gradients.T @ gradients / n  # (d, d)
    eigenvalues, eigenvectors = torch.linalg.eigh(fisher)  # ascending
    return DenseFisher(gradients, fisher, eigenvalues.flip(0), eigenvectors.flip(1))


@dataclass(frozen=True)
class DenseUpdate:
    """Update direction v, acceleration h and per-example directions u_m of one optimizer form."""

    direction: torch.Tensor
    """v = g (SGD) or D g (Adam), shape (d,)."""
    acceleration: torch.Tensor
    """h = H g (SGD) or D H D g (Adam), shape (d,)."""
    per_example: torch.Tensor
    """u_m = g'_m (SGD) or D g'_m (Adam), shape (M, d)."""
    clipped: bool = False
    """True when each coordinate of theta(t) - theta* is clipped to [-t, t], as riskgate does for Adam."""

    def displacement(self, t: torch.Tensor) -> torch.Tensor:
        """Return theta(t) - theta* = -t v + (t^2/2) h, clipped if `clipped`, for times t (S,): shape (S, d).

        NOTE: the clipped form follows riskgate's Adam path (riskgate/diagnostics/adam_path.py).
        It goes beyond the diagnostics definitions, which apply the plain expansion to Adam too.
        """
        raw = -t[:, None] * self.direction + 0.5 * t.square()[:, None] * self.acceleration
        if not self.clipped:
            return raw
        return torch.maximum(torch.minimum(raw, t[:, None]), -t[:, None])


def dense_update(
    finetune_gradients: torch.Tensor,
    apply_hessian: Callable[[torch.Tensor], torch.Tensor],
    *,
    adam: bool,
    adam_epsilon: float = 1e-8,
    batch_size: int = 4,
) -> DenseUpdate:
    """Build v, h and u_m from the per-example fine-tune gradients (M, d) and x -> H x.

    The Adam form is clipped per coordinate. `dataclasses.replace(update, clipped=False)` gives
    the plain second-order expansion.
    """
    gradient = finetune_gradients.mean(dim=0)  # g, (d,)
    if not adam:
        return DenseUpdate(gradient, apply_hessian(gradient), finetune_gradients)

    # v_hat: the expected square of a minibatch gradient of `batch_size` sequences, g^2 + Var_m / B.
    count = finetune_gradients.shape[0]
    variance = finetune_gradients.var(dim=0, unbiased=True) if count > 1 else torch.zeros_like(gradient)
    second_moment = gradient.square() + variance / batch_size  # v_hat, (d,)
    preconditioner = torch.diag(1.0 / (second_moment.sqrt() + adam_epsilon))  # D, (d, d)
    direction = preconditioner @ gradient  # D g
    acceleration = preconditioner @ apply_hessian(direction)  # D H D g
    return DenseUpdate(direction, acceleration, finetune_gradients @ preconditioner, clipped=True)


@dataclass(frozen=True)
class DenseForecast:
    """Delta_u_hat and its terms at each step, float64 tensors of shape (S,)."""

    steps: torch.Tensor
    linear: torch.Tensor
    drift: torch.Tensor
    noise: torch.Tensor
    onset: torch.Tensor

    @property
    def delta_u(self) -> torch.Tensor:
        return self.linear + self.drift + self.noise

    def at(self, step: int) -> dict[str, float]:
        """Return the terms at one of `steps`, keyed like riskgate's ForecastTerms fields."""
        row = int(torch.nonzero(self.steps == step)[0])
        return {
            "delta_u": float(self.delta_u[row]),
            "linear": float(self.linear[row]),
            "drift": float(self.drift[row]),
            "noise": float(self.noise[row]),
            "onset_quartic": float(self.onset[row]),
        }


def noise_variance(fisher: DenseFisher, k: int, update: DenseUpdate) -> float:
    """Return sum_{j<=k} lambda_j Var_m(<v_j, u_m>) as sum_m ||F^{1/2} P (u_m - mean u)||^2 / (M - 1)."""
    centred = update.per_example - update.per_example.mean(dim=0)  # (M, d)
    return float(fisher.whiten(centred, k).square().sum()) / (centred.shape[0] - 1)


def dense_forecast(
    fisher: DenseFisher,
    k: int,
    update: DenseUpdate,
    steps: torch.Tensor,
    *,
    learning_rate: float,
    batch_size: int,
) -> DenseForecast:
    """Evaluate the forecast at `steps` along `update.displacement` with t = eta step.

    theta(t) - theta* and z(t) = F^{1/2} P (theta(t) - theta*) are formed as d-vectors per
    step, in chunks of steps, for every step given.
    """
    steps = steps.to(torch.float64)
    mean_safety_gradient = fisher.gradients.mean(dim=0)  # gbar_S, (d,)
    variance = noise_variance(fisher, k, update)
    whitened_direction = fisher.whiten(update.direction, k)  # F^{1/2} P v, (d,)
    whitened_acceleration = fisher.whiten(update.acceleration, k)  # F^{1/2} P h, (d,)
    linear_parts, drift_parts = [], []
    for start in range(0, len(steps), STEP_CHUNK):
        t = learning_rate * steps[start : start + STEP_CHUNK]  # (S,)
        displacement = update.displacement(t)  # (S, d)
        if update.clipped:
            z = fisher.whiten(displacement, k)  # (S, d)
        else:
            # z(t) = -t F^{1/2} P v + (t^2/2) F^{1/2} P h, which saves two (S, d) x (d, d) products.
            z = -t[:, None] * whitened_direction + 0.5 * t.square()[:, None] * whitened_acceleration
        drift_parts.append(0.5 * z.square().sum(dim=1))
        linear_parts.append(displacement @ mean_safety_gradient)

    t = learning_rate * steps
    gamma_hat = float(whitened_acceleration.norm())
    noise = learning_rate**2 * steps / (2 * batch_size) * variance
    onset = gamma_hat**2 / 8 * t.pow(4)
    return DenseForecast(steps, torch.cat(linear_parts), torch.cat(drift_parts), noise, onset)


def first_step_reaching(forecast: DenseForecast, tau: float, limit: int) -> int | None:
    """Return the smallest step in 1..limit whose Delta_u_hat reaches tau, or None.

    `forecast` must hold steps 1, 2, 3, ... in order.
    """
    hits = torch.nonzero(forecast.delta_u[:limit] >= tau)
    return int(forecast.steps[int(hits[0])]) if len(hits) else None


def horizon_by_search(update: DenseUpdate, learning_rate: float, limit: int) -> int | None:
    """Return the first step in 1..limit where the second-order part of the displacement reaches ||t v||.

    The second-order part is (t^2/2) h, or theta(t) - theta* + t v on the clipped path.
    """
    for start in range(1, limit + 1, STEP_CHUNK):
        steps = torch.arange(start, min(start + STEP_CHUNK, limit + 1), dtype=torch.float64)
        t = learning_rate * steps  # (S,)
        first_order = t[:, None] * update.direction  # (S, d)
        if update.clipped:
            second_order = update.displacement(t) + first_order
        else:
            second_order = 0.5 * t.square()[:, None] * update.acceleration
        hits = torch.nonzero(second_order.norm(dim=1) >= first_order.norm(dim=1))
        if len(hits):
            return start + int(hits[0])
    return None


FLOAT64_ATTENTION = "riskgate_test_float64_eager"


def compute_in_float64(model: torch.nn.Module) -> torch.nn.Module:
    """Make a float64 Llama compute RMSNorm and the attention softmax in float64 too, and return it.

    transformers 5.25's `LlamaRMSNorm.forward` and eager attention cast to float32 inside, so a
    float64 model carries float32 rounding. Second derivatives by different routes, or of
    batches padded differently, then differ by about 1e-7 relative. This patches the RMSNorm
    instances of `model` and switches it to an attention function registered under
    FLOAT64_ATTENTION. The registration in transformers' attention interface is process-wide.
    """
    import types

    from transformers import AttentionInterface
    from transformers.masking_utils import AttentionMaskInterface, eager_mask
    from transformers.models.llama.modeling_llama import LlamaRMSNorm

    AttentionInterface.register(FLOAT64_ATTENTION, _float64_attention)
    AttentionMaskInterface.register(FLOAT64_ATTENTION, eager_mask)
    model.set_attn_implementation(FLOAT64_ATTENTION)
    for module in model.modules():
        if isinstance(module, LlamaRMSNorm):
            module.forward = types.MethodType(_float64_rms_norm, module)
    return model


def _float64_rms_norm(self, hidden_states: torch.Tensor) -> torch.Tensor:
    variance = hidden_states.pow(2).mean(-1, keepdim=True)
    return self.weight * (hidden_states * torch.rsqrt(variance + self.variance_epsilon))


def _float64_attention(module, query, key, value, attention_mask, scaling, dropout=0.0, **kwargs):
    """Eager attention as in transformers' Llama, with the softmax in the input dtype."""
    from transformers.models.llama.modeling_llama import repeat_kv

    keys = repeat_kv(key, module.num_key_value_groups)  # (B, heads, t, head_dim)
    values = repeat_kv(value, module.num_key_value_groups)
    weights = torch.matmul(query, keys.transpose(2, 3)) * scaling  # (B, heads, t, t)
    if attention_mask is not None:
        weights = weights + attention_mask
    weights = torch.softmax(weights, dim=-1)
    output = torch.matmul(weights, values).transpose(1, 2).contiguous()  # (B, t, heads, head_dim)
    return output, weights
