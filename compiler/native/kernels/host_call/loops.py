"""The host call (kernels/host_call), in LLVM IR."""

from __future__ import annotations

from llvmlite import ir

from dlc.compiler.native.codegen.builder import KernelBuilder
from dlc.compiler.native.program import KernelProgram
from dlc.compiler.native.codegen.types import f32, i64


def host_call(kb: KernelBuilder, k, prog: KernelProgram):
    """function(buffer, n) with n the buffer's own size, so the host is never told of
    elements the buffer does not have. It runs on the calling thread, between kernels
    (outside every parallel region)."""
    signature = ir.FunctionType(ir.VoidType(), [f32.as_pointer(), i64])
    function = kb.b.bitcast(kb.argument(k.host), signature.as_pointer())
    kb.b.call(function, [kb.buffer(k.buffer, "f32"), kb.dim(prog.buffers[k.buffer].size)])
