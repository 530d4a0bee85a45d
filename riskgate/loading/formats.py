"""Dataset formats: detection from column names, column mapping and per-record validation.

Every row of a file is turned into a `Record` or a `SkippedRecord`, or yields a problem. All
rows are checked, and the problems are raised together in one `InvalidRecordsError`, so a user
fixes a file in one pass. Rows are plain dicts (as `datasets.Dataset` returns them), read one
at a time, so this module needs no heavy imports and never keeps a whole file in memory.

Column mapping: a dict from a canonical key to the name the file uses. The canonical keys are
listed in `COLUMN_KEYS`. Most map a column. `role` and `content` name the keys inside each turn
object of a chat list. `system_role`, `user_role` and `assistant_role` name a speaker that the
file calls differently, and that name is accepted in addition to the standard ones.
"""

from __future__ import annotations

import enum
import hashlib
from collections.abc import Collection, Iterable, Mapping, Sequence
from typing import Any

from riskgate.errors import DatasetError, UsageError
from riskgate.loading.records import Record, Role, SkippedRecord, Turn


class DatasetFormat(str, enum.Enum):
    """Layout of the records in a dataset file (`--dataset-format`)."""

    MESSAGES = "messages"
    """Chat: a `messages` list of {role, content} objects with roles system, user, assistant."""
    SHAREGPT = "sharegpt"
    """Chat: a `conversations` list of {from, value} objects, where from is human, gpt or
    system (user and assistant are accepted too). An optional `system` column adds a system turn."""
    ALPACA = "alpaca"
    """Single turn: `instruction`, an optional `input` (appended to the instruction after a
    blank line) and `output`. Optional `system` and `history` ([instruction, response] pairs
    before it) add turns. Dolly files (`instruction`, `context`, `response`) are read as Alpaca
    with input=context and output=response, unless those keys are mapped explicitly."""
    PROMPT_COMPLETION = "prompt_completion"
    """Single turn: `prompt` (the user turn), `completion` (the response) and an optional `system`."""
    TEXT = "text"
    """Plain text in a `text` column with no chat structure. Every token carries the loss."""


COLUMN_KEYS: dict[str, str] = {
    "messages": "column with the chat turns (messages format)",
    "conversations": "column with the chat turns (sharegpt format)",
    "instruction": "column with the instruction (alpaca format)",
    "input": "column with the optional input appended to the instruction (alpaca format)",
    "output": "column with the response (alpaca format)",
    "history": "column with earlier [instruction, response] pairs (alpaca format)",
    "prompt": "column with the prompt (prompt_completion format)",
    "completion": "column with the response (prompt_completion format)",
    "text": "column with plain text (text format)",
    "system": "column with an optional system prompt (alpaca, prompt_completion, sharegpt)",
    "role": "key of the speaker inside each turn object (default: role, or from for sharegpt)",
    "content": "key of the text inside each turn object (default: content, or value for sharegpt)",
    "system_role": "speaker name the file uses for system turns",
    "user_role": "speaker name the file uses for user turns",
    "assistant_role": "speaker name the file uses for assistant turns",
}

# Detection order: when a row has the columns of several formats, the first one wins. Chat and
# instruction layouts come before `text` because some Alpaca exports add a pre-rendered `text`.
DETECTION_ORDER = (
    DatasetFormat.MESSAGES,
    DatasetFormat.SHAREGPT,
    DatasetFormat.ALPACA,
    DatasetFormat.PROMPT_COMPLETION,
    DatasetFormat.TEXT,
)

_REQUIRED_KEYS: dict[DatasetFormat, tuple[str, ...]] = {
    DatasetFormat.MESSAGES: ("messages",),
    DatasetFormat.SHAREGPT: ("conversations",),
    DatasetFormat.ALPACA: ("instruction", "output"),
    DatasetFormat.PROMPT_COMPLETION: ("prompt", "completion"),
    DatasetFormat.TEXT: ("text",),
}
_OPTIONAL_KEYS: dict[DatasetFormat, tuple[str, ...]] = {
    DatasetFormat.MESSAGES: (),
    DatasetFormat.SHAREGPT: ("system",),
    DatasetFormat.ALPACA: ("input", "system", "history"),
    DatasetFormat.PROMPT_COMPLETION: ("system",),
    DatasetFormat.TEXT: (),
}
# Dolly-15k column names, used for Alpaca keys that are neither mapped nor present.
_DOLLY_COLUMNS = {"output": "response", "input": "context"}

_TURN_KEYS = {DatasetFormat.MESSAGES: ("role", "content"), DatasetFormat.SHAREGPT: ("from", "value")}
_SPEAKER_NAMES: dict[DatasetFormat, dict[str, Role]] = {
    DatasetFormat.MESSAGES: {"system": Role.SYSTEM, "user": Role.USER, "assistant": Role.ASSISTANT},
    DatasetFormat.SHAREGPT: {
        "system": Role.SYSTEM,
        "human": Role.USER,
        "gpt": Role.ASSISTANT,
        "user": Role.USER,
        "assistant": Role.ASSISTANT,
    },
}
_SPEAKER_KEYS = {"system_role": Role.SYSTEM, "user_role": Role.USER, "assistant_role": Role.ASSISTANT}
# Column-map keys that name something inside a turn object, not a column of the file.
_NON_COLUMN_KEYS = frozenset({"role", "content", *_SPEAKER_KEYS})

MAX_LISTED_PROBLEMS = 1000
"""Invalid records listed in `InvalidRecordsError.problems`; the rest are only counted."""

DIGEST_SIZE = 16
"""Bytes of the BLAKE2b digest that `record_digest` returns."""


class InvalidRecordsError(DatasetError):
    """One or more records of a dataset file are invalid.

    The message is the first problem plus a count of the others. `problems` lists the first
    `MAX_LISTED_PROBLEMS` invalid records, one line each; `count` is the number of all of them.
    """

    def __init__(self, problems: Sequence[str], count: int | None = None) -> None:
        self.problems: list[str] = list(problems)
        self.count: int = len(self.problems) if count is None else count
        message = self.problems[0]
        others = self.count - 1
        if others:
            noun = "record" if others == 1 else "records"
            message += f" (and {others} more invalid {noun})"
        super().__init__(message)


class RecordProblem(Exception):
    """A problem with one field of one row. Loaders collect these into an `InvalidRecordsError`."""


def validate_column_map(columns: Mapping[str, str] | None) -> dict[str, str]:
    """Check the keys and values of a column map and return it as a plain dict.

    Raises UsageError for an unknown key or a value that is not a non-empty string.
    """
    if not columns:
        return {}
    result: dict[str, str] = {}
    for key, column in columns.items():
        if key not in COLUMN_KEYS:
            known = ", ".join(COLUMN_KEYS)
            raise UsageError(f"--columns key '{key}' is unknown; expected one of {known}")
        if not isinstance(column, str) or not column:
            raise UsageError(f"--columns key '{key}' needs a non-empty column name, as in {key}=NAME")
        result[key] = column
    return result


def check_mapped_columns(available: Collection[str], columns: Mapping[str, str], source: str) -> None:
    """Raise DatasetError when a column that `columns` maps a key to is not in the file.

    Runs before format detection, so that a misspelt column name is reported as such rather
    than as a file whose format cannot be detected.
    """
    for key, column in columns.items():
        if key not in _NON_COLUMN_KEYS and column not in available:
            raise DatasetError(
                f"{source}: column '{column}' (mapped to '{key}' by --columns) not found; "
                f"the file has columns {_list_names(available)}"
            )


def read_columns(fmt: DatasetFormat, columns: Mapping[str, str]) -> list[str]:
    """Return the file columns that rows of `fmt` are read from, given the effective map."""
    keys = _REQUIRED_KEYS[fmt] + _OPTIONAL_KEYS[fmt]
    return list(dict.fromkeys(columns[key] for key in keys if key in columns))


def detection_columns(available: Collection[str], columns: Mapping[str, str]) -> list[str]:
    """Return the columns that `detect_format` reads from each row: every candidate's signature."""
    found: dict[str, None] = {}
    for fmt in DETECTION_ORDER:
        found.update(dict.fromkeys(_signature(fmt, available, columns) or ()))
    return list(found)


def resolve_columns(
    fmt: DatasetFormat,
    rows: Iterable[Mapping[str, Any]],
    available: Collection[str],
    columns: Mapping[str, str],
    source: str,
) -> dict[str, str]:
    """Map each canonical key of `fmt` to the file's column and return the effective map.

    The map has the present columns, and for chat formats the turn keys (`role`, `content`)
    and any `*_role` speaker names. Raises DatasetError when a mapped or required column is
    not in the file, and UsageError when a mapped key does not belong to `fmt`.
    """
    is_chat = fmt in _TURN_KEYS
    allowed = set(_REQUIRED_KEYS[fmt] + _OPTIONAL_KEYS[fmt])
    if is_chat:
        allowed |= {"role", "content", *_SPEAKER_KEYS}
    for key in columns:
        if key not in allowed:
            raise UsageError(
                f"--columns key '{key}' does not apply to format '{fmt.value}'; "
                f"its keys are {', '.join(sorted(allowed))}"
            )

    resolved: dict[str, str] = {}
    for key in _REQUIRED_KEYS[fmt] + _OPTIONAL_KEYS[fmt]:
        column = _column_for(fmt, key, available, columns)
        if key in columns and column is None:
            raise DatasetError(
                f"{source}: column '{columns[key]}' (mapped to '{key}' by --columns) not found; "
                f"the file has columns {_list_names(available)}"
            )
        if column is not None:
            resolved[key] = column
        elif key in _REQUIRED_KEYS[fmt]:
            raise DatasetError(
                f"{source}: format '{fmt.value}' needs a '{key}' column, but the file has columns "
                f"{_list_names(available)}; map another column with --columns {key}=NAME"
            )
    if is_chat:
        resolved.update(_resolve_turn_keys(fmt, rows, resolved[_REQUIRED_KEYS[fmt][0]], columns))
        resolved.update({key: columns[key] for key in _SPEAKER_KEYS if key in columns})
    return resolved


def detect_format(
    rows: Iterable[Mapping[str, Any]],
    available: Collection[str],
    columns: Mapping[str, str],
    source: str,
) -> DatasetFormat:
    """Detect the format from the columns present (after mapping) and the non-null values.

    Reads `rows` only when the columns of several formats are present, and then only the
    `detection_columns` of each row, up to the first row of a second format. Raises
    DatasetError when no format fits, or when rows of one file have different formats.
    """
    candidates = [fmt for fmt in DETECTION_ORDER if _signature(fmt, available, columns) is not None]
    if not candidates:
        raise DatasetError(
            f"{source}: cannot detect the dataset format from the columns {_list_names(available)}; "
            "expected messages, conversations, instruction+output (alpaca), "
            "instruction+response (dolly), prompt+completion or text; "
            "pass --dataset-format and map columns with --columns KEY=COLUMN"
        )
    if len(candidates) == 1:
        return candidates[0]

    # Several formats' columns exist; each row's non-null columns decide which format it has.
    signatures = {fmt: _signature(fmt, available, columns) or () for fmt in candidates}
    first_row_of: dict[DatasetFormat, int] = {}
    for index, row in enumerate(rows):
        for fmt in candidates:
            if all(row.get(column) is not None for column in signatures[fmt]):
                first_row_of.setdefault(fmt, index)
                break
        if len(first_row_of) > 1:
            break
    if len(first_row_of) > 1:
        (fmt_a, row_a), (fmt_b, row_b) = sorted(first_row_of.items(), key=lambda item: item[1])[:2]
        raise DatasetError(
            f"{source}: mixed formats: record {row_a} is {fmt_a.value} but record {row_b} is "
            f"{fmt_b.value}; put one format in each file, or pass --dataset-format to check "
            "every record against one format"
        )
    return next(iter(first_row_of), candidates[0])


def parse_row(
    row: Mapping[str, Any], index: int, fmt: DatasetFormat, columns: Mapping[str, str]
) -> Record | SkippedRecord:
    """Validate one row and return its `Record`, or a `SkippedRecord` when a response is empty.

    `index` is the row's 0-based position in the file. Raises RecordProblem, whose message
    names the field, for an invalid row.
    """
    turns, empty_field = _parse_row(row, fmt, columns)
    if empty_field is not None:
        return SkippedRecord(index=index, reason=f"empty response in field {empty_field}")
    return Record(index=index, turns=turns)


def record_digest(turns: Sequence[Turn]) -> bytes:
    """Return a 128-bit BLAKE2b digest of the turns, equal for records whose turns are equal.

    Each role and content is length-prefixed, so no two different turn lists hash the same
    bytes. Different turns share a digest only by a hash collision (chance about n^2 / 2^129
    among n records).
    """
    digest = hashlib.blake2b(digest_size=DIGEST_SIZE)
    for turn in turns:
        for part in (turn.role.value, turn.content):
            data = part.encode("utf-8", "surrogatepass")
            digest.update(len(data).to_bytes(8, "little"))
            digest.update(data)
    return digest.digest()


def _resolve_turn_keys(
    fmt: DatasetFormat, rows: Iterable[Mapping[str, Any]], column: str, columns: Mapping[str, str]
) -> dict[str, str]:
    """Choose the role and content keys of the turn objects of a chat format.

    Mapped keys win. Otherwise the format's own pair is used (role/content for messages,
    from/value for sharegpt), unless the first turn object in the file has only the other
    format's pair, which is common in converted sharegpt files.
    """
    own_role, own_content = _TURN_KEYS[fmt]
    if "role" in columns or "content" in columns:
        return {"role": columns.get("role", own_role), "content": columns.get("content", own_content)}
    for row in rows:
        turns = row.get(column)
        if isinstance(turns, list) and turns and isinstance(turns[0], dict):
            first = turns[0]
            for role_key, content_key in (_TURN_KEYS[fmt], *_TURN_KEYS.values()):
                if first.get(role_key) is not None and first.get(content_key) is not None:
                    return {"role": role_key, "content": content_key}
            break
    return {"role": own_role, "content": own_content}


def _column_for(
    fmt: DatasetFormat, key: str, available: Collection[str], columns: Mapping[str, str]
) -> str | None:
    if key in columns:
        return columns[key] if columns[key] in available else None
    if key in available:
        return key
    dolly = _DOLLY_COLUMNS.get(key)
    if fmt is DatasetFormat.ALPACA and dolly in available:
        return dolly
    return None


def _signature(
    fmt: DatasetFormat, available: Collection[str], columns: Mapping[str, str]
) -> tuple[str, ...] | None:
    found = [_column_for(fmt, key, available, columns) for key in _REQUIRED_KEYS[fmt]]
    if any(column is None for column in found):
        return None
    return tuple(column for column in found if column is not None)


def _parse_row(
    row: Mapping[str, Any], fmt: DatasetFormat, columns: Mapping[str, str]
) -> tuple[tuple[Turn, ...], str | None]:
    """Return the turns of a row and the field of its first empty response (None if none)."""
    if fmt in (DatasetFormat.MESSAGES, DatasetFormat.SHAREGPT):
        turns, labels = _parse_chat(row, fmt, columns)
    elif fmt is DatasetFormat.TEXT:
        turns, labels = [Turn(Role.TEXT, _required_text(row, "text", columns))], [_label("text", columns)]
    else:
        turns, labels = _parse_single_turn(row, fmt, columns)

    for turn, label in zip(turns, labels):
        if turn.role in (Role.ASSISTANT, Role.TEXT) and not turn.content.strip():
            return tuple(turns), label
    return tuple(turns), None


def _parse_single_turn(
    row: Mapping[str, Any], fmt: DatasetFormat, columns: Mapping[str, str]
) -> tuple[list[Turn], list[str]]:
    """Parse an Alpaca or prompt/completion row into turns and the field of each turn."""
    turns: list[Turn] = []
    labels: list[str] = []
    system = _optional_text(row, "system", columns)
    if system:
        turns.append(Turn(Role.SYSTEM, system))
        labels.append(_label("system", columns))

    if fmt is DatasetFormat.ALPACA:
        history_turns, history_labels = _parse_history(row, columns)
        turns += history_turns
        labels += history_labels
        user = _required_text(row, "instruction", columns)
        extra = _optional_text(row, "input", columns)
        if extra and extra.strip():
            user = f"{user}\n\n{extra}"
        user_key, response_key = "instruction", "output"
    else:
        user = _required_text(row, "prompt", columns)
        user_key, response_key = "prompt", "completion"

    response = _required_text(row, response_key, columns)
    turns += [Turn(Role.USER, user), Turn(Role.ASSISTANT, response)]
    labels += [_label(user_key, columns), _label(response_key, columns)]
    return turns, labels


def _parse_history(row: Mapping[str, Any], columns: Mapping[str, str]) -> tuple[list[Turn], list[str]]:
    if "history" not in columns or row.get(columns["history"]) is None:
        return [], []
    column = columns["history"]
    value = row[column]
    if not isinstance(value, list):
        raise RecordProblem(
            f"field '{column}' is {_describe(value)}; expected a list of [instruction, response] pairs"
        )
    turns: list[Turn] = []
    labels: list[str] = []
    for i, pair in enumerate(value):
        if not (isinstance(pair, list) and len(pair) == 2 and all(isinstance(p, str) for p in pair)):
            raise RecordProblem(
                f"field '{column}[{i}]' is {_describe(pair)}; expected a pair of strings "
                "[instruction, response]"
            )
        turns += [Turn(Role.USER, pair[0]), Turn(Role.ASSISTANT, pair[1])]
        labels += [f"'{column}[{i}][0]'", f"'{column}[{i}][1]'"]
    return turns, labels


def _parse_chat(
    row: Mapping[str, Any], fmt: DatasetFormat, columns: Mapping[str, str]
) -> tuple[list[Turn], list[str]]:
    """Parse a messages or sharegpt row into turns and the content field of each turn."""
    column = columns[_REQUIRED_KEYS[fmt][0]]
    role_key, content_key = columns["role"], columns["content"]
    speakers = dict(_SPEAKER_NAMES[fmt])
    speakers.update({columns[key]: role for key, role in _SPEAKER_KEYS.items() if key in columns})

    value = row.get(column)
    if value is None:
        raise RecordProblem(f"field '{column}' is missing")
    if not isinstance(value, list):
        raise RecordProblem(
            f"field '{column}' is {_describe(value)}; expected a list of "
            f"{{{role_key}, {content_key}}} objects"
        )
    if not value:
        raise RecordProblem(f"field '{column}' is an empty list; expected user and assistant turns")

    turns: list[Turn] = []
    paths: list[str] = []
    system = _optional_text(row, "system", columns)
    if system:
        turns.append(Turn(Role.SYSTEM, system))
        paths.append(f"'{columns['system']}'")
    for i, item in enumerate(value):
        path = f"{column}[{i}]"
        if not isinstance(item, dict):
            raise RecordProblem(
                f"field '{path}' is {_describe(item)}; expected an object with keys "
                f"'{role_key}' and '{content_key}'"
            )
        name = item.get(role_key)
        if not isinstance(name, str):
            raise _wrong_type(f"'{path}.{role_key}'", name, "a string")
        role = speakers.get(name)
        if role is None:
            raise RecordProblem(
                f"field '{path}.{role_key}' is '{name}'; expected one of {', '.join(speakers)} "
                f"(map other names with --columns assistant_role={name} or user_role={name})"
            )
        content = item.get(content_key)
        if not isinstance(content, str):
            raise _wrong_type(f"'{path}.{content_key}'", content, "a string")
        turns.append(Turn(role, content))
        paths.append(f"'{path}.{content_key}'")

    _check_turn_order(turns, column, role_key, first_list_turn=len(turns) - len(value))
    return turns, paths


def _check_turn_order(turns: list[Turn], column: str, role_key: str, first_list_turn: int) -> None:
    """Require an optional system turn, then user/assistant alternating, ending with assistant."""
    expected = Role.USER
    for position, turn in enumerate(turns):
        path = f"{column}[{position - first_list_turn}].{role_key}"
        if position == 0 and turn.role is Role.SYSTEM:
            continue
        if turn.role is Role.SYSTEM:
            raise RecordProblem(
                f"field '{path}' is a system turn after the start; only the first turn may be a system turn"
            )
        if turn.role is not expected:
            raise RecordProblem(
                f"field '{path}' is {_with_article(turn.role)} turn where {_with_article(expected)} "
                "turn belongs; turns must alternate user and assistant, starting with user, after an "
                "optional system turn"
            )
        expected = Role.ASSISTANT if expected is Role.USER else Role.USER
    if turns[-1].role is not Role.ASSISTANT:
        raise RecordProblem(
            f"field '{column}' ends with {_with_article(turns[-1].role)} turn; the last turn must be the "
            "assistant's response"
        )


def _required_text(row: Mapping[str, Any], key: str, columns: Mapping[str, str]) -> str:
    value = row.get(columns[key])
    if not isinstance(value, str):
        raise _wrong_type(_label(key, columns), value, "a string")
    return value


def _optional_text(row: Mapping[str, Any], key: str, columns: Mapping[str, str]) -> str | None:
    if key not in columns or row.get(columns[key]) is None:
        return None
    return _required_text(row, key, columns)


def _with_article(role: Role) -> str:
    return f"an {role.value}" if role is Role.ASSISTANT else f"a {role.value}"


def _label(key: str, columns: Mapping[str, str]) -> str:
    column = columns.get(key, key)
    return f"'{column}'" if column == key else f"'{column}' ({key})"


def _wrong_type(label: str, value: Any, expected: str) -> RecordProblem:
    if value is None:
        return RecordProblem(f"field {label} is missing")
    return RecordProblem(f"field {label} is {_describe(value)}; expected {expected}")


def _describe(value: Any) -> str:
    if value is None:
        return "missing"
    if isinstance(value, bool):
        return f"a boolean ({str(value).lower()})"
    if isinstance(value, (int, float)):
        return f"a number ({value})"
    if isinstance(value, str):
        return f"a string ({value[:40]!r})"
    if isinstance(value, list):
        return "a list"
    if isinstance(value, dict):
        return "an object"
    return f"a {type(value).__name__}"


def _list_names(names: Collection[str]) -> str:
    return ", ".join(f"'{name}'" for name in names) if names else "(none)"
