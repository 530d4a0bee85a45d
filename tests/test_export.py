"""Export of a dataset without chosen records, in its own format."""

from __future__ import annotations

import json

import pytest

from riskgate.errors import UsageError
from riskgate.loading.data import load_dataset_file
from riskgate.loading.export import export_without

ROWS = [{"prompt": f"question {i}", "completion": f"answer {i}"} for i in range(6)]


def write_source(tmp_path, kind: str):
    import datasets

    if kind == "jsonl":
        path = tmp_path / "data.jsonl"
        path.write_text("\n".join(json.dumps(r) for r in ROWS[:3]) + "\n\n" + "\n".join(json.dumps(r) for r in ROWS[3:]) + "\n")
    elif kind == "json":
        path = tmp_path / "data.json"
        path.write_text(json.dumps(ROWS))
    elif kind == "csv":
        path = tmp_path / "data.csv"
        path.write_text("prompt,completion\n" + "".join(f'"{r["prompt"]}","{r["completion"]}"\n' for r in ROWS))
    elif kind == "parquet":
        path = tmp_path / "data.parquet"
        datasets.Dataset.from_list(ROWS).to_parquet(str(path))
    else:
        path = tmp_path / "saved"
        datasets.Dataset.from_list(ROWS).save_to_disk(str(path))
    return path


@pytest.mark.parametrize("kind", ["jsonl", "json", "csv", "parquet", "folder"])
def test_export_drops_records(tmp_path, kind):
    source = write_source(tmp_path, kind)
    destination = tmp_path / "out" / (source.name if kind != "folder" else "filtered")

    written = export_without(source, {1, 4}, destination)

    assert written == 4
    reloaded = load_dataset_file(destination)
    completions = [record.turns[-1].content for record in reloaded.records]
    assert completions == ["answer 0", "answer 2", "answer 3", "answer 5"]
    assert reloaded.format == load_dataset_file(source).format


def test_export_rejects_other_type(tmp_path):
    source = write_source(tmp_path, "jsonl")
    with pytest.raises(UsageError, match="expected a .jsonl file"):
        export_without(source, {0}, tmp_path / "out.csv")


def test_export_refuses_input(tmp_path):
    source = write_source(tmp_path, "json")
    with pytest.raises(UsageError, match="refusing to overwrite"):
        export_without(source, {0}, source)


def test_export_of_folder_to_file_name_rejected(tmp_path):
    source = write_source(tmp_path, "folder")
    with pytest.raises(UsageError, match="expected a folder like"):
        export_without(source, {0}, tmp_path / "filtered.jsonl")
