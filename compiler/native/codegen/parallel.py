"""Parallel regions: a kernel's function runs its loop nest on dlc's thread pool
(threadpool.py), each chunk of the pool's job a slice of the outermost axis; each kind of
kernel says whether it does (its `emit`: maps, the max-pool gradient, the parts of a
batch's sums, ...)."""

from __future__ import annotations

from llvmlite import ir

from dlc.compiler.native.codegen.builder import KernelBuilder
from dlc.compiler.native.codegen.fpmode import current_mode, in_mode
from dlc.compiler.native.codegen.threadpool import TASK, declare_run
from dlc.compiler.native.codegen.types import i8, i32, i64


PARALLEL_BELOW = 1 << 15  # elements x operations: less is not worth waking a second thread
CHUNKS_PER_THREAD = 4  # slices of the axis per thread: an idle thread takes a stalled one's


def parallel_loop(module, prog, fn: ir.Function, loop, extent, work) -> KernelBuilder:
    """fn runs `loop(kb, first)` — a loop nest whose outermost axis of `extent` iterations
    is limited to `first` = (lo, hi), every iteration touching memory no other one writes —
    on the thread pool, CHUNKS_PER_THREAD slices of that axis per thread; with less `work`
    (an element count times operations) than PARALLEL_BELOW, or inside a pool's task
    already, it runs serially. Returns the builder of fn, for the caller to finish."""
    sig = fn.function_type
    part = ir.Function(module, ir.FunctionType(ir.VoidType(), list(sig.args[:2]) + [i64, i64]), fn.name + ".part")
    part.linkage = "internal"
    inner = KernelBuilder(module, prog, part)
    loop(inner, (part.args[2], part.args[3]))
    inner.finish()

    data_ty = ir.LiteralStructType([sig.args[0], sig.args[1], i64, i32])  # buffers, sizes, outer extent, mode
    vptr = i8.as_pointer()
    worker = ir.Function(module, TASK, fn.name + ".worker")
    worker.linkage = "internal"
    b = ir.IRBuilder(worker.append_basic_block("entry"))
    data = b.bitcast(worker.args[0], data_ty.as_pointer())
    ptrs, sizes, n = (b.load(b.gep(data, [ir.Constant(i32, 0), ir.Constant(i32, j)])) for j in range(3))
    chunk, chunks = worker.args[1:3]
    lo = b.sdiv(b.mul(n, chunk), chunks)
    hi = b.sdiv(b.mul(n, b.add(chunk, ir.Constant(i64, 1))), chunks)
    mode = b.load(b.gep(data, [ir.Constant(i32, 0), ir.Constant(i32, 3)]))
    with in_mode(module, b, mode):  # the caller's, not the one the worker was made with
        b.call(part, [ptrs, sizes, lo, hi])
    b.ret_void()

    kb = KernelBuilder(module, prog, fn, inner.args)  # fn passes its arguments on to part
    b = kb.b
    total = kb.dim(work)
    serial = b.or_(
        b.icmp_signed("<", total, ir.Constant(i64, PARALLEL_BELOW)),
        b.icmp_signed("<=", fn.args[2], ir.Constant(i64, 1)),
    )
    alone, team, done = (fn.append_basic_block(x) for x in ("alone", "team", "done"))
    b.cbranch(serial, alone, team)
    b.position_at_end(alone)
    b.call(part, [fn.args[0], fn.args[1], ir.Constant(i64, 0), kb.dim(extent)])
    b.branch(done)
    b.position_at_end(team)
    cell = kb.alloca(data_ty)
    for j, v in enumerate((fn.args[0], fn.args[1], kb.dim(extent), current_mode(module, b))):
        b.store(v, b.gep(cell, [ir.Constant(i32, 0), ir.Constant(i32, j)]))
    b.call(declare_run(module), [worker, b.bitcast(cell, vptr), fn.args[2], ir.Constant(i64, CHUNKS_PER_THREAD)])
    b.branch(done)
    b.position_at_end(done)
    return kb
