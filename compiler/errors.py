"""User-facing errors: every message carries a source span and renders as
`file:line:col: error: ...` followed by the source line and a caret."""

from __future__ import annotations

import difflib
import functools
import json
import re
from dataclasses import dataclass, field

_SOURCES: dict[str, list[str]] = {}


def register_source(filename: str, text: str) -> None:
    _SOURCES[filename] = text.splitlines()


def source_lines(filename: str) -> list[str] | None:
    """The lines of a loaded file (a program's file, an import, the standard library's)."""
    return _SOURCES.get(filename)


STDLIB_PREFIX = "<stdlib>/"


@dataclass(frozen=True)
class Span:
    file: str
    line: int
    col: int
    end_line: int = 0
    end_col: int = 0
    # for a place in the standard library: the user's call that led there (set as graph
    # nodes are emitted, see Graph.at), so run-time errors can point at the user's line
    caller: "Span | None" = field(default=None, compare=False, repr=False)
    # and the library's own calls between this place and the user's call, innermost first
    calls: tuple = field(default=(), compare=False, repr=False)

    def in_stdlib(self) -> bool:
        return self.file.startswith(STDLIB_PREFIX)

    def called_from(self, outer: "Span | None", calls: tuple = ()) -> "Span":
        """This span, remembering the user's call when it lies in the standard library, and
        `calls`, the library's calls it lies inside (Graph.calls)."""
        if outer is None or not self.in_stdlib():
            return self
        return _with_caller(self, outer.caller if outer.in_stdlib() else outer, calls)

    @classmethod
    def whole(cls, name: str) -> "Span":
        """The place of a whole file or flag, no line in it: an error there reads `NAME: error: ...`."""
        return cls(str(name), 0, 0)

    def __str__(self) -> str:
        return self.file if self.line == 0 else f"{self.file}:{self.line}:{self.col}"

    def short(self) -> str:
        return f"{self.line}:{self.col}"

    def place(self) -> str:
        """The file's name and the line: `layers.dl:53`."""
        return f"{self.file.rsplit('/', 1)[-1]}:{self.line}"

    def source_line(self) -> str | None:
        lines = source_lines(self.file)
        if lines and 0 < self.line <= len(lines):
            return lines[self.line - 1]
        return None

    def text(self) -> str | None:
        """The source text of a span on one line (None for others)."""
        line = self.source_line()
        if line is None or self.end_line != self.line:
            return None
        return line[self.col - 1 : self.end_col - 1]


def name_span(span: Span, name: str) -> Span:
    """The place of `name` as written first in the source from the start of `span`: the
    name a statement binds (`h` in `h = dense(x, 4)`, `x` in `input x: ...`)."""
    lines = source_lines(span.file) or []
    pattern = re.compile(rf"(?<![\w]){re.escape(name)}(?![\w])")
    for line in range(span.line, (span.end_line or span.line) + 1):
        if not 0 < line <= len(lines):
            break
        m = pattern.search(lines[line - 1], span.col - 1 if line == span.line else 0)
        if m:
            return Span(span.file, line, m.start() + 1, line, m.end() + 1)
    return Span(span.file, span.line, span.col, span.line, span.col + len(name))


@functools.lru_cache(maxsize=1 << 16)
def _with_caller(span: Span, caller: Span | None, calls: tuple) -> Span:
    # one Span per (standard-library place, user's call, the library's calls): a build enters
    # a place for every expression it evaluates there. The key is exact: a caller, a place in
    # the user's files, and the calls, places without callers, have none of their own (the
    # hash leaves `caller` and `calls` out)
    return Span(span.file, span.line, span.col, span.end_line, span.end_col, caller, calls)


class DlcError(Exception):
    """An error in the user's program or input, reported without a traceback."""

    @classmethod
    def at_user_line(cls, message: str, span: Span | None) -> "DlcError":
        """An error found while running: located at the user's line, with the standard
        library's line as a note when the operation comes from there, and a note at each of
        the library's calls that led from the user's call to it (`called_from_notes`)."""
        if span is None or span.caller is None:
            return cls(message, span)
        return cls(message, span.caller, [("inside the standard library here", span), *called_from_notes(span.calls)])

    def __init__(self, message: str, span: Span | None = None, notes: list[tuple[str, Span | None]] = ()):
        super().__init__(message)
        self.message = message
        self.span = span
        self.notes = list(notes)

    def render(self, kind: str = "error") -> str:
        """`file:line:col: error: ...` (or another kind: "warning"), the source line, the notes."""
        out = [_located(kind, self.message, self.span)]
        for note, span in self.notes:
            out.append(_located("note", note, span))
        return "\n".join(out)


def called_from_notes(calls) -> list:
    """A note at each call of the standard library, innermost first, that led from the user's
    call to a place in the library: the way back, as compilers show a template's instantiations."""
    return [("called from here", call) for call in calls]


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


def optional_package(module: str, extra: str, purpose: str):
    """Import a package of an optional extra, or say which extra to install."""
    import importlib

    try:
        return importlib.import_module(module)
    except ImportError:
        raise DlcError(f"{purpose} needs the '{module}' package: pip install \"dlc[{extra}]\"") from None


def plural(n: int, what: str) -> str:
    """`1 epoch`, `2 epochs`."""
    return f"{n} {what}" + ("" if n == 1 else "s")


def did_you_mean(name: str, candidates) -> str:
    """ "; did you mean 'x'?" for the candidate closest to a mistyped name (adma: adam,
    optimiser: optimizer), or for one the name starts with (activation: act); else ""."""
    close = difflib.get_close_matches(name, sorted(candidates), n=1, cutoff=0.75)
    if not close:
        close = sorted((c for c in candidates if len(c) >= 3 and name.startswith(c)), key=len, reverse=True)[:1]
    return f"; did you mean '{close[0]}'?" if close else ""


def json_document(text: str | bytes):
    """json.loads of a document dlc did not write itself (a config, a tokenizer, a data file, a
    cache entry): one nested deeper than Python's recursion reads is a ValueError, as any
    other JSON that does not read (json raises RecursionError), so that each reader's message
    for unreadable JSON covers it."""
    try:
        return json.loads(text)
    except RecursionError:
        raise ValueError("it is nested too deeply to read") from None
