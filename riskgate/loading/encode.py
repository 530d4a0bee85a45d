"""Records to token ids with the mask of response tokens, through the tokenizer's chat template.

Chat records: for every assistant turn i, the conversation up to turn i-1 is rendered with the
generation prompt (`add_generation_prompt=True`), and the conversation up to and including turn i
without it. The tokens between the two lengths are that turn's response tokens. They include
the template's end-of-turn text (for ChatML `<|im_end|>` and the newline after it), so the loss
also teaches the model where to stop, as supervised fine-tuning on the same template does.
Every rendering must tokenise to a prefix of the full conversation's tokens. Rendered text is
tokenised with `add_special_tokens=False` because the template already writes the special tokens.

Plain-text records: tokens from the tokenizer's default call, and every token after the first
carries the loss, as with `labels = input_ids` in transformers.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from riskgate.errors import DatasetError, UsageError
from riskgate.loading.records import EncodedSequence, EncodedSet, Record, Role, SkippedRecord

PLAIN_TEMPLATE = "plain"
CHAT_TEMPLATE = "chat_template"

# Python errors a faulty template raises while rendering, beside jinja2's TemplateError:
# `'a' + 1`, `1 / 0`, `x[5]` on a short list, a method missing on a value, a macro calling
# itself without end.
_TEMPLATE_FAILURES = (TypeError, ArithmeticError, LookupError, AttributeError, RecursionError)
_MESSAGE_MAX_CHARS = 200


def encode_records(
    records: Sequence[Record], tokenizer: Any, *, max_seq_len: int, source: str = ""
) -> EncodedSet:
    """Tokenise records and mark the tokens whose prediction carries the loss.

    A sequence longer than `max_seq_len` keeps its first `max_seq_len` tokens and is marked
    truncated. A record with no response token left after truncation is skipped with a reason.
    `source` (a file name) starts error messages and may be empty.

    Raises DatasetError when chat records meet a tokenizer without a chat template, when the
    template rejects a conversation or is not prefix-stable, and UsageError for a bad
    `max_seq_len` or for records that mix plain text and chat.
    """
    if max_seq_len < 2:
        raise UsageError(f"max_seq_len is {max_seq_len}; expected at least 2 (one token predicts the next)")
    prefix = f"{source}: " if source else ""
    plain = [record.is_plain_text for record in records]
    if any(plain) and not all(plain):
        raise UsageError(f"{prefix}records mix plain text and chat; encode each kind separately")
    is_plain = bool(records) and all(plain)
    if records and not is_plain:
        _require_chat_template(tokenizer, prefix)

    sequences: list[EncodedSequence] = []
    skipped: list[SkippedRecord] = []
    for record in records:
        if is_plain:
            input_ids = list(tokenizer(record.turns[0].content)["input_ids"])
            loss_mask = [position > 0 for position in range(len(input_ids))]
        else:
            input_ids, loss_mask = _encode_chat(record, tokenizer, prefix)

        truncated = len(input_ids) > max_seq_len
        input_ids, loss_mask = input_ids[:max_seq_len], loss_mask[:max_seq_len]
        if loss_mask:
            loss_mask[0] = False
        if not any(loss_mask):
            reason = _no_loss_reason(truncated, max_seq_len, is_plain)
            skipped.append(SkippedRecord(index=record.index, reason=reason))
            continue
        sequences.append(
            EncodedSequence(
                index=record.index,
                input_ids=tuple(input_ids),
                loss_mask=tuple(loss_mask),
                truncated=truncated,
            )
        )
    return EncodedSet(
        sequences=tuple(sequences),
        skipped=tuple(skipped),
        template=PLAIN_TEMPLATE if is_plain else CHAT_TEMPLATE,
    )


def _require_chat_template(tokenizer: Any, prefix: str) -> None:
    if getattr(tokenizer, "chat_template", None):
        return
    name = getattr(tokenizer, "name_or_path", "") or "at hand"
    raise DatasetError(
        f"{prefix}the records are chat turns but the tokenizer {name} has no chat template; use a "
        "model whose tokenizer has one (an instruct or chat model), or convert the data to the "
        "`text` format"
    )


def _encode_chat(record: Record, tokenizer: Any, prefix: str) -> tuple[list[int], list[bool]]:
    """Tokenise the whole conversation and mask the tokens of every assistant turn."""
    messages = [{"role": turn.role.value, "content": turn.content} for turn in record.turns]
    full_ids = _render_ids(tokenizer, messages, False, record, prefix)
    loss_mask = [False] * len(full_ids)

    for position, turn in enumerate(record.turns):
        if turn.role is not Role.ASSISTANT:
            continue
        prompt_ids = _render_ids(tokenizer, messages[:position], True, record, prefix)
        turn_ids = (
            full_ids
            if position == len(messages) - 1
            else _render_ids(tokenizer, messages[: position + 1], False, record, prefix)
        )
        for ids in (prompt_ids, turn_ids):
            if full_ids[: len(ids)] != ids:
                raise DatasetError(
                    f"{prefix}record {record.index}: the chat template is not prefix-stable: the "
                    f"conversation up to turn {position} does not tokenise to a prefix of the whole "
                    "conversation, so the response tokens cannot be located; use a model whose "
                    "template renders earlier turns unchanged, or convert the data to the `text` format"
                )
        for t in range(len(prompt_ids), len(turn_ids)):
            loss_mask[t] = True
    return full_ids, loss_mask


def _render_ids(
    tokenizer: Any, messages: list[dict[str, str]], add_generation_prompt: bool, record: Record, prefix: str
) -> list[int]:
    from jinja2.exceptions import TemplateError

    try:
        text = tokenizer.apply_chat_template(
            messages, tokenize=False, add_generation_prompt=add_generation_prompt
        )
    except (TemplateError, ValueError) as error:
        raise DatasetError(
            f"{prefix}record {record.index}: the chat template rejected the conversation ({error}); "
            "change the turns to what the model's template accepts"
        ) from error
    except _TEMPLATE_FAILURES as error:
        # The template is code from the checkpoint (run in jinja2's sandbox), so a Python
        # error inside it is a fault of the checkpoint, not of riskgate.
        raise DatasetError(
            f"{prefix}record {record.index}: the chat template failed "
            f"({type(error).__name__}: {_one_line(error)}); fix the template in the checkpoint's "
            "tokenizer files, or convert the data to the `text` format"
        ) from error
    if not isinstance(text, str):
        raise DatasetError(
            f"{prefix}record {record.index}: the chat template rendered {type(text).__name__}, not text; "
            "fix the template in the checkpoint's tokenizer files"
        )
    return list(tokenizer(text, add_special_tokens=False)["input_ids"])


def _no_loss_reason(truncated: bool, max_seq_len: int, is_plain: bool) -> str:
    if truncated:
        return f"no response token within the first {max_seq_len} tokens (max_seq_len); raise max_seq_len"
    if is_plain:
        return "the text has fewer than 2 tokens, so no token is predicted"
    return "the chat template rendered no tokens for the assistant turns"


def _one_line(error: BaseException) -> str:
    """Return an error's text on one line, shortened to `_MESSAGE_MAX_CHARS`."""
    text = " ".join(str(error).split()) or type(error).__name__
    if len(text) > _MESSAGE_MAX_CHARS:
        text = text[: _MESSAGE_MAX_CHARS - 3].rstrip() + "..."
    return text
