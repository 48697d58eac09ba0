"""The direct convolution's loops (kernels/conv), in LLVM IR."""

from __future__ import annotations

from llvmlite import ir

from dlc.compiler.native import TILE_CHANNELS
from dlc.compiler.native.codegen.builder import KernelBuilder
from dlc.compiler.native.codegen.image_rows import ConvRows
from dlc.compiler.native.codegen.intrinsics import concatenated, masked, splat, transpose8, vec_ptr
from dlc.compiler.native.program import Affine
from dlc.compiler.native.codegen.shared_loops import SUM_LANES, add_lanes
from dlc.compiler.native.codegen.types import f32, i1, i32, i64
from dlc.compiler.native.kernels.map.loops import lane_count, map_body


# the output rows of a group (a depthwise convolution's channel) computed together at a stride of 1
# (2 at a stride of 2): a 3 x 3 tap's rows of x are loaded once for three output rows. Only for
# chunks of rows of at most BLOCKED_VECTORS vectors: MobileNetV2's rows of 28, 14 and 7 outputs
# ran 25-35 % faster so, its rows of 112 and 56 (4 vectors of AVX-512) 5-15 % slower
GROUP_ROWS = 3
BLOCKED_VECTORS = 2


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
    ci, co = C // G, O // G  # input and output channels per group
    # over (o, c, i, g), c and o counted over all groups: w[o, c - g*ci, i, j], or
    # w[c, o - g*co, kh-1-i, kw-1-j] (transposed)
    weight = (
        (lambda j: Affine((kh - 1) * kw + kw - 1 - j, (kh * kw, co * kh * kw, -kw, -co * kh * kw)))
        if k.transposed
        else (lambda j: Affine(j, (ci * kh * kw, kh * kw, kw, -ci * kh * kw)))
    )
    Ho, Wo = k.out_hw

    def chunk(n, g, ho0, count, q):
        """Output rows ho0 .. ho0 + count - 1 of the row chunk q: with several, each row of x
        their taps read is loaded once for all of them (a depthwise convolution's 3 x 3 taps
        read 3 rows of x an output row: as many loads as multiply-adds), and each output
        still sums its taps (c, i, j) in order."""
        wo0 = b.mul(q, ir.Constant(i64, rows.chunk))

        def block(o_first, width):
            o0 = b.add(b.mul(g, ir.Constant(i64, co)), o_first)
            sums = rows.sums(count * width * rows.nv)  # [row][channel][vector]

            def add_taps(tap, c, row_taps):
                """The taps (i, j) of output rows ho0 + r, (r, i) each of `row_taps`, that read
                the row of x loaded as `tap`: each tap column shifted once for all of them."""
                for j in range(kw):
                    xs = tap(j)
                    for r, i in row_taps:
                        for o in range(width):
                            at = kb.affine(weight(j), [b.add(o0, ir.Constant(i64, o)), c, i, g])
                            wv = splat(b, kb.disjoint(b.load(b.gep(kb.buffer(k.w, "f32"), [at])), k.w), rows.vty)
                            for v in range(rows.nv):
                                rows.add(sums[(r * width + o) * rows.nv + v], wv, xs[v])

            def one_row(ii, c):  # the tap rows that read a row of x
                add_taps(rows.x_taps(n, c, rows.tap_row(ho0, ii[0]), wo0), c, [(0, ii[0])])

            def rows_of_x(c):  # each row of x the block's taps read, those outside x skipped
                sh = k.stride_h
                for t in range((count - 1) * sh + kh):
                    h = rows.tap_row(ho0, ir.Constant(i64, t))
                    inside = b.and_(b.icmp_signed(">=", h, ir.Constant(i64, 0)), b.icmp_signed("<", h, kb.dim(H)))
                    with b.if_then(inside):
                        row_taps = [(r, ir.Constant(i64, t - r * sh)) for r in range(count) if 0 <= t - r * sh < kh]
                        add_taps(rows.x_taps(n, c, h, wo0), c, row_taps)

            c_first = b.mul(g, ir.Constant(i64, ci))
            if count == 1:
                kb.loops(
                    (ci,),
                    lambda c: kb.loops((kh,), lambda ii: one_row(ii, b.add(c_first, c[0])), first=rows.tap_rows(ho0)),
                )
            else:
                kb.loops((ci,), lambda c: rows_of_x(b.add(c_first, c[0])))
            masks: dict = {}  # vector v's mask, the same for every channel and row: made once
            for r in range(count):
                ho = b.add(ho0, ir.Constant(i64, r))
                for o in range(width):
                    channel = b.add(o0, ir.Constant(i64, o))
                    # with groups, lanes past a row's end fall on its plane's next rows, which this
                    # thread stores later: such a vector is stored whole (MobileNetV2's rows of 7
                    # and 14 outputs end mid-vector, and AVX2's masked store is microcoded); without,
                    # another thread may store the next row
                    plane_end = (
                        kb.affine(Affine(0, (O * Ho * Wo, Ho * Wo)), [n, b.add(channel, ir.Constant(i64, 1))])
                        if G > 1
                        else None
                    )
                    for v in range(rows.nv):
                        at, start = rows.out_at(n, channel, ho, wo0, v)
                        if v not in masks:
                            masks[v] = rows.mask(start, Wo)
                        value, mask = b.load(sums[(r * width + o) * rows.nv + v]), masks[v]
                        if plane_end is None:
                            rows.store(k.out, at, value, mask)
                        else:
                            ahead = b.icmp_signed("<=", b.add(at, ir.Constant(i64, rows.vw)), plane_end)
                            rows.stores_ahead(ahead, [(k.out, at, value)], mask)

        rows.blocks(co, max(1, min(co, rows.registers // (rows.nv * count))), block)

    def outer(idx):
        """An (example, group) pair's outputs, or without groups an (example, output row)
        pair's, then the epilogue's map (over [N, O, Ho·Wo]) on them, still in cache. A
        group's output rows go by blocks of GROUP_ROWS (2 at a stride of 2), each row of x
        loaded once for the block."""
        if G > 1:
            n, g = b.sdiv(idx[0], kb.dim(G)), b.srem(idx[0], kb.dim(G))
            if isinstance(Ho, int) and rows.nv <= BLOCKED_VECTORS:
                # a block's chunks last first: a row's last vector, stored whole, runs onto the
                # next row's first chunk, which is stored after it
                last = b.sub(rows.chunks(), ir.Constant(i64, 1))
                rows.blocks(
                    Ho,
                    GROUP_ROWS if k.stride_h == 1 else 2,
                    lambda h0, count: kb.loops((rows.chunks(),), lambda q: chunk(n, g, h0, count, b.sub(last, q[0]))),
                    overlap=True,
                )
            else:
                kb.loops((Ho, rows.chunks()), lambda hq: chunk(n, g, hq[0], 1, hq[1]))
            if k.epilogue is not None:
                o0 = b.mul(g, ir.Constant(i64, co))
                kb.loops(
                    (co, Ho * Wo),
                    lambda op: map_body(kb, k.epilogue, kb.p, [n, b.add(o0, op[0]), op[1]]),
                    contiguous=True,
                )
            return
        n, ho = b.sdiv(idx[0], kb.dim(Ho)), b.srem(idx[0], kb.dim(Ho))
        kb.loops((rows.chunks(),), lambda q: chunk(n, ir.Constant(i64, 0), ho, 1, q[0]))
        row_epilogue(kb, k, n, ho)

    kb.loops((N * G if G > 1 else N * Ho,), outer, first=first)


def row_epilogue(kb: KernelBuilder, k, n, ho):
    """The epilogue's map (over [N, O, Ho·Wo]) on output row (n, ho) of every channel,
    once the row is stored, still in cache; in vectors along the row, which it reads
    contiguously, even where it stores channels last (an int8 program's quantized image
    for an integer convolution: each lane stored on its own)."""
    if k.epilogue is not None:
        b, (O, (_, Wo)) = kb.b, (k.channels, k.out_hw)
        p0 = b.mul(ho, kb.dim(Wo))
        count = lane_count(k.epilogue, 2, strided_stores=True)
        kb.loops(
            (O, Wo),
            lambda ow: map_body(kb, k.epilogue, kb.p, [n, ow[0], b.add(p0, ow[1])]),
            contiguous=True,
            lanes=None if count is None else (count, 2),
        )


# a tile of conv_by_channels: TILE_CHANNELS (the filters come in multiples of it) times
# TILE_PIXELS of a row; AVX2's 16 registers hold its 12 sums (two vectors of 8 channels a
# pixel), a tap's two vectors of weights and one broadcast value: two FMAs for each load
# (8 pixels times 8 channels had one)
TILE_PIXELS = 6
# with 16-lane vectors (a pixel's 16 filters in one), a tile is a line of LINE_PIXELS pixels where
# the rows are made of whole lines: each filter's 16 outputs stored whole (two stores of 8,
# one after the other), once. In tiles of 6, each line of an output row was stored by three
# tiles, and between two of them the other filters' lines passed through the L1 cache's sets,
# which planes of 32 x 32 pixels, 4 KB apart, share: MobileNetV2's stem at 64 x 64 pixels
# took 0.69 of its time so (32 x 32 outputs; 0.72 at 16 x 16, 0.83 at 64 x 64, 0.94 at
# 112 x 112); rows of other lengths keep tiles of 6, whose last tile wastes less
LINE_PIXELS = 16


def conv_by_channels(kb: KernelBuilder, k, first):
    """The output rows (example, row) `first` = (lo, hi) of a convolution of few input
    channels into many filters (`by_channels`: w is [O / TILE_CHANNELS, C·kh·kw,
    TILE_CHANNELS]): tiles of TILE_PIXELS pixels of the row (LINE_PIXELS where they are
    lines) times TILE_CHANNELS filters, whose sums (vectors of channels, one or more a
    pixel) stay in registers while the taps (c, i, j) stream by — each tap's weights
    loaded as vectors, each input value broadcast from where it lies (no stride-2 lanes to
    gather; a tap column past the image is a select to 0, in the row's first and last
    tiles only) — then transposed 8 x 8 into rows of pixels of one channel and stored,
    each row of 8 whole (a tile of 6: its last lanes the next tile's pixels, stored again
    by it), masked at the row's end; then the row's epilogue. Each output sums its taps in
    order, one FMA each: the same bits at any vector width and on any team."""
    b, rows = kb.b, ConvRows(kb, k)
    N, C, H, W = k.x_shape
    O, _, kh, kw = k.w_shape
    Ho, Wo = k.out_hw
    vw, sw, pw = rows.vw, k.stride_w, k.padding[1]
    per_pixel = TILE_CHANNELS // vw  # vectors of a pixel's sums
    tile_pixels = LINE_PIXELS if per_pixel == 1 and isinstance(Wo, int) and Wo % LINE_PIXELS == 0 else TILE_PIXELS
    v8 = ir.VectorType(f32, 8)
    _, store8 = masked(kb.m, v8)
    x, w, out = kb.buffer(k.x, "f32"), kb.buffer(k.w, "f32"), kb.buffer(k.out, "f32")
    c64 = lambda v: ir.Constant(i64, v)

    def tile(n, ho, taps_of_row, tile_index, wo0, first_column, edge: bool):
        sums = rows.sums(per_pixel * tile_pixels)
        o0 = b.mul(tile_index, c64(TILE_CHANNELS))
        top, bottom = taps_of_row

        def tap(c, t):  # tap t of the rows inside x: (top + t // kw, t % kw)
            i, j = b.add(top, b.udiv(t, c64(kw))), b.urem(t, c64(kw))
            row = kb.affine(Affine(0, (C * H * W, H * W, W)), [n, c, rows.tap_row(ho, i)])
            at = kb.affine(
                Affine(0, (C * kh * kw * TILE_CHANNELS, kh * kw * TILE_CHANNELS, kw * TILE_CHANNELS, TILE_CHANNELS)),
                [tile_index, c, i, j],
            )
            weights = [
                b.load(vec_ptr(b, b.gep(w, [b.add(at, c64(v * vw))], inbounds=True), rows.vty), align=4)
                for v in range(per_pixel)
            ]

            def accumulate(edge: bool):
                for p in range(tile_pixels):
                    column = b.add(first_column, b.add(j, c64(p * sw)))
                    if edge:  # a column outside the image reads nothing: 0
                        inside = b.icmp_unsigned("<", column, kb.dim(W))
                        value = b.load(b.gep(x, [b.add(row, b.select(inside, column, c64(0)))], inbounds=True))
                        value = b.select(inside, value, ir.Constant(f32, 0.0))
                    else:
                        value = b.load(b.gep(x, [b.add(row, column)], inbounds=True))
                    value = splat(b, value, rows.vty)
                    for v in range(per_pixel):
                        rows.add(sums[p * per_pixel + v], weights[v], value)

            if not edge:
                accumulate(False)
                return
            # in an edge tile, a tap column whose every pixel lies inside x as in an interior tile
            # (most of them: at padding 1, two of three), the others column by column
            lo = b.add(first_column, j)
            hi = b.add(lo, c64((tile_pixels - 1) * sw))
            with b.if_else(b.and_(b.icmp_signed(">=", lo, c64(0)), b.icmp_signed("<", hi, kb.dim(W)))) as (whole, part):
                with whole:
                    accumulate(False)
                with part:
                    accumulate(True)

        # one loop over a channel's taps: with the columns unrolled, the values a pixel's tap
        # shares with the next pixel's (at stride 2, two columns on) were kept in registers,
        # and the sums spilled
        taps = b.mul(b.sub(bottom, top), c64(kw))
        kb.loops((C,), lambda c: kb.loops((taps,), lambda t: tap(c[0], t[0]), rolled=True))
        # each pixel's channels in pieces of 8, transposed: rows of 8 lanes of one channel,
        # the tile's pixels first
        pixels = [
            concatenated(b, [b.load(sums[p * per_pixel + v]) for v in range(per_pixel)]) for p in range(tile_pixels)
        ]
        pixels += [ir.Constant(pixels[0].type, None)] * (-tile_pixels % 8)  # no pixels: any lanes
        lanes8 = ir.VectorType(i32, 8)
        if tile_pixels == TILE_PIXELS:  # its 8 lanes stored whole, but at the row's end
            whole = b.icmp_signed("<=", b.add(wo0, c64(8)), kb.dim(Wo))
            left = b.sub(kb.dim(Wo), wo0)
            left = b.select(b.icmp_signed("<", left, c64(TILE_PIXELS)), left, c64(TILE_PIXELS))
            mask = b.icmp_signed("<", ir.Constant(lanes8, list(range(8))), splat(b, b.trunc(left, i32), lanes8))

        def store(values, o, h):
            """A filter's 8 outputs from pixel h of the tile: a tile of a line lies inside its row."""
            at = kb.affine(Affine(0, (O * Ho * Wo, Ho * Wo, Wo, 1)), [n, o, ho, b.add(wo0, c64(h)) if h else wo0])
            ptr = vec_ptr(b, b.gep(out, [at]), v8)
            if tile_pixels == LINE_PIXELS:
                b.store(values, ptr, align=4)
                return
            with b.if_else(whole) as (inside, end):
                with inside:
                    b.store(values, ptr, align=4)
                with end:
                    b.call(store8, [values, ptr, ir.Constant(i32, 4), mask])

        # filter by filter, each 8 pixels of the tile: a filter's LINE_PIXELS outputs one after the other
        transposed = [
            [
                transpose8(
                    b,
                    [b.shuffle_vector(px, px, ir.Constant(lanes8, list(range(q, q + 8)))) for px in pixels[h : h + 8]],
                )
                for h in range(0, len(pixels), 8)
            ]
            for q in range(0, TILE_CHANNELS, 8)
        ]
        for q in range(0, TILE_CHANNELS, 8):
            for lane in range(8):
                for h, half in zip(range(0, len(pixels), 8), transposed[q // 8]):
                    store(half[lane], b.add(o0, c64(q + lane)), h)

    def row(idx):
        n, ho = b.sdiv(idx[0], kb.dim(Ho)), b.srem(idx[0], kb.dim(Ho))
        taps_of_row = rows.tap_rows(ho)  # the tap rows inside x, the same for every tile

        def tiles(oq):
            wo0 = b.mul(oq[1], c64(tile_pixels))
            first_column = b.sub(b.mul(wo0, c64(sw)), c64(pw))
            last_column = b.add(first_column, c64((tile_pixels - 1) * sw + kw - 1))
            inside = b.and_(b.icmp_signed(">=", first_column, c64(0)), b.icmp_signed("<", last_column, kb.dim(W)))
            with b.if_else(inside) as (interior, border):
                with interior:
                    tile(n, ho, taps_of_row, oq[0], wo0, first_column, False)
                with border:
                    tile(n, ho, taps_of_row, oq[0], wo0, first_column, True)

        kb.loops((O // TILE_CHANNELS, b.sdiv(b.add(kb.dim(Wo), c64(tile_pixels - 1)), c64(tile_pixels))), tiles)
        row_epilogue(kb, k, n, ho)

    kb.loops((N * Ho,), row, first=first)


def depthwise_by_channels(kb: KernelBuilder, k, first):
    """The (example, tile of TILE_CHANNELS channels) pairs `first` = (lo, hi) of a
    depthwise convolution of small planes (`by_channels` with groups: w is [C / 16, kh·kw,
    16]), channels in the vectors' lanes: the tile's input planes copied channels last into
    the thread's scratch and its filters loaded once, then each output pixel's sums over
    its taps in registers, each tap a vector of the scratch times one of the filters (rows
    of 4 or 2 outputs left most lanes of the pixels' vectors empty), stored into the
    scratch and copied back
    into the tile's planes; then the epilogue on them. Each output sums its taps in the
    pixels' kernel's order (the tap rows inside x, every tap column, 0 outside the row):
    the same bits."""
    b, rows = kb.b, ConvRows(kb, k)
    N, C, H, W = k.x_shape
    kh, kw = k.w_shape[2:]
    Ho, Wo = k.out_hw
    vw, per = rows.vw, TILE_CHANNELS // rows.vw
    x, w, out = kb.buffer(k.x, "f32"), kb.buffer(k.w, "f32"), kb.buffer(k.out, "f32")
    c64 = lambda v: ir.Constant(i64, v)
    planes_in = kb.alloca(ir.ArrayType(f32, H * W * TILE_CHANNELS))  # [H·W, 16]
    planes_out = kb.alloca(ir.ArrayType(f32, Ho * Wo * TILE_CHANNELS))  # [Ho·Wo, 16]
    at = lambda a, i: b.gep(a, [ir.Constant(i32, 0), i], inbounds=True)
    vector = lambda a, i: vec_ptr(b, at(a, i), rows.vty)
    tiles = C // TILE_CHANNELS
    v8 = ir.VectorType(f32, 8)
    load8, store8 = masked(kb.m, v8)

    def between(planes, first_plane, pixels: int, scratch, into_tile: bool):
        """The tile's 16 planes of `pixels` (from plane `first_plane` of `planes`) copied
        into the scratch channels last, or back: blocks of 8 channels times 8 pixels
        transposed in registers, the last block of a plane masked."""
        for half in range(0, TILE_CHANNELS, 8):
            for q in range(0, pixels, 8):
                lanes = min(8, pixels - q)
                mask = ir.Constant(ir.VectorType(i1, 8), [lane < lanes for lane in range(8)])
                plane = [
                    vec_ptr(
                        b,
                        b.gep(
                            planes,
                            [b.add(b.mul(b.add(first_plane, c64(half + c)), c64(pixels)), c64(q))],
                            inbounds=True,
                        ),
                        v8,
                    )
                    for c in range(8)
                ]
                tile_rows = [vec_ptr(b, at(scratch, c64((q + r) * TILE_CHANNELS + half)), v8) for r in range(lanes)]
                if into_tile:
                    vectors = [
                        b.load(ptr, align=4)
                        if lanes == 8
                        else b.call(load8, [ptr, ir.Constant(i32, 4), mask, ir.Constant(v8, None)])
                        for ptr in plane
                    ]
                    for ptr, column in zip(tile_rows, transpose8(b, vectors)):
                        b.store(column, ptr, align=4)
                else:
                    vectors = [b.load(ptr, align=4) for ptr in tile_rows] + [ir.Constant(v8, None)] * (8 - lanes)
                    for ptr, column in zip(plane, transpose8(b, vectors)):
                        if lanes == 8:
                            b.store(column, ptr, align=4)
                        else:
                            b.call(store8, [column, ptr, ir.Constant(i32, 4), mask])

    def tile(idx):
        n, t = b.sdiv(idx[0], c64(tiles)), b.srem(idx[0], c64(tiles))
        first_plane = b.add(b.mul(n, kb.dim(C)), b.mul(t, c64(TILE_CHANNELS)))

        between(x, first_plane, H * W, planes_in, into_tile=True)
        taps = b.mul(t, c64(kh * kw * TILE_CHANNELS))  # the tile's filters, [kh·kw, 16]
        weights = [
            b.load(vec_ptr(b, b.gep(w, [b.add(taps, c64(u * vw))], inbounds=True), rows.vty), align=4)
            for u in range(kh * kw * per)
        ]

        def pixel(ho, wo):
            sums = [rows.zero] * per
            for i in range(kh):
                h = ho * k.stride_h + i - k.padding[0]
                if not 0 <= h < H:  # a tap row in the padding adds nothing
                    continue
                for j in range(kw):
                    col = wo * k.stride_w + j - k.padding[1]
                    for v in range(per):
                        value = (
                            b.load(vector(planes_in, c64((h * W + col) * TILE_CHANNELS + v * vw)), align=4)
                            if 0 <= col < W
                            else rows.zero
                        )  # a tap column outside the row: 0
                        sums[v] = b.call(rows.fma, [weights[(i * kw + j) * per + v], value, sums[v]])
            for v in range(per):
                b.store(sums[v], vector(planes_out, c64((ho * Wo + wo) * TILE_CHANNELS + v * vw)), align=4)

        for ho in range(Ho):
            for wo in range(Wo):
                pixel(ho, wo)

        between(out, first_plane, Ho * Wo, planes_out, into_tile=False)
        if k.epilogue is not None:
            c0 = b.mul(t, c64(TILE_CHANNELS))
            kb.loops(
                (TILE_CHANNELS, Ho * Wo),
                lambda cp: map_body(kb, k.epilogue, kb.p, [n, b.add(c0, cp[0]), cp[1]]),
                contiguous=True,
            )

    kb.loops((N * tiles,), tile, first=first)


def depthwise_upsampling(kb: KernelBuilder, k, first):
    """The (example, channel) pairs `first` = (lo, hi) of the input gradient of a stride-2
    depthwise convolution (`k.upsampling`): out[n, c, y, x] = the sum over the taps (i, j)
    with y + ph - i and x + pw - j even of g[n, c, (y + ph - i) / 2, (x + pw - j) / 2] ·
    w[c, 0, i, j], in the order (i, j). Every output is written once: no zeroed buffer, no
    scattered additions. The rows go by parity (a row y's tap rows i are those of
    y + ph's parity, known as the code is built), a row in chunks of 2·vw columns: the
    chunk's even and odd columns are a vector of sums each (their tap columns of one
    parity), each tap a vector of g's row (vw columns from where the tap starts) times
    the tap's weight, broadcast once for the pair; the two vectors are interleaved into
    the row as they are stored. Lanes past g's row or rows outside g read nothing (0)."""
    b, rows = kb.b, ConvRows(kb, k, vectors=1)
    N, C, Ho, Wo = k.x_shape
    kh, kw = k.w_shape[2:]
    H, W = k.out_hw
    ph, pw = k.padding
    vw = rows.vw
    c64 = lambda v: ir.Constant(i64, v)
    # lane l of the row's vector h is column h·vw + l: the sums of column parity (h·vw + l) % 2
    interleave = [ir.Constant(rows.ity, [(o // 2) + (o % 2) * vw for o in range(h * vw, (h + 1) * vw)]) for h in (0, 1)]
    chunks = -(-W // (2 * vw))

    def plane(idx):
        n, c = b.sdiv(idx[0], kb.dim(C)), b.srem(idx[0], kb.dim(C))
        g_plane = kb.affine(Affine(0, (C * Ho * Wo, Ho * Wo)), [n, c])
        out_plane = kb.affine(Affine(0, (C * H * W, H * W)), [n, c])
        w_at = kb.affine(Affine(0, (kh * kw,)), [c])
        weights = {
            (i, j): splat(
                b, kb.disjoint(b.load(b.gep(kb.buffer(k.w, "f32"), [b.add(w_at, c64(i * kw + j))])), k.w), rows.vty
            )
            for i in range(kh)
            for j in range(kw)
        }
        for a in (0, 1):  # the rows y = 2u + a
            if a >= H:
                continue

            def row(u, a=a):
                y = b.add(b.mul(u[0], c64(2)), c64(a))
                taps = [(i, (a + ph - i) // 2) for i in range(kh) if (a + ph - i) % 2 == 0]

                def chunk(t):
                    x0 = b.mul(t[0], c64(2 * vw))  # the chunk's first column; g's columns from t·vw on
                    sums = [rows.zero, rows.zero]
                    loaded: dict = {}
                    for i, dr in taps:
                        r = b.add(u[0], c64(dr))
                        inside = b.and_(b.icmp_signed(">=", r, c64(0)), b.icmp_signed("<", r, kb.dim(Ho)))
                        for parity in (0, 1):
                            for j in range(kw):
                                if (parity + pw - j) % 2:
                                    continue
                                shift = (parity + pw - j) // 2
                                if (dr, shift) not in loaded:
                                    start = b.add(b.mul(t[0], c64(vw)), c64(shift))
                                    at = b.add(g_plane, b.add(b.mul(r, kb.dim(Wo)), start))
                                    loaded[dr, shift] = rows.row_load(k.x, at, start, Wo, inside)
                                sums[parity] = b.call(rows.fma, [loaded[dr, shift], weights[i, j], sums[parity]])
                    for h in (0, 1):
                        column = b.add(x0, c64(h * vw))
                        at = b.add(out_plane, b.add(b.mul(y, kb.dim(W)), column))
                        rows.store(k.out, at, b.shuffle_vector(sums[0], sums[1], interleave[h]), rows.mask(column, W))

                kb.loops((chunks,), chunk)

            kb.loops(((H - a + 1) // 2,), row)

    kb.loops((N * C,), plane, first=first)


def team_rows(k):
    """What a convolution's team splits: its examples times its groups (by channels: its
    tiles of channels), or without groups its examples times its output rows (a batch of
    one: its rows; dividing the index of each row of a depthwise convolution's few pixels
    took longer than the row)."""
    if k.groups == 1:
        return k.x_shape[0] * k.out_hw[0]
    return k.x_shape[0] * (k.groups // TILE_CHANNELS if k.by_channels else k.groups)


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
    per = SUM_LANES // rows.vw  # vectors per sum

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
                        places = [
                            rows.out_at(n, b.add(o0, ir.Constant(i64, o)), ho, wo0, v)
                            for o in range(width)
                            for v in range(rows.nv)
                        ]
                        whole = b.icmp_signed("<=", b.add(wo0, ir.Constant(i64, rows.chunk)), kb.dim(k.out_hw[1]))
                        gs = rows.whole_or_masked(
                            whole,
                            [(k.g, at) for at, _ in places],
                            lambda: [rows.mask(start, k.out_hw[1]) for _, start in places],
                        )
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
                            total = add_lanes(b, [b.load(s) for s in sums[first_vector : first_vector + per]])
                            at = kb.affine(
                                Affine(j, (O * taps, taps, kh * kw, kw)), [p, b.add(o0, ir.Constant(i64, o)), cl, i]
                            )
                            kb.store(k.partial, "f32", at, total)

                kb.loops((ci, kh), tap_row)

            rows.blocks(co, max(1, min(co, (rows.registers - rows.nv) // (kw * per + rows.nv))), block)

        kb.loops((k.groups,), group)

    kb.loops((k.parts,), part, first=first)
