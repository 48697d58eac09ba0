"""A call back into the host between kernels (replica_mean's allreduce, a bucket of gradients)."""
from __future__ import annotations

from dataclasses import dataclass

from dlc.compiler.native import render
from dlc.compiler.native.program import Kernel


@dataclass
class HostCallKernel(Kernel):
    """Call back into the host between kernels: function(buffer, its element count), which
    rewrites the f32 buffer in place (replica_mean: an allreduce over the ranks). The
    function's address is the pointer-table entry of buffer `host` (of kind "host").
    `more`: the other buffers the host reads and writes (a bucket of gradients,
    compiler/native/buckets.py: `buffer` is its first, from which the host finds the rest)."""
    host: int
    buffer: int
    more: tuple = ()

    def text(self) -> list:
        touched = ", ".join(f"b{b}" for b in (self.buffer, *self.more))
        return [f"host_call b{self.host}({touched}): in place{render.located(self)}"]

    def accesses(self) -> tuple:
        return {self.buffer, *self.more}, {self.buffer, *self.more}

    def emit(self, f):
        from dlc.compiler.native.loops import host_call
        kb = f.serial()
        host_call(kb, self, f.prog)
        return kb
