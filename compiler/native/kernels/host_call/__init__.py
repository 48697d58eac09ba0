"""A call back into the host between kernels (replica_mean's allreduce, a bucket of
gradients), and the lowering rule of replica_mean. The call is in loops.py."""

from __future__ import annotations

from dataclasses import dataclass

from dlc.compiler.ir.dims import numel
from dlc.compiler.native.kernels.map import MapKernel
from dlc.compiler.native.program import Affine, Kernel, contiguous, render, row_major
from dlc.compiler.native.program.registry import register_lowering


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
        from dlc.compiler.native.kernels.host_call.loops import host_call

        kb = f.serial()
        host_call(kb, self, f.prog)
        return kb


# ---- lowering rules ------------------------------------------------------------------------------
@register_lowering("replica_mean", floats=("f32",))
def _replica_mean(lw, n, ins, attrs, typ):
    """A copy of x, which the host then averages over the ranks in place."""
    buf = lw.p.buffer(typ.dtype, numel(typ.shape), "temp")
    lw.emit(MapKernel(typ.shape, buf.id, Affine(0, row_major(typ.shape)), lw.use(ins[0]), node=n))
    lw.emit(HostCallKernel(lw.p.host("replica_mean").id, buf.id, node=n))
    lw.set(n, contiguous(buf.id, typ.shape, typ.dtype))
