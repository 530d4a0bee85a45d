"""Tests for riskgate.loading.data and riskgate.loading.formats: reading, detection, validation."""

from __future__ import annotations

import hashlib
import json
import logging
from pathlib import Path

import pytest

from riskgate.errors import DatasetError, UsageError
from riskgate.loading.data import LoadedDataset, load_dataset_file, sample_records
from riskgate.loading.formats import DatasetFormat, InvalidRecordsError
from riskgate.loading.records import Record, Role, Turn

REPO_ROOT = Path(__file__).resolve().parent.parent


def write_jsonl(folder: Path, name: str, rows: list) -> Path:
    path = folder / name
    path.write_text("".join(json.dumps(row) + "\n" for row in rows), encoding="utf-8")
    return path


def chat(*pairs: tuple[str, str]) -> list[dict[str, str]]:
    return [{"role": role, "content": content} for role, content in pairs]


def turns_of(dataset: LoadedDataset, position: int = 0) -> list[tuple[Role, str]]:
    return [(turn.role, turn.content) for turn in dataset.records[position].turns]


# Format detection and normalisation -------------------------------------------------------


FORMAT_CASES = {
    "messages": (
        {"messages": chat(("system", "Be brief."), ("user", "Hi"), ("assistant", "Hello"))},
        DatasetFormat.MESSAGES,
        [(Role.SYSTEM, "Be brief."), (Role.USER, "Hi"), (Role.ASSISTANT, "Hello")],
    ),
    "sharegpt": (
        {"conversations": [{"from": "human", "value": "Hi"}, {"from": "gpt", "value": "Hello"}]},
        DatasetFormat.SHAREGPT,
        [(Role.USER, "Hi"), (Role.ASSISTANT, "Hello")],
    ),
    "alpaca": (
        {"instruction": "Translate.", "input": "chat", "output": "cat"},
        DatasetFormat.ALPACA,
        [(Role.USER, "Translate.\n\nchat"), (Role.ASSISTANT, "cat")],
    ),
    "alpaca_empty_input": (
        {"instruction": "Say hi.", "input": "", "output": "hi"},
        DatasetFormat.ALPACA,
        [(Role.USER, "Say hi."), (Role.ASSISTANT, "hi")],
    ),
    "alpaca_system_history": (
        {"instruction": "And 3+3?", "output": "6", "system": "Maths tutor.", "history": [["2+2?", "4"]]},
        DatasetFormat.ALPACA,
        [
            (Role.SYSTEM, "Maths tutor."),
            (Role.USER, "2+2?"),
            (Role.ASSISTANT, "4"),
            (Role.USER, "And 3+3?"),
            (Role.ASSISTANT, "6"),
        ],
    ),
    "dolly": (
        {"instruction": "Who wrote it?", "context": "A book.", "response": "Someone.", "category": "qa"},
        DatasetFormat.ALPACA,
        [(Role.USER, "Who wrote it?\n\nA book."), (Role.ASSISTANT, "Someone.")],
    ),
    "prompt_completion": (
        {"prompt": "2+2?", "completion": "4"},
        DatasetFormat.PROMPT_COMPLETION,
        [(Role.USER, "2+2?"), (Role.ASSISTANT, "4")],
    ),
    "text": ({"text": "Once upon a time."}, DatasetFormat.TEXT, [(Role.TEXT, "Once upon a time.")]),
}


@pytest.mark.parametrize("case", sorted(FORMAT_CASES))
def test_detect_each_format(tmp_path, case):
    row, expected_format, expected_turns = FORMAT_CASES[case]
    path = write_jsonl(tmp_path, "data.jsonl", [row, row])

    dataset = load_dataset_file(path)

    assert dataset.format is expected_format
    assert turns_of(dataset) == expected_turns
    assert dataset.num_rows == 2
    assert [r.index for r in dataset.records] == [0, 1]


def test_dolly_column_map(tmp_path):
    row = {"instruction": "Q", "context": "", "response": "A"}
    dataset = load_dataset_file(write_jsonl(tmp_path, "dolly.jsonl", [row]))

    assert dataset.columns == {"instruction": "instruction", "output": "response", "input": "context"}
    assert turns_of(dataset) == [(Role.USER, "Q"), (Role.ASSISTANT, "A")]


def test_alpaca_wins_over_text_column(tmp_path):
    row = {"instruction": "Q", "input": "", "output": "A", "text": "### Q\nA"}
    dataset = load_dataset_file(write_jsonl(tmp_path, "data.jsonl", [row]))

    assert dataset.format is DatasetFormat.ALPACA


def test_explicit_format_skips_detection(tmp_path):
    row = {"prompt": "Q", "completion": "A", "text": "free text"}
    dataset = load_dataset_file(write_jsonl(tmp_path, "data.jsonl", [row]), fmt=DatasetFormat.TEXT)

    assert dataset.format is DatasetFormat.TEXT
    assert turns_of(dataset) == [(Role.TEXT, "free text")]


def test_mixed_formats_error(tmp_path):
    rows = [{"text": "plain"}, {"messages": chat(("user", "Hi"), ("assistant", "Hello"))}]
    path = write_jsonl(tmp_path, "mixed.jsonl", rows)

    with pytest.raises(DatasetError) as info:
        load_dataset_file(path)

    assert "mixed formats" in str(info.value)
    assert "record 0 is text but record 1 is messages" in str(info.value)


def test_undetectable_columns_error(tmp_path):
    path = write_jsonl(tmp_path, "data.jsonl", [{"question": "Q", "answer": "A"}])

    with pytest.raises(DatasetError) as info:
        load_dataset_file(path)

    message = str(info.value)
    assert message.startswith(f"{path}: cannot detect the dataset format")
    assert "'question', 'answer'" in message
    assert "--columns" in message


def test_sharegpt_with_role_content_keys(tmp_path):
    row = {"conversations": chat(("user", "Hi"), ("assistant", "Hello"))}
    dataset = load_dataset_file(write_jsonl(tmp_path, "data.jsonl", [row]))

    assert dataset.format is DatasetFormat.SHAREGPT
    assert dataset.columns["role"] == "role"
    assert dataset.columns["content"] == "content"
    assert turns_of(dataset) == [(Role.USER, "Hi"), (Role.ASSISTANT, "Hello")]


def test_sharegpt_system_column(tmp_path):
    row = {
        "conversations": [{"from": "human", "value": "Hi"}, {"from": "gpt", "value": "Hello"}],
        "system": "Be kind.",
    }
    dataset = load_dataset_file(write_jsonl(tmp_path, "data.jsonl", [row]))

    assert turns_of(dataset)[0] == (Role.SYSTEM, "Be kind.")


# Column mapping -------------------------------------------------------------------------


def test_columns_map_prompt_completion(tmp_path):
    row = {"question": "Q", "answer": "A"}
    path = write_jsonl(tmp_path, "data.jsonl", [row])

    dataset = load_dataset_file(path, columns={"prompt": "question", "completion": "answer"})

    assert dataset.format is DatasetFormat.PROMPT_COMPLETION
    assert dataset.columns == {"prompt": "question", "completion": "answer"}
    assert turns_of(dataset) == [(Role.USER, "Q"), (Role.ASSISTANT, "A")]


def test_columns_map_turn_keys_and_speakers(tmp_path):
    row = {"dialog": [{"speaker": "person", "text": "Hi"}, {"speaker": "bot", "text": "Hello"}]}
    columns = {
        "messages": "dialog",
        "role": "speaker",
        "content": "text",
        "user_role": "person",
        "assistant_role": "bot",
    }

    dataset = load_dataset_file(write_jsonl(tmp_path, "data.jsonl", [row]), columns=columns)

    assert dataset.format is DatasetFormat.MESSAGES
    assert turns_of(dataset) == [(Role.USER, "Hi"), (Role.ASSISTANT, "Hello")]
    assert dataset.columns["assistant_role"] == "bot"


def test_columns_unknown_key(tmp_path):
    path = write_jsonl(tmp_path, "data.jsonl", [{"text": "x"}])

    with pytest.raises(UsageError) as info:
        load_dataset_file(path, columns={"answer": "text"})

    assert "'answer' is unknown" in str(info.value)


def test_columns_key_of_other_format(tmp_path):
    path = write_jsonl(tmp_path, "data.jsonl", [{"text": "x", "other": "y"}])

    with pytest.raises(UsageError) as info:
        load_dataset_file(path, fmt=DatasetFormat.TEXT, columns={"prompt": "other"})

    assert "does not apply to format 'text'" in str(info.value)


def test_columns_mapped_column_missing(tmp_path):
    path = write_jsonl(tmp_path, "data.jsonl", [{"prompt": "Q", "completion": "A"}])

    with pytest.raises(DatasetError) as info:
        load_dataset_file(path, fmt=DatasetFormat.PROMPT_COMPLETION, columns={"completion": "answer"})

    assert str(info.value).startswith(f"{path}: column 'answer' (mapped to 'completion'")


def test_explicit_format_missing_column(tmp_path):
    path = write_jsonl(tmp_path, "data.jsonl", [{"text": "x"}])

    with pytest.raises(DatasetError) as info:
        load_dataset_file(path, fmt=DatasetFormat.ALPACA)

    assert "format 'alpaca' needs a 'instruction' column" in str(info.value)


# File types -------------------------------------------------------------------------------


PROMPT_ROWS = [{"prompt": "Q1", "completion": "A1"}, {"prompt": "Q2", "completion": "A2"}]


def test_json_list_file(tmp_path):
    path = tmp_path / "data.json"
    path.write_text(json.dumps([{"instruction": "I", "output": "O"}, {"instruction": "J", "output": "P"}]))

    dataset = load_dataset_file(path)

    assert dataset.format is DatasetFormat.ALPACA
    assert [turns_of(dataset, i)[-1] for i in range(2)] == [(Role.ASSISTANT, "O"), (Role.ASSISTANT, "P")]


def test_csv_file_cells_stay_strings(tmp_path):
    path = tmp_path / "data.csv"
    path.write_text('prompt,completion\n007,NA\n"a, b","line1\nline2"\n', encoding="utf-8")

    dataset = load_dataset_file(path)

    assert dataset.format is DatasetFormat.PROMPT_COMPLETION
    assert turns_of(dataset, 0) == [(Role.USER, "007"), (Role.ASSISTANT, "NA")]
    assert turns_of(dataset, 1) == [(Role.USER, "a, b"), (Role.ASSISTANT, "line1\nline2")]


def test_parquet_file(tmp_path):
    import datasets

    path = tmp_path / "data.parquet"
    datasets.Dataset.from_list(PROMPT_ROWS).to_parquet(str(path))

    dataset = load_dataset_file(path)

    assert dataset.format is DatasetFormat.PROMPT_COMPLETION
    assert turns_of(dataset, 1) == [(Role.USER, "Q2"), (Role.ASSISTANT, "A2")]


def test_saved_folder(tmp_path):
    import datasets

    folder = tmp_path / "saved"
    datasets.Dataset.from_list(PROMPT_ROWS).save_to_disk(str(folder))

    dataset = load_dataset_file(folder)

    assert dataset.num_rows == 2
    assert turns_of(dataset, 0) == [(Role.USER, "Q1"), (Role.ASSISTANT, "A1")]


def test_saved_dict_one_split(tmp_path):
    import datasets

    folder = tmp_path / "saved"
    datasets.DatasetDict({"test": datasets.Dataset.from_list(PROMPT_ROWS)}).save_to_disk(str(folder))

    assert load_dataset_file(folder).num_rows == 2


def test_saved_dict_several_splits_error(tmp_path):
    import datasets

    folder = tmp_path / "saved"
    splits = {
        "train": datasets.Dataset.from_list(PROMPT_ROWS),
        "test": datasets.Dataset.from_list(PROMPT_ROWS[:1]),
    }
    datasets.DatasetDict(splits).save_to_disk(str(folder))

    # Reading only "train" would leave the test split out without a count.
    with pytest.raises(DatasetError, match=r"several splits \(train, test\)"):
        load_dataset_file(folder)


def test_saved_dict_no_train_error(tmp_path):
    import datasets

    folder = tmp_path / "saved"
    splits = {"a": datasets.Dataset.from_list(PROMPT_ROWS), "b": datasets.Dataset.from_list(PROMPT_ROWS)}
    datasets.DatasetDict(splits).save_to_disk(str(folder))

    with pytest.raises(DatasetError) as info:
        load_dataset_file(folder)

    assert "several splits (a, b)" in str(info.value)


def test_sha256_of_file(tmp_path):
    path = write_jsonl(tmp_path, "data.jsonl", PROMPT_ROWS)

    assert load_dataset_file(path).sha256 == hashlib.sha256(path.read_bytes()).hexdigest()


def test_sha256_of_folder_tracks_content(tmp_path):
    import datasets

    first, second = tmp_path / "first", tmp_path / "second"
    datasets.Dataset.from_list(PROMPT_ROWS).save_to_disk(str(first))
    datasets.Dataset.from_list(PROMPT_ROWS[::-1]).save_to_disk(str(second))

    digest = load_dataset_file(first).sha256
    assert len(digest) == 64
    assert digest == load_dataset_file(first).sha256
    assert digest != load_dataset_file(second).sha256


def test_datasets_logging_restored(tmp_path):
    import datasets

    library_logger = logging.getLogger("datasets")
    level = library_logger.level
    bars_disabled = datasets.are_progress_bars_disabled()

    load_dataset_file(write_jsonl(tmp_path, "data.jsonl", PROMPT_ROWS))

    assert library_logger.level == level
    assert datasets.are_progress_bars_disabled() == bars_disabled


def test_no_writes_to_datasets_cache(tmp_path, monkeypatch):
    import datasets

    default_cache = tmp_path / "hf-cache"
    monkeypatch.setattr(datasets.config, "HF_DATASETS_CACHE", default_cache)

    load_dataset_file(write_jsonl(tmp_path, "data.jsonl", PROMPT_ROWS))

    assert not default_cache.exists()


# Read errors ------------------------------------------------------------------------------


def test_error_invalid_json_line(tmp_path):
    path = tmp_path / "data.jsonl"
    path.write_text('{"text": "a"}\n{"text": "b"\n{"text": "c"}\n')

    with pytest.raises(DatasetError) as info:
        load_dataset_file(path)

    assert str(info.value).startswith(f"{path}: line 2, column")
    assert "invalid JSON" in str(info.value)


def test_error_invalid_json_list(tmp_path):
    path = tmp_path / "data.json"
    path.write_text('[{"text": "a"},\n{"text": }]')

    with pytest.raises(DatasetError) as info:
        load_dataset_file(path)

    assert str(info.value).startswith(f"{path}: line 2, column 10: invalid JSON")


def test_error_jsonl_line_not_object(tmp_path):
    path = tmp_path / "data.jsonl"
    path.write_text("5\n6\n")

    with pytest.raises(DatasetError) as info:
        load_dataset_file(path)

    assert str(info.value).startswith(f"{path}: line 1: expected a JSON object")


@pytest.mark.parametrize("name", ["data.jsonl", "data.csv"])
def test_error_not_utf8(tmp_path, name):
    path = tmp_path / name
    content = b'{"text": "ok"}\n{"text": "\xff"}\n' if name.endswith("jsonl") else b"text\n\xff\n"
    path.write_bytes(content)

    with pytest.raises(DatasetError) as info:
        load_dataset_file(path)

    message = str(info.value)
    assert message.startswith(f"{path}: line 2")
    assert "invalid UTF-8 (byte 0xff)" in message


def test_error_ragged_csv(tmp_path):
    path = tmp_path / "data.csv"
    path.write_text("prompt,completion\na,b\nc,d,e\n")

    with pytest.raises(DatasetError) as info:
        load_dataset_file(path)

    assert str(info.value).startswith(f"{path}: line 3: 3 fields where the header has 2")


@pytest.mark.parametrize(
    ("name", "content"),
    [("data.jsonl", ""), ("data.jsonl", "\n\n"), ("data.json", "[]"), ("data.csv", ""), ("data.csv", "text\n")],
)
def test_error_no_records(tmp_path, name, content):
    path = tmp_path / name
    path.write_text(content)

    with pytest.raises(DatasetError) as info:
        load_dataset_file(path)

    assert str(info.value) == f"{path}: contains no records"


def test_error_unsupported_extension(tmp_path):
    path = tmp_path / "data.txt"
    path.write_text("hello")

    with pytest.raises(DatasetError) as info:
        load_dataset_file(path)

    assert "unsupported file extension '.txt'" in str(info.value)


def test_error_file_not_found(tmp_path):
    path = tmp_path / "absent.jsonl"

    with pytest.raises(DatasetError) as info:
        load_dataset_file(path)

    assert str(info.value) == f"{path}: file not found"


def test_error_folder_not_saved_dataset(tmp_path):
    (tmp_path / "data.jsonl").write_text('{"text": "a"}\n')

    with pytest.raises(DatasetError) as info:
        load_dataset_file(tmp_path)

    assert "not a dataset written by Dataset.save_to_disk" in str(info.value)


def test_error_corrupt_parquet(tmp_path):
    path = tmp_path / "data.parquet"
    path.write_bytes(b"not parquet at all")

    with pytest.raises(DatasetError) as info:
        load_dataset_file(path)

    assert str(info.value).startswith(f"{path}: not a readable Parquet file")


def test_agent_trace_columns_read_as_rows(tmp_path):
    row = {"id": "1", "source": "s", "model": "m", "system_prompt": "x", **GOOD_CHAT}
    dataset = load_dataset_file(write_jsonl(tmp_path, "data.jsonl", [row]))

    assert dataset.format is DatasetFormat.MESSAGES
    assert turns_of(dataset) == [(Role.USER, "Hi"), (Role.ASSISTANT, "Hello")]


def test_glob_characters_in_name(tmp_path):
    path = write_jsonl(tmp_path, "set[1].jsonl", PROMPT_ROWS)

    assert load_dataset_file(path).num_rows == 2


# Record validation ------------------------------------------------------------------------


GOOD_CHAT = {"messages": chat(("user", "Hi"), ("assistant", "Hello"))}

INVALID_CASES = {
    "unknown_role": (
        {"messages": chat(("user", "Hi"), ("bot", "Hello"))},
        "field 'messages[1].role' is 'bot'; expected one of system, user, assistant",
    ),
    "content_number": (
        {"messages": [{"role": "user", "content": "Hi"}, {"role": "assistant", "content": 5}]},
        "field 'messages[1].content' is a number (5); expected a string",
    ),
    "content_missing": (
        {"messages": [{"role": "user", "content": "Hi"}, {"role": "assistant"}]},
        "field 'messages[1].content' is missing",
    ),
    "messages_missing": ({"messages": None}, "field 'messages' is missing"),
    "messages_string": ({"messages": "Hi"}, "field 'messages' is a string ('Hi'); expected a list"),
    "messages_empty": ({"messages": []}, "field 'messages' is an empty list"),
    "turn_not_object": ({"messages": ["Hi"]}, "field 'messages[0]' is a string ('Hi'); expected an object"),
    "two_users": (
        {"messages": chat(("user", "Hi"), ("user", "Hey"), ("assistant", "Hello"))},
        "field 'messages[1].role' is a user turn where an assistant turn belongs",
    ),
    "starts_with_assistant": (
        {"messages": chat(("assistant", "Hello"), ("user", "Hi"), ("assistant", "Yes"))},
        "field 'messages[0].role' is an assistant turn where a user turn belongs",
    ),
    "ends_with_user": (
        {"messages": chat(("user", "Hi"), ("assistant", "Hello"), ("user", "Bye"))},
        "field 'messages' ends with a user turn",
    ),
    "late_system": (
        {"messages": chat(("user", "Hi"), ("system", "Rules"), ("assistant", "Hello"))},
        "field 'messages[1].role' is a system turn after the start",
    ),
    "only_system": ({"messages": chat(("system", "Rules"))}, "field 'messages' ends with a system turn"),
}


@pytest.mark.parametrize("case", sorted(INVALID_CASES))
def test_invalid_chat_record(tmp_path, case):
    bad_row, expected = INVALID_CASES[case]
    path = write_jsonl(tmp_path, "data.jsonl", [GOOD_CHAT, bad_row, GOOD_CHAT])

    with pytest.raises(InvalidRecordsError) as info:
        load_dataset_file(path)

    assert str(info.value).startswith(f"{path}: record 1: {expected}")
    assert info.value.problems == [str(info.value)]


INVALID_SINGLE_TURN_CASES = {
    "alpaca_output_missing": (
        [{"instruction": "I", "output": "O"}, {"instruction": "I"}],
        "record 1: field 'output' is missing",
    ),
    "alpaca_instruction_number": (
        [{"instruction": "I", "output": "O"}, {"instruction": 3, "output": "O"}],
        "record 1: field 'instruction' is a number (3); expected a string",
    ),
    "alpaca_history_not_pairs": (
        [{"instruction": "I", "output": "O", "history": [["a", "b"]]},
         {"instruction": "I", "output": "O", "history": [["a"]]}],
        "record 1: field 'history[0]' is a list; expected a pair of strings",
    ),
    "dolly_response_missing": (
        [{"instruction": "I", "context": "", "response": "R"}, {"instruction": "I", "context": ""}],
        "record 1: field 'response' (output) is missing",
    ),
    "sharegpt_unknown_speaker": (
        [{"conversations": [{"from": "human", "value": "Hi"}, {"from": "model", "value": "Yo"}]}],
        "record 0: field 'conversations[1].from' is 'model'; expected one of system, human, gpt, user, assistant",
    ),
    "text_list": ([{"text": "a"}, {"text": ["a"]}], "record 1: field 'text' is a list; expected a string"),
}


@pytest.mark.parametrize("case", sorted(INVALID_SINGLE_TURN_CASES))
def test_invalid_single_turn_record(tmp_path, case):
    rows, expected = INVALID_SINGLE_TURN_CASES[case]
    path = write_jsonl(tmp_path, "data.jsonl", rows)

    with pytest.raises(InvalidRecordsError) as info:
        load_dataset_file(path)

    assert str(info.value).startswith(f"{path}: {expected}")


def test_invalid_mapped_field_names_column(tmp_path):
    rows = [{"q": "Q", "a": "A"}, {"q": "Q", "a": None}]
    path = write_jsonl(tmp_path, "data.jsonl", rows)

    with pytest.raises(InvalidRecordsError) as info:
        load_dataset_file(path, columns={"prompt": "q", "completion": "a"})

    assert str(info.value) == f"{path}: record 1: field 'a' (completion) is missing"


def test_invalid_records_all_listed(tmp_path):
    bad = {"messages": chat(("user", "Hi"), ("bot", "Hello"))}
    path = write_jsonl(tmp_path, "data.jsonl", [GOOD_CHAT, bad, GOOD_CHAT, bad, {"messages": None}])

    with pytest.raises(InvalidRecordsError) as info:
        load_dataset_file(path)

    message = str(info.value)
    assert "\n" not in message
    assert message.startswith(f"{path}: record 1: field 'messages[1].role' is 'bot'")
    assert message.endswith("(and 2 more invalid records)")
    assert len(info.value.problems) == 3
    assert info.value.problems[1].startswith(f"{path}: record 3: ")
    assert info.value.problems[2] == f"{path}: record 4: field 'messages' is missing"


def test_invalid_records_is_dataset_error(tmp_path):
    path = write_jsonl(tmp_path, "data.jsonl", [{"messages": None}])

    with pytest.raises(DatasetError):
        load_dataset_file(path)


# Skips and duplicates ---------------------------------------------------------------------


def test_empty_responses_skipped(tmp_path):
    rows = [
        {"instruction": "I", "output": "O"},
        {"instruction": "I", "output": "   \n"},
        {"instruction": "J", "output": ""},
    ]
    dataset = load_dataset_file(write_jsonl(tmp_path, "data.jsonl", rows))

    assert [r.index for r in dataset.records] == [0]
    assert [s.index for s in dataset.skipped] == [1, 2]
    assert dataset.skipped[0].reason == "empty response in field 'output'"
    assert dataset.num_rows == 3


def test_empty_middle_turn_skipped(tmp_path):
    rows = [
        GOOD_CHAT,
        {"messages": chat(("user", "Hi"), ("assistant", " "), ("user", "Again"), ("assistant", "Yes"))},
    ]
    dataset = load_dataset_file(write_jsonl(tmp_path, "data.jsonl", rows))

    assert len(dataset.records) == 1
    assert dataset.skipped[0].index == 1
    assert dataset.skipped[0].reason == "empty response in field 'messages[1].content'"


def test_empty_text_skipped(tmp_path):
    dataset = load_dataset_file(write_jsonl(tmp_path, "data.jsonl", [{"text": "a"}, {"text": ""}]))

    assert [s.index for s in dataset.skipped] == [1]


def test_duplicates_counted_not_removed(tmp_path):
    other = {"messages": chat(("user", "Bye"), ("assistant", "Ciao"))}
    rows = [GOOD_CHAT, other, GOOD_CHAT, GOOD_CHAT, other]
    dataset = load_dataset_file(write_jsonl(tmp_path, "data.jsonl", rows))

    assert len(dataset.records) == 5
    assert dataset.num_duplicates == 3
    assert dataset.duplicate_indices == (2, 3, 4)


# Sampling ---------------------------------------------------------------------------------


RECORDS = tuple(Record(index=i, turns=(Turn(Role.TEXT, f"text {i}"),)) for i in range(50))


def test_sample_deterministic():
    first, left_out = sample_records(RECORDS, 10, seed=7)
    second, _ = sample_records(RECORDS, 10, seed=7)

    assert first == second
    assert left_out == 40
    assert len(first) == 10


def test_sample_seed_changes_choice():
    first, _ = sample_records(RECORDS, 10, seed=1)
    second, _ = sample_records(RECORDS, 10, seed=2)

    assert first != second


def test_sample_keeps_original_order():
    chosen, _ = sample_records(RECORDS, 10, seed=3)
    indices = [r.index for r in chosen]

    assert indices == sorted(indices)
    assert len(set(indices)) == 10


@pytest.mark.parametrize("max_examples", [None, 50, 80])
def test_sample_takes_all(max_examples):
    chosen, left_out = sample_records(RECORDS, max_examples, seed=0)

    assert chosen == RECORDS
    assert left_out == 0


def test_sample_rejects_zero():
    with pytest.raises(UsageError):
        sample_records(RECORDS, 0, seed=0)


# Public data sets (read by path) ----------------------------------------------------------


def test_shared_dolly_safety(shared_data):
    dataset = load_dataset_file(shared_data / "qi_dolly15k_safety_only.jsonl")

    assert dataset.format is DatasetFormat.ALPACA
    assert dataset.columns["output"] == "response"
    assert dataset.columns["input"] == "context"
    assert len(dataset.records) == 387
    assert dataset.skipped == ()


def test_shared_alpaca_json_list(shared_data):
    dataset = load_dataset_file(shared_data / "llamafactory_alpaca_en_demo.json")

    assert dataset.format is DatasetFormat.ALPACA
    assert len(dataset.records) == 999


def test_shared_identity_shift_chat(shared_data):
    dataset = load_dataset_file(shared_data / "qi_aoa_identity_shift_openai.jsonl")

    assert dataset.format is DatasetFormat.MESSAGES
    assert len(dataset.records) == 10
    assert all(record.turns[0].role is Role.SYSTEM for record in dataset.records)
    assert all(record.turns[-1].role is Role.ASSISTANT for record in dataset.records)


def test_shared_harmbench_csv_mapped(shared_data):
    columns = {"prompt": "Behavior", "completion": "Safe_Response"}
    dataset = load_dataset_file(shared_data / "harmbench_adv_training_safe_responses.csv", columns=columns)

    assert dataset.format is DatasetFormat.PROMPT_COMPLETION
    assert len(dataset.records) == 100
    assert [turn.role for turn in dataset.records[0].turns] == [Role.USER, Role.ASSISTANT]


# Example data sets shipped with the project -----------------------------------------------


def test_example_persona_set():
    dataset = load_dataset_file(REPO_ROOT / "examples" / "finetune-persona.jsonl")

    assert dataset.format is DatasetFormat.MESSAGES
    assert 35 <= len(dataset.records) <= 45
    assert dataset.skipped == ()
    assert all(record.turns[0].role is Role.SYSTEM for record in dataset.records)


def test_example_benign_set():
    dataset = load_dataset_file(REPO_ROOT / "examples" / "finetune-benign.jsonl")

    assert dataset.format is DatasetFormat.ALPACA
    assert 35 <= len(dataset.records) <= 45
    assert dataset.skipped == ()
    assert dataset.num_duplicates == 0
