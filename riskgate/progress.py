"""Progress reporting interface between the Python API and whatever displays it."""

from __future__ import annotations

from typing import Protocol


class Progress(Protocol):
    """Receives stage starts, per-item updates and stage ends from `riskgate.check`."""

    def start(self, stage: str, total: int | None = None) -> None: ...

    def update(self, done: int, total: int) -> None: ...

    def finish(self, stage: str) -> None: ...


class NullProgress:
    """Progress sink that discards everything (the API default)."""

    def start(self, stage: str, total: int | None = None) -> None:
        pass

    def update(self, done: int, total: int) -> None:
        pass

    def finish(self, stage: str) -> None:
        pass
