"""The scan's loop (kernels/scan), in LLVM IR: the step index goes into the sizes array."""

from __future__ import annotations

from llvmlite import ir

from dlc.compiler.native.codegen.builder import KernelBuilder
from dlc.compiler.native.program import KernelProgram
from dlc.compiler.native.codegen.types import i64


def scan_loop(kb: KernelBuilder, k, prog: KernelProgram, run_body):
    """The step index goes into the sizes array, where the body's kernels read it."""
    b = kb.b
    length = kb.dim(k.length)
    slot = b.gep(kb.fn.args[1], [ir.Constant(i64, prog.symbols.index(k.var))])

    def step(idx):
        t = b.sub(b.sub(length, ir.Constant(i64, 1)), idx[0]) if k.reverse else idx[0]
        b.store(t, slot)
        run_body(b)

    kb.loops((k.length,), step)
