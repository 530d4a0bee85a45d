"""Records after loading, in a conversation form that no longer depends on the dataset format.

Every dataset format (chat messages, ShareGPT, Alpaca, prompt/completion, plain text) is
normalised into `Record`s, so tokenisation and the diagnostics never look at column names.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass, field


class Role(str, enum.Enum):
    """Speaker of one turn."""

    SYSTEM = "system"
    """Instructions before the conversation; never part of the loss."""
    USER = "user"
    """The request; never part of the loss."""
    ASSISTANT = "assistant"
    """The response; its tokens carry the loss."""
    TEXT = "text"
    """Plain text with no chat structure (the `text` format); all of it carries the loss."""


@dataclass(frozen=True)
class Turn:
    """One turn of a conversation."""

    role: Role
    content: str


@dataclass(frozen=True)
class Record:
    """One validated training example.

    A chat record alternates user and assistant turns after an optional system turn and
    ends with an assistant turn; a plain-text record is exactly one `Role.TEXT` turn.
    """

    index: int
    """Position of the record in its source file (0-based, before any sampling)."""
    turns: tuple[Turn, ...]

    @property
    def is_plain_text(self) -> bool:
        return len(self.turns) == 1 and self.turns[0].role is Role.TEXT


@dataclass(frozen=True)
class SkippedRecord:
    """A record left out of the analysis, with the reason. Skips are always reported."""

    index: int
    reason: str


@dataclass(frozen=True)
class EncodedSequence:
    """One record as token ids with the mask of the tokens whose prediction carries the loss.

    `loss_mask[t]` is True when token `t` is a response token; the loss at position t is the
    negative log-likelihood of `input_ids[t]` given `input_ids[:t]`, so `loss_mask[0]` is
    always False.
    """

    index: int
    input_ids: tuple[int, ...]
    loss_mask: tuple[bool, ...]
    truncated: bool = False

    @property
    def num_tokens(self) -> int:
        return len(self.input_ids)

    @property
    def num_loss_tokens(self) -> int:
        return sum(self.loss_mask)


@dataclass(frozen=True)
class EncodedSet:
    """A tokenised dataset, with what tokenisation cut or left out."""

    sequences: tuple[EncodedSequence, ...]
    skipped: tuple[SkippedRecord, ...] = field(default=())
    template: str = "chat_template"
    """Conversion of turns to text: `chat_template` (the tokenizer's) or `plain` (text records)."""

    @property
    def num_truncated(self) -> int:
        return sum(1 for s in self.sequences if s.truncated)

    @property
    def num_tokens(self) -> int:
        return sum(s.num_tokens for s in self.sequences)

    @property
    def num_loss_tokens(self) -> int:
        return sum(s.num_loss_tokens for s in self.sequences)
