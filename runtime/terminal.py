"""How dlc writes to a terminal, for every part of the runtime that shows progress (a
training run, a data set's download, a compile): times as precise as their size asks, the
terminal's width, how often a line is redrawn."""

from __future__ import annotations

import os
import shutil

REDRAW_S = 0.1  # a progress line is redrawn at most ten times a second


def span(seconds: float) -> str:
    """A time as precise as its size asks: `8 ms`, `0.43 s`, `12.3 s`, `1:02`, `1h02m`."""
    if seconds < 0.0995:
        ms = seconds * 1e3
        return f"{ms:.2g} ms" if ms < 9.95 else f"{ms:.0f} ms"
    if seconds < 9.995:
        return f"{seconds:.2f} s"
    return f"{seconds:.1f} s" if seconds < 59.95 else duration(seconds)


def duration(seconds: float) -> str:
    seconds = int(seconds)
    return f"{seconds // 3600}h{seconds // 60 % 60:02d}m" if seconds >= 3600 else f"{seconds // 60}:{seconds % 60:02d}"


def terminal_width(stream) -> int:
    """The columns of the terminal `stream` writes to: $COLUMNS, else the terminal's own
    width (shutil asks stdout's, which may be a file while stderr is the terminal), else 80."""
    if "COLUMNS" not in os.environ:
        try:
            columns = os.get_terminal_size(stream.fileno()).columns
            if columns > 0:
                return columns
        except (AttributeError, OSError, ValueError):
            pass
    return shutil.get_terminal_size((80, 24)).columns
