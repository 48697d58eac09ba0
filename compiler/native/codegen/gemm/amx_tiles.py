"""The GEMM on the AMX tiles ("bf16-amx" operands): the micro-kernel that sums a 32 x 32
block of C in four tiles by tdpbf16ps, and the packs of op(A) and op(B) into the tiles'
layouts, rounded to bfloat16 (the tiles' intrinsics and their grant: codegen/amx.py)."""

from __future__ import annotations

from llvmlite import ir

from dlc.compiler.native.codegen.amx import TILE_ROWS, tile_ops
from dlc.compiler.native.codegen.intrinsics import masked, splat, vec_ptr
from dlc.compiler.native.codegen.types import f32, i1, i32, i64
from dlc.compiler.native.codegen.gemm.bf16_operands import bf16_halves
from dlc.compiler.native.codegen.gemm.blocking import TILE_DEPTH
from dlc.compiler.native.codegen.gemm.ir_helpers import c64, carrying_loop, ceil_div, fptr, gep, internal, loop, vptr


def _transpose_words(b, rows):
    """The 32-bit words of `rows` transposed: 32 rows of 16 into 16 rows of 32, or back.
    Each 16 x 16 half is transposed by swapping the off-diagonal blocks of 8, 4, 2 and 1."""

    def transpose16(m):
        m = list(m)
        for s in (8, 4, 2, 1):
            for i in range(16):
                if i & s:
                    continue
                j = i + s
                top = [c if not c & s else 16 + c - s for c in range(16)]
                bottom = [c + s if not c & s else 16 + c for c in range(16)]
                mask = lambda idx: ir.Constant(ir.VectorType(i32, 16), idx)
                m[i], m[j] = (b.shuffle_vector(m[i], m[j], mask(top)), b.shuffle_vector(m[i], m[j], mask(bottom)))
        return m

    def part(v, lo):
        return b.shuffle_vector(v, v, ir.Constant(ir.VectorType(i32, 16), list(range(lo, lo + 16))))

    if len(rows) == 32:  # rows of 16: two 16 x 16 halves side by side in the result
        top, bottom = transpose16(rows[:16]), transpose16(rows[16:])
        whole = ir.Constant(ir.VectorType(i32, 32), list(range(32)))
        return [b.shuffle_vector(x, y, whole) for x, y in zip(top, bottom)]
    return transpose16([part(v, 0) for v in rows]) + transpose16([part(v, 16) for v in rows])


def build_tile_ukernel(gen, name):
    """The micro-kernel on the AMX tiles: a 32 x 32 block of C in four 16 x 16 float
    tiles, summed over the K slice a tile (32) at a time by tdpbf16ps from two tiles of
    the A panel (rows 0-15 and 16-31, 32 bfloat16 each) and two of the B panel
    (columns 0-15 and 16-31, 16 pairs of rows). A whole block of C is loaded into the
    tiles first (or they start at zero) and stored back from them; an edge block's
    tiles start at zero, go to a block on the stack and are added (or written) to C's
    rows r < mr, columns masked to j < nr."""
    load, dot, store, zero_tile = tile_ops(gen.m, "tdpbf16ps")
    i16 = ir.IntType(16)
    T = TILE_ROWS
    row_bytes = i16(4 * T)  # 64: 16 floats, or 32 bfloat16 / 16 pairs
    fn = internal(
        gen.m,
        name,
        ir.VoidType(),
        [i64, fptr, fptr, fptr, i64, i64, i64, i1],
        ["kc", "a", "b", "c", "ldc", "mr", "nr", "load_c"],
    )
    # inlined: a function of its own would configure and release the tiles at every block
    fn.attributes.add("alwaysinline")
    kc, a, bp, c, ldc, mr, nr, load_c = fn.args
    b = ir.IRBuilder(fn.append_basic_block("entry"))
    block = b.alloca(ir.ArrayType(f32, 4 * T * T), name="block")
    block.align = 64
    block = b.bitcast(block, fptr)
    a8, b8 = b.bitcast(a, vptr), b.bitcast(bp, vptr)
    ktiles = ceil_div(b, kc, TILE_DEPTH)
    tile_bytes = 4 * T * T  # a 32 x 32 bfloat16 block of a panel: two tiles

    def products(start):
        """The four tiles of C from `start` on, plus the products of the K slice."""
        with carrying_loop(b, ktiles, start, name="kt") as (k, acc, new):
            at = b.gep(a8, [b.mul(k, c64(2 * tile_bytes))], inbounds=True)
            bt = b.gep(b8, [b.mul(k, c64(2 * tile_bytes))], inbounds=True)
            a_tiles = [
                b.call(load, [i16(T), row_bytes, b.gep(at, [c64(h * tile_bytes)], inbounds=True), c64(4 * T)])
                for h in (0, 1)
            ]
            b_tiles = [
                b.call(load, [i16(T), row_bytes, b.gep(bt, [c64(h * 4 * T)], inbounds=True), c64(8 * T)])
                for h in (0, 1)
            ]
            new += [
                b.call(dot, [i16(T), row_bytes, row_bytes, acc[2 * i + j], a_tiles[i], b_tiles[j]])
                for i in (0, 1)
                for j in (0, 1)
            ]
        return acc

    def corners(base, ld):  # the four 16 x 16 corners of a 32 x 32 block, row stride ld
        return [b.bitcast(gep(b, base, b.add(b.mul(c64(i * T), ld), c64(j * T))), vptr) for i in (0, 1) for j in (0, 1)]

    def zeros():
        return [b.call(zero_tile, [i16(T), row_bytes]) for _ in range(4)]

    full_bb, edge_bb = fn.append_basic_block("full"), fn.append_basic_block("edge")
    b.cbranch(b.and_(b.icmp_signed("==", mr, c64(2 * T)), b.icmp_signed("==", nr, c64(2 * T))), full_bb, edge_bb)
    b.position_at_end(full_bb)
    add_bb, set_bb = fn.append_basic_block("full.add"), fn.append_basic_block("full.set")
    stride = b.mul(ldc, c64(4))
    b.cbranch(load_c, add_bb, set_bb)
    for bb, add in ((add_bb, True), (set_bb, False)):
        b.position_at_end(bb)
        to = corners(c, ldc)
        start = [b.call(load, [i16(T), row_bytes, p, stride]) for p in to] if add else zeros()
        for p, tile in zip(to, products(start)):
            b.call(store, [i16(T), row_bytes, p, stride, tile])
        b.ret_void()

    b.position_at_end(edge_bb)
    for p, tile in zip(corners(block, c64(2 * T)), products(zeros())):
        b.call(store, [i16(T), row_bytes, p, c64(8 * T), tile])
    vty = gen.vty
    mload, mstore = masked(gen.m, vty)
    lanes = ir.VectorType(i64, T)
    masks = [b.icmp_signed("<", ir.Constant(lanes, list(range(h * T, h * T + T))), splat(b, nr, lanes)) for h in (0, 1)]
    with loop(b, 0, mr, name="r") as r:
        row = gep(b, c, b.mul(r, ldc))
        for h in (0, 1):
            sums = b.load(vec_ptr(b, gep(b, block, b.add(b.mul(r, c64(2 * T)), c64(h * T))), vty), align=64)
            # not `inbounds`: masked-off lanes may lie past the end of C
            p = vec_ptr(b, b.gep(row, [c64(h * T)]), vty)
            old = b.call(mload, [p, i32(4), masks[h], ir.Constant(vty, None)])
            b.call(mstore, [b.select(load_c, b.fadd(old, sums), sums), p, i32(4), masks[h]])
    b.ret_void()
    return fn


def build_tile_pack(gen, fn, which, contig_k):
    """pack(kc, len, src, ld, dst) into the tiles' layouts, rounded to bfloat16: panels
    of 32 along `len` (rows of op(A), columns of op(B)), each a 32 x 32 block per tile
    of K (2 KB, the K slice rounded up to whole tiles), zero past `len` and kc. In a
    block of A, row p holds its 32 bfloat16 along K (16 pairs); in a block of B, pair
    row q holds rows 2q and 2q+1 of the 32 columns interleaved (the "VNNI" layout).
    Element (p, k) is src[p*ld + k] when `contig_k`, else src[k*ld + p]; lines along
    the source's contiguous direction are read with masked loads, made bfloat16 pairs
    and, where the layout runs the other way, transposed 16 x 16 in registers."""
    P, W = gen.cfg.mr, TILE_DEPTH // 2  # 32 rows or columns; 16 pairs per row
    kc, length, src, ld, dst = fn.args
    b = ir.IRBuilder(fn.append_basic_block("entry"))
    wty = ir.IntType(32).as_pointer()
    words = b.bitcast(dst, wty)
    ktiles = ceil_div(b, kc, TILE_DEPTH)
    fty = ir.VectorType(f32, P)
    mload, _ = masked(gen.m, fty)
    lanes = ir.VectorType(i64, P)
    lane = ir.Constant(lanes, list(range(P)))

    def line(start, count, valid):
        """bfloat16 of src[start:start + 32], zero from `count` on or when not `valid`."""
        mask = b.and_(b.icmp_signed("<", lane, splat(b, count, lanes)), splat(b, valid, ir.VectorType(i1, P)))
        return bf16_halves(gen, b, b.call(mload, [vec_ptr(b, start, fty), i32(4), mask, ir.Constant(fty, None)]))

    def words_of(halves, n):
        return b.bitcast(halves, ir.VectorType(i32, n))

    def block(q, kt):
        """The 32 x 32 block of panel q at K tile kt."""
        p0 = b.mul(q, c64(P))
        panel = gep(b, words, b.mul(q, b.mul(ktiles, c64(P * W))))
        k0 = b.mul(kt, c64(TILE_DEPTH))
        out = gep(b, panel, b.mul(kt, c64(P * W)))
        if contig_k:  # rows along K: 16 pairs of row p, p = 0..31
            left = b.sub(kc, k0)
            rows = [
                words_of(
                    line(
                        b.gep(src, [b.add(b.mul(b.add(p0, c64(p)), ld), k0)]),
                        left,
                        b.icmp_signed("<", b.add(p0, c64(p)), length),
                    ),
                    W,
                )
                for p in range(P)
            ]
        else:  # rows along len: pair row j, rows k0 + 2j and k0 + 2j + 1 interleaved
            left = b.sub(length, p0)
            interleave = ir.Constant(ir.VectorType(i32, 2 * P), [i // 2 + (i % 2) * P for i in range(2 * P)])
            rows = []
            for j in range(W):
                k = [b.add(k0, c64(2 * j + e)) for e in (0, 1)]
                pair = [line(b.gep(src, [b.add(b.mul(ke, ld), p0)]), left, b.icmp_signed("<", ke, kc)) for ke in k]
                rows.append(words_of(b.shuffle_vector(pair[0], pair[1], interleave), P))
        if (which == "a") != contig_k:
            rows = _transpose_words(b, rows)
        for r, v in enumerate(rows):
            b.store(v, b.bitcast(gep(b, out, c64(r * v.type.count)), v.type.as_pointer()), align=4)

    # a source stored along the panels (B, Aᵀ) is packed a K tile at a time across all
    # of them, so that its rows are read in order; panel by panel, each row was read in
    # 128-byte pieces 32 rows apart, which the prefetchers did not follow
    panels = ceil_div(b, length, P)
    if contig_k:
        with loop(b, 0, panels, name="q") as q:
            with loop(b, 0, ktiles, name="kt") as kt:
                block(q, kt)
    else:
        with loop(b, 0, ktiles, name="kt") as kt:
            with loop(b, 0, panels, name="q") as q:
                block(q, kt)
    b.ret_void()
