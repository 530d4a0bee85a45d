"""Train and evaluate only the last decoder blocks, with the frozen blocks' output cached.

When only the last K blocks change, the hidden state entering block L-K is a fixed function of
each sequence. `Tail` computes it once per sequence (one forward pass through the frozen
blocks) and then runs blocks L-K..L-1, the final norm and the LM head on the cached state. The
LM head is applied only at positions whose next token carries loss, because on a 135M model with
a 49,152-token vocabulary the head costs more than the two trained blocks.

The loss is riskgate's: per-sequence mean negative log-likelihood over response tokens (the
token at position i+1 predicted from position i), in nats per token. Batches are right-padded
with a causal mask that also hides padded keys, as riskgate's `make_batch` does.

Shapes: B sequences, T tokens, H hidden size, R response positions in the batch.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any


class _StopForward(Exception):
    """Raised by the pre-hook to end the forward pass once the cached state is captured."""


def decoder_layers(model: Any) -> Any:
    """Return the model's list of decoder blocks (Llama layout: `model.model.layers`)."""
    return model.model.layers


def tail_parameters(model: Any, blocks: int) -> list[tuple[str, Any]]:
    """Return the 2-D weights of the last `blocks` decoder blocks: riskgate's default scope for 2."""
    count = len(decoder_layers(model))
    prefixes = tuple(f"model.layers.{index}." for index in range(count - blocks, count))
    return [(name, p) for name, p in model.named_parameters() if name.startswith(prefixes) and p.dim() == 2]


class Tail:
    """The last `blocks` decoder blocks of a Llama-style model, run on cached hidden states."""

    def __init__(self, model: Any, blocks: int, pad_token_id: int, batch_size: int = 16) -> None:
        self.model = model
        self.first = len(decoder_layers(model)) - blocks
        self.pad_token_id = pad_token_id
        self.batch_size = batch_size
        self._cache: dict[tuple[int, ...], Any] = {}

    def hidden(self, sequences: Sequence[Any]) -> list[Any]:
        """Return the hidden state entering the first tail block for each sequence, (T_i, H) each."""
        import torch

        from riskgate.diagnostics.gradients import make_batch

        missing = [s for s in sequences if s.input_ids not in self._cache]
        layer = decoder_layers(self.model)[self.first]
        captured: list[Any] = []

        def capture(_module, args, kwargs):
            captured.append(args[0] if args else kwargs["hidden_states"])
            raise _StopForward

        handle = layer.register_forward_pre_hook(capture, with_kwargs=True)
        try:
            for start in range(0, len(missing), self.batch_size):
                chunk = missing[start : start + self.batch_size]
                batch = make_batch(chunk, self.pad_token_id)
                captured.clear()
                with torch.no_grad():
                    try:
                        self.model.model(input_ids=batch.input_ids, attention_mask=batch.attention_mask,
                                         position_ids=batch.position_ids, use_cache=False)
                    except _StopForward:
                        pass
                states = captured[0]  # (B, T, H)
                for row, sequence in enumerate(chunk):
                    self._cache[sequence.input_ids] = states[row, : sequence.num_tokens].detach().clone()
        finally:
            handle.remove()
        return [self._cache[s.input_ids] for s in sequences]

    def clear(self) -> None:
        """Drop the cached states (after the frozen blocks changed)."""
        self._cache.clear()

    def sequence_losses(self, sequences: Sequence[Any]) -> Any:
        """Return the per-sequence mean response-token NLL, shape (B,), differentiable in the tail."""
        import torch

        states = self.hidden(sequences)
        length = max(s.num_tokens for s in sequences)
        count = len(sequences)
        hidden = torch.zeros(count, length, states[0].shape[-1], dtype=states[0].dtype)  # (B, T, H)
        targets = torch.full((count, length), self.pad_token_id, dtype=torch.long)
        loss_mask = torch.zeros(count, length, dtype=torch.bool)
        valid = torch.zeros(count, length, dtype=torch.bool)
        for row, (sequence, state) in enumerate(zip(sequences, states)):
            hidden[row, : sequence.num_tokens] = state
            targets[row, : sequence.num_tokens] = torch.tensor(sequence.input_ids)
            loss_mask[row, : sequence.num_tokens] = torch.tensor(sequence.loss_mask)
            valid[row, : sequence.num_tokens] = True

        # Additive mask (B, 1, T, T): a query attends to earlier, unpadded keys only.
        causal = torch.ones(length, length, dtype=torch.bool).tril()
        allowed = causal[None, :, :] & valid[:, None, :]
        mask = torch.zeros(count, 1, length, length, dtype=hidden.dtype)
        mask.masked_fill_(~allowed[:, None], torch.finfo(hidden.dtype).min)
        position_ids = torch.arange(length).expand(count, length)

        inner = self.model.model
        position_embeddings = inner.rotary_emb(hidden, position_ids=position_ids)
        for layer in decoder_layers(self.model)[self.first :]:
            hidden = layer(hidden, attention_mask=mask, position_ids=position_ids,
                           position_embeddings=position_embeddings, use_cache=False)
            if isinstance(hidden, tuple):
                hidden = hidden[0]
        hidden = inner.norm(hidden)

        # Position i predicts token i+1; only positions whose next token is a response token count.
        predicts = loss_mask[:, 1:]  # (B, T-1)
        rows, cols = predicts.nonzero(as_tuple=True)  # R positions
        logits = self.model.lm_head(hidden[rows, cols])  # (R, vocab)
        token_nll = torch.nn.functional.cross_entropy(logits.float(), targets[rows, cols + 1], reduction="none")
        sums = torch.zeros(count, dtype=token_nll.dtype).index_add_(0, rows, token_nll)
        return sums / predicts.sum(dim=1).to(token_nll.dtype)

    def mean_loss(self, sequences: Sequence[Any], chunk: int = 16) -> float:
        """Return the mean over sequences of the per-sequence response-token NLL, without gradients."""
        import torch

        total = 0.0
        with torch.no_grad():
            for start in range(0, len(sequences), chunk):
                total += float(self.sequence_losses(sequences[start : start + chunk]).sum())
        return total / len(sequences)
