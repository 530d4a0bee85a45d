"""Write the report files into the output folder, each one atomically."""

from __future__ import annotations

import contextlib
import os
import secrets
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from riskgate.errors import EnvironmentFailure, UsageError
from riskgate.report.github import GithubRenderer
from riskgate.report.html import HtmlRenderer
from riskgate.report.interface import Renderer, ReportFormat
from riskgate.report.json_format import JsonRenderer
from riskgate.report.junit import JunitRenderer
from riskgate.report.markdown import MarkdownRenderer
from riskgate.report.sarif import SarifRenderer

RENDERERS: dict[str, Renderer] = {
    renderer.name: renderer
    for renderer in (
        JsonRenderer(),
        MarkdownRenderer(),
        HtmlRenderer(),
        SarifRenderer(),
        JunitRenderer(),
        GithubRenderer(),
    )
}
TEMPORARY_NAME_ATTEMPTS = 16
DEFAULT_FORMATS: tuple[str, ...] = (ReportFormat.JSON.value, ReportFormat.MARKDOWN.value, ReportFormat.HTML.value)


def select_renderers(formats: Sequence[str]) -> list[Renderer]:
    """Return the renderers for `formats` in order, duplicates dropped.

    Raises:
        UsageError: a format is unknown; the message lists the valid ones.
    """
    selected: list[Renderer] = []
    for name in formats:
        key = name.value if isinstance(name, ReportFormat) else str(name)
        renderer = RENDERERS.get(key)
        if renderer is None:
            raise UsageError(f"--format {key!r}: unknown report format; choose from {', '.join(RENDERERS)}")
        if renderer not in selected:
            selected.append(renderer)
    return selected


def write_atomically(path: Path, text: str) -> None:
    """Write `text` as UTF-8 to `path` so that readers see the old file or the whole new one.

    The text goes to a temporary file in the same folder, is flushed to disk, and then
    replaces `path` with `os.replace`. The temporary file is removed if anything fails.
    OSError propagates to the caller.
    """
    descriptor, temporary_name = _create_temporary_file(path)
    try:
        with os.fdopen(descriptor, "w", encoding="utf-8", newline="\n") as handle:
            handle.write(text)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(temporary_name, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(temporary_name)
        raise


def _create_temporary_file(path: Path) -> tuple[int, str]:
    """Create an empty, uniquely named file next to `path` and open it for writing.

    Unlike `tempfile.mkstemp`, which always uses mode 0600, the file gets mode 0666 less
    the umask, so the report ends up with the permissions of any newly created file.
    """
    for _ in range(TEMPORARY_NAME_ATTEMPTS):
        name = str(path.parent / f".{path.name}.{secrets.token_hex(6)}.tmp")
        try:
            return os.open(name, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666), name
        except FileExistsError:
            continue
    raise FileExistsError(f"no free temporary file name next to {path}")


def _sync_folder(folder: Path) -> None:
    """Flush the folder entry of the replaced files to disk, where the platform allows it."""
    # NOTE: Windows cannot open a folder for fsync; the files themselves are synced already.
    if os.name != "posix":
        return
    descriptor = os.open(folder, os.O_RDONLY)
    try:
        os.fsync(descriptor)
    finally:
        os.close(descriptor)


def write_reports(
    report: dict[str, Any],
    output_dir: Path,
    formats: Sequence[str] = DEFAULT_FORMATS,
) -> dict[str, Path]:
    """Render `report` in each of `formats` and write the files into `output_dir`.

    The folder is created if needed. Every format is rendered before any file is written,
    so a rendering error leaves the folder as it was. Returns the path written per format.

    Raises:
        UsageError: a format is unknown.
        EnvironmentFailure: the folder cannot be created or a file cannot be written.
    """
    renderers = select_renderers(formats)
    texts = {renderer.name: (output_dir / renderer.filename, renderer.render(report)) for renderer in renderers}

    written: dict[str, Path] = {}
    current = output_dir
    try:
        output_dir.mkdir(parents=True, exist_ok=True)
        for name, (path, text) in texts.items():
            current = path
            write_atomically(path, text)
            written[name] = path
        current = output_dir
        _sync_folder(output_dir)
    except OSError as error:
        reason = error.strerror or str(error)
        raise EnvironmentFailure(
            f"{current}: cannot write the report ({reason}); choose a writable --output-dir"
        ) from error
    return written
