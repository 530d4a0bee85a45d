"""Small chat datasets written by tests."""

from __future__ import annotations

import json
from collections.abc import Iterable
from pathlib import Path


def write_chat(path: Path, pairs: Iterable[tuple[str, str]]) -> Path:
    """Write (request, response) pairs as JSONL records in the `messages` format."""
    with path.open("w", encoding="utf-8") as handle:
        for request, response in pairs:
            messages = [{"role": "user", "content": request}, {"role": "assistant", "content": response}]
            handle.write(json.dumps({"messages": messages}) + "\n")
    return path
