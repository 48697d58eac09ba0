"""Ctrl-C put off while llvmlite's binding code runs. llvmlite frees its C objects in Python
code that an exception can cut in half (`OutputString.close` frees the string, then forgets
it; cut between, its `__del__` frees it again and the process dies of a double free). An
interrupt that lands there is sent again 10 ms later, and again, until it finds Python outside
llvmlite; LLVM's own work is not Python and is never cut. Otherwise it raises
KeyboardInterrupt, as Python's own handler does.

`dlc`'s commands install such a handler for their run (runtime/cli); the JIT installs one in
place of Python's own when it starts in the main thread (`guard`), for the Python API (an
interrupted notebook cell while a model compiles). A handler the program set is left alone."""

from __future__ import annotations

import signal
import threading


def putting_off_llvmlite(seen: list | None = None):
    """A SIGINT handler that raises KeyboardInterrupt, but inside llvmlite's binding code
    sends the signal again 10 ms later; each interrupt that lands appended to `seen`."""

    def handler(signum, frame):
        if seen is not None:
            seen.append(signum)
        if _inside_llvmlite(frame):
            again = threading.Timer(0.01, _send_again, (handler, signum))
            again.daemon = True
            again.start()
            return
        raise KeyboardInterrupt

    handler.puts_off_llvmlite = True
    return handler


def pythons_own(handler) -> bool:
    """Whether a SIGINT handler raises KeyboardInterrupt as Python's own does: Python's, or one
    of these."""
    return handler is signal.default_int_handler or getattr(handler, "puts_off_llvmlite", False)


def guard() -> None:
    """Python's own SIGINT handler replaced by one that puts off an interrupt inside llvmlite,
    where it is the handler and this is the main thread (only there can a handler be set)."""
    if threading.current_thread() is threading.main_thread() and signal.getsignal(signal.SIGINT) is (
        signal.default_int_handler
    ):
        signal.signal(signal.SIGINT, putting_off_llvmlite())


def _send_again(handler, signum):
    """The signal again, to the main thread: sent to the process, another thread may take it,
    and a main thread asleep would not wake to run the handler."""
    if signal.getsignal(signum) is handler:  # else it was replaced: whoever did saw the interrupt
        signal.pthread_kill(threading.main_thread().ident, signum)


def _inside_llvmlite(frame) -> bool:
    while frame is not None:
        if frame.f_globals.get("__name__", "").startswith("llvmlite.binding"):
            return True
        frame = frame.f_back
    return False
