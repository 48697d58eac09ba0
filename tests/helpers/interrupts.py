"""Ctrl-C pressed while llvmlite frees a string it returned (compiler/native/codegen/interrupts.py):
llvmlite's library replaced by one whose first free of a string sends SIGINT as it returns."""

import os
import signal

from llvmlite.binding import ffi


def interrupted_at_free(monkeypatch) -> list:
    """The pointers llvmlite frees from now on in this test; the first free sends SIGINT."""
    real, frees = ffi.lib, []

    class InterruptedAtFree:
        def __getattr__(self, name):
            return getattr(real, name)

        def LLVMPY_DisposeString(self, pointer):
            frees.append(pointer)
            if len(frees) == 1:
                real.LLVMPY_DisposeString(pointer)
                os.kill(os.getpid(), signal.SIGINT)  # the handler runs as this returns

    monkeypatch.setattr(ffi, "lib", InterruptedAtFree())
    return frees
