"""The loop nests of the kernels, in LLVM IR: maps, reductions, scatter-add, the small
GEMM, the direct convolution, accumulation (col2im), the max-pool gradient, the host call
and the scan loop. Each kind of kernel (compiler/native/kernels/) calls its own from its
`emit`. Kernels are loop nests over their iteration space; the innermost loop walks the
last axis, where loads are usually contiguous, so LLVM vectorizes it. `first` = (lo, hi)
limits the outermost loop to a thread's share (parallel.parallel_loop).
"""
from __future__ import annotations

import math

from llvmlite import ir

from dlc.compiler.native.builder import KernelBuilder
from dlc.compiler.native.gemm import declare, default_config, masked, round_bf16, splat, vec_ptr
from dlc.compiler.ir.dims import numel
from dlc.compiler.ir.primitives import MASKED
from dlc.compiler.native.program import Affine, KernelProgram, Load, Op
from dlc.compiler.native.scalar import exp
from dlc.compiler.native.types import LL, f32, f64, i1, i32, i64

# columns of a team's share of a reduction split along its last axis (kernels/reduce.py): whole cache lines
COLUMN_BLOCK = 64


def map_loop(kb: KernelBuilder, k, prog: KernelProgram, first=None):
    """A map's loop (MapKernel or FusedMapKernel): each iteration stores every member's
    value, in order; a member kept in a register is only read by the later ones."""
    def body(idx):
        for m in k.maps:
            v = kb.expr(m.expr, idx)
            if m.out not in k.registers:
                kb.store(m.out, prog.buffers[m.out].dtype, kb.affine(m.out_at, idx), v)
            kb.stored[m.out, m.out_at] = v     # later members read it from the register
        kb.stored.clear()
    kb.loops(k.shape, body, first=first)


def _strides(shape) -> list:
    acc, out = 1, []
    for d in reversed(shape):
        out.append(acc)
        acc = acc * d
    return list(reversed(out))


def reduce(kb: KernelBuilder, k, prog: KernelProgram, first=None):
    """A ReduceKernel; with `first` = (lo, hi): the outputs at those indices of axis k.split_axis()."""
    b = kb.b
    dtype = prog.buffers[k.out].dtype
    kept = [d for r, d in enumerate(k.shape) if r not in k.axes]
    kept_strides = iter(_strides(kept))
    out_coeffs = tuple(0 if r in k.axes else next(kept_strides) for r in range(len(k.shape)))
    out_at = Affine(0, out_coeffs)
    t = LL[dtype]
    if k.op == "argmax":
        axis = k.axes[0]
        outer = [d for r, d in enumerate(k.shape) if r != axis]

        def per_row(oidx):
            idx_of = lambda j: oidx[:axis] + [j] + oidx[axis:]
            first = kb.expr(k.expr, idx_of(ir.Constant(i64, 0)))
            best = kb.alloca(first.type)
            where = kb.alloca(i64)
            b.store(first, best)
            b.store(ir.Constant(i64, 0), where)

            def step(jidx):
                v = kb.expr(k.expr, idx_of(jidx[0]))
                better = kb.replaces_max(v, b.load(best))
                b.store(b.select(better, v, b.load(best)), best)
                b.store(b.select(better, jidx[0], b.load(where)), where)
            kb.loops((k.shape[axis],), step)
            kb.store(k.out, "i32", kb.affine(Affine(0, tuple(_strides(outer))), oidx), b.trunc(b.load(where), i32))
        kb.loops(tuple(outer), per_row)
        return
    if t in (f32, f64):
        init = ir.Constant(t, 0.0 if k.op == "sum" else -math.inf)
    else:       # the least value: of a bool (an unsigned i1) false, of an integer its most negative
        init = ir.Constant(t, 0 if k.op == "sum" or t.width == 1 else -(1 << (t.width - 1)))

    trail = k.reduced_tail()
    columns = first is not None and k.split_axis() == trail - 1 == len(k.shape) - 1
    if columns:     # first: blocks of COLUMN_BLOCK columns, the last block cut at the last column
        width = ir.Constant(i64, k.shape[-1])
        ends = [b.mul(x, ir.Constant(i64, COLUMN_BLOCK)) for x in first]
        first = tuple(b.select(b.icmp_signed("<", x, width), x, width) for x in ends)
    kb.loops(tuple(kept), lambda idx: kb.store(k.out, dtype, kb.affine(Affine(0, tuple(_strides(kept))), idx), init),
             first=first)
    # the trailing reduced axes accumulate in a register; the rest into memory, the split
    # axis (the first kept one: each thread's outputs are its own) outermost, or when split
    # by columns, every row of the thread's columns in order
    tail = k.shape[trail:]
    order = list(range(trail))
    if first is not None and not columns:
        split = k.split_axis()
        order = [split] + [a for a in order if a != split]
    head = tuple(k.shape[a] for a in order)

    def combine(acc, v):
        if k.op == "sum":
            return b.fadd(acc, v) if t in (f32, f64) else b.add(acc, v)
        if t in (f32, f64):
            return kb.intrinsic("llvm.maximum", acc, v)      # NaN propagates, as in numpy
        return b.select(kb.replaces_max(v, acc), v, acc)

    def outer(looped):
        hidx = [looped[order.index(a)] for a in range(trail)]
        if not tail:
            at = kb.affine(out_at, hidx)
            ptr = b.gep(kb.buffer(k.out, dtype), [at])
            b.store(combine(b.load(ptr), kb.expr(k.expr, hidx)), ptr)
            return
        if k.op == "sum" and t in (f32, f64):
            total = _lane_sum(kb, k.expr, t, hidx, tail)
        else:
            acc = kb.alloca(t)
            b.store(init, acc)
            kb.loops(tail, lambda tidx: b.store(combine(b.load(acc), kb.expr(k.expr, hidx + tidx)), acc))
            total = b.load(acc)
        at = kb.affine(out_at, hidx + [ir.Constant(i64, 0)] * len(tail))
        ptr = b.gep(kb.buffer(k.out, dtype), [at])
        b.store(combine(b.load(ptr), total), ptr)
    if columns:
        kb.loops(head[:-1], lambda rows: kb.loops(head[-1:], lambda j: outer(rows + j), first=first))
    else:
        kb.loops(head, outer, first=first)


# A float sum over the trailing axes adds element i of the last axis into partial sum
# i mod SUM_LANES, then adds the partial sums pairwise. The order is the program's, not
# the vector width's (fast-math reassociation let LLVM pick it by target: AVX2 and
# AVX-512 gave different bits), and the independent partial sums still vectorize.
SUM_LANES = 16


def _add_lanes(b: ir.IRBuilder, vectors: list) -> ir.Value:
    """The SUM_LANES lanes of `vectors` (lane l of the whole at vector l // vw) added
    pairwise, as _lane_sum adds its partial sums."""
    return _pairwise(b, [b.extract_element(v, ir.Constant(i32, lane)) for v in vectors for lane in range(v.type.count)])


def _pairwise(b: ir.IRBuilder, values: list, combine=None) -> ir.Value:
    """values[0..L) (L a power of two) added (or combined) as halves: v[j] + v[j + L/2], then again."""
    combine = combine or b.fadd
    while len(values) > 1:
        half = len(values) // 2
        values = [combine(values[j], values[j + half]) for j in range(half)]
    return values[0]


def _lane_sum(kb: KernelBuilder, expr, t, prefix: list, tail: tuple, combine=None, init=0.0) -> ir.Value:
    """The sum of expr over the `tail` axes at the leading indices `prefix`, in SUM_LANES
    partial sums (docs/native.md, "The same bits on any machine"); or their fold by
    `combine` from `init` (a maximum from -inf)."""
    b = kb.b
    combine = combine or b.fadd
    sums = [kb.alloca(t) for _ in range(SUM_LANES)]
    for s in sums:
        b.store(ir.Constant(t, init), s)
    n = kb.dim(tail[-1])
    whole = b.sdiv(n, ir.Constant(i64, SUM_LANES))

    def add(j: int, i: ir.Value, row: list):
        b.store(combine(b.load(sums[j]), kb.expr(expr, prefix + row + [i])), sums[j])

    def row(ridx):
        def chunk(cidx):
            base = b.mul(cidx[0], ir.Constant(i64, SUM_LANES))
            for j in range(SUM_LANES):
                add(j, b.add(base, ir.Constant(i64, j)), ridx)
        kb.loops(tail[-1:], chunk, first=(ir.Constant(i64, 0), whole))
        done = b.mul(whole, ir.Constant(i64, SUM_LANES))
        for j in range(SUM_LANES - 1):          # the last n mod SUM_LANES elements
            i = b.add(done, ir.Constant(i64, j))
            with b.if_then(b.icmp_signed("<", i, n)):
                add(j, i, ridx)
    kb.loops(tail[:-1], row)
    return _pairwise(b, [b.load(s) for s in sums], combine)


def scatter_add(kb: KernelBuilder, k, prog: KernelProgram):
    b = kb.b
    dtype = prog.buffers[k.out].dtype
    total = prog.buffers[k.out].size
    kb.loops((total,), lambda idx: kb.store(k.out, dtype, idx[0], ir.Constant(LL[dtype], 0.0)))
    flat = _strides(k.idx_shape)

    def each(idx):
        row = b.sext(kb.expr(k.idx, idx), i64)
        ok = kb.in_range(row, k.count, k.site)
        src = b.mul(kb.affine(Affine(0, tuple(flat)), idx), kb.dim(k.row))
        dst = b.mul(b.select(ok, row, ir.Constant(i64, 0)), kb.dim(k.row))
        zero = ir.Constant(LL[dtype], 0.0)

        def inner(r):
            pd = b.gep(kb.buffer(k.out, dtype), [b.add(dst, r[0])])
            ps = b.gep(kb.buffer(k.upd, dtype), [b.add(src, r[0])])
            b.store(b.fadd(b.load(pd), b.select(ok, b.load(ps), zero)), pd)
        kb.loops((k.row,), inner)
    kb.loops(k.idx_shape, each)


def operand(b, k, x):
    """x as an operand of kernel k's products: rounded to bfloat16 where k's are (k.bf16)."""
    return round_bf16(b, x) if k.bf16 else x


def small_gemm(kb: KernelBuilder, k, first):
    """The parts `first` = (lo, hi) of the batch, each summed into its slice of k.partial.
    Each MR x NR tile of C is a set of vector accumulators over a part's examples and K:
    A broadcast, a row of B loaded as vectors (masked past N), llvm.fma — the GEMM's
    micro-kernel without packing, which pays off only when C is this small. A part's
    examples (a few, the whole batch over the parts) stay in cache while its tiles sweep them."""
    b, cfg = kb.b, default_config()
    VW = cfg.vw
    vty, mty = ir.VectorType(f32, VW), ir.VectorType(i1, VW)
    fma = declare(kb.m, f"llvm.fma.v{VW}f32", vty, [vty] * 3)
    mload, mstore = masked(kb.m, vty)
    zero = ir.Constant(vty, [0.0] * VW)
    (ab, aoff, lda, sa), (bb, boff, ldb, sb) = k.a, k.b
    A, B, P = kb.buffer(ab, "f32"), kb.buffer(bb, "f32"), kb.buffer(k.partial, "f32")

    def vec(ptr, at, lanes, value=None):
        p = vec_ptr(b, b.gep(ptr, [at]), vty)
        if lanes == VW:
            return b.load(p, align=4) if value is None else b.store(value, p, align=4)
        mask = ir.Constant(mty, [int(j < lanes) for j in range(VW)])
        if value is None:
            return b.call(mload, [p, ir.Constant(i32, 4), mask, zero])
        return b.call(mstore, [value, p, ir.Constant(i32, 4), mask])

    def part(pidx):
        p = pidx[0]
        share = lambda q: b.sdiv(b.mul(kb.dim(k.batch), q), ir.Constant(i64, k.parts))
        start = share(p)
        count = b.sub(share(b.add(p, ir.Constant(i64, 1))), start)
        out = b.mul(p, ir.Constant(i64, k.m * k.n))
        for i0 in range(0, k.m, cfg.mr):
            rows = range(i0, min(i0 + cfg.mr, k.m))
            for j0 in range(0, k.n, cfg.nr):
                lanes = [min(VW, k.n - j) for j in range(j0, min(j0 + cfg.nr, k.n), VW)]
                acc = {(r, v): kb.alloca(vty) for r in rows for v in range(len(lanes))}
                for slot in acc.values():
                    b.store(zero, slot)

                def step(idx, rows=rows, lanes=lanes, acc=acc, j0=j0):
                    n, kk = b.add(start, idx[0]), idx[1]
                    brow = b.add(b.add(b.mul(n, kb.dim(sb)), b.mul(kk, kb.dim(ldb))), kb.dim(boff + j0))
                    bv = [operand(b, k, vec(B, b.add(brow, ir.Constant(i64, v * VW)), w)) for v, w in enumerate(lanes)]
                    acol = b.add(b.add(b.mul(n, kb.dim(sa)), kk), kb.dim(aoff))
                    for r in rows:
                        a = splat(b, operand(b, k, b.load(b.gep(A, [b.add(acol, kb.dim(r * lda))]))), vty)
                        for v in range(len(lanes)):
                            b.store(b.call(fma, [a, bv[v], b.load(acc[r, v])]), acc[r, v])
                kb.loops((count, k.k), step)
                for r in rows:
                    for v, w in enumerate(lanes):
                        vec(P, b.add(out, ir.Constant(i64, r * k.n + j0 + v * VW)), w, b.load(acc[r, v]))
    kb.loops((k.parts,), part, first=first)


def sum_parts(kb: KernelBuilder, partial: int, parts: int, m: int, n: int, c: tuple):
    """C (m x n at c = (buffer, offset, ld)) = the sum of the parts' m x n slices of
    `partial`, in order."""
    (cb, coff, ldc) = c

    def each(idx):
        total = kb.expr(Load(partial, Affine(0, (n, 1)), "f32"), idx)
        for p in range(1, parts):
            total = kb.b.fadd(total, kb.expr(Load(partial, Affine(p * m * n, (n, 1)), "f32"), idx))
        kb.store(cb, "f32", kb.affine(Affine(coff, (ldc, 1)), idx), total)
    kb.loops((m, n), each)


# ---- direct convolution ---------------------------------------------------------------------------
class _ConvRows:
    """What the direct convolution kernels (ConvKernel) share: a row chunk of `nv`
    vectors of outputs starts at column wo0; x's row h shifted by tap column j is loaded
    masked — lanes outside the row, and every lane of a row outside x, read nothing and
    are 0; sums are kept in `registers` vector registers (of 32 with AVX-512, 16 with AVX2,
    a few left for the operands)."""

    def __init__(self, kb: KernelBuilder, k, whole_lanes: bool = False):
        self.kb, self.k = kb, k
        self.vw = default_config().vw
        self.registers = 28 if self.vw == 16 else 13
        self.vty = ir.VectorType(f32, self.vw)
        self.ity = ir.VectorType(i64, self.vw)
        self.mload, self.mstore = masked(kb.m, self.vty)
        self.fma = declare(kb.m, f"llvm.fma.v{self.vw}f32", self.vty, [self.vty] * 3)
        self.zero = ir.Constant(self.vty, [0.0] * self.vw)
        self.lanes = ir.Constant(self.ity, list(range(self.vw)))
        Wo = k.out_hw[1]
        vectors = -(-Wo // self.vw) if isinstance(Wo, int) else 2
        self.nv = max(1, min(vectors, 4 if self.vw == 16 else 2))
        if whole_lanes:         # a chunk covers whole sets of SUM_LANES columns (conv_weight_grad)
            self.nv = -(-self.nv * self.vw // SUM_LANES) * SUM_LANES // self.vw
        self.chunk = self.nv * self.vw

    def chunks(self):
        b, Wo = self.kb.b, self.kb.dim(self.k.out_hw[1])
        return b.sdiv(b.add(Wo, ir.Constant(i64, self.chunk - 1)), ir.Constant(i64, self.chunk))

    def mask(self, start, size, extra=None):
        """Lanes l with 0 <= start + l < size (and `extra`, an i1)."""
        b = self.kb.b
        at = b.add(splat(b, start, self.ity), self.lanes)
        ok = b.and_(b.icmp_signed(">=", at, ir.Constant(self.ity, [0] * self.vw)),
                    b.icmp_signed("<", at, splat(b, self.kb.dim(size), self.ity)))
        return ok if extra is None else b.and_(ok, splat(b, extra, ir.VectorType(i1, self.vw)))

    def load(self, bid, at, mask):
        b = self.kb.b
        # not `inbounds`: masked-off lanes may lie outside the buffer
        p = vec_ptr(b, b.gep(self.kb.buffer(bid, "f32"), [at]), self.vty)
        return b.call(self.mload, [p, ir.Constant(i32, 4), mask, self.zero])

    def x_row(self, n, c, h, wo0, j):
        """The nv vectors of x[n, c, h, (wo0 + l) * sw - pw + j] (lanes l); with stride 2
        along W, the even lanes of two vectors of the row."""
        kb, b, k = self.kb, self.kb.b, self.k
        N, C, H, W = k.x_shape
        sw = k.stride_w
        row_ok = b.and_(b.icmp_signed(">=", h, ir.Constant(i64, 0)), b.icmp_signed("<", h, kb.dim(H)))
        row = kb.affine(Affine(0, (C * H * W, H * W, W)), [n, c, h])
        first = b.mul(wo0, ir.Constant(i64, sw))
        out = []
        for v in range(self.nv):
            parts = []
            for t in range(sw):
                start = b.add(first, ir.Constant(i64, (v * sw + t) * self.vw + j - k.padding[1]))
                parts.append(self.load(k.x, b.add(row, start), self.mask(start, W, row_ok)))
            out.append(parts[0] if sw == 1 else
                       b.shuffle_vector(parts[0], parts[1], ir.Constant(ir.VectorType(i32, self.vw),
                                                                       list(range(0, 2 * self.vw, 2)))))
        return out

    def out_at(self, n, o, ho, wo0, v):
        """Where vector v of the chunk at wo0 of output row (n, o, ho) starts, and its lanes inside the row."""
        O, Ho, Wo = self.k.channels, *self.k.out_hw
        start = self.kb.b.add(wo0, ir.Constant(i64, v * self.vw))
        return self.kb.affine(Affine(0, (O * Ho * Wo, Ho * Wo, Wo, 1)), [n, o, ho, start]), self.mask(start, Wo)

    def tap_row(self, ho, i):
        """The row of x that tap row i of output row ho reads."""
        k = self.k
        return self.kb.b.sub(self.kb.b.add(self.kb.b.mul(ho, self.kb.dim(k.stride_h)), i), self.kb.dim(k.padding[0]))

    def tap_rows(self, ho):
        """(first, end) of the tap rows of output row ho that read a row of x (padding reads none)."""
        b, k, kb = self.kb.b, self.k, self.kb
        top = b.sub(kb.dim(k.padding[0]), b.mul(ho, kb.dim(k.stride_h)))
        lo = b.select(b.icmp_signed(">", top, ir.Constant(i64, 0)), top, ir.Constant(i64, 0))
        hi = b.add(top, kb.dim(k.x_shape[2]))
        kh = kb.dim(k.w_shape[2])
        return lo, b.select(b.icmp_signed("<", hi, kh), hi, kh)

    def blocks(self, count: int, size: int, body):
        """body(first, width) over [0, count) in blocks: a loop over the whole blocks of
        `size`, then the rest (one copy of the code per block width)."""
        whole = count // size
        if whole:
            self.kb.loops((whole,), lambda q: body(self.kb.b.mul(q[0], ir.Constant(i64, size)), size))
        if count % size:
            body(ir.Constant(i64, whole * size), count % size)

    def sums(self, count):
        slots = [self.kb.alloca(self.vty) for _ in range(count)]
        for slot in slots:
            self.kb.b.store(self.zero, slot)
        return slots

    def add(self, slot, x, y):
        b = self.kb.b
        b.store(b.call(self.fma, [x, y, b.load(slot)]), slot)


def conv(kb: KernelBuilder, k, first):
    """The outputs of (example, group) pairs `first` = (lo, hi): for each row chunk, a block
    of the group's output channels' sums in registers while the group's taps (c, i, j)
    stream by — a tap's x vectors loaded once for the block, each weight broadcast once
    for the chunk."""
    b, rows = kb.b, _ConvRows(kb, k)
    N, C, H, W = k.x_shape
    O, kh, kw = k.channels, *k.w_shape[2:]
    G = k.groups
    ci, co = C // G, O // G         # input and output channels per group
    # over (o, c, i, g), c and o counted over all groups: w[o, c - g*ci, i, j], or
    # w[c, o - g*co, kh-1-i, kw-1-j] (transposed)
    weight = (lambda j: Affine((kh - 1) * kw + kw - 1 - j, (kh * kw, co * kh * kw, -kw, -co * kh * kw))) \
        if k.transposed else (lambda j: Affine(j, (ci * kh * kw, kh * kw, kw, -ci * kh * kw)))

    def chunk(idx):
        ng, ho, q = idx
        n, g = (ng, ir.Constant(i64, 0)) if G == 1 else (b.sdiv(ng, kb.dim(G)), b.srem(ng, kb.dim(G)))
        wo0 = b.mul(q, ir.Constant(i64, rows.chunk))

        def block(o_first, width):
            o0 = b.add(b.mul(g, ir.Constant(i64, co)), o_first)
            sums = rows.sums(width * rows.nv)

            def tap_row(ii, c):
                i = ii[0]
                h = rows.tap_row(ho, i)
                for j in range(kw):
                    xs = rows.x_row(n, c, h, wo0, j)
                    for o in range(width):
                        at = kb.affine(weight(j), [b.add(o0, ir.Constant(i64, o)), c, i, g])
                        wv = splat(b, kb.disjoint(b.load(b.gep(kb.buffer(k.w, "f32"), [at])), k.w), rows.vty)
                        for v in range(rows.nv):
                            rows.add(sums[o * rows.nv + v], wv, xs[v])
            taps = rows.tap_rows(ho)
            c_first = b.mul(g, ir.Constant(i64, ci))
            kb.loops((ci,), lambda c: kb.loops((kh,), lambda ii: tap_row(ii, b.add(c_first, c[0])), first=taps))
            for o in range(width):
                for v in range(rows.nv):
                    at, lanes = rows.out_at(n, b.add(o0, ir.Constant(i64, o)), ho, wo0, v)
                    p = vec_ptr(b, b.gep(kb.buffer(k.out, "f32"), [at]), rows.vty)
                    b.call(rows.mstore, [b.load(sums[o * rows.nv + v]), p, ir.Constant(i32, 4), lanes])
        rows.blocks(co, max(1, min(co, rows.registers // rows.nv)), block)
    kb.loops((N * G, k.out_hw[0], rows.chunks()), chunk, first=first)


def conv_weight_grad(kb: KernelBuilder, k, first):
    """The parts `first` = (lo, hi) of the batch, each summed into its slice of k.partial:
    for a block of a group's output channels and a row of the group's taps (c, i, every
    j), the sums over the part's row chunks stay in vector registers, g's vectors loaded
    once per chunk for the block; then each sum is added across its lanes. Column wo of a
    row goes to lane wo mod SUM_LANES of a sum (in SUM_LANES / vw vectors), and the lanes
    are added in one fixed order: the same bits at any vector width."""
    b, rows = kb.b, _ConvRows(kb, k, whole_lanes=True)
    N, C, H, W = k.x_shape
    O, ci, kh, kw = k.w_shape
    co = O // k.groups
    taps = ci * kh * kw
    per = SUM_LANES // rows.vw          # vectors per sum

    def part(pidx):
        p = pidx[0]
        share = lambda q: b.sdiv(b.mul(kb.dim(N), q), ir.Constant(i64, k.parts))
        start = share(p)
        count = b.sub(share(b.add(p, ir.Constant(i64, 1))), start)

        def group(gidx):
            g = gidx[0]

            def block(o_first, width):
                o0 = b.add(b.mul(g, ir.Constant(i64, co)), o_first)

                def tap_row(ci_idx):
                    cl, i = ci_idx
                    c = b.add(b.mul(g, ir.Constant(i64, ci)), cl)
                    sums = rows.sums(width * kw * per)

                    def chunk(idx):
                        n, ho, q = b.add(start, idx[0]), idx[1], idx[2]
                        wo0 = b.mul(q, ir.Constant(i64, rows.chunk))
                        gs = []
                        for o in range(width):
                            for v in range(rows.nv):
                                at, inside = rows.out_at(n, b.add(o0, ir.Constant(i64, o)), ho, wo0, v)
                                gs.append(rows.load(k.g, at, inside))
                        h = rows.tap_row(ho, i)
                        for j in range(kw):
                            xs = rows.x_row(n, c, h, wo0, j)
                            for o in range(width):
                                for v in range(rows.nv):
                                    rows.add(sums[(o * kw + j) * per + v % per], gs[o * rows.nv + v], xs[v])
                    kb.loops((count, k.out_hw[0], rows.chunks()), chunk)
                    for o in range(width):
                        for j in range(kw):
                            first_vector = (o * kw + j) * per
                            total = _add_lanes(b, [b.load(s) for s in sums[first_vector:first_vector + per]])
                            at = kb.affine(Affine(j, (O * taps, taps, kh * kw, kw)),
                                           [p, b.add(o0, ir.Constant(i64, o)), cl, i])
                            kb.store(k.partial, "f32", at, total)
                kb.loops((ci, kh), tap_row)
            rows.blocks(co, max(1, min(co, (rows.registers - rows.nv) // (kw * per + rows.nv))), block)
        kb.loops((k.groups,), group)
    kb.loops((k.parts,), part, first=first)


def _zero(kb: KernelBuilder, bid: int, examples, size, first):
    """Zero the examples `first` = (lo, hi) of f32 buffer bid, `size` elements each."""
    kb.loops((examples, size), lambda idx: kb.store(bid, "f32", kb.affine(Affine(0, (size, 1)), idx),
                                                    ir.Constant(f32, 0.0)), first=first)


def accumulate(kb: KernelBuilder, k, first):
    """The examples `first` = (lo, hi)."""
    b = kb.b
    _zero(kb, k.out, k.shape[0], k.at.coeffs[0], first)

    def each(idx):
        # a branch, not a clamped address: LLVM vectorizes the conditional update (masked)
        with b.if_then(kb.inside(k.guards, idx)):
            at = kb.affine(k.at, idx)
            old = kb.disjoint(b.load(b.gep(kb.buffer(k.out, "f32"), [at])), k.out)
            kb.store(k.out, "f32", at, b.fadd(old, kb.expr(k.expr, idx)))
    kb.loops(k.shape, each, first=first)


def maxpool_grad(kb: KernelBuilder, k, first):
    """dx of max pooling for the examples `first` = (lo, hi): each window's gradient goes
    to its first maximum."""
    N, C, H, W = k.shape
    if k.stride == k.kernel and not any(k.padding):
        _tiled_maxpool_grad(kb, k, first)
        return
    b = kb.b
    _zero(kb, k.out, N, C * H * W, first)
    Ho, Wo = k.out_hw
    (kh, kw), (sh, sw), (ph, pw) = k.kernel, k.stride, k.padding
    best, where = kb.alloca(f32), kb.alloca(i64)
    plane_x = kb.dim(H * W)

    def each(idx):
        n, c, ho, wo = idx
        plane = b.mul(b.add(b.mul(n, kb.dim(C)), c), plane_x)
        b.store(ir.Constant(f32, -math.inf), best)
        b.store(ir.Constant(i64, -1), where)

        def window(ij):
            h = b.sub(b.add(b.mul(ho, kb.dim(sh)), ij[0]), kb.dim(ph))
            w = b.sub(b.add(b.mul(wo, kb.dim(sw)), ij[1]), kb.dim(pw))
            ok = b.and_(b.and_(b.icmp_signed(">=", h, ir.Constant(i64, 0)), b.icmp_signed("<", h, kb.dim(H))),
                        b.and_(b.icmp_signed(">=", w, ir.Constant(i64, 0)), b.icmp_signed("<", w, kb.dim(W))))
            pos = b.add(b.mul(h, kb.dim(W)), w)
            v = b.load(b.gep(kb.buffer(k.x, "f32"), [b.select(ok, b.add(plane, pos), ir.Constant(i64, 0))]))
            v = b.select(ok, v, ir.Constant(f32, -math.inf))
            better = kb.replaces_max(v, b.load(best))
            b.store(b.select(better, v, b.load(best)), best)
            b.store(b.select(better, pos, b.load(where)), where)
        kb.loops((kh, kw), window)
        hit = b.load(where)
        found = b.icmp_signed(">=", hit, ir.Constant(i64, 0))
        gi = kb.affine(Affine(0, (C * Ho * Wo, Ho * Wo, Wo, 1)), idx)
        g = b.load(b.gep(kb.buffer(k.g, "f32"), [gi]))
        ptr = b.gep(kb.buffer(k.out, "f32"), [b.add(plane, b.select(found, hit, ir.Constant(i64, 0)))])
        b.store(b.fadd(b.load(ptr), b.select(found, g, ir.Constant(f32, 0.0))), ptr)
    kb.loops((N, C, Ho, Wo), each, first=first)


def _tiled_maxpool_grad(kb: KernelBuilder, k, first):
    """Windows that tile the input (stride = kernel, no padding) write every element they
    cover once — the gradient at the window's first maximum, 0 elsewhere — with no zeroing
    pass and no read-modify-write; then the last rows and columns no window covers are
    zeroed. Windows two wide (2 x 2 pooling) go a vector of them at a time."""
    N, C, H, W = k.shape
    Ho, Wo = k.out_hw
    kh, kw = k.kernel
    x_at = lambda i, j: Affine(i * W + j, (C * H * W, H * W, kh * W, kw))
    zero = ir.Constant(f32, 0.0)
    if kw == 2:
        _paired_maxpool_grad(kb, k, first)
    else:
        def window(idx):
            values = [kb.expr(Load(k.x, x_at(i, j), "f32"), idx) for i in range(kh) for j in range(kw)]
            g = kb.expr(Load(k.g, Affine(0, (C * Ho * Wo, Ho * Wo, Wo, 1)), "f32"), idx)
            for p, v in enumerate(_first_max_shares(kb, values, g, lambda p: ir.Constant(i32, p))):
                kb.store(k.out, "f32", kb.affine(x_at(*divmod(p, kw)), idx), v)
        kb.loops((N, C, Ho, Wo), window, first=first)
    # columns right of the last window, on the rows the windows cover; then the rows below
    cols = Affine(Wo * kw, (C * H * W, H * W, W, 1))
    kb.loops((N, C, Ho * kh, W - Wo * kw), lambda idx: kb.store(k.out, "f32", kb.affine(cols, idx), zero),
             first=first)
    rows = Affine(Ho * kh * W, (C * H * W, H * W, 1))
    kb.loops((N, C, (H - Ho * kh) * W), lambda idx: kb.store(k.out, "f32", kb.affine(rows, idx), zero),
             first=first)


def _first_max_shares(kb: KernelBuilder, values: list, g, const) -> list:
    """What each of a window's values receives of its gradient g: all of it at the first
    maximum (or the first NaN, as numpy's argmax), 0 elsewhere. Scalars or vectors of
    windows alike; const(p) is the window position p as an i32 (vector)."""
    b = kb.b
    best, where = values[0], const(0)
    for p, v in enumerate(values[1:], 1):
        better = kb.replaces_max(v, best)
        best, where = b.select(better, v, best), b.select(better, const(p), where)
    none = ir.Constant(g.type, None)
    return [b.select(b.icmp_signed("==", where, const(p)), g, none) for p in range(len(values))]


def _paired_maxpool_grad(kb: KernelBuilder, k, first):
    """kw = 2: a row chunk of VW windows at a time; each of the window's rows is two
    vectors of x, split into the windows' left and right values, and the results are
    interleaved back. Lanes past the last window load and store nothing."""
    b, VW = kb.b, default_config().vw
    N, C, H, W = k.shape
    Ho, Wo = k.out_hw
    kh = k.kernel[0]
    vty, ity = ir.VectorType(f32, VW), ir.VectorType(i64, VW)
    mload, mstore = masked(kb.m, vty)
    zero = ir.Constant(vty, None)
    const = lambda p: ir.Constant(ir.VectorType(i32, VW), [p] * VW)
    left, right = list(range(0, 2 * VW, 2)), list(range(1, 2 * VW, 2))
    mix = [lane for pair in zip(range(VW), range(VW, 2 * VW)) for lane in pair]
    shuffle = lambda x, y, lanes: b.shuffle_vector(x, y, ir.Constant(ir.VectorType(i32, len(lanes)), lanes))

    def mask(start, size):
        at = b.add(splat(b, start, ity), ir.Constant(ity, list(range(VW))))
        return b.icmp_signed("<", at, splat(b, kb.dim(size), ity))

    def vec(bid, at):
        # not `inbounds`: masked-off lanes may lie past the end of the buffer
        return vec_ptr(b, b.gep(kb.buffer(bid, "f32"), [at]), vty)

    def chunk(idx):
        n, c, ho, q = idx
        wo0 = b.mul(q, ir.Constant(i64, VW))
        halves = [mask(b.add(b.mul(wo0, ir.Constant(i64, 2)), ir.Constant(i64, h * VW)), 2 * Wo) for h in (0, 1)]
        rows = [kb.affine(Affine(i * W, (C * H * W, H * W, kh * W, 2)), [n, c, ho, wo0]) for i in range(kh)]
        values = []
        for at in rows:
            pair = [kb.disjoint(b.call(mload, [vec(k.x, b.add(at, ir.Constant(i64, h * VW))), ir.Constant(i32, 4),
                                               halves[h], zero]), k.x) for h in (0, 1)]
            values += [shuffle(pair[0], pair[1], left), shuffle(pair[0], pair[1], right)]
        g_at = kb.affine(Affine(0, (C * Ho * Wo, Ho * Wo, Wo, 1)), [n, c, ho, wo0])
        g = kb.disjoint(b.call(mload, [vec(k.g, g_at), ir.Constant(i32, 4), mask(wo0, Wo), zero]), k.g)
        shares = _first_max_shares(kb, values, g, const)
        for i, at in enumerate(rows):
            both = shuffle(shares[2 * i], shares[2 * i + 1], mix)
            for h in (0, 1):
                half = shuffle(both, both, list(range(h * VW, h * VW + VW)))
                kb.disjoint(b.call(mstore, [half, vec(k.out, b.add(at, ir.Constant(i64, h * VW))), ir.Constant(i32, 4),
                                            halves[h]]), k.out)
    chunks = b.sdiv(b.add(kb.dim(Wo), ir.Constant(i64, VW - 1)), ir.Constant(i64, VW))
    kb.loops((N, C, Ho, chunks), chunk, first=first)


# ---- fused attention (kernels/attention.py) ----------------------------------------------------
class _Attention:
    """What the forward and backward loops share: one matrix (a batch index, its slice of
    every operand), the blocks of queries and keys, the block products (calls of the GEMM
    library) and the scores' scaling and mask. Offsets are in floats, LLVM values."""

    def __init__(self, kb: KernelBuilder, k, first, library):
        from dlc.compiler.native.gemm import gemm_name, gemm_type
        self.kb, self.k, self.b = kb, k, kb.b
        self.gemms = {(ta, tb): library(gemm_name(ta, tb, False), gemm_type()) for ta in (False, True)
                      for tb in (False, True)}
        self.tq, self.tk, self.d, self.dv = (kb.dim(x) for x in (k.tq, k.tk, k.d, k.dv))
        # one thread's scratch, at its first batch index (each thread's slice is its own)
        bq, bk = k.block_q, k.block_k
        base = self.b.mul(first[0], kb.dim(k.scratch_floats(k.d, k.dv)))
        self.scores = base
        self.second = self.add(base, bq * bk)                   # a second block of scores
        self.product = self.add(self.second, bq * bk)           # a block product, [rows x d or dv]
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
        return _lane_sum(self.kb, row, f32, [], (count,), combine, init)

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

        def query_block(i0, mq):
            a.fill(o, i0, mq, a.dv, 0.0)
            a.fill(lse, i0, mq, None, -math.inf)
            a.fill(a.rows_of(a.row), 0, mq, None, 0.0)

            def key_block(j0, nk):
                a.gemm(False, True, mq, nk, a.d, a.at(q, i0), a.at(key, j0), (scratch, a.scores, bk))

                def row(idx):
                    r = idx[0]
                    at = a.add(a.scores, a.mul(r, bk))
                    a.rows((nk,), lambda c: a.store(scratch, a.add(at, c[0]), a.score(
                        a.load(scratch, a.add(at, c[0])), where + [a.add(i0, r), a.add(j0, c[0])])))
                    last = a.load(lse[0], a.element(lse, a.add(i0, r)))
                    top = kb.intrinsic("llvm.maximum", last, a.row_fold(
                        at, nk, lambda x, y: kb.intrinsic("llvm.maximum", x, y), -math.inf))
                    a.rows((nk,), lambda c: a.store(scratch, a.add(at, c[0]), exp(
                        kb, b.fsub(a.load(scratch, a.add(at, c[0])), top))))
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
                    a.store(o[0], at, b.fadd(b.fmul(a.load(o[0], at), a.load(scratch, a.add(a.row2, r))),
                                             a.load(scratch, a.add(a.product, b.mul(r, a.dv), c))))
                a.rows((mq, a.dv), rescale)
            a.blocks(a.tk, bk, key_block)

            def finish(idx):
                r, c = idx
                at = a.element(o, a.add(i0, r), c)
                a.store(o[0], at, b.fdiv(a.load(o[0], at), a.load(scratch, a.add(a.row, r))))
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
        a.fill(dk, 0, a.tk, a.d, 0.0)
        a.fill(dv, 0, a.tk, a.dv, 0.0)

        def query_block(i0, mq):
            a.fill(dq, i0, mq, a.d, 0.0)

            def delta(idx):         # rowsum(do * o)
                r = idx[0]
                e = Op("mul", (Load(do[0], Affine(a.element(do, a.add(i0, r)), (1,)), "f32"),
                               Load(o[0], Affine(a.element(o, a.add(i0, r)), (1,)), "f32")), "f32")
                a.store(scratch, a.add(a.row, r), _lane_sum(kb, e, f32, [], (a.dv,)))
            a.rows((mq,), delta)

            def key_block(j0, nk):
                a.gemm(False, True, mq, nk, a.d, a.at(q, i0), a.at(key, j0), (scratch, a.scores, bk))

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
                    ds = b.fmul(b.fmul(p, b.fsub(a.load(scratch, at), a.load(scratch, a.add(a.row, r)))),
                                ir.Constant(f32, k.scale))
                    if k.mask is not None and k.mask_bool:     # a masked score is a constant
                        m = kb.expr(k.mask, where + [a.add(i0, r), a.add(j0, c)])
                        ds = b.select(m, ds, ir.Constant(f32, 0.0))
                    a.store(scratch, at, ds)
                a.rows((mq, nk), score_grad)
                a.gemm(False, False, mq, a.d, nk, (scratch, a.second, bk), a.at(key, j0), (scratch, a.product, a.d))
                a.add_into(dq, i0, mq, a.d)
                a.gemm(True, False, nk, a.d, mq, (scratch, a.second, bk), a.at(q, i0), (scratch, a.product, a.d))
                a.add_into(dk, j0, nk, a.d)
            a.blocks(a.tk, bk, key_block)
        a.blocks(a.tq, bq, query_block)
    a.matrices(matrix, first)


def host_call(kb: KernelBuilder, k, prog: KernelProgram):
    """function(buffer, n) with n the buffer's own size, so the host is never told of
    elements the buffer does not have. It runs on the calling thread, between kernels
    (outside every parallel region)."""
    signature = ir.FunctionType(ir.VoidType(), [f32.as_pointer(), i64])
    function = kb.b.bitcast(kb.argument(k.host), signature.as_pointer())
    kb.b.call(function, [kb.buffer(k.buffer, "f32"), kb.dim(prog.buffers[k.buffer].size)])


def scan_loop(kb: KernelBuilder, k, prog: KernelProgram, run_body):
    """The step index goes into the sizes array, where the body's kernels read it."""
    b = kb.b
    length = kb.dim(k.length)
    slot = b.gep(kb.fn.args[1], [ir.Constant(i64, prog.symbols.index(k.var))])

    def step(idx):
        t = b.sub(b.sub(length, ir.Constant(i64, 1)), idx[0]) if k.reverse else idx[0]
        b.store(t, slot)
        run_body(b)
    kb.loops((k.length,), step)
