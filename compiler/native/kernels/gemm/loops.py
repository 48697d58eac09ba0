"""The GEMM kinds' code: calls of the library's routines (compiler/native/codegen/gemm/),
each at the place of the kernel builder it is given."""

from __future__ import annotations

from llvmlite import ir

from dlc.compiler.native import FEW_ROWS
from dlc.compiler.native.codegen.builder import Arguments, KernelBuilder
from dlc.compiler.native.codegen.gemm.interface import EPILOGUE_TYPE, PACK_TYPE, gemm_name, gemm_type, pack_name
from dlc.compiler.native.kernels.map import emit_loop
from dlc.compiler.native.kernels.map.loops import map_body

i32 = ir.IntType(32)


def gemm_kernel(f, k) -> KernelBuilder:
    """A GemmKernel's function: a call of the library's GEMM (with its epilogue's function,
    which shares the kernel's argument slots)."""
    epilogue = None
    args = Arguments()
    if k.epilogue is not None:
        epilogue = ir.Function(f.module, EPILOGUE_TYPE, f.fn.name + ".epilogue")
        epilogue.linkage = "internal"
        ekb = KernelBuilder(f.module, f.prog, epilogue, args)
        epilogue_loop(ekb, k, epilogue.args[2:])
        ekb.finish()
    kb = KernelBuilder(f.module, f.prog, f.fn, args)
    gemm_call(kb, f, k, epilogue)
    return kb


def epilogue_loop(kb: KernelBuilder, k, part):
    """The epilogue's map over the part (b, r0, r1, c0, c1) of C: the map's own loop body
    (map_body) at the indices of its space that C[b][r0:r1, c0:c1] holds. In [n, M, P],
    with C one matrix of n·P columns, a row's columns are a run of p for each example
    they reach, contiguous as the map's own innermost loop."""
    b, prog = kb.b, kb.p
    bi, r0, r1, c0, c1 = part
    space = k.epilogue.shape

    def over(lo, hi, body):  # body(i) for i in [lo, hi)
        kb.loops((b.sub(hi, lo),), lambda idx: body(b.add(lo, idx[0])))

    def row(i):
        if len(space) == 2:  # [M, N]: C[i, j]
            over(c0, c1, lambda j: map_body(kb, k.epilogue, prog, [i, j]))
        elif k.batch != 1:  # [batch, M, N]: C[b][i, j]
            over(c0, c1, lambda j: map_body(kb, k.epilogue, prog, [bi, i, j]))
        else:  # [n, M, P]: C[i, n·P + p]
            pixels, one = kb.dim(space[2]), ir.Constant(ir.IntType(64), 1)

            def example(n):
                start = b.mul(n, pixels)
                lo = b.sub(_max(b, c0, start), start)
                hi = b.sub(_min(b, c1, b.add(start, pixels)), start)
                over(lo, hi, lambda p: map_body(kb, k.epilogue, prog, [n, i, p]))

            over(b.sdiv(c0, pixels), b.add(b.sdiv(b.sub(c1, one), pixels), one), example)

    over(r0, r1, row)


def _min(b, x, y):
    return b.select(b.icmp_signed("<", x, y), x, y)


def _max(b, x, y):
    return b.select(b.icmp_signed(">", x, y), x, y)


def gemm_call(kb: KernelBuilder, f, k, epilogue=None):
    """A GemmKernel's call of the library's GEMM, which runs its own thread team; with a
    pack whose flag is clear, a null pack: the GEMM reads B; with `windows`, the geometry's
    array; with its `epilogue`'s function,
    the kernel's argument slots and sizes for it."""
    packed = k.packed is not None
    args = [kb.dim(k.m), kb.dim(k.n), kb.dim(k.k)]
    for bid, off, ld, stride in (k.a, k.b, k.c):
        args += [kb.b.gep(kb.buffer(bid, "f32"), [kb.dim(off)]), kb.dim(ld), kb.dim(stride)]
    args += [kb.dim(k.batch), kb.fn.args[2]]
    if packed:
        pack = kb.buffer(k.packed, "f32")
        if k.ready is not None:
            flags, i = k.ready
            made = kb.b.load(kb.b.gep(kb.buffer(flags, "i32"), [ir.Constant(i32, i)]))
            read = kb.b.icmp_signed("!=", made, ir.Constant(i32, 0))
            pack = kb.b.select(read, pack, ir.Constant(pack.type, None))
        args.append(pack)
    if k.windows is not None:
        geometry = kb.alloca(ir.ArrayType(ir.IntType(64), len(k.windows)))
        for i, v in enumerate(k.windows):
            kb.b.store(kb.dim(v), kb.b.gep(geometry, [ir.Constant(i32, 0), ir.Constant(i32, i)]))
        args.append(kb.b.bitcast(geometry, ir.IntType(64).as_pointer()))
    if epilogue is not None:
        args += [epilogue, kb.fn.args[0], kb.fn.args[1]]
    windows = k.windows is not None
    name = gemm_name(
        k.trans_a, k.trans_b, False, packed and not k.packed_a, k.bf16, epilogue is not None, windows, k.packed_a
    )
    kb.b.call(f.library(name, gemm_type(packed, epilogue is not None, windows)), args)


def pack_call(kb: KernelBuilder, f, k):
    """A PackKernel's calls of the library's packing, one for each of its matrices."""
    bid, off, ld = k.b
    pack = f.library(pack_name(k.trans_b, k.bf16, k.which), PACK_TYPE)
    for i in range(k.count):
        kb.b.call(
            pack,
            [
                kb.dim(k.k),
                kb.dim(k.n),
                kb.b.gep(kb.buffer(bid, "f32"), [kb.dim(off + i * k.stride)]),
                kb.dim(ld),
                kb.b.gep(kb.buffer(k.out, "f32"), [kb.dim(i * k.packs_apart)]),
            ],
        )


def flag_clear(kb: KernelBuilder, ready: tuple) -> ir.Value:
    """Whether the weight flag `ready` ((buffer, index): kernels/gemm `weight_flag`) is
    clear, an i1: the copy of a weight it guards is to be made."""
    return kb.b.icmp_signed("==", kb.b.load(_flag(kb, ready)), ir.Constant(i32, 0))


def set_flag(kb: KernelBuilder, ready: tuple):
    """The weight flag `ready` set: its copy is made."""
    kb.b.store(ir.Constant(i32, 1), _flag(kb, ready))


def _flag(kb: KernelBuilder, ready: tuple) -> ir.Value:
    buffer, index = ready
    return kb.b.gep(kb.buffer(buffer, "i32"), [ir.Constant(i32, index)])


def weight_packs(kb: KernelBuilder, f, k):
    """A WeightPacksKernel's code: each pack whose flag is clear and that a GEMM of this call
    reads (more than FEW_ROWS rows, or transposed, or `one_row`) is made, and its flag set."""
    for p, rows, i in zip(k.packs, k.rows, k.flags):
        read = ir.Constant(ir.IntType(1), 1)
        if not (p.which == "a" or p.trans_b or k.one_row):
            read = kb.b.icmp_signed(">", kb.dim(rows[0]), kb.dim(FEW_ROWS))
            for m in rows[1:]:
                read = kb.b.or_(read, kb.b.icmp_signed(">", kb.dim(m), kb.dim(FEW_ROWS)))
        with kb.b.if_then(kb.b.and_(read, flag_clear(kb, (k.ready, i)))):
            pack_call(kb, f, p)
            set_flag(kb, (k.ready, i))


def weight_transform(f, k):
    """A WeightTransformKernel's function: the transform's map loop on a thread team, each
    thread's share skipped while its flag is set; once the team is done, the copy packed
    (`pack`) while the flag is clear, and the flag set."""
    if k.ready is None:
        return emit_loop(k.transform, f)
    kb = emit_loop(k.transform, f, guard=lambda kb: flag_clear(kb, k.ready))
    if k.pack is not None:
        with kb.b.if_then(flag_clear(kb, k.ready)):
            pack_call(kb, f, k.pack)
    set_flag(kb, k.ready)
    return kb
