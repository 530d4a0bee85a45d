"""Write a dataset file again without some of its records, in the same format.

Records are numbered as the loader numbers them: the 0-based row order of the file (non-blank
lines of a JSONL file, elements of a JSON list, data rows of a CSV, rows of a Parquet file or a
saved `datasets` folder).
"""

from __future__ import annotations

import csv
import json
import os
import tempfile
from collections.abc import Set
from pathlib import Path

from ..errors import DatasetError, EnvironmentFailure, UsageError

_SUFFIXES = {".jsonl": "jsonl", ".json": "json", ".csv": "csv", ".parquet": "parquet"}


def _kind(path: Path) -> str:
    if path.is_dir():
        return "folder"
    return _SUFFIXES.get(path.suffix.lower(), "")


_FILE_SUFFIXES = {".jsonl", ".json", ".csv", ".parquet", ".arrow"}


def check_destination(source: str | Path, destination: str | Path) -> None:
    """Raise UsageError unless `destination` can take an export of `source` (checked up front)."""
    source, destination = Path(source), Path(destination)
    kind = _kind(source)
    if not kind:
        raise UsageError(f"--export-filtered: cannot export {source}: unsupported dataset type")
    if kind == "folder":
        # A folder named like a file (out.jsonl/) is almost surely a type mix-up.
        if (destination.exists() and not destination.is_dir()) or destination.suffix.lower() in _FILE_SUFFIXES:
            raise UsageError(f"--export-filtered {destination}: expected a folder like {source.name}")
    elif destination.suffix.lower() != source.suffix.lower() or destination.is_dir():
        raise UsageError(f"--export-filtered {destination}: expected a {source.suffix} file like {source.name}")
    if destination.resolve() == source.resolve():
        raise UsageError(f"--export-filtered {destination}: refusing to overwrite the input dataset")
    parent = destination.parent
    while not parent.exists():
        parent = parent.parent
    if not os.access(parent, os.W_OK):
        raise UsageError(f"--export-filtered {destination}: {parent} is not writable; choose another path")


def export_without(source: str | Path, dropped: Set[int], destination: str | Path) -> int:
    """Write `source` minus the records in `dropped` to `destination`; return the records written.

    The destination must be of the same kind as the source (same file extension, or a folder
    for a saved `datasets` folder), so the exported file feeds the same training job.
    """
    source, destination = Path(source), Path(destination)
    check_destination(source, destination)
    kind = _kind(source)

    try:
        if kind == "jsonl":
            return _export_jsonl(source, dropped, destination)
        if kind == "json":
            return _export_json(source, dropped, destination)
        if kind == "csv":
            return _export_csv(source, dropped, destination)
        return _export_arrow(source, dropped, destination, kind)
    except OSError as exc:
        raise EnvironmentFailure(f"{destination}: cannot write the filtered dataset ({exc.strerror or exc})") from None


def _atomic_write(destination: Path, text: str) -> None:
    destination.parent.mkdir(parents=True, exist_ok=True)
    handle, temporary = tempfile.mkstemp(dir=destination.parent, prefix=f".{destination.name}.")
    try:
        with os.fdopen(handle, "w", encoding="utf-8", newline="") as stream:
            stream.write(text)
        os.replace(temporary, destination)
    except BaseException:
        Path(temporary).unlink(missing_ok=True)
        raise


def _export_jsonl(source: Path, dropped: Set[int], destination: Path) -> int:
    kept, index = [], 0
    # Split on "\n" only: str.splitlines also splits at U+2028, which JSON allows in strings.
    for line in source.read_text(encoding="utf-8").split("\n"):
        if not line.strip():
            continue
        if index not in dropped:
            kept.append(line)
        index += 1
    _atomic_write(destination, "".join(f"{line}\n" for line in kept))
    return len(kept)


def _export_json(source: Path, dropped: Set[int], destination: Path) -> int:
    data = json.loads(source.read_text(encoding="utf-8"))
    if not isinstance(data, list):
        # A .json file of JSON lines is read like JSONL.
        return _export_jsonl(source, dropped, destination)
    kept = [row for index, row in enumerate(data) if index not in dropped]
    _atomic_write(destination, json.dumps(kept, ensure_ascii=False, indent=2) + "\n")
    return len(kept)


def _export_csv(source: Path, dropped: Set[int], destination: Path) -> int:
    with source.open(encoding="utf-8", newline="") as stream:
        rows = list(csv.reader(stream))
    if not rows:
        raise DatasetError(f"{source}: contains no records")
    header, body = rows[0], rows[1:]
    kept = [row for index, row in enumerate(body) if index not in dropped]
    destination.parent.mkdir(parents=True, exist_ok=True)
    handle, temporary = tempfile.mkstemp(dir=destination.parent, prefix=f".{destination.name}.")
    with os.fdopen(handle, "w", encoding="utf-8", newline="") as stream:
        writer = csv.writer(stream)
        writer.writerow(header)
        writer.writerows(kept)
    os.replace(temporary, destination)
    return len(kept)


def _export_arrow(source: Path, dropped: Set[int], destination: Path, kind: str) -> int:
    import datasets

    if kind == "folder":
        loaded = datasets.load_from_disk(str(source))
        if isinstance(loaded, datasets.DatasetDict):
            # The loader reads a single split, or "train" when there are several.
            loaded = loaded["train"] if "train" in loaded else next(iter(loaded.values()))
        keep = [index for index in range(len(loaded)) if index not in dropped]
        loaded.select(keep).save_to_disk(str(destination))
        return len(keep)

    # The Arrow cache lives in the temporary folder, so the export happens inside it.
    with tempfile.TemporaryDirectory() as cache:
        loaded = datasets.load_dataset("parquet", data_files=str(source), split="train", cache_dir=cache)
        keep = [index for index in range(len(loaded)) if index not in dropped]
        destination.parent.mkdir(parents=True, exist_ok=True)
        loaded.select(keep).to_parquet(str(destination))
    return len(keep)
