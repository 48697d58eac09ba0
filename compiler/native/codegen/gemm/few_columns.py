"""A block of at most FEW_COLUMNS columns of C multiplied without packing A: groups of
COLUMN_ROWS rows of op(A) read as they lie (or, where op(A) is given packed, one MR-tall
panel of its pack a group), times op(B)'s values broadcast (on bf16's conversion path
rounded once, a K slice at a time; with bfloat16 pairs, op(A)'s given pairs times op(B)'s
paired once a K slice), each element summed as the tiled path sums it."""

from __future__ import annotations

from llvmlite import ir

from dlc.compiler.native import FEW_COLUMNS
from dlc.compiler.native.codegen.gemm.bf16_operands import paired_rows
from dlc.compiler.native.codegen.intrinsics import (
    declare,
    dot_bf16_pairs,
    masked,
    round_bf16,
    splat,
    transpose8,
    vec_ptr,
)
from dlc.compiler.native.codegen.types import f32, i1, i32, i64
from dlc.compiler.native.codegen.gemm.ir_helpers import c64, carrying_loop, ceil_div, first_rows, gep, loop, smin, vptr


# the rows of op(A) a block of at most FEW_COLUMNS columns (multiplied without packing,
# few_columns) keeps in each vector
COLUMN_ROWS = 8
# How far ahead along each of A's panels `_columns_in_lanes` fetches, in bytes. With a row
# of C a vector, a panel's floats take an FMA each, and the hardware's prefetchers did not
# overlap those FMAs with the panels' reads from memory: Winograd's 16 x [512 x 512] @
# [512 x 16] took the sum of the two (1.19 ms on one core of a Zen 5; 0.85-0.87 fetching
# 1.5-2 KB ahead, 0.99 at 6 KB)
PANEL_AHEAD = 2048


def few_columns(
    gen, b, m0, m1, n0, n1, K, kstep, A, lda, B, ldb, C, ldc, trans_a, trans_b, accumulate, Ak=None, Bp=None
):
    """C[m0:m1, n0:n1] (+)= op(A) @ op(B) with at most FEW_COLUMNS columns (a
    convolution's last stages at batch 1: [512 x 4608] @ [4608 x 4]), without packing A:
    packing A would copy all of it to use each element a few times, and the tiled
    micro-kernel's NR columns would be mostly padding. Groups of COLUMN_ROWS rows of
    op(A) are read as they lie (A's rows transposed 8 x 8 in registers; Aᵀ's rows are
    the group's vectors), one vector per k, and multiply op(B)[k, j] broadcast, for 8,
    4, 2 or 1 columns at a time; a K slice at a time for every group, so that the
    slice of op(B) stays in cache while the groups read it. With `Ak`, op(A) given
    packed (the `packed_a` routines': MR-tall panels, each K long, k-major, m0 a
    panel's first row), a group is a panel, its vector at k MR contiguous floats of the
    pack, and A is not read (a built library's filters, with B's few columns: the tiled
    path's narrow micro-kernel would fill a few of each vector's lanes). Panels, and groups of
    Aᵀ's rows, are taken several a pass where a few columns alone would keep too few chains
    of FMAs in flight (`_groups_at_once`). On bf16's
    conversion path A's given panels are rounded, and each K slice of op(B)'s columns is
    rounded once, copied into `Bp` (the thread's pack of B), before the groups read it:
    rounded as each group read it, a scalar at a time, op(B)'s values cost more than the
    group's FMAs. With bfloat16 pairs (A's given panels hold pairs along k, `kstep` even),
    a step is a pair: each K slice of op(B)'s columns is paired once into `Bp`
    (`_paired_slice`), and a group's vector of pairs times a column's pair broadcast is one
    vdpbf16ps, as the tiled micro-kernel's A pair broadcast times B's vector is. Each
    element is summed as the tiled routine sums it: K slices `kstep` deep, each one chain of
    FMAs (or pair products) along k from zero, added to C in slice order — the same bits
    whichever path or thread takes it. In float32, where FEW_COLUMNS floats are one vector or
    two (AVX-512, AVX2), a block of more than half that many columns has a row of C in
    those vectors instead (`_columns_in_lanes`); fewer would fill a few of their lanes (4
    pixels: 0.4 to 0.8 of the general path's speed)."""
    args = (gen, b, m0, m1, n0, n1, K, kstep, A, lda, B, ldb, C, ldc, trans_a, trans_b, accumulate, Ak, Bp)
    if gen.cfg.operands != "f32" or 2 * gen.cfg.vw < FEW_COLUMNS:
        _rows_in_lanes(*args)
        return
    with b.if_else(b.icmp_signed(">", b.sub(n1, n0), c64(FEW_COLUMNS // 2))) as (wide, narrow):
        with wide:
            _columns_in_lanes(*args)
        with narrow:
            _rows_in_lanes(*args)


def _rows_in_lanes(gen, b, m0, m1, n0, n1, K, kstep, A, lda, B, ldb, C, ldc, trans_a, trans_b, accumulate, Ak, Bp):
    """few_columns' general path: a vector holds a group of G rows of op(A) at a step k
    (COLUMN_ROWS, or MR of a panel), times op(B)'s values broadcast."""
    G = COLUMN_ROWS if Ak is None else gen.cfg.mr
    vty = ir.VectorType(f32, G)
    fma = declare(gen.m, f"llvm.fma.v{G}f32", vty, [vty] * 3)
    if Ak is None:
        mload, _ = masked(gen.m, vty)
    zero = ir.Constant(vty, None)
    rounded = gen.cfg.operands == "bf16-round"  # as the conversion path's packs are (A's given panels are)
    pairs = gen.cfg.operands == "bf16-pairs"
    # what a group's vector at a step holds: floats, or pairs of bfloat16 (32 bits a lane)
    aty = ir.VectorType(i32, G) if pairs else vty

    def in_slice(pc):
        """multiply(i, q, j, width) of the K slice from pc (its copy of op(B) made here)."""
        kc = smin(b, kstep, b.sub(K, pc))
        # the slice's steps: k from pc, or its pairs from pc / 2
        k_first, steps = (b.sdiv(pc, c64(2)), ceil_div(b, kc, c64(2))) if pairs else (pc, kc)
        if rounded:
            rounded_at = _rounded_slice(gen, b, B, ldb, trans_b, pc, kc, n0, n1, Bp)
        if pairs:
            _paired_slice(gen, b, B, ldb, trans_b, pc, kc, n0, n1, Bp)
            bp_pairs = b.bitcast(Bp, i32.as_pointer())

        def b_at(k, j, t):
            """op(B)[k + s, j] for s < t, broadcast (rounded: from the slice's rounded copy;
            paired: step k + s's pair, from the slice's paired copy)."""
            if pairs:
                at = lambda s: gep(
                    b, bp_pairs, b.add(b.mul(b.sub(b.add(k, c64(s)), k_first), c64(FEW_COLUMNS)), b.sub(j, n0))
                )
                return [splat(b, b.load(at(s)), aty) for s in range(t)]
            if rounded:
                at = lambda s: rounded_at(b.add(k, c64(s)), j)
            elif trans_b:
                at = lambda s: gep(b, B, b.add(b.mul(j, ldb), b.add(k, c64(s))))
            else:
                at = lambda s: gep(b, B, b.add(b.mul(b.add(k, c64(s)), ldb), j))
            return [splat(b, b.load(at(s)), vty) for s in range(t)]

        load_c = ir.Constant(i1, 1) if accumulate else b.icmp_signed(">", pc, c64(0))
        k8 = b.add(k_first, b.mul(b.sdiv(steps, c64(G)), c64(G)))

        def vectors_at(group, k, t):
            """op(A)[the group's rows, step k + s] for s < t: t vectors of its rows."""
            if Ak is not None:  # its panel
                return [
                    b.load(vec_ptr(b, gep(b, group, b.mul(b.add(k, c64(s)), c64(G))), aty), align=4) for s in range(t)
                ]
            i, row, lanes = group
            if trans_a:  # row k of A holds the group's rows side by side (masked: past m1)
                return [
                    b.call(
                        mload,
                        [vec_ptr(b, b.gep(A, [b.add(b.mul(b.add(k, c64(s)), lda), i)]), vty), i32(4), lanes, zero],
                    )
                    for s in range(t)
                ]
            if t == G:
                return transpose8(
                    b, [b.load(vec_ptr(b, gep(b, A, b.add(b.mul(r, lda), k)), vty), align=4) for r in row]
                )
            v = ir.Constant(vty, ir.Undefined)
            for p, r in enumerate(row):
                v = b.insert_element(v, b.load(gep(b, A, b.add(b.mul(r, lda), k))), i32(p))
            return [v]

        def multiply(i, q, j, width):
            """C[q groups from row i on, j : j + width] (+)= their products over the K slice:
            one chain of FMAs along k for each of the q · width elements' vectors."""
            starts = [b.add(i, c64(p * G)) for p in range(q)]
            # the rows of each group: whole ones where a pass takes several, else up to m1
            counts = [c64(G) if q > 1 else smin(b, c64(G), b.sub(m1, at)) for at in starts]
            if Ak is not None:  # the groups' panels: rows past the last are the pack's (zeros past M), never stored
                groups = [gep(b, Ak, b.mul(at, K)) for at in starts]
            else:  # rows past a group's last are read as the last (inside A) and never stored
                groups = []
                for at, rows in zip(starts, counts):
                    row = [b.add(at, smin(b, c64(p), b.sub(rows, c64(1)))) for p in range(G)]
                    lanes = b.icmp_signed(
                        "<", ir.Constant(ir.VectorType(i64, G), list(range(G))), splat(b, rows, ir.VectorType(i64, G))
                    )
                    groups.append((at, row, lanes))

            def step(k, t, acc):
                values = [b_at(k, b.add(j, c64(c)), t) for c in range(width)]
                out = []
                for p, group in enumerate(groups):
                    cols, chains = vectors_at(group, k, t), acc[p * width : (p + 1) * width]
                    for s in range(t):
                        if pairs:
                            chains = [dot_bf16_pairs(gen.m, b, chains[c], cols[s], values[c][s]) for c in range(width)]
                        else:
                            chains = [b.call(fma, [cols[s], values[c][s], chains[c]]) for c in range(width)]
                    out += chains
                return out

            with carrying_loop(b, k8, [zero] * (q * width), name="ck", start=k_first, step=G) as (k, acc, new):
                new += step(k, G, acc)
            with carrying_loop(b, b.add(k_first, steps), acc, name="ct", start=k8) as (k, acc2, new2):
                new2 += step(k, 1, acc2)
            for p, (at, rows) in enumerate(zip(starts, counts)):
                _store_columns(b, C, ldc, at, G, rows, j, acc2[p * width : (p + 1) * width], load_c)

        return multiply

    def over_groups(each):
        """each(i, q, j, width) for the block's groups of rows and columns."""
        start = n0
        for width in (8, 4, 2, 1):
            end = b.sub(n1, b.srem(b.sub(n1, start), c64(width)))

            def columns(i, q):
                with loop(b, start, end, width, name=f"cj{width}x{q}") as j:
                    each(i, q, j, width)

            # q groups a pass, then fewer for the rows left: width columns alone keep too few
            # chains of FMAs in flight. Where a group is G of A's rows as they lie, each is a
            # stream from memory of its own, and more groups a pass ran slower: more streams
            # than the prefetcher follows
            counts = _groups_at_once(gen.cfg, G, width) if Ak is not None or trans_a else (1,)
            _passes(b, m0, m1, G, counts, columns, f"ci{width}x")
            start = end

    if rounded or pairs:  # a K slice of op(B) copied once, then read by every group
        with loop(b, 0, K, kstep, name="cs") as pc:
            over_groups(in_slice(pc))
        return

    # else a group's K slices one after the other: its rows (or panel) stream from memory
    # in order, where slice by slice each group's run of a slice was a stream of its own
    def each(i, q, j, width):
        with loop(b, 0, K, kstep, name="cs") as pc:
            in_slice(pc)(i, q, j, width)

    over_groups(each)


def _columns_in_lanes(gen, b, m0, m1, n0, n1, K, kstep, A, lda, B, ldb, C, ldc, trans_a, trans_b, accumulate, Ak, Bp):
    """few_columns with a row of C's block in one vector of FEW_COLUMNS floats (AVX-512's
    one register, AVX2's two), its lanes the columns: a step k multiplies op(A)[i, k]
    broadcast by op(B)[k, n0:n1]. Under AVX-512, groups of 8 rows a vector (few_columns'
    general path) would fill half of each register: a convolution's 4 x 4 pixels at batch 1,
    `[256 x 2304] @ [2304 x 16]`, ran at a third of the FMAs' peak; under AVX2, 16 columns
    ran in 0.5-0.9 of the general path's time (its panels' 6 rows fill 6 of 8 lanes).
    op(B)'s rows are copied once into `Bp` (the thread's pack of B), a row of FEW_COLUMNS
    floats a step, zeros past n1 - n0, so that a step reads one whole vector inside Bp. A
    pass multiplies q groups of G rows, each element's sum one chain of FMAs along a K
    slice from zero, added to C in slice order: the tiled path's sums. op(A)'s rows are
    read where they lie (a row each stream), or from its panels (`Ak`: MR-tall, k-major,
    m0 a panel's first row; rows past M are the pack's zeros, never stored), each panel
    fetched PANEL_AHEAD bytes ahead."""
    W, G = FEW_COLUMNS, gen.cfg.mr if Ak is not None else COLUMN_ROWS
    vty = ir.VectorType(f32, W)
    fma = declare(gen.m, f"llvm.fma.v{W}f32", vty, [vty] * 3)
    mload, mstore = masked(gen.m, vty)
    zero = ir.Constant(vty, None)
    row_of_b, lanes = _row_of_b(gen, b, B, ldb, trans_b, n0, n1)

    # op(B)'s rows are copied a span of whole K slices at a time, as many as Bp holds (all of
    # K up to 16,384 on AVX-512's blocking); a group then sums the span's slices one after the
    # other, its rows (or panel) streamed from memory in order
    span = b.mul(b.sdiv(c64(gen.cfg.kc * gen.cfg.nc // W), kstep), kstep)
    if Ak is not None:
        prefetch = declare(gen.m, "llvm.prefetch.p0", ir.VoidType(), [vptr, i32, i32, i32])
    with loop(b, 0, K, span, name="lspan") as p0:
        p1 = smin(b, K, b.add(p0, span))
        with loop(b, p0, p1, name="lb") as k:
            b.store(row_of_b(k), vec_ptr(b, gep(b, Bp, b.mul(b.sub(k, p0), c64(W))), vty), align=4)

        def multiply(i, q, pc):
            """C[q groups of G rows from row i on, n0:n1] (+)= their products over the K slice from pc."""
            kc = smin(b, kstep, b.sub(K, pc))
            load_c = ir.Constant(i1, 1) if accumulate else b.icmp_signed(">", pc, c64(0))
            starts = [b.add(i, c64(g * G)) for g in range(q)]
            counts = [c64(G) if q > 1 else smin(b, c64(G), b.sub(m1, at)) for at in starts]

            def a_at(g, p, k):
                """op(A)[starts[g] + p, k] (a row past the group's last: its last, inside A)."""
                if Ak is not None:
                    return gep(b, Ak, b.add(b.mul(starts[g], K), b.add(b.mul(k, c64(G)), c64(p))))
                r = b.add(starts[g], smin(b, c64(p), b.sub(counts[g], c64(1))))
                return gep(b, A, b.add(b.mul(k, lda), r) if trans_a else b.add(b.mul(r, lda), k))

            with carrying_loop(b, b.add(pc, kc), [zero] * (q * G), name="lk", start=pc) as (k, acc, new):
                bk = b.load(vec_ptr(b, gep(b, Bp, b.mul(b.sub(k, p0), c64(W))), vty), align=4)
                if Ak is not None:  # each panel's stream fetched ahead (clamped inside the panel)
                    ahead = smin(b, b.add(k, c64(PANEL_AHEAD // (4 * G))), b.sub(K, c64(1)))
                    for g in range(q):
                        b.call(prefetch, [b.bitcast(a_at(g, 0, ahead), vptr), i32(0), i32(3), i32(1)])
                for g in range(q):
                    for p in range(G):
                        a = splat(b, b.load(a_at(g, p, k)), vty)
                        new.append(b.call(fma, [a, bk, acc[g * G + p]]))
            for g, (at, rows) in enumerate(zip(starts, counts)):

                def store_row(p, g=g, at=at):
                    crow = vec_ptr(b, gep(b, C, b.add(b.mul(b.add(at, c64(p)), ldc), n0)), vty)
                    x = acc[g * G + p]
                    old = b.call(mload, [crow, i32(4), lanes, zero])
                    b.call(mstore, [b.select(load_c, b.fadd(old, x), x), crow, i32(4), lanes])

                first_rows(b, G, rows, store_row)

        # as many groups a pass as keep their chains of FMAs in all but 4 of the vector
        # registers (AVX-512's panels: three, streamed at once, 0.87-0.95 of two's time where
        # they come from memory; four spilled), then fewer; where a group is G of A's rows
        # as they lie, one (each row is a stream already)
        def slices(i, q):
            with loop(b, p0, p1, kstep, name=f"ls{q}") as pc:
                multiply(i, q, pc)

        most = max(1, (gen.cfg.vector_registers - 4) // (G * (W // gen.cfg.vw)))
        _passes(b, m0, m1, G, range(most, 0, -1) if Ak is not None or trans_a else (1,), slices, "li")


def _passes(b, m0, m1, G, counts, body, name):
    """body(i, q) for rows [m0, m1) in passes of q groups of G rows, for each q of `counts`
    (most first, down to 1): whole passes of q groups, then the rows left for the next q
    (the last group of a pass of one may be partial)."""
    first = m0
    for q in counts:
        last = m1 if q == 1 else b.sub(m1, b.srem(b.sub(m1, first), c64(q * G)))
        with loop(b, first, last, q * G, name=f"{name}{q}") as i:
            body(i, q)
        first = last


def _row_of_b(gen, b, B, ldb, trans_b, n0, n1):
    """(k -> op(B)[k, n0 : n0 + FEW_COLUMNS], zeros past n1; the lanes before n1): one
    masked load where op(B)'s rows lie along n, else its columns one by one (each read
    inside B: past n1 the last column's)."""
    W = FEW_COLUMNS
    vty, width = ir.VectorType(f32, W), b.sub(n1, n0)
    mload, _ = masked(gen.m, vty)
    lanes = b.icmp_signed(
        "<", ir.Constant(ir.VectorType(i64, W), list(range(W))), splat(b, width, ir.VectorType(i64, W))
    )

    def row(k):
        if not trans_b:
            return b.call(
                mload, [vec_ptr(b, gep(b, B, b.add(b.mul(k, ldb), n0)), vty), i32(4), lanes, ir.Constant(vty, None)]
            )
        v = ir.Constant(vty, None)
        for p in range(W):
            j = smin(b, b.add(n0, c64(p)), b.sub(n1, c64(1)))
            v = b.insert_element(v, b.load(gep(b, B, b.add(b.mul(j, ldb), k))), i32(p))
        return b.select(lanes, v, ir.Constant(vty, None))

    return row, lanes


def _groups_at_once(cfg, G: int, width: int) -> list:
    """How many groups of G rows a pass multiplies for `width` columns of C, most first, then
    fewer for the rows left, down to one. Each element is one chain of FMAs (a K slice's sum
    along k, the tiled path's order), and two FMA units each giving a sum about four cycles
    after taking its operands keep 8 chains busy: a group of 8 rows and 4 columns (a
    convolution's last stage at batch 1, 4 pixels) left half of them idle. The chains fill
    up to half the vector registers, the rest holding op(A)'s vectors and op(B)'s values."""
    registers = -(-G // cfg.vw)  # of a group's vector
    most = max(1, cfg.vector_registers // 2 // (width * registers))
    return sorted({most >> h for h in range(most.bit_length())}, reverse=True)


def _rounded_slice(gen, b, B, ldb, trans_b, pc, kc, n0, n1, Bp):
    """op(B)[pc : pc+kc, n0:n1] rounded to bfloat16 into Bp as it lies, its lines along
    its contiguous axis kc or n1 - n0 floats apart (lines that follow each other in B, an
    image's few pixels, as one run), in vectors of FEW_COLUMNS, a line's last one masked
    (never past B; its masked lanes' zeros are written to Bp): where op(B)[k, j]'s copy is,
    as a function of k and j."""
    vty = ir.VectorType(f32, FEW_COLUMNS)
    mload, _ = masked(gen.m, vty)
    iota = ir.Constant(ir.VectorType(i32, FEW_COLUMNS), list(range(FEW_COLUMNS)))

    def rounded_vector(src, dst, count):
        """dst[:FEW_COLUMNS] = src[:count] rounded, zeros after."""
        lanes = b.icmp_signed("<", iota, splat(b, b.trunc(count, i32), iota.type))
        x = b.call(mload, [vec_ptr(b, src, vty), i32(4), lanes, ir.Constant(vty, None)])
        b.store(round_bf16(b, x), vec_ptr(b, dst, vty), align=4)

    def rounded_run(src, dst, count):
        """dst[:count] = src[:count] rounded: whole vectors, then the rest masked."""
        whole = b.sub(count, b.srem(count, c64(FEW_COLUMNS)))
        with loop(b, 0, whole, FEW_COLUMNS, name="rv") as v:
            x = b.load(vec_ptr(b, gep(b, src, v), vty), align=4)
            b.store(round_bf16(b, x), vec_ptr(b, gep(b, dst, v), vty), align=4)
        rounded_vector(gep(b, src, whole), gep(b, dst, whole), b.sub(count, whole))

    if trans_b:  # op(B)'s column j is B's row j, contiguous along k: the copy's row j - n0
        with loop(b, n0, n1, name="rj") as j:
            rounded_run(gep(b, B, b.add(b.mul(j, ldb), pc)), gep(b, Bp, b.mul(b.sub(j, n0), kc)), kc)
        return lambda k, j: gep(b, Bp, b.add(b.mul(b.sub(j, n0), kc), b.sub(k, pc)))
    width = b.sub(n1, n0)
    src = gep(b, B, b.add(b.mul(pc, ldb), n0))
    with b.if_else(b.icmp_signed("==", ldb, width)) as (run, rows):
        with run:  # op(B)'s rows follow each other: one run
            rounded_run(src, Bp, b.mul(kc, width))
        with rows:  # op(B)'s row pc + k (at most FEW_COLUMNS floats): the copy's row k
            with loop(b, 0, kc, name="rk") as k:
                rounded_vector(gep(b, src, b.mul(k, ldb)), gep(b, Bp, b.mul(k, width)), width)
    return lambda k, j: gep(b, Bp, b.add(b.mul(b.sub(k, pc), width), b.sub(j, n0)))


def _paired_slice(gen, b, B, ldb, trans_b, pc, kc, n0, n1, Bp):
    """op(B)[pc : pc+kc, n0:n1] as bfloat16 pairs along k into Bp, as the tiled path's
    packs pair them (bf16_operands.py `paired_rows`, a zero row after an odd last one):
    pair q of column j at Bp[q · FEW_COLUMNS + j - n0], 32 bits each, lanes past n1 - n0
    zeros (op(B)'s rows as `_row_of_b` reads them)."""
    W = FEW_COLUMNS
    vty = ir.VectorType(f32, W)
    row, _ = _row_of_b(gen, b, B, ldb, trans_b, n0, n1)

    with loop(b, 0, ceil_div(b, kc, c64(2)), name="pq") as q:
        k0 = b.add(pc, b.mul(q, c64(2)))
        k1 = b.add(k0, c64(1))
        second = b.select(
            b.icmp_signed("<", k1, b.add(pc, kc)),
            row(smin(b, k1, b.add(pc, b.sub(kc, c64(1))))),
            ir.Constant(vty, None),
        )
        pairs = paired_rows(gen, b, row(k0), second)
        b.store(pairs, b.bitcast(gep(b, Bp, b.mul(q, c64(W))), pairs.type.as_pointer()), align=4)


def _store_columns(b, C, ldc, i, G, rows, j, acc, load_c):
    """C[i + p, j + c] = acc[c][p] (added to C's value where load_c) for p < rows (of a
    group of G)."""

    def store_row(p):
        crow = gep(b, C, b.add(b.mul(b.add(i, c64(p)), ldc), j))
        for c, v in enumerate(acc):
            at = gep(b, crow, c64(c))
            x = b.extract_element(v, i32(p))
            b.store(b.select(load_c, b.fadd(b.load(at), x), x), at)

    first_rows(b, G, rows, store_row)
