"""Skip the frozen layers below the scope: cache the hidden states that enter it.

When every scoped parameter sits in decoder blocks L..N-1 (the default scope is the last two
blocks), the hidden states entering block L do not depend on any scoped parameter. They are
computed once per sequence, without gradients, and every later pass (gradients, Hessian-vector
products, finite differences, exact products) runs only blocks L..N-1, the final norm and the
LM head, fed with those states as `inputs_embeds`. For SmolLM2-135M's default scope this skips
28 of 30 blocks in every pass.

This relies on the model feeding `inputs_embeds` straight into its first block, which holds
for Llama-style models and not for, say, GPT-2 (which adds position embeddings) or Gemma
(which scales the embeddings). So before use, the loss of one sequence through the tail is
compared with its loss through the whole model, and on a mismatch the cache stays off.
"""

from __future__ import annotations

import re
from collections.abc import Iterator, Sequence
from contextlib import contextmanager

import torch

from ..loading.records import EncodedSequence

_BLOCK = re.compile(r"^(.*?)\.(\d+)\.")
_CHECK_TOLERANCE = 1e-4


class _Captured(Exception):
    """Raised by the pre-hook to stop a forward pass once block L's input is captured."""


class PrefixCache:
    """Hidden states entering the first scoped block, per token sequence."""

    def __init__(self, model: torch.nn.Module, names: Sequence[str]) -> None:
        self.model = model
        self.container: torch.nn.ModuleList | None = None
        self.first = 0
        self.states: dict[tuple[int, ...], torch.Tensor] = {}
        self.enabled = False
        self._active = False
        blocks = [_BLOCK.match(name) for name in names]
        if not blocks or any(match is None for match in blocks) or len({m.group(1) for m in blocks}) != 1:
            return
        try:
            container = model.get_submodule(blocks[0].group(1))
        except AttributeError:
            return
        first = min(int(m.group(2)) for m in blocks)
        if isinstance(container, torch.nn.ModuleList) and first > 0:
            self.container, self.first = container, first

    @property
    def possible(self) -> bool:
        """True when the scope leaves frozen blocks below it."""
        return self.container is not None

    def prepare(self, sequences: Sequence[EncodedSequence], pad_token_id: int) -> None:
        """Compute the states of sequences not yet cached, then enable the cache if it checks out."""
        if not self.possible:
            return
        from .gradients import make_batch, sequence_losses

        device = next(self.model.parameters()).device
        block = self.container[self.first]
        captured: list[torch.Tensor] = []

        def capture(module, args, kwargs):
            captured.append((args[0] if args else kwargs["hidden_states"]).detach())
            raise _Captured

        handle = block.register_forward_pre_hook(capture, with_kwargs=True)
        try:
            with torch.no_grad():
                for sequence in sequences:
                    if sequence.input_ids in self.states:
                        continue
                    captured.clear()
                    try:
                        sequence_losses(self.model, make_batch([sequence], pad_token_id, device))
                    except _Captured:
                        pass
                    if len(captured) != 1:
                        self.states.clear()
                        return
                    self.states[sequence.input_ids] = captured[0][0]  # (t, hidden)
        finally:
            handle.remove()
        if not self.enabled and sequences:
            self.enabled = self._tail_matches(min(sequences, key=lambda s: s.num_tokens), pad_token_id)

    def _tail_matches(self, sequence: EncodedSequence, pad_token_id: int) -> bool:
        """Compare one sequence's loss through the tail with its loss through the whole model."""
        from .gradients import make_batch, sequence_losses

        device = next(self.model.parameters()).device
        with torch.no_grad():
            whole = sequence_losses(self.model, make_batch([sequence], pad_token_id, device))
            self.enabled = True
            try:
                with self.tail():
                    tail = sequence_losses(self.model, make_batch([sequence], pad_token_id, device, self))
            except Exception:  # noqa: BLE001 - any failure means the tail cannot stand in
                return False
            finally:
                self.enabled = False
        scale = max(float(whole.abs().max()), 1.0)
        return bool(torch.isfinite(tail).all()) and float((tail - whole).abs().max()) <= _CHECK_TOLERANCE * scale

    @contextmanager
    def tail(self) -> Iterator[None]:
        """Within the block, the model runs blocks L..N-1 only; outside, the whole model again."""
        if not self.enabled or self._active:
            yield
            return
        modules = list(self.container)
        self.container._modules.clear()
        for position, module in enumerate(modules[self.first:]):
            self.container._modules[str(position)] = module
        self._active = True
        try:
            yield
        finally:
            self.container._modules.clear()
            for position, module in enumerate(modules):
                self.container._modules[str(position)] = module
            self._active = False

    def inputs(self, sequences: Sequence[EncodedSequence], length: int) -> torch.Tensor | None:
        """Right-padded cached states of `sequences`, (B, length, hidden); None when disabled."""
        if not self.enabled or not self._active:
            return None
        states = [self.states[s.input_ids] for s in sequences]
        batch = states[0].new_zeros((len(states), length, states[0].shape[-1]))
        for row, state in enumerate(states):
            batch[row, : state.shape[0]] = state
        return batch
