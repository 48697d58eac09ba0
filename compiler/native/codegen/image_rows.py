"""The rows of an image as vectors, for the kernels that read an image through a
convolution's windows without columns: the direct convolution (kernels/conv) and
Winograd's transforms (kernels/winograd)."""

from __future__ import annotations

from llvmlite import ir

from dlc.compiler.native.codegen.builder import KernelBuilder
from dlc.compiler.native.codegen.jit import vector_width
from dlc.compiler.native.codegen.intrinsics import declare, every, masked, splat, vec_ptr
from dlc.compiler.native.codegen.shared_loops import SUM_LANES
from dlc.compiler.native.codegen.types import f32, i1, i32, i64
from dlc.compiler.native.program import Affine


class ConvRows:
    """What the direct convolution kernels (ConvKernel) and Winograd's transforms
    (kernels/winograd: its input tiles are a convolution's windows) share: a row chunk of
    `nv` vectors of outputs (`vectors`, else as many as the row needs, up to 2 or 4)
    starts at column wo0; x's row h shifted by tap column j is loaded whole where every
    lane is inside x, else masked (`row_load`: lanes outside the row, and every lane of a
    row outside x, read nothing and are 0), and vectors are stored the same way (`store`);
    sums are kept in `registers` vector registers (of 32 with AVX-512 and NEON, 16 with
    AVX2, a few left for the operands). `fill`: what a lane outside x reads (0 for a
    convolution's padding, -inf for a max-pool's)."""

    def __init__(self, kb: KernelBuilder, k, whole_lanes: bool = False, vectors: int | None = None, fill=0.0):
        self.kb, self.k = kb, k
        self.vw = vector_width()
        self.registers = 13 if self.vw == 8 else 28
        self.vty = ir.VectorType(f32, self.vw)
        self.ity = ir.VectorType(i32, self.vw)
        self.mload, self.mstore = masked(kb.m, self.vty)
        self.fma = declare(kb.m, f"llvm.fma.v{self.vw}f32", self.vty, [self.vty] * 3)
        self.zero = ir.Constant(self.vty, [0.0] * self.vw)
        self.fill = ir.Constant(self.vty, [fill] * self.vw)
        self.lanes = ir.Constant(self.ity, list(range(self.vw)))
        if vectors is None:  # a row chunk of up to 16 or 64 columns
            Wo = k.out_hw[1]
            vectors = max(1, min(-(-Wo // self.vw) if isinstance(Wo, int) else 2, 2 if self.vw == 8 else 4))
        self.nv = vectors
        if whole_lanes:  # a chunk covers whole sets of SUM_LANES columns (conv_weight_grad)
            self.nv = -(-self.nv * self.vw // SUM_LANES) * SUM_LANES // self.vw
        self.chunk = self.nv * self.vw

    def chunks(self):
        b, Wo = self.kb.b, self.kb.dim(self.k.out_hw[1])
        return b.sdiv(b.add(Wo, ir.Constant(i64, self.chunk - 1)), ir.Constant(i64, self.chunk))

    def mask(self, start, size, extra=None):
        """Lanes l with 0 <= start + l < size (and `extra`, an i1): -start <= l < size - start,
        both bounds clamped to [0, vw] as 64-bit scalars, then compared on 32-bit lanes
        (AVX2's 64-bit lanes took twice the instructions, and a load's mask is built for
        every row a convolution reads)."""
        b = self.kb.b

        def lanes_bound(v):
            v = b.select(b.icmp_signed("<", v, ir.Constant(i64, 0)), ir.Constant(i64, 0), v)
            v = b.select(b.icmp_signed(">", v, ir.Constant(i64, self.vw)), ir.Constant(i64, self.vw), v)
            return splat(b, b.trunc(v, i32), self.ity)

        ok = b.and_(
            b.icmp_signed(">=", self.lanes, lanes_bound(b.neg(start))),
            b.icmp_signed("<", self.lanes, lanes_bound(b.sub(self.kb.dim(size), start))),
        )
        return ok if extra is None else b.and_(ok, splat(b, extra, ir.VectorType(i1, self.vw)))

    def load(self, bid, at, mask):
        b = self.kb.b
        # not `inbounds`: masked-off lanes may lie outside the buffer
        p = vec_ptr(b, b.gep(self.kb.buffer(bid, "f32"), [at]), self.vty)
        return b.call(self.mload, [p, ir.Constant(i32, 4), mask, self.fill])

    def row_load(self, bid, at, start, size, row_ok):
        """The vector of a row at `at`, its lanes at columns start + l of a row of `size`
        (a row outside the image, `row_ok` false, reads nothing: `fill`): whole when every lane is
        inside, as most are, else masked (`whole_or_masked`)."""
        b = self.kb.b
        whole = b.and_(
            row_ok,
            b.and_(
                b.icmp_signed(">=", start, ir.Constant(i64, 0)),
                b.icmp_signed("<=", b.add(start, ir.Constant(i64, self.vw)), self.kb.dim(size)),
            ),
        )
        return self.whole_or_masked(whole, [(bid, at)], lambda: [self.mask(start, size, row_ok)])[0]

    def whole_or_masked(self, whole, places: list, masks) -> list:
        """The vectors at `places` ((buffer, at) each) loaded whole where `whole` (every lane
        of each inside its buffer) holds, else each under its mask of those `masks()`
        builds: building a mask for each vector of a row took more instructions than a
        tap's arithmetic."""
        b = self.kb.b
        branches = []
        with b.if_else(whole) as (inside, edge):
            with inside:
                branches.append(
                    (
                        [
                            b.load(
                                vec_ptr(b, b.gep(self.kb.buffer(bid, "f32"), [at], inbounds=True), self.vty), align=4
                            )
                            for bid, at in places
                        ],
                        b.block,
                    )
                )
            with edge:
                branches.append(([self.load(bid, at, lanes) for (bid, at), lanes in zip(places, masks())], b.block))
        values = []
        for u in range(len(places)):
            value = b.phi(self.vty)
            for vectors, block in branches:
                value.add_incoming(vectors[u], block)
            values.append(value)
        return values

    def store(self, bid, at, value, mask):
        b = self.kb.b
        # not `inbounds`: masked-off lanes may lie outside the buffer
        p = vec_ptr(b, b.gep(self.kb.buffer(bid, "f32"), [at]), self.vty)
        if self.vw == 16:  # AVX-512's masked store is one instruction
            b.call(self.mstore, [value, p, ir.Constant(i32, 4), mask])
            return
        # AVX2's masked store (vmaskmovps) is microcoded on AMD's cores and NEON has none (a
        # branch a lane): a vector whose lanes are all inside, most of them, is stored whole,
        # and one with none inside not at all
        bits, word = b.bitcast(mask, ir.IntType(self.vw)), ir.IntType(self.vw)
        whole = b.icmp_unsigned("==", bits, ir.Constant(word, -1))
        with b.if_else(whole) as (inside, edge):
            with inside:
                b.store(value, p, align=4)
            with edge:
                with b.if_then(b.icmp_unsigned("!=", bits, ir.Constant(word, 0))):
                    b.call(self.mstore, [value, p, ir.Constant(i32, 4), mask])

    def stores_ahead(self, ahead, stores: list, mask):
        """Each (buffer, at, value) of `stores` stored whole where `ahead` holds — each
        vector's lanes inside its buffer, those past the row's end on elements this thread
        stores again later (the next rows of the plane it is storing) — else under `mask`
        (`store`): the rows of Winograd's tiles and of its outputs end mid-vector."""
        b = self.kb.b
        with b.if_else(ahead) as (whole, edge):
            with whole:
                for bid, at, value in stores:
                    b.store(
                        value, vec_ptr(b, b.gep(self.kb.buffer(bid, "f32"), [at], inbounds=True), self.vty), align=4
                    )
            with edge:
                for bid, at, value in stores:
                    self.store(bid, at, value, mask)

    def x_taps(self, n, c, h, wo0):
        """tap(j): the nv vectors of x[n, c, h, (wo0 + l) * sw - pw + j] (lanes l), every tap
        column j of the row from one load of it: the row's vectors are loaded once, as far
        as the last tap reaches, each of its sw streams of columns (every sw-th, from t) is
        taken from them (`every`), and tap j = k·sw + t is stream t shifted k lanes — the
        same values as a load per tap, a lane's column outside the row `fill`. (With stride 2
        along W, intrinsics.strided_load's one load under a spread mask took a tenth longer
        in ResNet's stem's weight gradient.)"""
        kb, b, k = self.kb, self.kb.b, self.k
        N, C, H, W = k.x_shape
        sw, kw = k.stride_w, k.w_shape[3]
        row_ok = b.and_(b.icmp_signed(">=", h, ir.Constant(i64, 0)), b.icmp_signed("<", h, kb.dim(H)))
        row = kb.affine(Affine(0, (C * H * W, H * W, W)), [n, c, h])
        first = b.sub(b.mul(wo0, ir.Constant(i64, sw)), ir.Constant(i64, k.padding[1]))
        more = -(-((kw - 1) // sw) // self.vw)  # vectors past the chunk's, for the largest shift
        parts = []
        for u in range((self.nv + more) * sw):
            start = b.add(first, ir.Constant(i64, u * self.vw))
            parts.append(self.row_load(k.x, b.add(row, start), start, W, row_ok))
        streams = [
            [every(b, parts[v * sw : (v + 1) * sw], sw, t) for v in range(self.nv + more)] for t in range(min(sw, kw))
        ]

        def tap(j):
            stream, (whole, shift) = streams[j % sw], divmod(j // sw, self.vw)
            if shift == 0:
                return stream[whole : whole + self.nv]
            lanes = ir.Constant(ir.VectorType(i32, self.vw), list(range(shift, shift + self.vw)))
            return [b.shuffle_vector(stream[v], stream[v + 1], lanes) for v in range(whole, whole + self.nv)]

        return tap

    def out_at(self, n, o, ho, wo0, v):
        """Where vector v of the chunk at wo0 of output row (n, o, ho) starts, and its first column."""
        O, Ho, Wo = self.k.channels, *self.k.out_hw
        start = self.kb.b.add(wo0, ir.Constant(i64, v * self.vw))
        return self.kb.affine(Affine(0, (O * Ho * Wo, Ho * Wo, Wo, 1)), [n, o, ho, start]), start

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

    def blocks(self, count: int, size: int, body, overlap: bool = False):
        """body(first, width) over [0, count) in blocks: a loop over the whole blocks of
        `size`, then the rest (one copy of the code per block width); with `overlap`, the
        rest as one more pass of the loop, a whole block ending at `count`, which computes
        and stores again some of the block before it (the same values): one copy of the
        code (a copy of a depthwise convolution's rows is about 700 lines of IR)."""
        b, whole = self.kb.b, count // size
        if overlap and whole and count % size:
            last = ir.Constant(i64, count - size)
            first = lambda q: b.select(b.icmp_signed("<", q, last), q, last)
            self.kb.loops((whole + 1,), lambda q: body(first(b.mul(q[0], ir.Constant(i64, size))), size))
            return
        if whole:
            self.kb.loops((whole,), lambda q: body(b.mul(q[0], ir.Constant(i64, size)), size))
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
