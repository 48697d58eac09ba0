"""The micro-kernel (BLIS's): an MR x NR tile of C kept in MR·NR/VW vector accumulators over
a K slice of one packed panel of op(A) and one of op(B) — A broadcast, B loaded as vectors,
llvm.fma (or vdpbf16ps / BFDOT on bfloat16 pairs), K innermost, UNROLL steps an iteration —
then added to C or written over it, an edge tile by masked loads and stores. On the AMX
tiles the micro-kernel is amx_tiles.py's."""

from __future__ import annotations

from llvmlite import ir

from dlc.compiler.native.codegen.intrinsics import declare, dot_bf16_pairs, masked, splat, vec_ptr
from dlc.compiler.native.codegen.types import f32, i1, i32, i64
from dlc.compiler.native.codegen.gemm.amx_tiles import build_tile_ukernel
from dlc.compiler.native.codegen.gemm.ir_helpers import c64, ceil_div, first_rows, fptr, gep, internal, smin, vptr


# steps of K a micro-kernel's loop takes an iteration
UNROLL = 4
# How far ahead along its A panel a micro-kernel reading the panels of a given op(A) (a
# prediction's packed filters, streamed from memory at every call: `streamed_a`) fetches,
# in bytes. Products of few columns reuse each panel a few times, and the hardware's
# prefetchers did not overlap the FMAs with the panels' reads: 0.80-0.91 of the time with
# this on a Zen 5 (`[512 x 2304] @ [2304 x 49]`, Winograd's 16 x `[256 x 256] @ [256 x 49]`),
# where the panels packed here, in cache, took 1.06-1.11 of it
A_AHEAD = 2048


def ukernel(gen):
    """The micro-kernel of the blocking: kc, the A and B panels, the C tile and its leading
    dimension, the tile's rows and columns (at most MR and NR), whether C's values are added."""
    build = build_tile_ukernel if gen.cfg.amx else build_ukernel
    return gen.shared("ukernel", lambda name: build(gen, name))


def narrow_ukernel(gen):
    """The micro-kernel of a tile of at most one vector's columns (few columns, or a
    panel's last ones): the first vector of each B panel row only, NR // VW times
    fewer FMAs than `ukernel` there, each sum the same."""
    return gen.shared("ukernel_narrow", lambda name: build_ukernel(gen, name, vectors=1))


def streamed_a_ukernels(gen) -> tuple:
    """`ukernel` and `narrow_ukernel` for A's panels read from a given op(A)'s pack, which
    fetch each panel A_AHEAD bytes ahead: the same sums."""
    return (
        gen.shared("ukernel_streamed_a", lambda name: build_ukernel(gen, name, streamed_a=True)),
        gen.shared("ukernel_narrow_streamed_a", lambda name: build_ukernel(gen, name, vectors=1, streamed_a=True)),
    )


def stored_b_ukernel(gen):
    """The micro-kernel of a whole tile whose B rows are read where they lie, `ldb` floats
    apart (a block of few rows, macro_loop.py), not from a packed panel: the same sums."""
    return gen.shared("ukernel_stored_b", lambda name: build_ukernel(gen, name, stored_b=True))


def build_ukernel(gen, name, vectors=None, stored_b=False, streamed_a=False):
    """The micro-kernel `name` on vectors (`vectors` of each B panel row, else all NR // VW);
    `stored_b`: B's rows are its last argument's floats apart, else a panel's NR;
    `streamed_a`: the A panel is fetched A_AHEAD bytes ahead (clamped to the slice)."""
    cfg, vty = gen.cfg, gen.vty
    MR, NR, VW = cfg.mr, cfg.nr, cfg.vw
    NV = vectors or NR // VW
    fn = internal(
        gen.m,
        name,
        ir.VoidType(),
        [i64, fptr, fptr, fptr, i64, i64, i64, i1] + [i64] * stored_b,
        ["kc", "a", "b", "c", "ldc", "mr", "nr", "load_c"] + ["ldb"] * stored_b,
    )
    fn.attributes.add("noinline")  # one copy shared by every routine of the module
    for k in (1, 2, 3):
        fn.args[k].add_attribute("noalias")
    kc, a, bp, c, ldc, mr, nr, load_c = fn.args[:8]
    b_row, b_align = (fn.args[8], 4) if stored_b else (c64(NR), 4 * VW)  # a panel's rows are aligned
    entry = fn.append_basic_block("entry")
    unrolled = fn.append_basic_block("k.unrolled")
    tail = fn.append_basic_block("k.done")
    b = ir.IRBuilder(entry)
    zero = ir.Constant(vty, None)
    # Warm the C tile's lines while the K loop runs (rows and columns clamped to the
    # tile, so that every address is inside C).
    prefetch = declare(gen.m, "llvm.prefetch.p0", ir.VoidType(), [vptr, i32, i32, i32])
    last_col = b.sub(smin(b, nr, c64(NV * VW)), c64(1))
    for r in range(MR):
        row = gep(b, c, b.mul(smin(b, c64(r), b.sub(mr, c64(1))), ldc))
        for col in (c64(0), last_col):  # the row's end may be on the next line
            b.call(prefetch, [b.bitcast(gep(b, row, col), vptr), i32(1), i32(3), i32(1)])

    # k: a step of K, or with bfloat16 pairs a pair of them (a 32-bit pair per element)
    pairs = cfg.operands == "bf16-pairs"
    ety = i32 if pairs else f32
    lty = ir.VectorType(ety, VW)

    def step(k, accs):  # the tile's sums after step k
        bk = gep(b, bp, b.mul(k, b_row))
        bvec = [b.load(b.bitcast(gep(b, bk, c64(v * VW)), lty.as_pointer()), align=b_align) for v in range(NV)]
        ak = gep(b, a, b.mul(k, c64(MR)))
        ak = b.bitcast(ak, ety.as_pointer()) if pairs else ak
        new = []
        for r in range(MR):
            a_r = splat(b, b.load(gep(b, ak, c64(r)), align=4), lty)
            if pairs:
                new.append([dot_bf16_pairs(gen.m, b, accs[r][v], a_r, bvec[v]) for v in range(NV)])
            else:
                new.append([b.call(gen.fma, [a_r, bvec[v], accs[r][v]]) for v in range(NV)])
        return new

    def sums(name, incoming):  # phis of the tile's sums, from (block, sums) pairs
        phis = [[b.phi(vty, f"{name}{r}_{v}") for v in range(NV)] for r in range(MR)]
        for block, values in incoming:
            for r in range(MR):
                for v in range(NV):
                    phis[r][v].add_incoming(values[r][v] if values is not None else zero, block)
        return phis

    # UNROLL steps an iteration while they last, then one at a time: with one step an
    # iteration, the loop's own instructions took issue slots among the FMAs
    steps = ceil_div(b, kc, 2) if pairs else kc
    rest_check, rest = fn.append_basic_block("k.rest_check"), fn.append_basic_block("k.rest")
    b.cbranch(b.icmp_signed(">=", steps, c64(UNROLL)), unrolled, rest_check)

    b.position_at_end(unrolled)
    k = b.phi(i64, "k")
    k.add_incoming(c64(0), entry)
    accs = sums("c", [(entry, None)])
    new = accs
    if streamed_a:  # the iteration's UNROLL steps of the panel, A_AHEAD bytes on: a prefetch a line
        step_bytes = 4 * MR  # a float, or a bfloat16 pair, a row
        for line in range(-(-UNROLL * step_bytes // 64)):
            ahead = smin(b, b.add(k, c64((A_AHEAD + 64 * line) // step_bytes)), b.sub(steps, c64(1)))
            b.call(prefetch, [b.bitcast(gep(b, a, b.mul(ahead, c64(MR))), vptr), i32(0), i32(3), i32(1)])
    for u in range(UNROLL):
        new = step(b.add(k, c64(u)), new)
    k_next = b.add(k, c64(UNROLL))
    k.add_incoming(k_next, unrolled)
    for r in range(MR):
        for v in range(NV):
            accs[r][v].add_incoming(new[r][v], unrolled)
    b.cbranch(b.icmp_signed("<=", b.add(k_next, c64(UNROLL)), steps), unrolled, rest_check)

    b.position_at_end(rest_check)
    k_rest = b.phi(i64, "k_rest")
    k_rest.add_incoming(c64(0), entry)
    k_rest.add_incoming(k_next, unrolled)
    after_unrolled = sums("u", [(entry, None), (unrolled, new)])
    b.cbranch(b.icmp_signed("<", k_rest, steps), rest, tail)

    b.position_at_end(rest)
    k = b.phi(i64, "kr")
    k.add_incoming(k_rest, rest_check)
    accs = sums("r", [(rest_check, after_unrolled)])
    new = step(k, accs)
    k1 = b.add(k, c64(1))
    k.add_incoming(k1, rest)
    for r in range(MR):
        for v in range(NV):
            accs[r][v].add_incoming(new[r][v], rest)
    b.cbranch(b.icmp_signed("<", k1, steps), rest, tail)

    b.position_at_end(tail)
    new = sums("s", [(rest_check, after_unrolled), (rest, new)])
    # ---- store the tile
    full = b.and_(b.icmp_signed("==", mr, c64(MR)), b.icmp_signed("==", nr, c64(NV * VW)))
    full_bb = fn.append_basic_block("full")
    edge_bb = fn.append_basic_block("edge")
    b.cbranch(full, full_bb, edge_bb)

    b.position_at_end(full_bb)
    add_bb = fn.append_basic_block("full.add")
    set_bb = fn.append_basic_block("full.set")
    b.cbranch(load_c, add_bb, set_bb)
    for bb, add in ((add_bb, True), (set_bb, False)):
        b.position_at_end(bb)
        for r in range(MR):
            row = gep(b, c, b.mul(c64(r), ldc))
            for v in range(NV):
                p = vec_ptr(b, gep(b, row, c64(v * VW)), vty)
                val = new[r][v]
                if add:
                    val = b.fadd(b.load(p, align=4), val)
                b.store(val, p, align=4)
        b.ret_void()

    # edge tile: rows r < mr, columns masked to j < nr (masked loads/stores)
    b.position_at_end(edge_bb)
    mload, mstore = masked(gen.m, vty)
    nr_splat = splat(b, nr, ir.VectorType(i64, VW))
    masks = [
        b.icmp_signed("<", ir.Constant(ir.VectorType(i64, VW), list(range(v * VW, v * VW + VW))), nr_splat)
        for v in range(NV)
    ]

    def store_row(r):
        row = gep(b, c, b.mul(c64(r), ldc))
        for v in range(NV):
            # not `inbounds`: masked-off lanes may lie past the end of C
            p = vec_ptr(b, b.gep(row, [c64(v * VW)]), vty)
            old = b.call(mload, [p, i32(4), masks[v], zero])
            val = b.select(load_c, b.fadd(old, new[r][v]), new[r][v])
            b.call(mstore, [val, p, i32(4), masks[v]])

    first_rows(b, MR, mr, store_row)
    b.ret_void()
    return fn
