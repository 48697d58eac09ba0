"""The direct convolution's loops (kernels/conv), in LLVM IR."""
from __future__ import annotations

from llvmlite import ir

from dlc.compiler.native.codegen.builder import KernelBuilder
from dlc.compiler.native.codegen.image_rows import ConvRows
from dlc.compiler.native.codegen.intrinsics import splat
from dlc.compiler.native.program import Affine
from dlc.compiler.native.codegen.shared_loops import SUM_LANES, add_lanes
from dlc.compiler.native.codegen.types import i64
from dlc.compiler.native.kernels.map.loops import map_body


def conv(kb: KernelBuilder, k, first):
    """The outputs of the (example, group) pairs, or without groups the (example, output
    row) pairs, `first` = (lo, hi) (`team_rows`: a batch of one splits over its rows): for
    each row chunk, a block of the group's output channels' sums in registers while the
    group's taps (c, i, j) stream by — a tap's x vectors loaded once for the block, each
    weight broadcast once for the chunk."""
    b, rows = kb.b, ConvRows(kb, k)
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
                    at, start = rows.out_at(n, b.add(o0, ir.Constant(i64, o)), ho, wo0, v)
                    rows.store(k.out, at, b.load(sums[o * rows.nv + v]), rows.mask(start, Wo))
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
    b, rows = kb.b, ConvRows(kb, k, whole_lanes=True)
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
                        places = [rows.out_at(n, b.add(o0, ir.Constant(i64, o)), ho, wo0, v)
                                  for o in range(width) for v in range(rows.nv)]
                        whole = b.icmp_signed("<=", b.add(wo0, ir.Constant(i64, rows.chunk)), kb.dim(k.out_hw[1]))
                        gs = rows.whole_or_masked(whole, [(k.g, at) for at, _ in places],
                                                  lambda: [rows.mask(start, k.out_hw[1]) for _, start in places])
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
