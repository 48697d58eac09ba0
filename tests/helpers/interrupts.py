"""Ctrl-C pressed while llvmlite frees a string it returned (compiler/native/codegen/interrupts.py):
llvmlite's library replaced by one whose first free of a string in the main thread sends SIGINT
as it returns (another thread's, a compile in the background, is left alone)."""

import os
import signal
import threading

from llvmlite.binding import ffi


class InterruptedAtFree:
    """`frees`: every pointer llvmlite frees from now on in this test; `interrupted`: the one
    whose free sent SIGINT (None before)."""

    def __init__(self, monkeypatch):
        self.real, self.frees, self.interrupted = ffi.lib, [], None
        monkeypatch.setattr(ffi, "lib", self)

    def __getattr__(self, name):
        return getattr(self.real, name)

    def LLVMPY_DisposeString(self, pointer):
        self.frees.append(pointer)
        self.real.LLVMPY_DisposeString(pointer)
        if self.interrupted is None and threading.current_thread() is threading.main_thread():
            self.interrupted = pointer
            os.kill(os.getpid(), signal.SIGINT)  # the handler runs as this returns

    def freed_once(self) -> bool:
        """Whether the string freed as Ctrl-C landed was freed once, not again by its __del__."""
        return self.interrupted is not None and self.frees.count(self.interrupted) == 1
