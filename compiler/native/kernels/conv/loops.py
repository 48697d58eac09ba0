"""The direct convolution's loops (kernels/conv), in LLVM IR."""
from __future__ import annotations

from llvmlite import ir

from dlc.compiler.native.codegen.builder import KernelBuilder
from dlc.compiler.native.codegen.gemm import default_config
from dlc.compiler.native.codegen.intrinsics import declare, masked, splat, vec_ptr
from dlc.compiler.native.program import Affine
from dlc.compiler.native.codegen.shared_loops import SUM_LANES, add_lanes
from dlc.compiler.native.codegen.types import f32, i1, i32, i64
from dlc.compiler.native.kernels.map.loops import map_body


class _ConvRows:
    """What the direct convolution kernels (ConvKernel) share: a row chunk of `nv`
    vectors of outputs starts at column wo0; x's row h shifted by tap column j is loaded
    masked — lanes outside the row, and every lane of a row outside x, read nothing and
    are 0; sums are kept in `registers` vector registers (of 32 with AVX-512 and NEON, 16
    with AVX2, a few left for the operands)."""

    def __init__(self, kb: KernelBuilder, k, whole_lanes: bool = False):
        self.kb, self.k = kb, k
        self.vw = default_config().vw
        self.registers = 13 if self.vw == 8 else 28
        self.vty = ir.VectorType(f32, self.vw)
        self.ity = ir.VectorType(i64, self.vw)
        self.mload, self.mstore = masked(kb.m, self.vty)
        self.fma = declare(kb.m, f"llvm.fma.v{self.vw}f32", self.vty, [self.vty] * 3)
        self.zero = ir.Constant(self.vty, [0.0] * self.vw)
        self.lanes = ir.Constant(self.ity, list(range(self.vw)))
        Wo = k.out_hw[1]
        vectors = -(-Wo // self.vw) if isinstance(Wo, int) else 2
        self.nv = max(1, min(vectors, 2 if self.vw == 8 else 4))     # a row chunk of 16 or 64 columns
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

    def x_taps(self, n, c, h, wo0):
        """tap(j): the nv vectors of x[n, c, h, (wo0 + l) * sw - pw + j] (lanes l), every tap
        column j of the row from one load of it: the row's sw streams of columns (every
        sw-th, from t) are each loaded once, as far as the last tap reaches, and tap
        j = k·sw + t is stream t shifted k lanes — the same values as a load per tap, a
        lane's column outside the row 0. With stride 2 along W a stream's vector is the even
        lanes of two vectors, each masked by its own columns (intrinsics.strided_load's one
        load under a spread mask took a tenth longer in ResNet's stem's weight gradient)."""
        kb, b, k = self.kb, self.kb.b, self.k
        N, C, H, W = k.x_shape
        sw, kw = k.stride_w, k.w_shape[3]
        row_ok = b.and_(b.icmp_signed(">=", h, ir.Constant(i64, 0)), b.icmp_signed("<", h, kb.dim(H)))
        row = kb.affine(Affine(0, (C * H * W, H * W, W)), [n, c, h])
        first = b.mul(wo0, ir.Constant(i64, sw))
        more = -(-((kw - 1) // sw) // self.vw)      # vectors past the chunk's, for the largest shift
        streams = []
        for t in range(min(sw, kw)):
            stream = []
            for v in range(self.nv + more):
                parts = []
                for u in range(sw):
                    start = b.add(first, ir.Constant(i64, (v * sw + u) * self.vw + t - k.padding[1]))
                    parts.append(self.load(k.x, b.add(row, start), self.mask(start, W, row_ok)))
                stream.append(parts[0] if sw == 1 else
                              b.shuffle_vector(parts[0], parts[1], ir.Constant(ir.VectorType(i32, self.vw),
                                                                              list(range(0, 2 * self.vw, 2)))))
            streams.append(stream)

        def tap(j):
            stream, (whole, shift) = streams[j % sw], divmod(j // sw, self.vw)
            if shift == 0:
                return stream[whole:whole + self.nv]
            lanes = ir.Constant(ir.VectorType(i32, self.vw), list(range(shift, shift + self.vw)))
            return [b.shuffle_vector(stream[v], stream[v + 1], lanes) for v in range(whole, whole + self.nv)]
        return tap

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
    """The outputs of the (example, group) pairs, or without groups the (example, output
    row) pairs, `first` = (lo, hi) (`team_rows`: a batch of one splits over its rows): for
    each row chunk, a block of the group's output channels' sums in registers while the
    group's taps (c, i, j) stream by — a tap's x vectors loaded once for the block, each
    weight broadcast once for the chunk."""
    b, rows = kb.b, _ConvRows(kb, k)
    N, C, H, W = k.x_shape
    O, kh, kw = k.channels, *k.w_shape[2:]
    G = k.groups
    ci, co = C // G, O // G         # input and output channels per group
    # over (o, c, i, g), c and o counted over all groups: w[o, c - g*ci, i, j], or
    # w[c, o - g*co, kh-1-i, kw-1-j] (transposed)
    weight = (lambda j: Affine((kh - 1) * kw + kw - 1 - j, (kh * kw, co * kh * kw, -kw, -co * kh * kw))) \
        if k.transposed else (lambda j: Affine(j, (ci * kh * kw, kh * kw, kw, -ci * kh * kw)))
    Ho, Wo = k.out_hw

    def chunk(n, g, ho, q):
        wo0 = b.mul(q, ir.Constant(i64, rows.chunk))

        def block(o_first, width):
            o0 = b.add(b.mul(g, ir.Constant(i64, co)), o_first)
            sums = rows.sums(width * rows.nv)

            def tap_row(ii, c):
                i = ii[0]
                tap = rows.x_taps(n, c, rows.tap_row(ho, i), wo0)
                for j in range(kw):
                    xs = tap(j)
                    for o in range(width):
                        at = kb.affine(weight(j), [b.add(o0, ir.Constant(i64, o)), c, i, g])
                        wv = splat(b, kb.disjoint(b.load(b.gep(kb.buffer(k.w, "f32"), [at])), k.w), rows.vty)
                        for v in range(rows.nv):
                            rows.add(sums[o * rows.nv + v], wv, xs[v])
            # the tap rows that read a row of x
            c_first = b.mul(g, ir.Constant(i64, ci))
            kb.loops((ci,), lambda c: kb.loops((kh,), lambda ii: tap_row(ii, b.add(c_first, c[0])),
                                               first=rows.tap_rows(ho)))
            for o in range(width):
                for v in range(rows.nv):
                    at, lanes = rows.out_at(n, b.add(o0, ir.Constant(i64, o)), ho, wo0, v)
                    p = vec_ptr(b, b.gep(kb.buffer(k.out, "f32"), [at]), rows.vty)
                    b.call(rows.mstore, [b.load(sums[o * rows.nv + v]), p, ir.Constant(i32, 4), lanes])
        rows.blocks(co, max(1, min(co, rows.registers // rows.nv)), block)

    def outer(idx):
        """An (example, group) pair's outputs, or without groups an (example, output row)
        pair's, then the epilogue's map (over [N, O, Ho·Wo]) on them, still in cache."""
        if G > 1:
            n, g = b.sdiv(idx[0], kb.dim(G)), b.srem(idx[0], kb.dim(G))
            kb.loops((Ho, rows.chunks()), lambda hq: chunk(n, g, *hq))
            if k.epilogue is not None:
                o0 = b.mul(g, ir.Constant(i64, co))
                kb.loops((co, Ho * Wo), lambda op: map_body(kb, k.epilogue, kb.p, [n, b.add(o0, op[0]), op[1]]),
                         contiguous=True)
            return
        n, ho = b.sdiv(idx[0], kb.dim(Ho)), b.srem(idx[0], kb.dim(Ho))
        kb.loops((rows.chunks(),), lambda q: chunk(n, ir.Constant(i64, 0), ho, q[0]))
        if k.epilogue is not None:
            p0 = b.mul(ho, kb.dim(Wo))
            kb.loops((O, Wo), lambda ow: map_body(kb, k.epilogue, kb.p, [n, ow[0], b.add(p0, ow[1])]), contiguous=True)
    kb.loops((N * G if G > 1 else N * Ho,), outer, first=first)


def team_rows(k):
    """What a convolution's team splits: its examples times its groups, or without groups
    its examples times its output rows (a batch of one: its rows; dividing the index of
    each row of a depthwise convolution's few pixels took longer than the row)."""
    return k.x_shape[0] * k.groups if k.groups > 1 else k.x_shape[0] * k.out_hw[0]


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
                        tap = rows.x_taps(n, c, rows.tap_row(ho, i), wo0)
                        for j in range(kw):
                            xs = tap(j)
                            for o in range(width):
                                for v in range(rows.nv):
                                    rows.add(sums[(o * kw + j) * per + v % per], gs[o * rows.nv + v], xs[v])
                    kb.loops((count, k.out_hw[0], rows.chunks()), chunk)
                    for o in range(width):
                        for j in range(kw):
                            first_vector = (o * kw + j) * per
                            total = add_lanes(b, [b.load(s) for s in sums[first_vector:first_vector + per]])
                            at = kb.affine(Affine(j, (O * taps, taps, kh * kw, kw)),
                                           [p, b.add(o0, ir.Constant(i64, o)), cl, i])
                            kb.store(k.partial, "f32", at, total)
                kb.loops((ci, kh), tap_row)
            rows.blocks(co, max(1, min(co, (rows.registers - rows.nv) // (kw * per + rows.nv))), block)
        kb.loops((k.groups,), group)
    kb.loops((k.parts,), part, first=first)
