"""Winograd's transforms (kernels/winograd), in LLVM IR: a vector's lanes are consecutive
tiles of a row of tiles, or, where a row fills half a vector or less, of an example's tiles
in order across its rows (`_in_order`); each lane's arithmetic is that of one tile."""

from __future__ import annotations

from llvmlite import ir

from dlc.compiler.native.codegen.builder import KernelBuilder
from dlc.compiler.native.codegen.image_rows import ConvRows
from dlc.compiler.native.codegen.intrinsics import gather, interleaved, scatter, splat
from dlc.compiler.native.codegen.types import i32, i64
from dlc.compiler.native.kernels.map.loops import map_body
from dlc.compiler.native.kernels.winograd.transforms import AT, BT, TILE, WINDOW, two_sided
from dlc.compiler.native.program import Affine


def _arithmetic(rows: ConvRows) -> tuple:
    """(add, sub, times) of float vectors, for `combination`."""
    b = rows.kb.b
    return b.fadd, b.fsub, lambda v, c: b.fmul(v, ir.Constant(rows.vty, [float(c)] * rows.vw))


def _in_order(rows: ConvRows, k) -> bool:
    """Whether a transform takes an example's tiles in order across its rows of tiles
    (`_vector_of_tiles`): where a row of tiles fills half a vector or less (images of 8 x 8
    pixels have rows of 4 tiles: by rows, a row filled 4 lanes of 16, and its 16 values were
    stored 16 times over). Where rows fill most of a vector, gathering each tile's window
    took longer than loading its rows (56 x 56 pixels' rows of 28 tiles: 3.6 ms against 1.1)."""
    return 2 * k.tiles[1] <= rows.vw


def _vector_of_tiles(rows: ConvRows, q, count: int):
    """Vector q of an example's `count` tiles in order: (its first tile t0, an i64; whether
    every lane is a tile; the lanes' rows of tiles t / TW and columns t mod TW; which lanes
    are tiles, t < count)."""
    b, TW = rows.kb.b, rows.k.tiles[1]
    t0 = b.mul(q, ir.Constant(i64, rows.vw))
    whole = b.icmp_signed("<=", b.add(t0, ir.Constant(i64, rows.vw)), rows.kb.dim(count))
    t = b.add(splat(b, b.trunc(t0, i32), rows.ity), rows.lanes)
    tile_ok = b.icmp_unsigned("<", t, _lanes(rows, count))
    return t0, whole, b.udiv(t, _lanes(rows, TW)), b.urem(t, _lanes(rows, TW)), tile_ok


def _lanes(rows: ConvRows, v: int):
    return ir.Constant(rows.ity, [v] * rows.vw)


def input_transform(kb: KernelBuilder, k, first):
    """The (example, channel) pairs `first` = (lo, hi), Bᵀ d B of each tile: an example's
    tiles in order (`_input_tiles_in_order`) or by rows of tiles (`_input_rows_of_tiles`), as
    `_in_order` says."""
    rows = ConvRows(kb, k, vectors=1)
    (_input_tiles_in_order if _in_order(rows, k) else _input_rows_of_tiles)(kb, rows, k, first)


def _input_tiles_in_order(kb: KernelBuilder, rows: ConvRows, k, first):
    """The (example, channel) pairs `first` = (lo, hi): their tiles in vectors of consecutive
    tiles, each of the 16 values of their windows gathered from x (a lane whose window's
    value lies outside x reads nothing and is 0), Bᵀ d B, and the 16 values stored in V's 16
    matrices, masked past the pair's last tile."""
    b = kb.b
    N, C, H, W = k.x_shape
    TH, TW = k.tiles
    count, columns = TH * TW, N * TH * TW
    lanes = lambda v: _lanes(rows, v)  # noqa: E731

    def vector_of_tiles(n, c, q):
        t0, whole, th, tw, tile_ok = _vector_of_tiles(rows, q, count)
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
            whole,
            [
                (k.out, b.add(tile, kb.dim((xi * WINDOW + nu) * C * columns)), v[xi][nu])
                for xi in range(WINDOW)
                for nu in range(WINDOW)
            ],
            tile_ok,
        )

    def pair(idx):
        n, c = b.sdiv(idx[0], kb.dim(C)), b.srem(idx[0], kb.dim(C))
        kb.loops((-(-count // rows.vw),), lambda q: vector_of_tiles(n, c, q[0]))

    kb.loops((N * C,), pair, first=first)


def _input_rows_of_tiles(kb: KernelBuilder, rows: ConvRows, k, first):
    """The (example, channel) pairs `first` = (lo, hi): each row of tiles in vectors of
    consecutive tiles, the 4 rows of their windows loaded as the direct convolution loads
    a row's taps (each row of x once, its 4 tap columns by lane shifts), Bᵀ d B, and the 16
    values of each tile stored in V's 16 matrices: whole where the vector's tiles past the
    row's end are the next rows' of the pair, which come later (`ConvRows.stores_ahead`),
    masked at the pair's last row only."""
    b = kb.b
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
    """The (example, channel) pairs `first` = (lo, hi): Aᵀ M A of each tile, an example's
    tiles in order or by rows of tiles (`_in_order`), each tile's 4 outputs stored where they
    lie inside y; then the epilogue's map on the (example, channel) plane, still in cache."""
    b, rows = kb.b, ConvRows(kb, k, vectors=1)
    N, O, Ho, Wo = k.out_shape
    TH, TW = k.tiles
    count, columns = TH * TW, N * TH * TW
    lanes = lambda v: _lanes(rows, v)  # noqa: E731

    def products(at, whole, mask):
        """The 4 x 4 products of the tiles at `at` in M's 16 matrices, loaded whole where
        `whole` holds, else under `mask`, and Aᵀ M A: 2 x 2 vectors."""
        m = rows.whole_or_masked(
            whole,
            [
                (k.products, b.add(at, kb.dim((xi * WINDOW + nu) * O * columns)))
                for xi in range(WINDOW)
                for nu in range(WINDOW)
            ],
            lambda: [mask] * WINDOW * WINDOW,
        )
        return two_sided(AT, [m[xi * WINDOW : (xi + 1) * WINDOW] for xi in range(WINDOW)], *_arithmetic(rows))

    def vector_of_tiles(n, o, q):
        # each of a tile's 4 outputs scattered into y's plane: a row of tiles is too short
        # for the rows of outputs to be worth interleaving
        t0, whole, th, tw, tile_ok = _vector_of_tiles(rows, q, count)
        y = products(kb.affine(Affine(0, (columns, count, 1)), [o, n, t0]), whole, tile_ok)
        plane = b.gep(kb.buffer(k.out, "f32"), [kb.affine(Affine(0, (O * Ho * Wo, Ho * Wo)), [n, o])])
        for a in range(TILE):
            ho = b.add(b.mul(th, lanes(TILE)), lanes(a))
            row_ok = b.and_(tile_ok, b.icmp_unsigned("<", ho, lanes(Ho)))
            for s in range(TILE):
                wo = b.add(b.mul(tw, lanes(TILE)), lanes(s))
                ok = b.and_(row_ok, b.icmp_unsigned("<", wo, lanes(Wo)))
                scatter(kb.m, b, y[a][s], plane, b.add(b.mul(ho, lanes(Wo)), wo), ok)

    def row_of_tiles(n, o, th, q):
        # each row of outputs interleaved from its tiles' columns
        tw0 = b.mul(q, ir.Constant(i64, rows.chunk))
        y = products(
            kb.affine(Affine(0, (columns, TH * TW, TW, 1)), [o, n, th, tw0]),
            b.icmp_signed("<=", b.add(tw0, ir.Constant(i64, rows.vw)), kb.dim(TW)),
            rows.mask(tw0, TW),
        )
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
        if _in_order(rows, k):
            kb.loops((-(-count // rows.vw),), lambda q: vector_of_tiles(n, o, q[0]))
        else:
            kb.loops((TH, rows.chunks()), lambda tq: row_of_tiles(n, o, *tq))
        if k.epilogue is not None:
            kb.loops((Ho * Wo,), lambda p: map_body(kb, k.epilogue, kb.p, [n, o, p[0]]), contiguous=True)

    kb.loops((N * O,), pair, first=first)
