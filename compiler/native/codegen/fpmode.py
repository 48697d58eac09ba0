"""The floating-point mode the native train step runs in: subnormal floats flushed to zero.

Gradients that decay through many steps (an LSTM over 256 steps) reach subnormal floats,
which x86 cores compute 20-100x slower than normal ones: the LSTM's step at sequence 256
took 2.8 s with them and 0.17 s without (benchmarks/scaling.py). As XLA and TensorFlow do
on CPU, the forward and backward kernels run with subnormals flushed to zero, on every
thread of a team: MXCSR's flush-to-zero and denormals-are-zero bits on x86-64, FPCR's FZ
bit on AArch64 (which flushes subnormal operands and results alike); the mode the caller
had is put back afterwards (numpy's arithmetic in the same thread keeps IEEE semantics),
and the optimizer update runs in it, so that it stays torch's arithmetic to the bit.

A mode is an i32 on both: MXCSR is 32 bits, and FPCR's upper 32 bits are reserved (zero).
"""

from __future__ import annotations

import contextlib

from llvmlite import ir

from dlc.compiler.native.codegen import jit
from dlc.compiler.native.codegen.intrinsics import declare
from dlc.compiler.native.codegen.types import i8, i32, i64

# the bits that flush subnormals, by architecture
FLUSH = {
    "x86_64": 0x8040,  # MXCSR: FTZ (bit 15) | DAZ (bit 6)
    "aarch64": 1 << 24,
}  # FPCR: FZ (bit 24)


def current_mode(module: ir.Module, b: ir.IRBuilder) -> ir.Value:
    """The calling thread's floating-point mode (MXCSR, or FPCR's lower half), as an i32."""
    if jit.target_arch() == "aarch64":
        return b.trunc(b.call(declare(module, "llvm.aarch64.get.fpcr", i64, []), []), i32)
    cell = _cell(b)
    b.call(_mxcsr(module, "stmxcsr"), [b.bitcast(cell, i8.as_pointer())])
    return b.load(cell)


def _set_mode(module: ir.Module, b: ir.IRBuilder, mode: ir.Value):
    if jit.target_arch() == "aarch64":
        b.call(declare(module, "llvm.aarch64.set.fpcr", ir.VoidType(), [i64]), [b.zext(mode, i64)])
        return
    cell = _cell(b)
    b.store(mode, cell)
    b.call(_mxcsr(module, "ldmxcsr"), [b.bitcast(cell, i8.as_pointer())])


@contextlib.contextmanager
def in_mode(module: ir.Module, b: ir.IRBuilder, mode: ir.Value):
    """Code emitted inside the block runs in `mode` (a value of current_mode: a team's
    workers take their caller's); the block's code must fall through to its end (not
    return), where the thread's own mode is put back."""
    saved = current_mode(module, b)
    _set_mode(module, b, mode)
    yield
    _set_mode(module, b, saved)


@contextlib.contextmanager
def subnormals_flushed(module: ir.Module, b: ir.IRBuilder):
    """Code emitted inside the block runs with subnormals flushed to zero (see in_mode)."""
    with in_mode(module, b, b.or_(current_mode(module, b), ir.Constant(i32, FLUSH[jit.target_arch()]))):
        yield


def _cell(b: ir.IRBuilder) -> ir.Value:
    with b.goto_entry_block():
        return b.alloca(i32, name="mxcsr")


def _mxcsr(module: ir.Module, name: str):
    return module.declare_intrinsic(f"llvm.x86.sse.{name}", fnty=ir.FunctionType(ir.VoidType(), [i8.as_pointer()]))
