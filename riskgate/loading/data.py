"""Dataset files to validated records: reading, format detection, validation and sampling.

Files are read with the `datasets` library. Its `json` builder reads `.jsonl` and `.json`
(JSON Lines, or one JSON list of objects), `csv` reads `.csv` with every cell as a string, and
`parquet` reads `.parquet`. `load_from_disk` reads a folder written by `save_to_disk`. Every
reading failure becomes a one-line DatasetError that names the file and, where it can be
found, the line.

Large files: the rows stay in the Arrow table that `datasets` memory-maps from its cache (a
scratch folder that lives as long as the records do). The loader validates the rows in
batches and keeps, per record, only its row number and a 16-byte digest for the duplicate
count. `LoadedDataset.records` parses a record from the table each time it is read.
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
import random
import shutil
import tempfile
from array import array
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, overload

from riskgate.errors import DatasetError, UsageError
from riskgate.loading.formats import (
    DIGEST_SIZE,
    MAX_LISTED_PROBLEMS,
    DatasetFormat,
    InvalidRecordsError,
    RecordProblem,
    check_mapped_columns,
    detect_format,
    detection_columns,
    parse_row,
    read_columns,
    record_digest,
    resolve_columns,
    validate_column_map,
)
from riskgate.loading.read_errors import (
    NO_RECORDS,
    check_csv_rows,
    csv_header,
    explain_read_error,
    find_invalid_utf8,
    innermost_message,
)
from riskgate.loading.records import Record, SkippedRecord

BUILDERS = {".jsonl": "json", ".json": "json", ".csv": "csv", ".parquet": "parquet"}
"""The `datasets` builder for each supported file extension (matched case-insensitively)."""

BATCH_ROWS = 1024
"""Rows decoded from the Arrow table at a time while validating or iterating records."""


class RecordSequence(Sequence[Record]):
    """The valid records of one dataset, in file order, parsed from its Arrow table when read.

    Stores one row number per record (8 bytes) instead of the records. Indexing and iteration
    decode rows from the table, which `datasets` memory-maps from disk; `take` reads several
    records in one batch. Slices return tuples.
    """

    def __init__(
        self,
        table: Any,
        rows: array,
        fmt: DatasetFormat,
        columns: Mapping[str, str],
        source: str,
        scratch: tempfile.TemporaryDirectory | None = None,
    ) -> None:
        self._source = source
        self._table = table
        self._rows = rows
        self._format = fmt
        self._columns = dict(columns)
        # The scratch folder contains the Arrow files behind `table`. It is removed when this
        # sequence is garbage collected.
        self._scratch = scratch

    def __len__(self) -> int:
        return len(self._rows)

    @overload
    def __getitem__(self, position: int) -> Record: ...

    @overload
    def __getitem__(self, position: slice) -> tuple[Record, ...]: ...

    def __getitem__(self, position):
        if isinstance(position, slice):
            return tuple(self.take(range(len(self))[position]))
        row_index = self._rows[position]
        return self._parse(self._table[row_index], row_index)

    def __iter__(self) -> Iterator[Record]:
        for start in range(0, len(self), BATCH_ROWS):
            yield from self.take(range(start, min(start + BATCH_ROWS, len(self))))

    def __repr__(self) -> str:
        return f"RecordSequence({len(self)} {self._format.value} records)"

    def take(self, positions: Iterable[int]) -> list[Record]:
        """Return the records at `positions` (indices into this sequence), in that order."""
        row_indices = [self._rows[position] for position in positions]
        if not row_indices:
            return []
        batch = self._table[row_indices]
        names = list(batch)
        return [
            self._parse(dict(zip(names, values)), row_index)
            for row_index, values in zip(row_indices, zip(*(batch[name] for name in names)))
        ]

    def _parse(self, row: Mapping[str, Any], row_index: int) -> Record:
        try:
            record = parse_row(row, row_index, self._format, self._columns)
        except RecordProblem:
            record = None
        if not isinstance(record, Record):
            # Possible only when a saved folder is rewritten while it is being read.
            raise DatasetError(
                f"{self._source}: record {row_index} changed on disk after it was validated; run again"
            )
        return record


@dataclass(frozen=True)
class LoadedDataset:
    """A dataset file after reading and validating every record."""

    path: str
    sha256: str
    """Hex SHA-256 of the file's bytes. For a folder, the hash covers each file's relative path,
    size and bytes, in order of relative path."""
    format: DatasetFormat
    records: Sequence[Record]
    """The valid records in file order: a `RecordSequence`, read from disk on access."""
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
    scratch = None
    if file_path.is_dir():
        table = _read_saved_folder(file_path, source)
        digest = _sha256_folder(file_path)
    else:
        builder = BUILDERS.get(file_path.suffix.lower())
        if builder is None:
            supported = ", ".join(BUILDERS)
            raise DatasetError(
                f"{source}: unsupported file extension '{file_path.suffix}'; use one of {supported}, "
                "or a folder written by Dataset.save_to_disk"
            )
        table, scratch = _read_file(file_path, builder, source)
        digest = _sha256_file(file_path)

    try:
        return _validate(table, scratch, source, digest, fmt, column_map)
    except BaseException:
        if scratch is not None:
            scratch.cleanup()
        raise


def _validate(
    table: Any,
    scratch: tempfile.TemporaryDirectory | None,
    source: str,
    digest: str,
    fmt: DatasetFormat | None,
    column_map: dict[str, str],
) -> LoadedDataset:
    """Detect the format, validate every row of `table`, and count skips and duplicates."""
    import pyarrow

    available = list(table.column_names)
    if table.num_rows == 0:
        raise DatasetError(f"{source}: {NO_RECORDS}")
    check_mapped_columns(available, column_map, source)

    try:
        if fmt is None:
            fmt = detect_format(
                _iter_rows(table, detection_columns(available, column_map)), available, column_map, source
            )
        effective = resolve_columns(fmt, _iter_rows(table, available), available, column_map, source)
        view = table.select_columns(read_columns(fmt, effective))
        scan = _scan_rows(view, fmt, effective, source)
    except (pyarrow.ArrowException, OSError, UnicodeDecodeError) as error:
        raise DatasetError(f"{source}: cannot read the rows ({innermost_message(error)}); check the file") from error

    return LoadedDataset(
        path=source,
        sha256=digest,
        format=fmt,
        records=RecordSequence(view, scan.record_rows, fmt, effective, source, scratch),
        skipped=scan.skipped,
        num_rows=table.num_rows,
        num_duplicates=len(scan.duplicate_indices),
        columns=effective,
        duplicate_indices=scan.duplicate_indices,
    )


@dataclass(frozen=True)
class _Scan:
    """The outcome of validating a file: row numbers, skips and duplicates, without record text."""

    record_rows: array
    """Row number of each valid record, in file order (array of signed 64-bit integers)."""
    skipped: tuple[SkippedRecord, ...]
    duplicate_indices: tuple[int, ...]


def _scan_rows(table: Any, fmt: DatasetFormat, columns: Mapping[str, str], source: str) -> _Scan:
    """Validate every row; raise InvalidRecordsError listing the invalid ones."""
    record_rows = array("q")
    digests = bytearray()
    skipped: list[SkippedRecord] = []
    problems: list[str] = []
    invalid = 0
    for index, row in enumerate(_iter_rows(table, None)):
        try:
            outcome = parse_row(row, index, fmt, columns)
        except RecordProblem as problem:
            invalid += 1
            if len(problems) < MAX_LISTED_PROBLEMS:
                problems.append(f"{source}: record {index}: {problem}")
            continue
        if isinstance(outcome, SkippedRecord):
            skipped.append(outcome)
        else:
            record_rows.append(index)
            digests += record_digest(outcome.turns)
    if problems:
        raise InvalidRecordsError(problems, invalid)
    duplicates = tuple(record_rows[position] for position in _repeated_positions(digests))
    return _Scan(record_rows, tuple(skipped), duplicates)


def _repeated_positions(digests: bytearray) -> list[int]:
    """Return the positions whose digest equals one at an earlier position, in order."""
    import numpy

    keys = numpy.frombuffer(digests, dtype=f"V{DIGEST_SIZE}")
    if keys.size == 0:
        return []
    _, first = numpy.unique(keys, return_index=True)
    repeated = numpy.ones(keys.size, dtype=bool)
    repeated[first] = False
    return numpy.flatnonzero(repeated).tolist()


def _iter_rows(table: Any, columns: Sequence[str] | None) -> Iterator[dict[str, Any]]:
    """Yield the rows of a `datasets.Dataset` as dicts, decoding `BATCH_ROWS` rows at a time.

    `columns` restricts the rows to those columns (None: all). A table without columns yields
    one empty dict per row.
    """
    if columns is not None:
        table = table.select_columns(list(columns))
    names = list(table.column_names)
    if not names:
        for _ in range(table.num_rows):
            yield {}
        return
    for batch in table.iter(batch_size=BATCH_ROWS):
        for values in zip(*(batch[name] for name in names)):
            yield dict(zip(names, values))


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


def _read_file(path: Path, builder: str, source: str) -> tuple[Any, tempfile.TemporaryDirectory]:
    """Read one file with a `datasets` builder into a memory-mapped `datasets.Dataset`.

    Returns the dataset and the scratch folder with its Arrow cache, which must live as long
    as the dataset is read.
    """
    import datasets
    import pyarrow

    kwargs: dict[str, Any] = {}
    if builder == "json" and _json_builder_parses_agent_traces():
        # Otherwise a JSONL file with the columns of an agent trace is parsed as one.
        kwargs["parse_agent_traces"] = False
    if builder in ("json", "csv"):
        # The JSON reader of pyarrow 26 accepts invalid UTF-8, which then fails only when a
        # value is decoded, so the bytes are checked first.
        invalid = find_invalid_utf8(path, source)
        if invalid is not None:
            raise invalid
    header: list[str] = []
    if builder == "csv":
        header = csv_header(path, source)
        # Without string features pandas reads "007" as 7, and without na_filter it reads "NA"
        # as null. utf-8-sig drops the byte order mark that spreadsheet exports write.
        features = datasets.Features({name: datasets.Value("string") for name in header})
        kwargs.update(features=features, na_filter=False, encoding="utf-8-sig")

    scratch = tempfile.TemporaryDirectory(prefix="riskgate-datasets-", ignore_cleanup_errors=True)
    try:
        with _quiet_datasets():
            # `data_files` is a glob pattern, so a name like "set[1].jsonl" would match nothing.
            # A link with a plain name in the scratch folder avoids that.
            link = Path(scratch.name) / f"data{path.suffix.lower()}"
            try:
                link.symlink_to(path.resolve())
            except OSError:
                shutil.copyfile(path, link)
            try:
                dataset = datasets.load_dataset(
                    builder,
                    data_files=str(link),
                    split="train",
                    cache_dir=str(Path(scratch.name) / "cache"),
                    **kwargs,
                )
            except (
                datasets.exceptions.DatasetsError,
                pyarrow.ArrowException,
                ValueError,
                StopIteration,
                RecursionError,
            ) as error:
                raise explain_read_error(error, path, builder, source) from error
        # NOTE: the `json` builder of datasets 5.2 casts chunks after the first 10 MiB to the
        # first chunk's column types (a number becomes a string), so type checks there can
        # miss a mismatch.
        if builder == "csv":
            check_csv_rows(path, source, len(header))
        return dataset, scratch
    except BaseException:
        scratch.cleanup()
        raise


def _json_builder_parses_agent_traces() -> bool:
    """Return whether this `datasets` version has the JSON option `parse_agent_traces` (5.x)."""
    import dataclasses

    from datasets.packaged_modules.json.json import JsonConfig

    return any(f.name == "parse_agent_traces" for f in dataclasses.fields(JsonConfig))


def _read_saved_folder(folder: Path, source: str) -> Any:
    """Open a folder written by `save_to_disk` as a memory-mapped `datasets.Dataset`."""
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
        except (pyarrow.ArrowException, ValueError, OSError, RecursionError) as error:
            raise DatasetError(f"{source}: cannot read the saved dataset ({innermost_message(error)})") from error

        if isinstance(loaded, datasets.DatasetDict):
            splits = list(loaded)
            if len(splits) == 1:
                loaded = loaded[splits[0]]
            else:
                # Reading one split of several would leave the others out without a count.
                raise DatasetError(
                    f"{source}: the saved dataset has several splits ({', '.join(splits)}); save the "
                    "split to check on its own with Dataset.save_to_disk, e.g. dataset['train']"
                )
        return loaded


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
