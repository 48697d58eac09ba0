"""User-facing errors: every message carries a source span and renders as
`file:line:col: error: ...` followed by the source line and a caret."""
from __future__ import annotations

from dataclasses import dataclass

_SOURCES: dict[str, list[str]] = {}


def register_source(filename: str, text: str) -> None:
    _SOURCES[filename] = text.splitlines()


@dataclass(frozen=True)
class Span:
    file: str
    line: int
    col: int
    end_line: int = 0
    end_col: int = 0

    def __str__(self) -> str:
        return f"{self.file}:{self.line}:{self.col}"

    def short(self) -> str:
        return f"{self.line}:{self.col}"

    def source_line(self) -> str | None:
        lines = _SOURCES.get(self.file)
        if lines and 0 < self.line <= len(lines):
            return lines[self.line - 1]
        return None


class DlcError(Exception):
    """An error in the user's program or input, reported without a traceback."""

    def __init__(self, message: str, span: Span | None = None, notes: list[tuple[str, Span | None]] = ()):
        super().__init__(message)
        self.message = message
        self.span = span
        self.notes = list(notes)

    def render(self) -> str:
        out = [_located("error", self.message, self.span)]
        for note, span in self.notes:
            out.append(_located("note", note, span))
        return "\n".join(out)


def _located(kind: str, message: str, span: Span | None) -> str:
    if span is None:
        return f"{kind}: {message}"
    text = f"{span}: {kind}: {message}"
    line = span.source_line()
    if line is not None:
        width = 1
        if span.end_line == span.line and span.end_col > span.col:
            width = span.end_col - span.col
        text += f"\n    {line}\n    {' ' * (span.col - 1)}{'^' * max(1, min(width, len(line) - span.col + 1))}"
    return text
