"""Per-sequence losses, per-sequence gradients and Hessian-vector products over a scope.

Notation: n safety sequences, M fine-tune sequences, t tokens, d scoped parameters.

The per-sequence loss is the mean negative log-likelihood (nats per token) over the response
tokens of one sequence:

    l(theta; x, y) = -(1/|y|) sum_{t in y} log p_theta(token_t | tokens_<t)

A set's loss is the plain mean of its per-sequence losses, so every sequence weighs the same
whatever its length, and nothing depends on batch size: sequences are right-padded with an attention mask,
and padded positions carry no loss.
"""

from __future__ import annotations

import logging

from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass

import torch

from ..budget import Deadline
from ..loading.records import EncodedSequence
from .distributed import Shard, reduce_sum
from .hvp import METHODS
from .settings import HvpMethod

logger = logging.getLogger(__name__)

AUTO_ORDER = (HvpMethod.DOUBLE_BACKWARD, HvpMethod.FORWARD_OVER_REVERSE, HvpMethod.FINITE_DIFFERENCE)
"""Methods AUTO tries, fastest first as measured on CPU (docs/benchmarks.md). Double backward
took 0.85 s per sequence of 64 tokens on SmolLM2-135M's default scope, and forward over
reverse 1.6 s. Finite differences need first derivatives only, so they come last."""
from .per_example import BatchedGradients, GradientSink
from .prefix import PrefixCache

ProgressFn = Callable[[int, int], None]
"""Called as progress(done, total) after each sequence or micro-batch."""


@dataclass(frozen=True)
class Batch:
    """Padded tensors of a micro-batch; all of shape (B, t)."""

    input_ids: torch.Tensor
    attention_mask: torch.Tensor
    position_ids: torch.Tensor
    loss_mask: torch.Tensor
    inputs_embeds: torch.Tensor | None = None
    """(B, t, hidden) cached states entering the first scoped block (prefix.py), or None."""


def make_batch(sequences: Sequence[EncodedSequence], pad_token_id: int, device: torch.device | str | None = None,
               prefix: PrefixCache | None = None) -> Batch:
    """Right-pad sequences to a common length; padded positions get no attention and no loss.

    Batches are always right-padded, whatever the tokenizer's padding side, because left
    padding leaves padded query rows with no key to attend to, which eager attention turns
    into NaN that then spreads through 0 * NaN in later layers.
    """
    length = max(s.num_tokens for s in sequences)
    shape = (len(sequences), length)
    input_ids = torch.full(shape, pad_token_id, dtype=torch.long)
    attention_mask = torch.zeros(shape, dtype=torch.long)
    loss_mask = torch.zeros(shape, dtype=torch.bool)
    for row, seq in enumerate(sequences):
        input_ids[row, : seq.num_tokens] = torch.tensor(seq.input_ids, dtype=torch.long)
        attention_mask[row, : seq.num_tokens] = 1
        loss_mask[row, : seq.num_tokens] = torch.tensor(seq.loss_mask, dtype=torch.bool)
    position_ids = torch.arange(length).expand(shape)
    states = None if prefix is None else prefix.inputs(sequences, length)
    if device is not None and torch.device(device).type != "cpu":
        return Batch(input_ids.to(device), attention_mask.to(device), position_ids.to(device), loss_mask.to(device),
                     None if states is None else states.to(device))
    return Batch(input_ids, attention_mask, position_ids, loss_mask, states)


def sequence_losses(model: Callable[..., object], batch: Batch) -> torch.Tensor:
    """Return the per-sequence mean response-token NLL, shape (B,), in the model's dtype.

    `model` is the model or any callable that takes its keyword arguments (hvp.py passes a
    torch.func.functional_call of it). Only the positions that predict a response token go
    through the LM head (`logits_to_keep`), which for a large vocabulary is most of the cost
    of a pass; a model that does not take `logits_to_keep` computes all logits instead.
    """
    inputs = {"input_ids": batch.input_ids} if batch.inputs_embeds is None else {"inputs_embeds": batch.inputs_embeds}
    common = dict(attention_mask=batch.attention_mask, position_ids=batch.position_ids, use_cache=False)
    shifted = batch.loss_mask[:, 1:]  # (B, t-1): position p predicts token p + 1
    counts = shifted.sum(dim=1)  # (B,)
    kept = int(counts.max())
    # Each row's loss positions first, in order, then filler positions that `valid` masks out.
    positions = torch.argsort((~shifted).to(torch.int8), dim=1, stable=True)[:, :kept]  # (B, P)
    try:
        logits = model(**inputs, **common, logits_to_keep=positions).logits
    except TypeError:
        logits = None
    if logits is None or logits.shape[:2] != positions.shape:
        logits = model(**inputs, **common).logits[:, :-1, :]  # (B, t-1, vocab)
        positions = torch.arange(shifted.shape[1], device=shifted.device).expand_as(shifted)
    targets = torch.gather(batch.input_ids[:, 1:], 1, positions)  # (B, P)
    valid = torch.gather(shifted, 1, positions).to(logits.dtype)  # (B, P)

    # The vocabulary stays the last dimension: cross_entropy over a (B, vocab, t) view of the
    # same float32 logits measured about 100 times larger rounding errors.
    size, length, vocab = logits.shape
    token_nll = torch.nn.functional.cross_entropy(
        logits.reshape(size * length, vocab), targets.reshape(-1), reduction="none"
    ).view(size, length)  # (B, P)
    return (token_nll * valid).sum(dim=1) / valid.sum(dim=1)


def flat_grad(grads: Sequence[torch.Tensor | None], params: Sequence[torch.Tensor], dtype) -> torch.Tensor:
    """Concatenate parameter gradients into one vector of shape (d,); None counts as zeros."""
    parts = [
        (g if g is not None else torch.zeros_like(p)).reshape(-1).to(dtype=dtype, device="cpu")
        for g, p in zip(grads, params)
    ]
    return torch.cat(parts)


def unflatten(vector: torch.Tensor, params: Sequence[torch.Tensor]) -> list[torch.Tensor]:
    """Split a (d,) vector into tensors shaped and typed like `params`."""
    pieces, offset = [], 0
    for p in params:
        pieces.append(vector[offset : offset + p.numel()].view_as(p).to(dtype=p.dtype, device=p.device))
        offset += p.numel()
    return pieces


def storage_dtype(params: Sequence[torch.Tensor]) -> torch.dtype:
    """Gradients are stored in float64 for float64 models and in float32 otherwise."""
    return torch.float64 if params[0].dtype == torch.float64 else torch.float32


def stream_gradients(
    model: torch.nn.Module,
    params: Sequence[torch.Tensor],
    sequences: Sequence[EncodedSequence],
    sink: GradientSink,
    *,
    pad_token_id: int,
    deadline: Deadline,
    stage: str,
    micro_batch_size: int = 4,
    progress: ProgressFn | None = None,
    shard: Shard | None = None,
    prefix: PrefixCache | None = None,
) -> torch.Tensor:
    """Send each sequence's gradient grad_theta l_i(theta*) to `sink`; return the losses (n,).

    With `shard`, only this rank's sequences are computed; the other losses stay 0 for the
    caller to sum over the ranks (distributed.py).

    Sequences are sorted by length and cut into micro-batches, so padding stays small; each
    micro-batch takes one forward and one backward pass (per_example.py). Parameters of module
    types without a batched rule take one backward pass per sequence instead. The sink receives
    each parameter's gradient for a group of rows once, whole.
    """
    engine = BatchedGradients(model, params)
    losses = torch.zeros(len(sequences), dtype=torch.float64)
    mine = [i for i in range(len(sequences)) if shard is None or shard.owns(i)]
    order = sorted(mine, key=lambda i: sequences[i].num_tokens)
    done = 0
    for start in range(0, len(order), micro_batch_size):
        deadline.check(stage)
        rows = order[start : start + micro_batch_size]
        batch = make_batch([sequences[i] for i in rows], pad_token_id, params[0].device, prefix)
        row_index = torch.tensor(rows, dtype=torch.long)
        batch_losses = engine.run(batch, row_index, sink, sequence_losses)
        losses[row_index] = batch_losses.to(dtype=torch.float64, device="cpu")
        if engine.looped:
            looped = [params[i] for i in engine.looped]
            for row in rows:
                deadline.check(stage)
                loss = sequence_losses(model, make_batch([sequences[row]], pad_token_id, params[0].device, prefix))[0]
                grads = torch.autograd.grad(loss, looped, allow_unused=True)
                for index, grad in zip(engine.looped, grads):
                    if grad is not None:
                        sink(torch.tensor([row]), index, grad.reshape(1, -1))
        done += len(rows)
        if progress is not None:
            progress(done, len(order))
    return losses


def per_sequence_gradients(
    model: torch.nn.Module,
    params: Sequence[torch.Tensor],
    sequences: Sequence[EncodedSequence],
    *,
    pad_token_id: int,
    deadline: Deadline,
    stage: str,
    micro_batch_size: int = 4,
    progress: ProgressFn | None = None,
    shard: Shard | None = None,
    prefix: PrefixCache | None = None,
    allocate: Callable[[tuple[int, int], torch.dtype], torch.Tensor] | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Return the per-sequence gradients, shape (n, d), and losses, shape (n,) in float64.

    Row i is grad_theta l_i(theta*) restricted to `params`, in the order of `params`.
    With `shard`, the rows of all ranks are summed, so every rank returns the whole matrix.
    `allocate(shape, dtype)` returns the zero-filled matrix (default: in memory); the engine's
    streamed path passes one that maps a file on disk.

    Warning: memory is n * d * 4 bytes (float32) or 8 bytes (float64 models) unless `allocate`
    puts the matrix elsewhere.
    """
    dtype = storage_dtype(params)
    offsets = [0]
    for p in params:
        offsets.append(offsets[-1] + p.numel())
    shape = (len(sequences), offsets[-1])
    matrix = torch.zeros(shape, dtype=dtype) if allocate is None else allocate(shape, dtype)

    def add(rows: torch.Tensor, index: int, grads: torch.Tensor) -> None:
        columns = slice(offsets[index], offsets[index + 1])
        matrix[rows, columns] += grads.to(dtype=dtype, device=matrix.device)

    losses = stream_gradients(
        model, params, sequences, add, pad_token_id=pad_token_id, deadline=deadline, stage=stage,
        micro_batch_size=micro_batch_size, progress=progress, shard=shard, prefix=prefix,
    )
    return reduce_sum(matrix, shard), reduce_sum(losses, shard)


def micro_batches(sequences: Sequence[EncodedSequence], size: int) -> Iterator[Sequence[EncodedSequence]]:
    for start in range(0, len(sequences), size):
        yield sequences[start : start + size]


def hessian_vector_product(
    model: torch.nn.Module,
    params: Sequence[torch.Tensor],
    sequences: Sequence[EncodedSequence],
    vector: torch.Tensor,
    *,
    pad_token_id: int,
    deadline: Deadline,
    micro_batch_size: int = 4,
    method: HvpMethod = HvpMethod.AUTO,
    progress: ProgressFn | None = None,
    on_sequence: Callable[[int, torch.Tensor], None] | None = None,
    prefix: PrefixCache | None = None,
) -> tuple[torch.Tensor, HvpMethod]:
    """Return H v, shape (d,), for the Hessian H of the mean loss L over `sequences`, and the method used.

    L = (1/M) sum_m l_m, so H v = (1/M) sum_m H_m v; each micro-batch contributes the sum of
    its sequences' H_m v by `method` (hvp.py). AUTO tries the methods of AUTO_ORDER in turn on
    the first micro-batch and keeps the first that works, for the whole pass.
    With `on_sequence`, micro-batches hold one sequence and on_sequence(m, H_m v) is called
    for each, so callers can attribute the curvature to records.
    """
    dtype = storage_dtype(params)
    direction = unflatten(vector, params)
    total = torch.zeros(vector.numel(), dtype=dtype)
    candidates = list(AUTO_ORDER) if method is HvpMethod.AUTO else [method]
    done = 0
    if on_sequence is not None:
        micro_batch_size = 1
    for chunk in micro_batches(sequences, micro_batch_size):
        deadline.check("curvature")
        batch = make_batch(chunk, pad_token_id, params[0].device, prefix)

        def summed_loss(forward, batch=batch) -> torch.Tensor:
            return sequence_losses(forward, batch).sum()

        while True:
            try:
                pieces = METHODS[candidates[0]](model, params, direction, summed_loss)
                break
            except (RuntimeError, NotImplementedError) as exc:
                # AUTO moves on to the next method only on the first micro-batch, where a
                # missing derivative shows; later failures are real errors.
                if len(candidates) == 1 or done:
                    raise
                logger.warning("%s failed (%s); using %s", candidates[0].value, exc, candidates[1].value)
                candidates.pop(0)
        hvp = flat_grad(pieces, params, dtype)
        total += hvp
        if on_sequence is not None:
            on_sequence(done, hvp)
        done += len(chunk)
        if progress is not None:
            progress(done, len(sequences))
    return total / len(sequences), candidates[0]
