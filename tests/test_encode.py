"""Tests for riskgate.loading.encode: response masks, truncation, plain text, template errors."""

from __future__ import annotations

import json
from collections import Counter

import pytest
from tiny_models import CHATML_TEMPLATE, build_tokenizer

from riskgate.errors import DatasetError, UsageError
from riskgate.loading.data import load_dataset_file
from riskgate.loading.encode import encode_records
from riskgate.loading.formats import DatasetFormat
from riskgate.loading.records import EncodedSequence, Record, Role, Turn
from riskgate.safety_sets import default_safety_set_path

END_OF_TURN = "<|im_end|>\n"


@pytest.fixture(scope="module")
def tokenizer():
    return build_tokenizer()


def chat_record(index: int, *turns: tuple[Role, str]) -> Record:
    return Record(index=index, turns=tuple(Turn(role, content) for role, content in turns))


def masked_spans(tokenizer, sequence: EncodedSequence) -> list[str]:
    """Decode each run of consecutive loss tokens."""
    spans: list[list[int]] = []
    previous = False
    for token, in_loss in zip(sequence.input_ids, sequence.loss_mask):
        if in_loss and not previous:
            spans.append([])
        if in_loss:
            spans[-1].append(token)
        previous = in_loss
    return [tokenizer.decode(span) for span in spans]


def unmasked_text(tokenizer, sequence: EncodedSequence) -> str:
    return tokenizer.decode([t for t, m in zip(sequence.input_ids, sequence.loss_mask) if not m])


SINGLE = chat_record(
    4, (Role.SYSTEM, "Answer briefly."), (Role.USER, "Name a colour."), (Role.ASSISTANT, "Blue.")
)
MULTI = chat_record(
    7,
    (Role.SYSTEM, "Be kind."),
    (Role.USER, "Hi there"),
    (Role.ASSISTANT, "Hello!"),
    (Role.USER, "And again?"),
    (Role.ASSISTANT, "Hello once more."),
)


def test_single_turn_mask_is_response(tokenizer):
    encoded = encode_records([SINGLE], tokenizer, max_seq_len=512)
    sequence = encoded.sequences[0]

    assert encoded.template == "chat_template"
    assert sequence.index == 4
    assert masked_spans(tokenizer, sequence) == ["Blue." + END_OF_TURN]
    assert sequence.loss_mask[0] is False
    assert sequence.truncated is False


def test_single_turn_ids_are_template(tokenizer):
    sequence = encode_records([SINGLE], tokenizer, max_seq_len=512).sequences[0]
    messages = [{"role": t.role.value, "content": t.content} for t in SINGLE.turns]
    rendered = tokenizer.apply_chat_template(messages, tokenize=False)

    assert list(sequence.input_ids) == tokenizer(rendered, add_special_tokens=False)["input_ids"]
    assert len(sequence.loss_mask) == len(sequence.input_ids)


def test_multi_turn_mask_each_response(tokenizer):
    sequence = encode_records([MULTI], tokenizer, max_seq_len=512).sequences[0]

    assert masked_spans(tokenizer, sequence) == ["Hello!" + END_OF_TURN, "Hello once more." + END_OF_TURN]


def test_prompt_text_never_masked(tokenizer):
    sequence = encode_records([MULTI], tokenizer, max_seq_len=512).sequences[0]
    prompt_text = unmasked_text(tokenizer, sequence)

    for content in ("Be kind.", "Hi there", "And again?"):
        assert content in prompt_text
    assert "Hello!" not in prompt_text
    assert prompt_text.endswith("<|im_start|>assistant\n")


def test_truncation_keeps_prefix(tokenizer):
    full = encode_records([SINGLE], tokenizer, max_seq_len=512).sequences[0]
    cut = full.num_tokens - 3

    encoded = encode_records([SINGLE], tokenizer, max_seq_len=cut)
    sequence = encoded.sequences[0]

    assert sequence.truncated is True
    assert sequence.input_ids == full.input_ids[:cut]
    assert sequence.loss_mask == full.loss_mask[:cut]
    assert encoded.num_truncated == 1
    assert encoded.skipped == ()


def test_truncated_response_skipped(tokenizer):
    full = encode_records([SINGLE], tokenizer, max_seq_len=512).sequences[0]
    response_start = full.loss_mask.index(True)

    encoded = encode_records([SINGLE, MULTI], tokenizer, max_seq_len=response_start)

    assert [s.index for s in encoded.skipped] == [4]
    assert "max_seq_len" in encoded.skipped[0].reason
    assert [s.index for s in encoded.sequences] == [7]


def test_plain_text_default_call(tokenizer):
    record = chat_record(2, (Role.TEXT, "Plain words."))

    encoded = encode_records([record], tokenizer, max_seq_len=512)
    sequence = encoded.sequences[0]

    assert encoded.template == "plain"
    assert list(sequence.input_ids) == tokenizer("Plain words.")["input_ids"]
    assert sequence.loss_mask == (False,) + (True,) * (sequence.num_tokens - 1)


def test_plain_text_truncated(tokenizer):
    record = chat_record(0, (Role.TEXT, "abcdefghij"))

    sequence = encode_records([record], tokenizer, max_seq_len=4).sequences[0]

    assert sequence.num_tokens == 4
    assert sequence.truncated is True
    assert sequence.num_loss_tokens == 3


def test_plain_text_single_token_skipped(tokenizer):
    encoded = encode_records([chat_record(5, (Role.TEXT, "a"))], tokenizer, max_seq_len=16)

    assert encoded.sequences == ()
    assert encoded.skipped[0].index == 5
    assert "fewer than 2 tokens" in encoded.skipped[0].reason


def test_plain_text_empty_skipped(tokenizer):
    encoded = encode_records([chat_record(6, (Role.TEXT, ""))], tokenizer, max_seq_len=16)

    assert encoded.sequences == ()
    assert [s.index for s in encoded.skipped] == [6]


def test_plain_text_without_template():
    tokenizer = build_tokenizer(chat_template=None)

    encoded = encode_records([chat_record(0, (Role.TEXT, "hello"))], tokenizer, max_seq_len=16)

    assert encoded.num_loss_tokens == 4


def test_missing_chat_template_error():
    tokenizer = build_tokenizer(chat_template=None)

    with pytest.raises(DatasetError) as info:
        encode_records([SINGLE], tokenizer, max_seq_len=512, source="data.jsonl")

    message = str(info.value)
    assert message.startswith("data.jsonl: ")
    assert "has no chat template" in message
    assert "`text` format" in message
    assert "\n" not in message


def test_unstable_template_error():
    # The turn count at the start changes with every prefix, so no rendering is a prefix of another.
    tokenizer = build_tokenizer(chat_template="{{ messages | length }}" + CHATML_TEMPLATE)

    with pytest.raises(DatasetError) as info:
        encode_records([SINGLE], tokenizer, max_seq_len=512)

    assert str(info.value).startswith("record 4: the chat template is not prefix-stable")


def test_unstable_later_turn_error():
    # Only the last assistant turn is rendered, as templates that drop earlier reasoning do.
    template = (
        "{% for m in messages %}{% if m['role'] != 'assistant' or loop.last %}"
        "{{ '<|im_start|>' + m['role'] + '\n' + m['content'] + '<|im_end|>\n' }}"
        "{% endif %}{% endfor %}"
        "{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}"
    )
    tokenizer = build_tokenizer(chat_template=template)

    assert encode_records([SINGLE], tokenizer, max_seq_len=512).sequences
    with pytest.raises(DatasetError) as info:
        encode_records([MULTI], tokenizer, max_seq_len=512)

    assert "record 7: the chat template is not prefix-stable" in str(info.value)


def test_template_rejects_conversation():
    template = "{% if messages[0]['role'] == 'system' %}{{ raise_exception('System role not supported') }}{% endif %}"
    tokenizer = build_tokenizer(chat_template=template + CHATML_TEMPLATE)

    with pytest.raises(DatasetError) as info:
        encode_records([SINGLE], tokenizer, max_seq_len=512)

    assert str(info.value).startswith("record 4: the chat template rejected the conversation")
    assert "System role not supported" in str(info.value)


def test_mixed_record_kinds_error(tokenizer):
    with pytest.raises(UsageError):
        encode_records([SINGLE, chat_record(1, (Role.TEXT, "text"))], tokenizer, max_seq_len=512)


def test_max_seq_len_too_small(tokenizer):
    with pytest.raises(UsageError):
        encode_records([SINGLE], tokenizer, max_seq_len=1)


def test_empty_record_list(tokenizer):
    encoded = encode_records([], tokenizer, max_seq_len=16)

    assert encoded.sequences == ()
    assert encoded.skipped == ()


def test_loaded_file_masks(tmp_path, tokenizer):
    path = tmp_path / "data.jsonl"
    path.write_text(json.dumps({"instruction": "Add.", "input": "2 and 2", "output": "4"}) + "\n")
    records = load_dataset_file(path).records

    sequence = encode_records(records, tokenizer, max_seq_len=512).sequences[0]

    assert masked_spans(tokenizer, sequence) == ["4" + END_OF_TURN]
    assert "Add.\n\n2 and 2" in unmasked_text(tokenizer, sequence)


# The default safety set ------------------------------------------------------------------


def test_default_safety_set_contents():
    path = default_safety_set_path()
    rows = [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()]
    categories = Counter(row["category"] for row in rows)

    assert len(rows) >= 120
    assert len(categories) >= 8
    assert min(categories.values()) >= 10
    assert len({row["messages"][0]["content"] for row in rows}) == len(rows)


def test_default_safety_set_loads_and_encodes(tokenizer):
    dataset = load_dataset_file(default_safety_set_path())

    encoded = encode_records(dataset.records, tokenizer, max_seq_len=1024)

    assert dataset.format is DatasetFormat.MESSAGES
    assert dataset.skipped == ()
    assert dataset.num_duplicates == 0
    assert all([t.role for t in r.turns] == [Role.USER, Role.ASSISTANT] for r in dataset.records)
    assert encoded.skipped == ()
    assert encoded.num_truncated == 0
    assert len(encoded.sequences) == len(dataset.records)


@pytest.mark.real_model
def test_smollm2_template_masks(smollm2_gguf):
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(str(smollm2_gguf.parent), gguf_file=smollm2_gguf.name)
    dataset = load_dataset_file(default_safety_set_path())

    encoded = encode_records(dataset.records, tokenizer, max_seq_len=512)

    assert encoded.skipped == ()
    assert len(encoded.sequences) == len(dataset.records)
    for record, sequence in zip(dataset.records[:5], encoded.sequences):
        assert masked_spans(tokenizer, sequence) == [record.turns[-1].content + END_OF_TURN]
