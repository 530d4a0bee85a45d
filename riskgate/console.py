"""One console wrapper for all user-facing output of the CLI.

Honours NO_COLOR and FORCE_COLOR (through rich), shows live progress bars only on an
interactive terminal outside CI, and falls back to plain log lines otherwise. User text is
never interpreted as rich markup.
"""

from __future__ import annotations

import os
import sys
import time

from rich.console import Console as RichConsole
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table
from rich.text import Text


def running_in_ci() -> bool:
    return os.environ.get("CI", "").lower() in {"1", "true", "yes"} or "GITHUB_ACTIONS" in os.environ


class Console:
    """stdout for results, stderr for progress and errors; `verbosity` -1 quiet, 0 normal, 1+ verbose."""

    def __init__(self, verbosity: int = 0, progress: bool = True) -> None:
        self.verbosity = verbosity
        self.out = RichConsole(highlight=False, soft_wrap=True)
        self.err = RichConsole(stderr=True, highlight=False, soft_wrap=True)
        self.live = progress and verbosity >= 0 and self.err.is_terminal and not running_in_ci()

    def info(self, message: str) -> None:
        if self.verbosity >= 0:
            self.err.print(Text(message))

    def error(self, message: str) -> None:
        self.err.print(Text(message, style="bold red"))

    def result(self, renderable) -> None:
        """Print to stdout; strings are printed literally."""
        self.out.print(Text(renderable) if isinstance(renderable, str) else renderable)

    def table(self, title: str, rows: list[tuple[str, str]]) -> Table:
        table = Table(title=title, show_header=False, title_justify="left")
        table.add_column(style="bold")
        table.add_column()
        for key, value in rows:
            table.add_row(Text(key), Text(value))
        return table

    def progress(self) -> "ConsoleProgress":
        return ConsoleProgress(self)


class ConsoleProgress:
    """Implements `riskgate.progress.Progress`: rich bars on a terminal, log lines elsewhere."""

    LOG_EVERY_S = 10.0

    def __init__(self, console: Console) -> None:
        self.console = console
        self._bars: Progress | None = None
        self._task = None
        self._stage = ""
        self._started = 0.0
        self._last_log = 0.0

    def __enter__(self) -> "ConsoleProgress":
        if self.console.live:
            self._bars = Progress(
                TextColumn("{task.description}"),
                BarColumn(),
                MofNCompleteColumn(),
                TimeElapsedColumn(),
                console=self.console.err,
                transient=False,
            )
            self._bars.start()
        return self

    def __exit__(self, *exc_info) -> None:
        if self._bars is not None:
            self._bars.stop()

    def start(self, stage: str, total: int | None = None) -> None:
        self._stage = stage
        self._started = self._last_log = time.monotonic()
        if self._bars is not None:
            self._task = self._bars.add_task(stage, total=total)
        elif self.console.verbosity >= 0:
            suffix = f" ({total} items)" if total else ""
            self.console.err.print(Text(f"riskgate: {stage}{suffix} ..."))

    def update(self, done: int, total: int) -> None:
        if self._bars is not None and self._task is not None:
            self._bars.update(self._task, completed=done, total=total)
            return
        now = time.monotonic()
        if self.console.verbosity >= 0 and now - self._last_log >= self.LOG_EVERY_S and done < total:
            self._last_log = now
            self.console.err.print(Text(f"riskgate: {self._stage}: {done}/{total}"))

    def finish(self, stage: str) -> None:
        elapsed = time.monotonic() - self._started
        if self._bars is not None and self._task is not None:
            task = self._bars.tasks[-1]
            self._bars.update(self._task, completed=task.total or 1, total=task.total or 1)
            self._task = None
        elif self.console.verbosity >= 0:
            self.console.err.print(Text(f"riskgate: {stage} done in {elapsed:.1f} s"))


def stdout_is_terminal() -> bool:
    return sys.stdout.isatty()
