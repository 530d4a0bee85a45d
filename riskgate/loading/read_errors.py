"""Checks of a dataset file's bytes and syntax, and one-line errors for what `datasets` rejects.

The `datasets` builders report a bad file with messages about Arrow blocks and pandas rows.
These helpers find the line at fault with the standard library instead, reading the file as a
stream, so that a large file is never held in memory to explain one bad line.
"""

from __future__ import annotations

import codecs
import contextlib
import csv
import json
import re
import sys
from collections.abc import Iterator
from pathlib import Path

from riskgate.errors import DatasetError

NO_RECORDS = "contains no records"
_CHUNK_BYTES = 1 << 20


def explain_read_error(error: BaseException, path: Path, builder: str, source: str) -> DatasetError:
    """Turn an exception of a `datasets` builder into a one-line DatasetError."""
    chain = exception_chain(error)
    message = innermost_message(error)
    if any(isinstance(e, UnicodeDecodeError) for e in chain):
        return not_utf8(path, source)
    if isinstance(error, StopIteration) or any("corresponds to no data" in str(e) for e in chain):
        if builder == "json" and _has_only_empty_objects(path):
            return DatasetError(f"{source}: every record is an empty JSON object {{}}; {NO_RECORDS} with fields")
        return DatasetError(f"{source}: {NO_RECORDS}")

    if builder == "json":
        found = diagnose_json(path, source)
        if found is not None:
            return found
        if any(isinstance(e, RecursionError) for e in chain):
            return _too_deep(source)
        return DatasetError(f"{source}: failed to read as JSON ({message})")
    if any(isinstance(e, RecursionError) for e in chain):
        return _too_deep(source)
    if builder == "csv":
        if any(type(e).__name__ == "EmptyDataError" for e in chain):
            return DatasetError(f"{source}: {NO_RECORDS}")
        ragged = re.search(r"Expected (\d+) fields in line (\d+), saw (\d+)", message)
        if ragged:
            expected, line, found = ragged.groups()
            return DatasetError(
                f"{source}: line {line}: {found} fields where the header has {expected}; "
                "quote fields that contain commas"
            )
        # pandas counts rows from 0 at the header, so row N starts on line N + 1.
        open_quote = re.search(r"EOF inside string starting at row (\d+)", message)
        if open_quote:
            line = int(open_quote.group(1)) + 1
            return DatasetError(
                f"{source}: line {line}: a quoted field is never closed; add the closing double quote"
            )
        return DatasetError(f"{source}: invalid CSV ({message})")
    return DatasetError(f"{source}: not a readable Parquet file ({message})")


def _too_deep(source: str) -> DatasetError:
    limit = sys.getrecursionlimit()
    return DatasetError(
        f"{source}: values are nested too deeply to read (more than about {limit} levels); "
        "flatten the records"
    )


def diagnose_json(path: Path, source: str) -> DatasetError | None:
    """Find the first invalid line of a JSON or JSON Lines file with the standard parser.

    JSON Lines files are read one line at a time; a JSON list is parsed whole. Returns None
    when the standard parser finds no problem.
    """
    if _first_character(path) == "[":
        text = path.read_text(encoding="utf-8-sig")
        try:
            json.loads(text)
        except json.JSONDecodeError as error:
            return DatasetError(
                f"{source}: line {error.lineno}, column {error.colno}: invalid JSON ({error.msg})"
            )
        except RecursionError:
            return _too_deep(source)
        return None

    for line_number, line in _numbered_lines(path):
        if not line.strip():
            continue
        try:
            value = json.loads(line)
        except json.JSONDecodeError as error:
            return DatasetError(
                f"{source}: line {line_number}, column {error.colno}: invalid JSON ({error.msg}); "
                "JSON Lines files need one complete JSON object per line"
            )
        except RecursionError:
            return DatasetError(
                f"{source}: line {line_number}: JSON nested too deeply to read (more than about "
                f"{sys.getrecursionlimit()} levels); flatten the record"
            )
        if not isinstance(value, dict):
            return DatasetError(
                f"{source}: line {line_number}: expected a JSON object, found {type(value).__name__}; "
                "JSON Lines files need one JSON object per line"
            )
    return None


def _first_character(path: Path) -> str:
    """Return the first non-whitespace character of a UTF-8 file, or "" for a blank file."""
    with path.open(encoding="utf-8-sig") as handle:
        for chunk in iter(lambda: handle.read(4096), ""):
            stripped = chunk.lstrip()
            if stripped:
                return stripped[0]
    return ""


def _numbered_lines(path: Path) -> Iterator[tuple[int, str]]:
    """Yield (1-based line number, line) with lines split at line feeds only, as JSON Lines are.

    `str.splitlines` would also split at U+2028 and other characters that JSON allows inside
    strings, which would shift the line numbers.
    """
    with path.open(encoding="utf-8-sig", newline="") as handle:
        for number, line in enumerate(handle, start=1):
            yield number, line.rstrip("\r\n")


def _has_only_empty_objects(path: Path) -> bool:
    """Return whether every non-blank line of a JSON Lines file is `{}`, and there is one."""
    found = False
    try:
        for _, line in _numbered_lines(path):
            if not line.strip():
                continue
            if json.loads(line) != {}:
                return False
            found = True
    except (ValueError, RecursionError):
        return False
    return found


def not_utf8(path: Path, source: str) -> DatasetError:
    """Return the error for a file that is not UTF-8, naming the line of the first bad byte."""
    return find_invalid_utf8(path, source) or DatasetError(f"{source}: invalid UTF-8; save the file as UTF-8")


def find_invalid_utf8(path: Path, source: str) -> DatasetError | None:
    """Decode the file as a stream; return an error naming the line of the first invalid byte.

    Returns None for a valid UTF-8 file.
    """
    decoder = codecs.getincrementaldecoder("utf-8")()
    line = 1
    with path.open("rb") as handle:
        for chunk in iter(lambda: handle.read(_CHUNK_BYTES), b""):
            try:
                decoder.decode(chunk)
            except UnicodeDecodeError as error:
                # `error.object` is the bytes the decoder kept from the last chunk (the start of
                # a character, never a line feed) followed by this chunk.
                carried_over = len(error.object) - len(chunk)
                line += chunk[: max(error.start - carried_over, 0)].count(b"\n")
                return DatasetError(
                    f"{source}: line {line}: invalid UTF-8 (byte 0x{error.object[error.start]:02x}); "
                    "save the file as UTF-8"
                )
            line += chunk.count(b"\n")
        try:
            decoder.decode(b"", final=True)
        except UnicodeDecodeError:
            return DatasetError(
                f"{source}: line {line}: invalid UTF-8 (the file ends inside a character); save the file as UTF-8"
            )
    return None


def csv_header(path: Path, source: str) -> list[str]:
    """Read and check the header row of a CSV file; return its column names.

    A UTF-8 byte order mark before the header is dropped.
    """
    try:
        with path.open(encoding="utf-8-sig", newline="") as handle, _large_csv_fields():
            header = next(csv.reader(handle), None)
    except UnicodeDecodeError as error:
        raise not_utf8(path, source) from error
    except csv.Error as error:
        raise DatasetError(f"{source}: line 1: invalid CSV header ({error})") from error
    if not header:
        raise DatasetError(f"{source}: {NO_RECORDS}")
    if any(not name for name in header):
        raise DatasetError(f"{source}: line 1: the header has an empty column name; name every column")
    if any("\x00" in name for name in header):
        raise DatasetError(f"{source}: line 1: the header contains a NUL character; remove it")
    repeated = sorted({name for name in header if header.count(name) > 1})
    if repeated:
        raise DatasetError(f"{source}: line 1: column names repeat ({', '.join(repeated)}); make them unique")
    return header


def check_csv_rows(path: Path, source: str, width: int) -> None:
    """Raise DatasetError for the first data row whose field count differs from the header's.

    pandas rejects rows with too many fields but fills missing fields of short rows with
    empty values, which would turn a broken row into a record with an empty response.
    Blank lines are ignored, as pandas ignores them.
    """
    with path.open(encoding="utf-8-sig", newline="") as handle, _large_csv_fields():
        reader = csv.reader(handle)
        next(reader, None)
        start = reader.line_num + 1
        try:
            for row in reader:
                if row and len(row) != width:
                    noun = "field" if len(row) == 1 else "fields"
                    raise DatasetError(
                        f"{source}: line {start}: {len(row)} {noun} where the header has {width}; "
                        "give every row one value per column (quote values that contain commas)"
                    )
                start = reader.line_num + 1
        except csv.Error as error:
            raise DatasetError(f"{source}: line {start}: invalid CSV ({error})") from None


@contextlib.contextmanager
def _large_csv_fields() -> Iterator[None]:
    """Lift the csv module's field size limit (128 KiB), which pandas does not have, for a while."""
    previous = csv.field_size_limit()
    csv.field_size_limit(sys.maxsize)
    try:
        yield
    finally:
        csv.field_size_limit(previous)


def exception_chain(error: BaseException) -> list[BaseException]:
    chain = [error]
    while True:
        cause = chain[-1].__cause__ or chain[-1].__context__
        if cause is None or cause in chain:
            return chain
        chain.append(cause)


def innermost_message(error: BaseException) -> str:
    """Return the first non-empty line of the deepest message in the exception chain."""
    for link in reversed(exception_chain(error)):
        lines = [line.strip() for line in str(link).splitlines() if line.strip()]
        if lines:
            return lines[0]
    return type(error).__name__
