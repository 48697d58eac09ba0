"""The small pieces of LLVM IR the GEMM's modules build with: counted loops (plain, and
carrying values from one iteration to the next), signed minimum and maximum, the ceiling of
a division, an in-bounds step of a pointer, a test per row of a tile, an internal function
(the int8 kernels' loops use them too)."""

from __future__ import annotations

import contextlib

from llvmlite import ir

from dlc.compiler.native.codegen.types import f32, i8, i64


fptr = f32.as_pointer()
vptr = i8.as_pointer()


def c64(v: int) -> ir.Constant:
    return ir.Constant(i64, v)


@contextlib.contextmanager
def loop(b: ir.IRBuilder, start, stop, step=1, name="i"):
    """for (i = start; i < stop; i += step) — yields i (signed compare)."""
    with carrying_loop(b, stop, [], name, start, step) as (i, _, _):
        yield i


@contextlib.contextmanager
def carrying_loop(b: ir.IRBuilder, stop, starts: list, name="k", start=0, step=1):
    """for (k = start; k < stop; k += step) carrying values: yields (k, the values this
    iteration starts with, a list the body fills with the next ones); after the block, the
    carried values hold the final ones."""
    step = c64(step) if isinstance(step, int) else step
    start = c64(start) if isinstance(start, int) else start
    pre = b.block
    head = b.append_basic_block(f"{name}.head")
    body = b.append_basic_block(f"{name}.body")
    done = b.append_basic_block(f"{name}.done")
    b.branch(head)
    b.position_at_end(head)
    k = b.phi(i64, name)
    k.add_incoming(start, pre)
    carried = [b.phi(v.type, f"{name}.carry") for v in starts]
    for phi, value in zip(carried, starts):
        phi.add_incoming(value, pre)
    b.cbranch(b.icmp_signed("<", k, stop), body, done)
    b.position_at_end(body)
    following: list = []
    yield k, carried, following
    for phi, value in zip(carried, following):
        phi.add_incoming(value, b.block)
    k.add_incoming(b.add(k, step, name=f"{name}.next"), b.block)
    b.branch(head)
    b.position_at_end(done)


def smin(b, x, y):
    return b.select(b.icmp_signed("<", x, y), x, y)


def smax(b, x, y):
    return b.select(b.icmp_signed(">", x, y), x, y)


def ceil_div(b, x, d):
    d = c64(d) if isinstance(d, int) else d
    return b.sdiv(b.add(x, b.sub(d, c64(1))), d)


def gep(b, ptr, idx):
    return b.gep(ptr, [idx], inbounds=True)


def first_rows(b, most: int, rows, store_row):
    """store_row(r) for r < rows (at most `most`), each after a test; b ends after them."""
    done = b.function.append_basic_block("rows.done")
    for r in range(most):
        store_row(r)
        if r + 1 < most:
            more = b.function.append_basic_block(f"rows.{r + 1}")
            b.cbranch(b.icmp_signed(">", rows, c64(r + 1)), more, done)
            b.position_at_end(more)
    b.branch(done)
    b.position_at_end(done)


def internal(module, name, ret, args, arg_names):
    fn = ir.Function(module, ir.FunctionType(ret, args), name)
    fn.linkage = "internal"
    fn.attributes.add("nounwind")
    for a, n in zip(fn.args, arg_names):
        a.name = n
    return fn
