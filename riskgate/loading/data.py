"""Dataset files to validated records: reading, format detection, validation and sampling.

Files are read with the `datasets` library. Its `json` builder reads `.jsonl` and `.json`
(JSON Lines, or one JSON list of objects), `csv` reads `.csv` with every cell as a string, and
`parquet` reads `.parquet`. `load_from_disk` reads a folder written by `save_to_disk`. Every
reading failure becomes a one-line DatasetError that names the file and, where it can be
found, the line.
"""

from __future__ import annotations

import contextlib
import csv
import hashlib
import json
import logging
import random
import re
import tempfile
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from riskgate.errors import DatasetError, UsageError
from riskgate.loading.formats import (
    DatasetFormat,
    detect_format,
    normalize_rows,
    resolve_columns,
    validate_column_map,
)
from riskgate.loading.records import Record, SkippedRecord

BUILDERS = {".jsonl": "json", ".json": "json", ".csv": "csv", ".parquet": "parquet"}
"""The `datasets` builder for each supported file extension (matched case-insensitively)."""

_NO_RECORDS = "contains no records"


@dataclass(frozen=True)
class LoadedDataset:
    """A dataset file after reading and validating every record."""

    path: str
    sha256: str
    """Hex SHA-256 of the file's bytes. For a folder, the hash covers each file's relative path,
    size and bytes, in order of relative path."""
    format: DatasetFormat
    records: tuple[Record, ...]
    skipped: tuple[SkippedRecord, ...]
    """Records left out because their response is empty or whitespace."""
    num_rows: int
    """Rows in the file: len(records) + len(skipped)."""
    num_duplicates: int
    """Number of records whose turns exactly repeat an earlier record's. They are kept."""
    columns: dict[str, str] = field(default_factory=dict)
    """Effective map from canonical key to the file's column (or turn key, or speaker name)."""
    duplicate_indices: tuple[int, ...] = ()
    """Record indices counted in `num_duplicates`."""


def load_dataset_file(
    path: str | Path,
    *,
    fmt: DatasetFormat | None = None,
    columns: Mapping[str, str] | None = None,
) -> LoadedDataset:
    """Read a dataset file or saved folder, detect or apply its format, validate every record.

    `fmt` skips detection and checks every record against that format. `columns` maps
    canonical keys to the file's names (see `riskgate.loading.formats.COLUMN_KEYS`).
    A saved `DatasetDict` with one split is read whole. With several splits, "train" is read
    if present; otherwise the error names the splits.

    Raises DatasetError (InvalidRecordsError for invalid records) or UsageError for a bad
    column map. Records with an empty response are skipped and listed, never dropped silently.
    """
    source = str(path)
    file_path = Path(path)
    column_map = validate_column_map(columns)

    if not file_path.exists():
        raise DatasetError(f"{source}: file not found")
    if file_path.is_dir():
        available, rows = _read_saved_folder(file_path, source)
        digest = _sha256_folder(file_path)
    else:
        builder = BUILDERS.get(file_path.suffix.lower())
        if builder is None:
            supported = ", ".join(BUILDERS)
            raise DatasetError(
                f"{source}: unsupported file extension '{file_path.suffix}'; use one of {supported}, "
                "or a folder written by Dataset.save_to_disk"
            )
        available, rows = _read_file(file_path, builder, source)
        digest = _sha256_file(file_path)
    if not rows:
        raise DatasetError(f"{source}: {_NO_RECORDS}")

    if fmt is None:
        fmt = detect_format(rows, available, column_map, source)
    effective = resolve_columns(fmt, rows, available, column_map, source)
    normalized = normalize_rows(rows, fmt, effective, source)
    return LoadedDataset(
        path=source,
        sha256=digest,
        format=fmt,
        records=normalized.records,
        skipped=normalized.skipped,
        num_rows=len(rows),
        num_duplicates=len(normalized.duplicate_indices),
        columns=effective,
        duplicate_indices=normalized.duplicate_indices,
    )


def sample_records(
    records: Sequence[Record], max_examples: int | None, seed: int
) -> tuple[tuple[Record, ...], int]:
    """Choose at most `max_examples` records uniformly at random without replacement.

    Returns the chosen records in their original order and the number left out. The choice
    depends only on len(records), max_examples and seed (via `random.Random(seed)`).
    """
    if max_examples is None or max_examples >= len(records):
        return tuple(records), 0
    if max_examples < 1:
        raise UsageError(f"max_examples is {max_examples}; expected at least 1")
    chosen = sorted(random.Random(seed).sample(range(len(records)), max_examples))
    return tuple(records[i] for i in chosen), len(records) - max_examples


@contextlib.contextmanager
def _quiet_datasets() -> Iterator[None]:
    """Hide the progress bars and log output of `datasets` while reading; restore them after.

    The builders log their own read errors before raising them, and this module re-raises
    those as DatasetError, so the logs would only repeat them.
    """
    import datasets

    # Reading a local file must not touch the network: `datasets.load_dataset` otherwise sends
    # a request to count downloads (datasets 5.2, `load.increase_load_count`) unless offline.
    datasets.config.HF_HUB_OFFLINE = True
    datasets.config.HF_UPDATE_DOWNLOAD_COUNTS = False

    library_logger = logging.getLogger("datasets")
    previous_level = library_logger.level
    bars_were_disabled = datasets.are_progress_bars_disabled()
    library_logger.setLevel(logging.CRITICAL + 1)
    datasets.disable_progress_bars()
    try:
        yield
    finally:
        library_logger.setLevel(previous_level)
        if not bars_were_disabled:
            datasets.enable_progress_bars()


def _read_file(path: Path, builder: str, source: str) -> tuple[list[str], list[dict[str, Any]]]:
    """Read one file with a `datasets` builder into its column names and rows."""
    import datasets
    import pyarrow

    kwargs: dict[str, Any] = {}
    if builder == "json" and _json_builder_parses_agent_traces():
        # Otherwise a JSONL file with the columns of an agent trace is parsed as one.
        kwargs["parse_agent_traces"] = False
    if builder == "csv":
        kwargs.update(_csv_options(path, source))

    with _quiet_datasets(), tempfile.TemporaryDirectory(prefix="riskgate-datasets-") as scratch:
        # `data_files` is a glob pattern, so a name like "set[1].jsonl" would match nothing.
        # A link with a plain name in the scratch folder avoids that.
        link = Path(scratch) / f"data{path.suffix.lower()}"
        try:
            link.symlink_to(path.resolve())
        except OSError:
            link.write_bytes(path.read_bytes())
        try:
            dataset = datasets.load_dataset(
                builder,
                data_files=str(link),
                split="train",
                cache_dir=str(Path(scratch) / "cache"),
                **kwargs,
            )
            # NOTE: the whole file is held in memory as Python objects. The `json` builder of
            # datasets 5.2 also casts chunks after the first 10 MiB to the first chunk's column
            # types (a number becomes a string), so type checks there can miss a mismatch.
            return list(dataset.column_names), dataset.to_list()
        except (
            datasets.exceptions.DatasetsError,
            pyarrow.ArrowException,
            ValueError,
            StopIteration,
        ) as error:
            raise _explain_read_error(error, path, builder, source) from error


def _json_builder_parses_agent_traces() -> bool:
    """Return whether this `datasets` version has the JSON option `parse_agent_traces` (5.x)."""
    import dataclasses

    from datasets.packaged_modules.json.json import JsonConfig

    return any(f.name == "parse_agent_traces" for f in dataclasses.fields(JsonConfig))


def _csv_options(path: Path, source: str) -> dict[str, Any]:
    """Read the header row and return builder options that keep every cell as an exact string."""
    import datasets

    try:
        with path.open(encoding="utf-8", newline="") as handle:
            header = next(csv.reader(handle), None)
    except UnicodeDecodeError as error:
        raise _not_utf8(path, source) from error
    except csv.Error as error:
        raise DatasetError(f"{source}: line 1: invalid CSV header ({error})") from error
    if not header:
        raise DatasetError(f"{source}: {_NO_RECORDS}")
    if any(not name for name in header):
        raise DatasetError(f"{source}: line 1: the header has an empty column name; name every column")
    repeated = sorted({name for name in header if header.count(name) > 1})
    if repeated:
        raise DatasetError(f"{source}: line 1: column names repeat ({', '.join(repeated)}); make them unique")
    # Without string features pandas reads "007" as 7, and without na_filter it reads "NA" as null.
    features = datasets.Features({name: datasets.Value("string") for name in header})
    return {"features": features, "na_filter": False}


def _read_saved_folder(folder: Path, source: str) -> tuple[list[str], list[dict[str, Any]]]:
    """Read a folder written by `save_to_disk` into its column names and rows."""
    import datasets
    import pyarrow

    with _quiet_datasets():
        try:
            loaded = datasets.load_from_disk(str(folder))
        except FileNotFoundError as error:
            raise DatasetError(
                f"{source}: folder is not a dataset written by Dataset.save_to_disk; pass that "
                f"folder or a file ending in {', '.join(BUILDERS)}"
            ) from error
        except (pyarrow.ArrowException, ValueError, OSError) as error:
            raise DatasetError(f"{source}: cannot read the saved dataset ({_innermost_message(error)})") from error

        if isinstance(loaded, datasets.DatasetDict):
            splits = list(loaded)
            if len(splits) == 1:
                loaded = loaded[splits[0]]
            elif "train" in loaded:
                loaded = loaded["train"]
            else:
                raise DatasetError(
                    f"{source}: the saved dataset has several splits ({', '.join(splits)}) and none "
                    "is named 'train'; save the split to check on its own with Dataset.save_to_disk"
                )
        return list(loaded.column_names), loaded.to_list()


def _explain_read_error(error: BaseException, path: Path, builder: str, source: str) -> DatasetError:
    """Turn an exception of a `datasets` builder into a one-line DatasetError."""
    chain = _exception_chain(error)
    message = _innermost_message(error)
    if any(isinstance(e, UnicodeDecodeError) for e in chain):
        return _not_utf8(path, source)
    if isinstance(error, StopIteration) or any("corresponds to no data" in str(e) for e in chain):
        return DatasetError(f"{source}: {_NO_RECORDS}")

    if builder == "json":
        return _diagnose_json(path, source) or DatasetError(f"{source}: failed to read as JSON ({message})")
    if builder == "csv":
        if any(type(e).__name__ == "EmptyDataError" for e in chain):
            return DatasetError(f"{source}: {_NO_RECORDS}")
        ragged = re.search(r"Expected (\d+) fields in line (\d+), saw (\d+)", message)
        if ragged:
            expected, line, found = ragged.groups()
            return DatasetError(
                f"{source}: line {line}: {found} fields where the header has {expected}; "
                "quote fields that contain commas"
            )
        return DatasetError(f"{source}: invalid CSV ({message})")
    return DatasetError(f"{source}: not a readable Parquet file ({message})")


def _diagnose_json(path: Path, source: str) -> DatasetError | None:
    """Find the first invalid line of a JSON or JSON Lines file with the standard parser.

    Returns None when the standard parser finds no problem.
    """
    text = path.read_text(encoding="utf-8-sig")
    if text.lstrip().startswith("["):
        try:
            json.loads(text)
        except json.JSONDecodeError as error:
            return DatasetError(
                f"{source}: line {error.lineno}, column {error.colno}: invalid JSON ({error.msg})"
            )
        return None

    for line_number, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue
        try:
            value = json.loads(line)
        except json.JSONDecodeError as error:
            return DatasetError(
                f"{source}: line {line_number}, column {error.colno}: invalid JSON ({error.msg}); "
                "JSON Lines files need one complete JSON object per line"
            )
        if not isinstance(value, dict):
            return DatasetError(
                f"{source}: line {line_number}: expected a JSON object, found {type(value).__name__}; "
                "JSON Lines files need one JSON object per line"
            )
    return None


def _not_utf8(path: Path, source: str) -> DatasetError:
    data = path.read_bytes()
    try:
        data.decode("utf-8")
    except UnicodeDecodeError as error:
        line = data[: error.start].count(b"\n") + 1
        return DatasetError(
            f"{source}: line {line}: invalid UTF-8 (byte 0x{data[error.start]:02x}); save the file as UTF-8"
        )
    return DatasetError(f"{source}: invalid UTF-8; save the file as UTF-8")


def _exception_chain(error: BaseException) -> list[BaseException]:
    chain = [error]
    while True:
        cause = chain[-1].__cause__ or chain[-1].__context__
        if cause is None or cause in chain:
            return chain
        chain.append(cause)


def _innermost_message(error: BaseException) -> str:
    """Return the first non-empty line of the deepest message in the exception chain."""
    for link in reversed(_exception_chain(error)):
        lines = [line.strip() for line in str(link).splitlines() if line.strip()]
        if lines:
            return lines[0]
    return type(error).__name__


def _sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for chunk in iter(lambda: handle.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def _sha256_folder(folder: Path) -> str:
    digest = hashlib.sha256()
    files = sorted((p for p in folder.rglob("*") if p.is_file()), key=lambda p: p.relative_to(folder).as_posix())
    for file in files:
        digest.update(f"{file.relative_to(folder).as_posix()}\0{file.stat().st_size}\0".encode())
        with file.open("rb") as handle:
            for chunk in iter(lambda: handle.read(1 << 20), b""):
                digest.update(chunk)
    return digest.hexdigest()
