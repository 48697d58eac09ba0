"""The max-pool gradient's loops (kernels/maxpool_grad), in LLVM IR."""

from __future__ import annotations

import math

from llvmlite import ir

from dlc.compiler.native.codegen.builder import KernelBuilder
from dlc.compiler.native.codegen.gemm.blocking import default_config
from dlc.compiler.native.codegen.intrinsics import masked, splat, strided_load, strided_store, vec_ptr
from dlc.compiler.native.program import Affine, Load
from dlc.compiler.native.codegen.shared_loops import zero_examples
from dlc.compiler.native.codegen.types import f32, i32, i64


def maxpool_grad(kb: KernelBuilder, k, first):
    """dx of max pooling for the examples `first` = (lo, hi): each window's gradient goes
    to its first maximum."""
    N, C, H, W = k.shape
    if k.stride == k.kernel and not any(k.padding):
        _tiled_maxpool_grad(kb, k, first)
        return
    if k.stride[1] in (1, 2):
        _row_chunks_maxpool_grad(kb, k, first)
        return
    b = kb.b
    zero_examples(kb, k.out, N, C * H * W, first)
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
            ok = b.and_(
                b.and_(b.icmp_signed(">=", h, ir.Constant(i64, 0)), b.icmp_signed("<", h, kb.dim(H))),
                b.and_(b.icmp_signed(">=", w, ir.Constant(i64, 0)), b.icmp_signed("<", w, kb.dim(W))),
            )
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
    kb.loops((N, C, Ho * kh, W - Wo * kw), lambda idx: kb.store(k.out, "f32", kb.affine(cols, idx), zero), first=first)
    rows = Affine(Ho * kh * W, (C * H * W, H * W, 1))
    kb.loops((N, C, (H - Ho * kh) * W), lambda idx: kb.store(k.out, "f32", kb.affine(rows, idx), zero), first=first)


def _first_max(kb: KernelBuilder, values: list, where, const):
    """The position of the first maximum of a window's values (or of the first NaN, as
    numpy's argmax), starting from `where` for values[0]; scalars or vectors of windows
    alike, const(p) the position p as an i32 (vector)."""
    b = kb.b
    best = values[0]
    for p, v in enumerate(values[1:], 1):
        better = kb.replaces_max(v, best)
        best, where = b.select(better, v, best), b.select(better, const(p), where)
    return where


def _first_max_shares(kb: KernelBuilder, values: list, g, const) -> list:
    """What each of a window's values receives of its gradient g: all of it at the first
    maximum (or the first NaN, as numpy's argmax), 0 elsewhere. Scalars or vectors of
    windows alike; const(p) is the window position p as an i32 (vector)."""
    b = kb.b
    where = _first_max(kb, values, const(0), const)
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
            pair = [
                kb.disjoint(
                    b.call(
                        mload, [vec(k.x, b.add(at, ir.Constant(i64, h * VW))), ir.Constant(i32, 4), halves[h], zero]
                    ),
                    k.x,
                )
                for h in (0, 1)
            ]
            values += [shuffle(pair[0], pair[1], left), shuffle(pair[0], pair[1], right)]
        g_at = kb.affine(Affine(0, (C * Ho * Wo, Ho * Wo, Wo, 1)), [n, c, ho, wo0])
        g = kb.disjoint(b.call(mload, [vec(k.g, g_at), ir.Constant(i32, 4), mask(wo0, Wo), zero]), k.g)
        shares = _first_max_shares(kb, values, g, const)
        for i, at in enumerate(rows):
            both = shuffle(shares[2 * i], shares[2 * i + 1], mix)
            for h in (0, 1):
                half = shuffle(both, both, list(range(h * VW, h * VW + VW)))
                kb.disjoint(
                    b.call(
                        mstore, [half, vec(k.out, b.add(at, ir.Constant(i64, h * VW))), ir.Constant(i32, 4), halves[h]]
                    ),
                    k.out,
                )

    chunks = b.sdiv(b.add(kb.dim(Wo), ir.Constant(i64, VW - 1)), ir.Constant(i64, VW))
    kb.loops((N, C, Ho, chunks), chunk, first=first)


def _row_chunks_maxpool_grad(kb: KernelBuilder, k, first):
    """Stride 1 or 2 along W, windows that may overlap: a row chunk of VW windows at a
    time. Each tap's values are one masked load of x's row (every other float of two
    vectors' worth with stride 2); padding, and lanes past the last window, read nothing
    and count as -inf, as the scalar loop's taps outside x. Then each tap's gradient is
    added where it is the first maximum, with masked loads and stores of dx's row — the
    taps from the last column to the first, so that an element two windows of a row
    share gets their gradients in the windows' order: the scalar loop's sums, bit for bit."""
    b, VW = kb.b, default_config().vw
    N, C, H, W = k.shape
    Ho, Wo = k.out_hw
    (kh, kw), (sh, sw), (ph, pw) = k.kernel, k.stride, k.padding
    vty, ity, bty = ir.VectorType(f32, VW), ir.VectorType(i64, VW), ir.VectorType(ir.IntType(1), VW)
    gload, _ = masked(kb.m, vty)
    const = lambda p: ir.Constant(ir.VectorType(i32, VW), [p] * VW)
    lanes = ir.Constant(ity, list(range(VW)))
    c64 = lambda v: ir.Constant(i64, v)
    zero_examples(kb, k.out, N, C * H * W, first)

    def row_at(bid, plane, h, w0):
        # not `inbounds`: masked-off lanes may lie outside the buffer
        return b.gep(kb.buffer(bid, "f32"), [b.add(b.add(plane, b.mul(h, kb.dim(W))), w0)])

    def chunk(idx):
        n, c, ho, q = idx
        wo = b.add(splat(b, b.mul(q, c64(VW)), ity), lanes)
        live = b.icmp_signed("<", wo, splat(b, kb.dim(Wo), ity))
        plane = b.mul(b.add(b.mul(n, kb.dim(C)), c), kb.dim(H * W))
        w0 = b.sub(b.mul(b.mul(q, c64(VW)), kb.dim(sw)), kb.dim(pw))  # lane 0's first column
        taps = {}
        for i in range(kh):
            h = b.sub(b.add(b.mul(ho, kb.dim(sh)), c64(i)), kb.dim(ph))
            row_ok = b.and_(b.icmp_signed(">=", h, c64(0)), b.icmp_signed("<", h, kb.dim(H)))
            for j in range(kw):
                col = b.add(b.mul(wo, splat(b, kb.dim(sw), ity)), splat(b, kb.dim(j - pw), ity))  # each lane's tap
                ok = b.and_(b.and_(live, splat(b, row_ok, bty)), b.icmp_unsigned("<", col, splat(b, kb.dim(W), ity)))
                taps[i, j] = (h, b.add(w0, c64(j)), ok)
        values = []
        for h, at, ok in taps.values():
            v, access = strided_load(kb.m, b, row_at(k.x, plane, h, at), ok, sw)
            kb.disjoint(access, k.x)
            values.append(b.select(ok, v, ir.Constant(vty, [-math.inf] * VW)))
        # -1: no tap is a maximum (every value -inf, as the scalar loop's start)
        where = _first_max(kb, [ir.Constant(vty, [-math.inf] * VW)] + values, const(-1), lambda p: const(p - 1))
        g_at = kb.affine(Affine(0, (C * Ho * Wo, Ho * Wo, Wo, 1)), [n, c, ho, b.mul(q, c64(VW))])
        g = kb.disjoint(
            b.call(
                gload,
                [
                    vec_ptr(b, b.gep(kb.buffer(k.g, "f32"), [g_at]), vty),
                    ir.Constant(i32, 4),
                    live,
                    ir.Constant(vty, None),
                ],
            ),
            k.g,
        )
        for i in range(kh):
            for j in reversed(range(kw)):
                h, at, ok = taps[i, j]
                hit = b.and_(ok, b.icmp_signed("==", where, const(i * kw + j)))
                ptr = row_at(k.out, plane, h, at)
                current, access = strided_load(kb.m, b, ptr, hit, sw)
                kb.disjoint(access, k.out)
                kb.disjoint(strided_store(kb.m, b, b.fadd(current, g), ptr, hit, sw), k.out)

    chunks = b.sdiv(b.add(kb.dim(Wo), c64(VW - 1)), c64(VW))
    kb.loops((N, C, Ho, chunks), chunk, first=first)
