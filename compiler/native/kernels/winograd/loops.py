"""Winograd's transforms (kernels/winograd), in LLVM IR: a vector's lanes are consecutive
tiles of a row of tiles (of an example's tiles in order, across its rows, where a row has
fewer tiles than a vector has lanes: the input's), each lane's arithmetic that of one tile."""

from __future__ import annotations

from llvmlite import ir

from dlc.compiler.native.codegen.builder import KernelBuilder
from dlc.compiler.native.codegen.image_rows import ConvRows
from dlc.compiler.native.codegen.intrinsics import gather, interleaved, splat
from dlc.compiler.native.codegen.types import i32, i64
from dlc.compiler.native.kernels.map.loops import map_body
from dlc.compiler.native.kernels.winograd.transforms import AT, BT, TILE, WINDOW, two_sided
from dlc.compiler.native.program import Affine


def _arithmetic(rows: ConvRows) -> tuple:
    """(add, sub, times) of float vectors, for `combination`."""
    b = rows.kb.b
    return b.fadd, b.fsub, lambda v, c: b.fmul(v, ir.Constant(rows.vty, [float(c)] * rows.vw))


def input_transform(kb: KernelBuilder, k, first):
    """The (example, channel) pairs `first` = (lo, hi), Bᵀ d B of each tile: by rows of
    tiles (`_rows_of_tiles`), or, where a row has fewer tiles than a vector has lanes (images
    of 8 x 8 pixels and 4 x 4 tiles: a row of tiles filled 4 lanes of 16 and stored them
    16 times over), an example's tiles in order across its rows (`_tiles_in_order`)."""
    if 2 * k.tiles[1] <= ConvRows(kb, k, vectors=1).vw:
        _tiles_in_order(kb, k, first)
    else:
        _rows_of_tiles(kb, k, first)


def _tiles_in_order(kb: KernelBuilder, k, first):
    """The (example, channel) pairs `first` = (lo, hi): their tiles in vectors of consecutive
    tiles t (row t / TW, column t mod TW), each of the 16 values of their windows gathered
    from x (a lane whose window's value lies outside x reads nothing and is 0), Bᵀ d B, and
    the 16 values stored in V's 16 matrices, masked past the pair's last tile."""
    b, rows = kb.b, ConvRows(kb, k, vectors=1)
    N, C, H, W = k.x_shape
    TH, TW = k.tiles
    count, columns = TH * TW, N * TH * TW
    vw, ity = rows.vw, rows.ity
    lanes = lambda v: ir.Constant(ity, [v] * vw)  # noqa: E731

    def vector_of_tiles(n, c, q):
        t0 = b.mul(q, ir.Constant(i64, vw))
        t = b.add(splat(b, b.trunc(t0, i32), ity), rows.lanes)
        th, tw = b.udiv(t, lanes(TW)), b.urem(t, lanes(TW))
        tile_ok = b.icmp_unsigned("<", t, lanes(count))
        # rows and columns of x the windows read; negative ones compare as large unsigned
        h = [b.add(b.mul(th, lanes(TILE)), lanes(a - k.padding[0])) for a in range(WINDOW)]
        w = [b.add(b.mul(tw, lanes(TILE)), lanes(j - k.padding[1])) for j in range(WINDOW)]
        h_ok = [b.and_(tile_ok, b.icmp_unsigned("<", r, lanes(H))) for r in h]
        w_ok = [b.icmp_unsigned("<", col, lanes(W)) for col in w]
        plane = b.gep(kb.buffer(k.x, "f32"), [kb.affine(Affine(0, (C * H * W, H * W)), [n, c])])
        window = [
            [
                gather(kb.m, b, plane, b.add(b.mul(h[a], lanes(W)), w[j]), b.and_(h_ok[a], w_ok[j]), rows.zero)
                for j in range(WINDOW)
            ]
            for a in range(WINDOW)
        ]
        v = two_sided(BT, window, *_arithmetic(rows))
        tile = kb.affine(Affine(0, (columns, count, 1)), [c, n, t0])
        rows.stores_ahead(
            b.icmp_signed("<=", b.add(t0, ir.Constant(i64, vw)), kb.dim(count)),
            [
                (k.out, b.add(tile, kb.dim((xi * WINDOW + nu) * C * columns)), v[xi][nu])
                for xi in range(WINDOW)
                for nu in range(WINDOW)
            ],
            tile_ok,
        )

    def pair(idx):
        n, c = b.sdiv(idx[0], kb.dim(C)), b.srem(idx[0], kb.dim(C))
        kb.loops((-(-count // vw),), lambda q: vector_of_tiles(n, c, q[0]))

    kb.loops((N * C,), pair, first=first)


def _rows_of_tiles(kb: KernelBuilder, k, first):
    """The (example, channel) pairs `first` = (lo, hi): each row of tiles in vectors of
    consecutive tiles, the 4 rows of their windows loaded as the direct convolution loads
    a row's taps (each row of x once, its 4 tap columns by lane shifts), Bᵀ d B, and the 16
    values of each tile stored in V's 16 matrices: whole where the vector's tiles past the
    row's end are the next rows' of the pair, which come later (`ConvRows.stores_ahead`),
    masked at the pair's last row only."""
    b, rows = kb.b, ConvRows(kb, k, vectors=1)
    N, C = k.x_shape[:2]
    TH, TW = k.tiles
    columns = N * TH * TW

    def row_of_tiles(n, c, th, q):
        tw0 = b.mul(q, ir.Constant(i64, rows.chunk))
        window = []
        for a in range(WINDOW):
            h = b.add(b.mul(th, ir.Constant(i64, TILE)), ir.Constant(i64, a - k.padding[0]))
            tap = rows.x_taps(n, c, h, tw0)
            window.append([tap(j)[0] for j in range(WINDOW)])
        v = two_sided(BT, window, *_arithmetic(rows))
        tile = kb.affine(Affine(0, (columns, TH * TW, TW, 1)), [c, n, th, tw0])
        ahead = b.icmp_signed("<=", kb.affine(Affine(rows.vw, (TW, 1)), [th, tw0]), kb.dim(TH * TW))
        rows.stores_ahead(
            ahead,
            [
                (k.out, b.add(tile, kb.dim((xi * WINDOW + nu) * C * columns)), v[xi][nu])
                for xi in range(WINDOW)
                for nu in range(WINDOW)
            ],
            rows.mask(tw0, TW),
        )

    def pair(idx):
        n, c = b.sdiv(idx[0], kb.dim(C)), b.srem(idx[0], kb.dim(C))
        kb.loops((TH, rows.chunks()), lambda tq: row_of_tiles(n, c, *tq))

    kb.loops((N * C,), pair, first=first)


def output_transform(kb: KernelBuilder, k, first):
    """The (example, channel) pairs `first` = (lo, hi): each row of tiles in vectors of
    consecutive tiles, their 16 products loaded from M's 16 matrices, Aᵀ M A, each row of
    outputs interleaved from its tiles' columns and stored where it lies inside y; then
    the epilogue's map on the (example, channel) plane, still in cache."""
    b, rows = kb.b, ConvRows(kb, k, vectors=1)
    N, O, Ho, Wo = k.out_shape
    TH, TW = k.tiles
    columns = N * TH * TW

    def row_of_tiles(n, o, th, q):
        tw0 = b.mul(q, ir.Constant(i64, rows.chunk))
        tile = kb.affine(Affine(0, (columns, TH * TW, TW, 1)), [o, n, th, tw0])
        positions = [
            (k.products, b.add(tile, kb.dim((xi * WINDOW + nu) * O * columns)))
            for xi in range(WINDOW)
            for nu in range(WINDOW)
        ]
        m = rows.whole_or_masked(
            b.icmp_signed("<=", b.add(tw0, ir.Constant(i64, rows.vw)), kb.dim(TW)),
            positions,
            lambda: [rows.mask(tw0, TW)] * len(positions),
        )
        m = [m[xi * WINDOW : (xi + 1) * WINDOW] for xi in range(WINDOW)]
        y = two_sided(AT, m, *_arithmetic(rows))
        for a in range(TILE):
            ho = b.add(b.mul(th, ir.Constant(i64, TILE)), ir.Constant(i64, a))
            row_ok = b.icmp_signed("<", ho, kb.dim(Ho))
            # output vector r of the row: columns TILE·tw0 + r·vw + l, column TILE·t + s from lane t of y[a][s]
            for r, value in enumerate(interleaved(b, y[a])):
                start = b.add(b.mul(tw0, ir.Constant(i64, TILE)), ir.Constant(i64, r * rows.vw))
                rows.store(
                    k.out,
                    kb.affine(Affine(0, (O * Ho * Wo, Ho * Wo, Wo, 1)), [n, o, ho, start]),
                    value,
                    rows.mask(start, Wo, row_ok),
                )

    def pair(idx):
        n, o = b.sdiv(idx[0], kb.dim(O)), b.srem(idx[0], kb.dim(O))
        kb.loops((TH, rows.chunks()), lambda tq: row_of_tiles(n, o, *tq))
        if k.epilogue is not None:
            kb.loops((Ho * Wo,), lambda p: map_body(kb, k.epilogue, kb.p, [n, o, p[0]]), contiguous=True)

    kb.loops((N * O,), pair, first=first)
