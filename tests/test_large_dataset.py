"""Loading without holding every record: the lazy record sequence and what the loader retains."""

from __future__ import annotations

import gc
import json
import tempfile
import tracemalloc
from pathlib import Path

import pytest

from riskgate.loading.data import RecordSequence, load_dataset_file
from riskgate.loading.formats import MAX_LISTED_PROBLEMS, InvalidRecordsError
from riskgate.loading.records import Role


def chat_row(user: str, assistant: str) -> str:
    messages = [{"role": "user", "content": user}, {"role": "assistant", "content": assistant}]
    return json.dumps({"messages": messages})


def write_rows(path: Path, count: int) -> Path:
    """Write `count` chat rows; every 100th response is empty and every 250th row repeats row 1."""
    with path.open("w", encoding="utf-8") as handle:
        for index in range(count):
            if index % 250 == 249:
                handle.write(chat_row("request 1", "response 1") + "\n")
            elif index % 100 == 50:
                handle.write(chat_row(f"request {index}", "") + "\n")
            else:
                handle.write(chat_row(f"request {index}", f"response {index}") + "\n")
    return path


@pytest.fixture(scope="module")
def loaded(tmp_path_factory):
    return load_dataset_file(write_rows(tmp_path_factory.mktemp("lazy") / "rows.jsonl", 3000))


def test_counts_match_file(loaded):
    assert loaded.num_rows == 3000
    assert len(loaded.skipped) == 30
    assert len(loaded.records) == 2970
    assert loaded.num_duplicates == 12
    assert loaded.duplicate_indices[:2] == (249, 499)


def test_records_is_lazy_sequence(loaded):
    assert isinstance(loaded.records, RecordSequence)


def test_index_reads_record(loaded):
    first = loaded.records[0]
    assert first.index == 0
    assert [(turn.role, turn.content) for turn in first.turns] == [
        (Role.USER, "request 0"), (Role.ASSISTANT, "response 0")
    ]
    # Row 50 is skipped, so the record at position 50 is row 51.
    assert loaded.records[50].index == 51
    assert loaded.records[-1].index == 2999
    with pytest.raises(IndexError):
        loaded.records[2970]


def test_slice_returns_tuple(loaded):
    window = loaded.records[49:52]
    assert isinstance(window, tuple)
    assert [record.index for record in window] == [49, 51, 52]


def test_iteration_matches_indexing(loaded):
    records = list(loaded.records)
    assert len(records) == 2970
    assert [record.index for record in records[1020:1030]] == [r.index for r in loaded.records[1020:1030]]
    assert records[2000] == loaded.records[2000]


def test_take_keeps_order(loaded):
    records = loaded.records.take([5, 2, 5])
    assert [record.index for record in records] == [5, 2, 5]
    assert records[1].turns[1].content == "response 2"
    assert loaded.records.take([]) == []


def test_loader_retains_no_record_text(tmp_path):
    path = tmp_path / "five-mb.jsonl"
    with path.open("w", encoding="utf-8") as handle:
        for index in range(40_000):
            handle.write(chat_row(f"request {index} " + "x" * 40, f"response {index} " + "y" * 40) + "\n")
    size = path.stat().st_size
    assert size > 4_000_000

    gc.collect()
    tracemalloc.start()
    try:
        dataset = load_dataset_file(path)
        gc.collect()
        retained, _ = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()

    assert len(dataset.records) == 40_000
    # One 8-byte row number per record plus small objects; materialised records would take
    # several times the file's size.
    assert retained < size / 8


def test_invalid_records_listed_up_to_limit(tmp_path):
    path = tmp_path / "invalid.jsonl"
    path.write_text("".join(json.dumps({"messages": "not a list"}) + "\n" for _ in range(MAX_LISTED_PROBLEMS + 5)))

    with pytest.raises(InvalidRecordsError) as caught:
        load_dataset_file(path)

    assert len(caught.value.problems) == MAX_LISTED_PROBLEMS
    assert caught.value.count == MAX_LISTED_PROBLEMS + 5
    assert str(caught.value).endswith(f"(and {MAX_LISTED_PROBLEMS + 4} more invalid records)")


def test_scratch_folder_removed_with_records(tmp_path, monkeypatch):
    scratch_parent = tmp_path / "scratch"
    scratch_parent.mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(scratch_parent))
    dataset = load_dataset_file(write_rows(tmp_path / "rows.jsonl", 20))
    assert [p.name.startswith("riskgate-datasets-") for p in scratch_parent.iterdir()] == [True]

    assert dataset.records[3].index == 3
    del dataset
    gc.collect()

    assert list(scratch_parent.iterdir()) == []


def test_scratch_folder_removed_on_error(tmp_path, monkeypatch):
    scratch_parent = tmp_path / "scratch"
    scratch_parent.mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(scratch_parent))
    path = tmp_path / "bad.jsonl"
    path.write_text(chat_row("a", "b") + "\n" + json.dumps({"messages": 3}) + "\n")

    with pytest.raises(InvalidRecordsError):
        load_dataset_file(path)

    assert list(scratch_parent.iterdir()) == []
