"""A block of a row or two of C (at most FEW_ROWS) multiplied without packing: runs of
vectors of a C row kept in registers while K streams op(B)'s rows, read from B as it lies
(`stored_b`) or from its pack (`packed_b`), each element summed as the tiled path sums it."""

from __future__ import annotations

from llvmlite import ir

from dlc.compiler.native.codegen.intrinsics import masked, round_bf16, splat
from dlc.compiler.native.codegen.types import i1, i32, i64
from dlc.compiler.native.codegen.gemm.blocking import FEW_VECTORS
from dlc.compiler.native.codegen.gemm.ir_helpers import c64, carrying_loop, gep, loop, smin


def few_rows(gen, b, m0, m1, n0, n1, K, kstep, A, lda, C, ldc, trans_a, accumulate, column_at):
    """C rows (+)= a sum over k of op(A)[i, k] · row k of op(B), without packing: with a
    row or two of C (a batch of one at inference, a vector times a matrix), packing B
    would copy all of it to use each element once or twice. Runs of FEW_VECTORS vectors
    of a C row stay in registers while K streams B's rows (that many independent FMA
    chains keep both FMA units busy); then runs of `column_at.unit` vectors, and the last
    columns under a mask. `column_at` says where B's vectors are: `_stored_b` (B as
    given: each run's part of a row is contiguous, which the hardware prefetcher
    follows; dropping a software prefetch of each line 8 rows ahead took 6 % off a built
    library's batch-1 prediction of the MLP and 30 % off the LSTM's on a Zen 4,
    docs/deploy.md) or `_packed_b` (B packed into panels, each one contiguous over all
    of K). Every element is summed as the tiled routine sums it, whichever run holds it
    and wherever B is read from: K slices `kstep` deep, each a chain of FMAs along k
    from zero, added in slice order — the same bits (a chunk of a product split over
    M may have a row or two)."""
    vty, vw = gen.vty, gen.cfg.vw
    mload, mstore = masked(gen.m, vty)
    operand = (lambda x: round_bf16(b, x)) if gen.cfg.bf16 else (lambda x: x)

    def a_at(i, k):
        return operand(b.load(gep(b, A, b.add(b.mul(k, lda), i) if trans_a else b.add(b.mul(i, lda), k))))

    def run(i, crow, j, vectors, left=None):
        """C[i, j : j + vectors·vw] over all of K; `left`: only its first `left` columns."""
        lanes = ir.Constant(ir.VectorType(i64, vw), list(range(vw)))
        masks = (
            [None] * vectors
            if left is None
            else [
                b.icmp_signed("<", lanes, splat(b, b.sub(left, c64(v * vw)), ir.VectorType(i64, vw)))
                for v in range(vectors)
            ]
        )

        def load(ptr, mask):
            return (
                b.call(mload, [ptr, i32(4), mask, ir.Constant(vty, None)]) if mask is not None else b.load(ptr, align=4)
            )

        # not `inbounds`: a masked vector's lanes past the end of a row may lie past the buffer
        places = [b.bitcast(b.gep(crow, [b.add(j, c64(v * vw))]), vty.as_pointer()) for v in range(vectors)]
        zero = ir.Constant(vty, None)
        total0 = [load(p, m) for p, m in zip(places, masks)] if accumulate else [zero] * vectors
        with carrying_loop(b, K, total0, name="fs", step=kstep) as (pc, total, after):
            with carrying_loop(b, b.add(pc, smin(b, kstep, b.sub(K, pc))), [zero] * vectors, name="fk", start=pc) as (
                k,
                acc,
                new,
            ):
                av = splat(b, a_at(i, k), vty)
                new += [
                    b.call(gen.fma, [av, operand(load(column_at(b, k, j, v), masks[v])), acc[v]])
                    for v in range(vectors)
                ]
            added = ir.Constant(i1, 1) if accumulate else b.icmp_signed(">", pc, c64(0))
            after += [b.select(added, b.fadd(t, a), a) for t, a in zip(total, acc)]
        for p, m, value in zip(places, masks, total):
            if m is not None:
                b.call(mstore, [value, p, i32(4), m])
            else:
                b.store(value, p, align=4)

    unit = column_at.unit
    with loop(b, m0, m1, name="fi") as i:
        crow = gep(b, C, b.mul(i, ldc))
        width = FEW_VECTORS * vw
        wide_end = b.sub(n1, b.srem(b.sub(n1, n0), c64(width)))
        with loop(b, n0, wide_end, width, name="fj") as j:
            run(i, crow, j, FEW_VECTORS)
        unit_end = b.sub(n1, b.srem(b.sub(n1, wide_end), c64(unit * vw)))
        with loop(b, wide_end, unit_end, unit * vw, name="fv") as j:
            run(i, crow, j, unit)
        tail, after = b.append_basic_block("few.tail"), b.append_basic_block("few.after")
        b.cbranch(b.icmp_signed("<", unit_end, n1), tail, after)
        b.position_at_end(tail)
        run(i, crow, unit_end, unit, b.sub(n1, unit_end))
        b.branch(after)
        b.position_at_end(after)


def stored_b(gen, B, ldb):
    """Where few_rows reads vector v of a run from column j on, at row k: B itself
    (not transposed), row k from column j + v·vw; runs of single vectors."""

    def column_at(b, k, j, v):
        return b.bitcast(b.gep(B, [b.add(b.mul(k, ldb), b.add(j, c64(v * gen.cfg.vw)))]), gen.vty.as_pointer())

    column_at.unit = 1
    return column_at


def packed_b(gen, Bk, K):
    """Where few_rows reads vector v of a run from column j on, at row k, in op(B) packed
    by add_pack: column c is in the panel at Bk + (c - c % NR)·K, at k·NR + c % NR. Runs
    start at whole panels (j a multiple of NR) and are whole panels long, so each run
    streams its panels, each contiguous over K, and the last one's columns past N, read
    under the mask, are the pack's zeros."""
    nr, vw = gen.cfg.nr, gen.cfg.vw

    def column_at(b, k, j, v):
        panel, lane = divmod(v * vw, nr)
        start = b.add(b.mul(b.add(j, c64(panel * nr)), K), b.add(b.mul(k, c64(nr)), c64(lane)))
        return b.bitcast(gep(b, Bk, start), gen.vty.as_pointer())

    column_at.unit = nr // vw
    return column_at
