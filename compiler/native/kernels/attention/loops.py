"""The fused attention's loops (kernels/attention), in LLVM IR."""

from __future__ import annotations

import math

from llvmlite import ir

from dlc.compiler.ir.dims import numel
from dlc.compiler.ir.primitives import MASKED
from dlc.compiler.native.codegen.builder import KernelBuilder
from dlc.compiler.native.codegen.gemm.interface import gemm_name, gemm_type
from dlc.compiler.native.program import Affine, Load, Op
from dlc.compiler.native.codegen.scalar import exp
from dlc.compiler.native.codegen.shared_loops import lane_sum
from dlc.compiler.native.codegen.types import f32, i64


class _Attention:
    """What the forward and backward loops share: one matrix (a batch index, its slice of
    every operand), the blocks of queries and keys, the block products (calls of the GEMM
    library) and the scores' scaling and mask. Offsets are in floats, LLVM values."""

    def __init__(self, kb: KernelBuilder, k, first, library):
        self.kb, self.k, self.b = kb, k, kb.b
        self.gemms = {
            (ta, tb): library(gemm_name(ta, tb, False), gemm_type()) for ta in (False, True) for tb in (False, True)
        }
        self.tq, self.tk, self.d, self.dv = (kb.dim(x) for x in (k.tq, k.tk, k.d, k.dv))
        # one thread's scratch, at its first batch index (each thread's slice is its own)
        bq, bk = k.block_q, k.block_k
        base = self.b.mul(first[0], kb.dim(k.scratch_floats(k.d, k.dv)))
        self.scores = base
        self.second = self.add(base, bq * bk)  # a second block of scores
        self.product = self.add(self.second, bq * bk)  # a block product, [rows x d or dv]
        self.row = self.b.add(self.product, self.b.mul(self.c(max(bq, bk)), self.b.add(self.d, self.dv)))
        self.row2 = self.add(self.row, bq)

    def c(self, v: int) -> ir.Value:
        return ir.Constant(i64, v)

    def add(self, *xs) -> ir.Value:
        total = xs[0] if isinstance(xs[0], ir.Value) else self.c(xs[0])
        for x in xs[1:]:
            total = self.b.add(total, x if isinstance(x, ir.Value) else self.c(x))
        return total

    def mul(self, x, y) -> ir.Value:
        return self.b.mul(x if isinstance(x, ir.Value) else self.c(x), y if isinstance(y, ir.Value) else self.c(y))

    def ptr(self, bid: int, at: ir.Value) -> ir.Value:
        return self.b.gep(self.kb.buffer(bid, "f32"), [at])

    def load(self, bid: int, at: ir.Value) -> ir.Value:
        return self.kb.disjoint(self.b.load(self.ptr(bid, at)), bid)

    def store(self, bid: int, at: ir.Value, v: ir.Value):
        self.kb.disjoint(self.b.store(v, self.ptr(bid, at)), bid)

    def gemm(self, ta: bool, tb: bool, m, n, kk, a: tuple, b_: tuple, c: tuple):
        """C = op(A) @ op(B), each (buffer, offset, leading dim), on this thread."""
        args = [m, n, kk]
        for bid, at, ld in (a, b_, c):
            args += [self.ptr(bid, at), ld if isinstance(ld, ir.Value) else self.c(ld), self.c(0)]
        self.b.call(self.gemms[ta, tb], args + [self.c(1), self.c(1)])

    def scores_block(self, mq, nk, q: tuple, i0, key: tuple, j0, out: int):
        """The block of scores q[i0 : i0 + mq] key[j0 : j0 + nk]ᵀ into the scratch at `out`
        (rows BLOCK_K apart). One query (a step of decoding) takes them as key @ qᵀ, a column
        of nk rows (contiguous: the same row of scores), which the GEMM multiplies as the keys'
        rows lie, where q kᵀ would pack kᵀ first: each score the same chain of FMAs along d."""
        b, scratch = self.b, self.k.scratch
        with b.if_else(b.icmp_signed("==", mq, self.c(1))) as (column, block):
            with column:
                self.gemm(False, True, nk, mq, self.d, self.at(key, j0), self.at(q, i0), (scratch, out, 1))
            with block:
                self.gemm(False, True, mq, nk, self.d, self.at(q, i0), self.at(key, j0), (scratch, out, self.k.block_k))

    def matrices(self, body, first):
        """body(n, batch index) for each matrix n of the thread's slice `first`."""

        def each(idx):
            n, rest = idx[0], []
            for dim in reversed(self.k.batch):
                size = self.kb.dim(dim)
                rest.insert(0, self.b.urem(n, size))
                n = self.b.udiv(n, size)
            body(idx[0], rest)

        self.kb.loops((numel(self.k.batch),), each, first=first)

    def blocks(self, total, size: int, body):
        """body(start, count) for each block of `size` of range(total), the last one shorter."""
        b = self.b
        count = b.sdiv(b.add(total, self.c(size - 1)), self.c(size))

        def each(idx):
            start = b.mul(idx[0], self.c(size))
            rest = b.sub(total, start)
            body(start, b.select(b.icmp_signed("<", rest, self.c(size)), rest, self.c(size)))

        self.kb.loops((count,), each)

    def rows(self, shape: tuple, body):
        self.kb.loops(shape, body)

    def key_count(self, where: list) -> ir.Value:
        """How many keys the matrix at the batch index `where` has: its key count within
        0..tk where the kernel is given them, else tk."""
        if self.k.keys is None:
            return self.tk
        b = self.b
        n = b.sext(self.kb.expr(self.k.keys, where), i64)
        n = b.select(b.icmp_signed("<", n, self.tk), n, self.tk)
        return b.select(b.icmp_signed("<", n, self.c(0)), self.c(0), n)

    def score(self, s: ir.Value, where: list) -> ir.Value:
        """A score scaled and masked, at the index `where` = [*batch, query, key]."""
        b, k = self.b, self.k
        s = b.fmul(s, ir.Constant(f32, k.scale))
        if k.mask is None:
            return s
        m = self.kb.expr(k.mask, where)
        return b.select(m, s, ir.Constant(f32, MASKED)) if k.mask_bool else b.fadd(s, m)

    def row_fold(self, at: ir.Value, count: ir.Value, combine=None, init=0.0) -> ir.Value:
        """The scratch row at `at`, `count` long, summed (or folded) in SUM_LANES partial sums."""
        row = Load(self.k.scratch, Affine(at, (1,)), "f32")
        return lane_sum(self.kb, row, f32, [], (count,), combine, init)

    def matrix(self, operand: tuple, where: list) -> tuple:
        """(buffer, start, row stride) of one matrix of an operand (buffer, offset, batch
        coefficients, row stride) at the batch index `where`: its rows may be strided (a
        head's columns of [B, T, heads, d]), its elements along a row are contiguous."""
        bid, offset, coeffs, ld = operand
        return bid, self.kb.affine(Affine(offset, coeffs), where), self.kb.dim(ld)

    def rows_of(self, at: ir.Value) -> tuple:
        """A row of the scratch as a matrix."""
        return self.k.scratch, at, self.c(1)

    def element(self, m: tuple, row, col=None) -> ir.Value:
        at = self.add(m[1], self.mul(row, m[2]))
        return at if col is None else self.add(at, col)

    def at(self, m: tuple, row) -> tuple:
        """(buffer, offset, leading dim) of m from `row` on, as a GEMM operand."""
        return m[0], self.element(m, row), m[2]

    def add_into(self, m: tuple, row0, rows, cols):
        """m[row0 + r, c] += the block product in the scratch, [rows x cols]."""
        b = self.b

        def each(idx):
            r, col = idx
            dst = self.element(m, self.add(row0, r), col)
            src = self.add(self.product, self.mul(r, cols), col)
            self.store(m[0], dst, b.fadd(self.load(m[0], dst), self.load(self.k.scratch, src)))

        self.rows((rows, cols), each)

    def fill(self, m: tuple, row0, rows, cols, value: float):
        """m[row0 + r, c] = value ([rows x cols]; cols None: one value a row)."""

        def each(idx):
            at = self.element(m, self.add(row0, idx[0]), idx[1] if cols is not None else None)
            self.store(m[0], at, ir.Constant(f32, value))

        self.rows((rows,) if cols is None else (rows, cols), each)


def attention(kb: KernelBuilder, k, first, library):
    """Online softmax (FlashAttention-2's forward): for each block of queries, o and the
    running maximum (kept in lse) and sum of each row are updated block of keys by block
    of keys; o is divided by the sum and lse gets log(sum) at the end."""
    a, b = _Attention(kb, k, first, library), kb.b
    bq, bk = k.block_q, k.block_k
    scratch = k.scratch

    def matrix(n, where):
        q, key, v = (a.matrix(x, where) for x in k.reads)
        o, lse = (a.matrix(x, where) for x in k.writes)
        keys = a.key_count(where)

        def query_block(i0, mq):
            a.fill(o, i0, mq, a.dv, 0.0)
            a.fill(lse, i0, mq, None, -math.inf)
            a.fill(a.rows_of(a.row), 0, mq, None, 0.0)

            def key_block(j0, nk):
                a.scores_block(mq, nk, q, i0, key, j0, a.scores)

                def row(idx):
                    r = idx[0]
                    at = a.add(a.scores, a.mul(r, bk))
                    a.rows(
                        (nk,),
                        lambda c: a.store(
                            scratch,
                            a.add(at, c[0]),
                            a.score(a.load(scratch, a.add(at, c[0])), where + [a.add(i0, r), a.add(j0, c[0])]),
                        ),
                    )
                    last = a.load(lse[0], a.element(lse, a.add(i0, r)))
                    top = kb.intrinsic(
                        "llvm.maximum",
                        last,
                        a.row_fold(at, nk, lambda x, y: kb.intrinsic("llvm.maximum", x, y), -math.inf),
                    )
                    a.rows(
                        (nk,),
                        lambda c: a.store(
                            scratch, a.add(at, c[0]), exp(kb, b.fsub(a.load(scratch, a.add(at, c[0])), top))
                        ),
                    )
                    total = a.row_fold(at, nk)
                    alpha = exp(kb, b.fsub(last, top))
                    a.store(lse[0], a.element(lse, a.add(i0, r)), top)
                    a.store(scratch, a.add(a.row2, r), alpha)
                    a.store(scratch, a.add(a.row, r), b.fadd(b.fmul(a.load(scratch, a.add(a.row, r)), alpha), total))

                a.rows((mq,), row)
                a.gemm(False, False, mq, a.dv, nk, (scratch, a.scores, bk), a.at(v, j0), (scratch, a.product, a.dv))

                def rescale(idx):
                    r, c = idx
                    at = a.element(o, a.add(i0, r), c)
                    a.store(
                        o[0],
                        at,
                        b.fadd(
                            b.fmul(a.load(o[0], at), a.load(scratch, a.add(a.row2, r))),
                            a.load(scratch, a.add(a.product, b.mul(r, a.dv), c)),
                        ),
                    )

                a.rows((mq, a.dv), rescale)

            a.blocks(keys, bk, key_block)

            def finish(idx):
                r, c = idx
                at = a.element(o, a.add(i0, r), c)
                total = a.load(scratch, a.add(a.row, r))
                out = b.fdiv(a.load(o[0], at), total)
                if k.keys is not None:  # a matrix of no keys: o stays 0 (the sum is at least 1 otherwise)
                    out = b.select(b.fcmp_ordered(">", total, ir.Constant(f32, 0.0)), out, a.load(o[0], at))
                a.store(o[0], at, out)

            a.rows((mq, a.dv), finish)

            def log_sum(idx):
                at = a.element(lse, a.add(i0, idx[0]))
                total = a.load(scratch, a.add(a.row, idx[0]))
                a.store(lse[0], at, b.fadd(a.load(lse[0], at), kb.call("logf", f32, [total])))

            a.rows((mq,), log_sum)

        a.blocks(a.tq, bq, query_block)

    a.matrices(matrix, first)


def attention_grad(kb: KernelBuilder, k, first, library):
    """FlashAttention-2's backward on one thread per matrix: for each block of queries and
    each block of keys the probabilities are recomputed from the scores and lse, and dv,
    dq and dk get their block products added in block order (no atomics: the same sums
    on any number of threads)."""
    a, b = _Attention(kb, k, first, library), kb.b
    bq, bk = k.block_q, k.block_k
    scratch = k.scratch

    def matrix(n, where):
        q, key, v, o, lse, do = (a.matrix(x, where) for x in k.reads)
        dq, dk, dv = (a.matrix(x, where) for x in k.writes)
        keys = a.key_count(where)
        a.fill(dk, 0, a.tk, a.d, 0.0)
        a.fill(dv, 0, a.tk, a.dv, 0.0)

        def query_block(i0, mq):
            a.fill(dq, i0, mq, a.d, 0.0)

            def delta(idx):  # rowsum(do * o)
                r = idx[0]
                e = Op(
                    "mul",
                    (
                        Load(do[0], Affine(a.element(do, a.add(i0, r)), (1,)), "f32"),
                        Load(o[0], Affine(a.element(o, a.add(i0, r)), (1,)), "f32"),
                    ),
                    "f32",
                )
                a.store(scratch, a.add(a.row, r), lane_sum(kb, e, f32, [], (a.dv,)))

            a.rows((mq,), delta)

            def key_block(j0, nk):
                a.scores_block(mq, nk, q, i0, key, j0, a.scores)

                def probability(idx):
                    r, c = idx
                    at = a.add(a.scores, a.mul(r, bk), c)
                    s = a.score(a.load(scratch, at), where + [a.add(i0, r), a.add(j0, c)])
                    a.store(scratch, at, exp(kb, b.fsub(s, a.load(lse[0], a.element(lse, a.add(i0, r))))))

                a.rows((mq, nk), probability)
                a.gemm(True, False, nk, a.dv, mq, (scratch, a.scores, bk), a.at(do, i0), (scratch, a.product, a.dv))
                a.add_into(dv, j0, nk, a.dv)
                a.gemm(False, True, mq, nk, a.dv, a.at(do, i0), a.at(v, j0), (scratch, a.second, bk))

                def score_grad(idx):
                    r, c = idx
                    at = a.add(a.second, a.mul(r, bk), c)
                    p = a.load(scratch, a.add(a.scores, a.mul(r, bk), c))
                    ds = b.fmul(
                        b.fmul(p, b.fsub(a.load(scratch, at), a.load(scratch, a.add(a.row, r)))),
                        ir.Constant(f32, k.scale),
                    )
                    if k.mask is not None and k.mask_bool:  # a masked score is a constant
                        m = kb.expr(k.mask, where + [a.add(i0, r), a.add(j0, c)])
                        ds = b.select(m, ds, ir.Constant(f32, 0.0))
                    a.store(scratch, at, ds)

                a.rows((mq, nk), score_grad)
                a.gemm(False, False, mq, a.d, nk, (scratch, a.second, bk), a.at(key, j0), (scratch, a.product, a.d))
                a.add_into(dq, i0, mq, a.d)
                a.gemm(True, False, nk, a.d, mq, (scratch, a.second, bk), a.at(q, i0), (scratch, a.product, a.d))
                a.add_into(dk, j0, nk, a.d)

            a.blocks(keys, bk, key_block)

        a.blocks(a.tq, bq, query_block)

    a.matrices(matrix, first)
