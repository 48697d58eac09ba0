"""Ctrl-C during a training run (`Interrupt`)."""

from __future__ import annotations

import signal


class Interrupt:
    """Ctrl-C asks the loop to stop after the current step instead of killing it mid-update.
    The ranks of a distributed run stop after the same step: `agreed` is then what they
    agreed after the last one (runtime/engines/distributed.py), and a Ctrl-C that came later
    counts at the next."""

    def __init__(self):
        self.asked = False
        self.agreed = None

    @property
    def requested(self) -> bool:
        return self.asked if self.agreed is None else self.agreed

    def __enter__(self):
        def handler(signum, frame):
            if self.asked:  # a second Ctrl-C: stop now
                raise KeyboardInterrupt
            self.asked = True

        try:
            self.previous = signal.signal(signal.SIGINT, handler)
        except ValueError:  # not the main thread: no handler, plain KeyboardInterrupt
            self.previous = None
        return self

    def __exit__(self, *exc):
        if self.previous is not None:
            signal.signal(signal.SIGINT, self.previous)
        return False
