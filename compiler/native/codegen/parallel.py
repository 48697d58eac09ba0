"""Parallel regions: a kernel's function runs its loop nest on a team of threads (libgomp),
each thread on a slice of the outermost axis; each kind of kernel says whether it does
(its `emit`: maps, the max-pool gradient, the parts of a batch's sums, ...)."""
from __future__ import annotations

from llvmlite import ir

from dlc.compiler.native.codegen.builder import KernelBuilder
from dlc.compiler.native.codegen.fpmode import current_mode, in_mode
from dlc.compiler.native.codegen.intrinsics import declare
from dlc.compiler.native.codegen.types import i8, i32, i64


PARALLEL_BELOW = 1 << 15   # elements x operations: less is not worth waking a second thread


def parallel_loop(module, prog, fn: ir.Function, loop, extent, work) -> KernelBuilder:
    """fn runs `loop(kb, first)` — a loop nest whose outermost axis of `extent` iterations
    is limited to `first` = (lo, hi), every iteration touching memory no other one writes —
    on a team of threads (libgomp), each on a slice of that axis; with less `work` (an
    element count times operations) than PARALLEL_BELOW, and inside a team already, it
    runs serially. Returns the builder of fn, for the caller to finish."""
    sig = fn.function_type
    part = ir.Function(module, ir.FunctionType(ir.VoidType(), list(sig.args[:2]) + [i64, i64]), fn.name + ".part")
    part.linkage = "internal"
    inner = KernelBuilder(module, prog, part)
    loop(inner, (part.args[2], part.args[3]))
    inner.finish()

    data_ty = ir.LiteralStructType([sig.args[0], sig.args[1], i64, i32])   # buffers, sizes, outer extent, mode
    vptr = i8.as_pointer()
    worker = ir.Function(module, ir.FunctionType(ir.VoidType(), [vptr]), fn.name + ".worker")
    worker.linkage = "internal"
    b = ir.IRBuilder(worker.append_basic_block("entry"))
    data = b.bitcast(worker.args[0], data_ty.as_pointer())
    ptrs, sizes, n = (b.load(b.gep(data, [ir.Constant(i32, 0), ir.Constant(i32, j)])) for j in range(3))
    tid = b.sext(b.call(declare(module, "omp_get_thread_num", i32, []), []), i64)
    nth = b.sext(b.call(declare(module, "omp_get_num_threads", i32, []), []), i64)
    chunk = b.sdiv(b.add(n, b.sub(nth, ir.Constant(i64, 1))), nth)
    lo = b.mul(tid, chunk)
    hi = b.add(lo, chunk)
    hi = b.select(b.icmp_signed("<", hi, n), hi, n)
    mode = b.load(b.gep(data, [ir.Constant(i32, 0), ir.Constant(i32, 3)]))
    with in_mode(module, b, mode):          # the caller's, not the one the thread was made with
        b.call(part, [ptrs, sizes, lo, hi])
    b.ret_void()

    kb = KernelBuilder(module, prog, fn, inner.args)      # fn passes its arguments on to part
    b = kb.b
    total = kb.dim(work)
    level = b.call(declare(module, "omp_get_level", i32, []), [])
    serial = b.or_(b.or_(b.icmp_signed("<", total, ir.Constant(i64, PARALLEL_BELOW)),
                         b.icmp_signed("<=", fn.args[2], ir.Constant(i64, 1))),
                   b.icmp_signed(">", level, ir.Constant(i32, 0)))
    alone, team, done = (fn.append_basic_block(x) for x in ("alone", "team", "done"))
    b.cbranch(serial, alone, team)
    b.position_at_end(alone)
    b.call(part, [fn.args[0], fn.args[1], ir.Constant(i64, 0), kb.dim(extent)])
    b.branch(done)
    b.position_at_end(team)
    cell = kb.alloca(data_ty)
    for j, v in enumerate((fn.args[0], fn.args[1], kb.dim(extent), current_mode(module, b))):
        b.store(v, b.gep(cell, [ir.Constant(i32, 0), ir.Constant(i32, j)]))
    gomp = declare(module, "GOMP_parallel", ir.VoidType(), [worker.type, vptr, i32, i32])
    b.call(gomp, [worker, b.bitcast(cell, vptr), b.trunc(fn.args[2], i32), ir.Constant(i32, 0)])
    b.branch(done)
    b.position_at_end(done)
    return kb
