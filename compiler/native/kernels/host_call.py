"""A call back into the host between kernels (replica_mean's allreduce)."""
from __future__ import annotations

from dataclasses import dataclass

from dlc.compiler.native import render
from dlc.compiler.native.program import Kernel


@dataclass
class HostCallKernel(Kernel):
    """Call back into the host between kernels: function(buffer, its element count), which
    rewrites the f32 buffer in place (replica_mean: an allreduce over the ranks). The
    function's address is the pointer-table entry of buffer `host` (of kind "host")."""
    host: int
    buffer: int

    def text(self) -> list:
        return [f"host_call b{self.host}(b{self.buffer}): in place{render.located(self)}"]

    def accesses(self) -> tuple:
        return {self.buffer}, {self.buffer}

    def emit(self, f):
        from dlc.compiler.native.loops import host_call
        kb = f.serial()
        host_call(kb, self, f.prog)
        return kb
