"""The packs of a convolution's windows: the `windows` routines' op(B), im2col's columns,
packed from the image itself into the panels packs.py makes of im2col's buffer, bit for
bit (runs of an image row by masked vector loads, other panels gathered lane by lane),
rounded or paired as packs.py makes a bf16 routine's; on the AMX tiles a panel of floats is
packed so, then into the tiles' layout (`pack_windows`)."""

from __future__ import annotations

from llvmlite import ir

from dlc.compiler.native.codegen.intrinsics import declare, every, splat, strided_load, transpose8, vec_ptr
from dlc.compiler.native.codegen.types import f32, i1, i32, i64
from dlc.compiler.native.codegen.gemm.interface import WINDOW_GEOMETRY
from dlc.compiler.native.codegen.gemm.ir_helpers import c64, carrying_loop, ceil_div, fptr, gep, internal, loop, smin
from dlc.compiler.native.codegen.gemm.packs import finish_panel, pack, panel_length, stored_operand


# the strides along W whose panels are packed by masked vector loads of X's rows (the rest
# are gathered lane by lane)
WINDOW_RUN_STRIDES = (1, 2)


def window_pack(gen, trans: bool):
    """pack_windows(kc, len, k0, j0, X, geometry, dst): the panels `_build_pack` makes
    of columns j0 .. j0+len and rows k0 .. k0+kc of op(B) = a convolution's columns,
    read from the image X itself. Of tap t = (c, i, jj) and output pixel p = (n, ho, wo)
    the column holds X[n, c, ho·sh - ph + i·dh, wo·sw - pw + jj·dw], 0 outside the image
    (geometry: WINDOW_GEOMETRY); op(B) is im2col's buffer transposed with `trans`
    (element (k, j): tap k of pixel j, a forward product's), else as it lies (pixel k's
    tap j, a weight gradient's). Padding columns past `len` are zero too, so the panels
    are those of the buffer, bit for bit."""

    def build(name):
        fn = internal(
            gen.m,
            name,
            ir.VoidType(),
            [i64, i64, i64, i64, fptr, i64.as_pointer(), fptr],
            ["kc", "len", "k0", "j0", "X", "geometry", "dst"],
        )
        fn.attributes.add("noinline")
        fn.args[6].add_attribute("noalias")
        (_build_window_pack if trans else _build_pixel_rows_pack)(gen, fn)
        return fn

    return gen.shared(f"pack_windows_{'t' if trans else 'n'}", build)


def pack_windows(gen, b, trans, kc, nc, pc, jc, X, geometry, Bp):
    """Columns jc .. jc+nc of op(B), rows pc .. pc+kc, read from the image X into Bp's
    panels, at b's place (the macro loop's K slice of a block: kc and nc at most the
    blocking's KC and NC). The tiles' panels are packed from floats: a panel of windows at a time
    into the part of Bp the tiles' bfloat16 leave free (they fill half of it at most), then
    into the tiles' layout from there."""
    cfg = gen.cfg
    if not cfg.amx:
        b.call(window_pack(gen, trans), [kc, nc, pc, jc, X, geometry, Bp])
        return
    floats = gep(b, Bp, c64(cfg.kc * cfg.nc // 2))
    with loop(b, 0, nc, cfg.nr, name="jw") as jr:
        width = smin(b, c64(cfg.nr), b.sub(nc, jr))
        b.call(window_pack(gen, trans), [kc, width, pc, b.add(jc, jr), X, geometry, floats])
        panel = gep(b, Bp, b.mul(jr, panel_length(gen, b, kc)))
        b.call(pack(gen, "b", False), [kc, width, floats, c64(cfg.nr), panel])


def _window_parts(gen, fn):
    """The builder at fn's entry and what both window packs use: the geometry `g`,
    splat(x) over VW lanes of i64, the panel's lane indices (P // VW vectors), X as an
    integer, digits(v, rows, columns) (v as (a, row, column)) and following(a, row,
    column, rows, columns, step) (v + step's, scalars: no division), position(j) (pixel j
    as (n, ho, wo)), origin(n, ho, wo) (the row, column and offset in X of the window's
    tap (0, 0)), taps(t) (tap t's offset from it, row and column) — scalars or vectors
    alike — and gathered(offsets, mask)."""
    cfg, VW = gen.cfg, gen.cfg.vw
    geometry, X = fn.args[5], fn.args[4]
    b = ir.IRBuilder(fn.append_basic_block("entry"))
    g = {name: b.load(gep(b, geometry, c64(i)), name=name) for i, name in enumerate(WINDOW_GEOMETRY)}
    iv = ir.VectorType(i64, VW)
    gather = declare(
        gen.m,
        f"llvm.masked.gather.v{VW}f32.v{VW}p0",
        gen.vty,
        [ir.VectorType(fptr, VW), i32, ir.VectorType(i1, VW), gen.vty],
    )
    X_int = b.ptrtoint(X, i64)

    def like(v):  # a scalar as v is: itself, or splat over VW lanes
        return (lambda x: splat(b, x, iv)) if isinstance(v.type, ir.VectorType) else (lambda x: x)

    def digits(v, rows, columns):  # v as (a, row, column) of [., rows, columns]
        d = like(v)
        plane = d(b.mul(rows, columns))
        a = b.sdiv(v, plane)
        r = b.sub(v, b.mul(a, plane))
        row = b.sdiv(r, d(columns))
        return a, row, b.sub(r, b.mul(row, d(columns)))

    def position(j):
        return digits(j, g["Ho"], g["Wo"])

    def following(a, row, column, rows, columns, step=1):
        # the digits of v + step, a step that never passes a row's end
        column1 = b.add(column, c64(step))
        row_end = b.icmp_signed("==", column1, columns)
        row1 = b.select(row_end, b.add(row, c64(1)), row)
        plane_end = b.icmp_signed("==", row1, rows)
        return [
            b.select(plane_end, b.add(a, c64(1)), a),
            b.select(plane_end, c64(0), row1),
            b.select(row_end, c64(0), column1),
        ]

    def origin(n, ho, wo):
        d = like(n)
        hi0 = b.sub(b.mul(ho, d(g["stride_h"])), d(g["pad_h"]))
        wi0 = b.sub(b.mul(wo, d(g["stride_w"])), d(g["pad_w"]))
        return hi0, wi0, b.add(b.mul(n, d(g["sn"])), b.add(b.mul(hi0, d(g["sh"])), b.mul(wi0, d(g["sw"]))))

    def taps(t):
        return tap_parts(*digits(t, g["kh"], g["kw"]))

    def tap_parts(c, i, jj):
        d = like(c)
        di, dj = b.mul(i, d(g["dil_h"])), b.mul(jj, d(g["dil_w"]))
        return b.add(b.mul(c, d(g["sc"])), b.add(b.mul(di, d(g["sh"])), b.mul(dj, d(g["sw"])))), di, dj

    def gathered(offsets, mask):
        at = b.add(splat(b, X_int, iv), b.mul(offsets, splat(b, c64(4), iv)))
        return b.call(gather, [b.inttoptr(at, ir.VectorType(fptr, VW)), i32(4), mask, ir.Constant(gen.vty, None)])

    lanes = [ir.Constant(iv, list(range(v * VW, (v + 1) * VW))) for v in range(cfg.nr // VW)]
    parts = dict(
        g=g,
        splat=lambda x: splat(b, x, iv),
        lanes=lanes,
        X_int=X_int,
        digits=digits,
        position=position,
        following=following,
        origin=origin,
        taps=taps,
        tap_parts=tap_parts,
        gathered=gathered,
    )
    return b, type("WindowParts", (), parts)


# pixels a weight gradient's pack reads for each tap at once where they lie in one output row
# (_build_pixel_rows_pack): transpose8's
ROW_PIXELS = 8


def _build_pixel_rows_pack(gen, fn):
    """op(B) as im2col's buffer lies (a weight gradient's): each panel row one pixel's
    taps. Where ROW_PIXELS pixels lie in one output row, a stride of WINDOW_RUN_STRIDES
    along W and a unit stride in X, each tap of the panel is read for them at once, one
    masked load of X's row (every other float of one at stride 2), and 8 taps of 8 pixels
    are transposed in registers into 8 panel rows (gathered lane by lane, a weight
    gradient's packs took 0.37 of its GEMM's time more than packs of im2col's buffer, in
    bfloat16 pairs); any other pixel gathers its taps lane by lane. The taps are decomposed
    once a panel, the pixel (n, ho, wo) carried along the rows, no division a row."""
    P, VW = gen.cfg.nr, gen.cfg.vw
    kc, length, k0, j0, X, geometry, dst = fn.args
    b, w = _window_parts(gen, fn)
    g, vsplat, operand = w.g, w.splat, stored_operand(gen, b)
    inside = lambda x, n: b.icmp_unsigned("<", x, vsplat(n))  # 0 <= x < n
    unit_stride = b.icmp_signed("==", g["sw"], c64(1))
    with loop(b, 0, ceil_div(b, length, P), name="q") as q:
        p0 = b.mul(q, c64(P))
        out = gep(b, dst, b.mul(p0, kc))
        live = b.sub(length, p0)  # lanes past it are padding: zero
        lanes = [(w.taps(b.add(vsplat(b.add(j0, p0)), x)), b.icmp_signed("<", x, vsplat(live))) for x in w.lanes]
        # the panel's taps one by one, for the runs: (offset, di, dj) and whether it is a tap
        taps = [(w.taps(b.add(b.add(j0, p0), c64(p))), b.icmp_signed("<", c64(p), live)) for p in range(P)]

        def gathered_row(o, n, ho, wo):
            """Panel row o: pixel (n, ho, wo)'s taps, each lane gathered."""
            hi0, wi0, base = w.origin(n, ho, wo)
            for v, ((offset, di, dj), lane_ok) in enumerate(lanes):
                mask = b.and_(
                    lane_ok, b.and_(inside(b.add(vsplat(hi0), di), g["H"]), inside(b.add(vsplat(wi0), dj), g["W"]))
                )
                x = w.gathered(b.add(vsplat(base), offset), mask)
                b.store(operand(x), vec_ptr(b, gep(b, o, c64(v * VW)), gen.vty), align=4)

        def row_runs(o, n, ho, wo, stride):
            """Panel rows o .. o + ROW_PIXELS: pixels (n, ho, wo + i), in one output row, by runs."""
            hi0, wi0, base = w.origin(n, ho, wo)
            lanes8 = ir.VectorType(i64, ROW_PIXELS)
            columns = b.add(splat(b, wi0, lanes8), ir.Constant(lanes8, [stride * i for i in range(ROW_PIXELS)]))
            v8 = ir.VectorType(f32, ROW_PIXELS)
            for first in range(0, P, ROW_PIXELS):
                runs = []
                for (offset, di, dj), tap_ok in taps[first : first + ROW_PIXELS]:
                    row_ok = b.and_(tap_ok, b.icmp_unsigned("<", b.add(hi0, di), g["H"]))
                    mask = b.and_(
                        b.icmp_unsigned("<", b.add(columns, splat(b, dj, lanes8)), splat(b, g["W"], lanes8)),
                        splat(b, row_ok, ir.VectorType(i1, ROW_PIXELS)),
                    )
                    at = b.inttoptr(b.add(w.X_int, b.mul(b.add(base, offset), c64(4))), fptr)
                    runs.append(strided_load(gen.m, b, at, mask, stride)[0])
                for i, pixel in enumerate(transpose8(b, runs)):
                    b.store(operand(pixel), vec_ptr(b, gep(b, o, c64(i * P + first)), v8), align=4)

        # the rows: ROW_PIXELS at a time by runs where they may be, else one gathered
        starts = [c64(0), *w.position(k0)]
        pre, head = b.block, fn.append_basic_block("pixel.head")
        body, latch, done = (fn.append_basic_block(f"pixel.{s}") for s in ("body", "latch", "done"))
        b.branch(head)
        b.position_at_end(head)
        at = [b.phi(i64, name) for name in ("k", "n", "ho", "wo")]
        for phi, start in zip(at, starts):
            phi.add_incoming(start, pre)
        k, n, ho, wo = at
        b.cbranch(b.icmp_signed("<", k, kc), body, done)
        b.position_at_end(body)
        whole = b.and_(
            b.icmp_signed("<=", b.add(k, c64(ROW_PIXELS)), kc),
            b.and_(unit_stride, b.icmp_signed("<=", b.add(wo, c64(ROW_PIXELS)), g["Wo"])),
        )
        o = gep(b, out, b.mul(k, c64(P)))
        one = fn.append_basic_block("pixel.gathered")
        by_stride = b.switch(b.select(whole, g["stride_w"], c64(0)), one)
        nexts = []
        for stride in WINDOW_RUN_STRIDES:
            block = fn.append_basic_block(f"pixel.runs{stride}")
            by_stride.add_case(c64(stride), block)
            b.position_at_end(block)
            row_runs(o, n, ho, wo, stride)
            nexts.append((b.block, [b.add(k, c64(ROW_PIXELS)), *w.following(n, ho, wo, g["Ho"], g["Wo"], ROW_PIXELS)]))
            b.branch(latch)
        b.position_at_end(one)
        gathered_row(o, n, ho, wo)
        nexts.append((b.block, [b.add(k, c64(1)), *w.following(n, ho, wo, g["Ho"], g["Wo"], 1)]))
        b.branch(latch)
        b.position_at_end(latch)
        for index, phi in enumerate(at):
            joined = b.phi(i64)
            for block, values in nexts:
                joined.add_incoming(values[index], block)
            phi.add_incoming(joined, latch)
        b.branch(head)
        b.position_at_end(done)
        finish_panel(gen, b, out, kc, P)
    b.ret_void()


def _build_window_pack(gen, fn):
    """A panel whose columns lie in at most two output rows, a stride of WINDOW_RUN_STRIDES
    along W and a unit stride in X (a row of taps is then a run of X's row, or every
    other float of one): masked vector loads (_window_runs); any other panel gathers its
    lanes one by one."""
    cfg = gen.cfg
    P, VW = cfg.nr, cfg.vw
    kc, length, k0, j0, X, geometry, dst = fn.args
    b, w = _window_parts(gen, fn)
    g, vsplat, lanes, X_int, position = w.g, w.splat, w.lanes, w.X_int, w.position
    operand = stored_operand(gen, b)
    inside = lambda x, n: b.icmp_unsigned("<", x, vsplat(n))  # 0 <= x < n

    # each tap's offset in X and its row and column steps, for the K slice: (c, i, jj)
    # carried along k, no division per tap
    taps = b.bitcast(b.alloca(ir.ArrayType(i64, 3 * cfg.kc), name="taps"), i64.as_pointer())
    with carrying_loop(b, kc, list(w.digits(k0, g["kh"], g["kw"])), name="tap") as (k, (c, i, jj), following):
        for q, v in enumerate(w.tap_parts(c, i, jj)):
            b.store(v, gep(b, taps, b.add(b.mul(k, c64(3)), c64(q))))
        following += w.following(c, i, jj, g["kh"], g["kw"])

    def tap(k):
        return [b.load(gep(b, taps, b.add(b.mul(k, c64(3)), c64(q)))) for q in range(3)]

    with loop(b, 0, ceil_div(b, length, P), name="q") as q:
        p0 = b.mul(q, c64(P))
        out = gep(b, dst, b.mul(p0, kc))
        first = b.add(j0, p0)
        n_a, ho_a, wo_a = position(first)
        split = b.sub(g["Wo"], wo_a)  # the panel's lanes in the first output row
        live = b.sub(length, p0)  # lanes past it are padding: zero
        in_runs = b.and_(b.icmp_signed("==", g["sw"], c64(1)), b.icmp_signed("<=", b.sub(c64(P), split), g["Wo"]))
        scattered, next_panel = fn.append_basic_block("scattered"), fn.append_basic_block("panel.next")
        by_stride = b.switch(b.select(in_runs, g["stride_w"], c64(0)), scattered)
        for stride in WINDOW_RUN_STRIDES:
            block = fn.append_basic_block(f"runs.{stride}")
            by_stride.add_case(c64(stride), block)
            b.position_at_end(block)
            _window_runs(gen, b, stride, g, X_int, tap, kc, out, first, split, live, position)
            b.branch(next_panel)

        # any other panel: each lane's own pixel, gathered
        b.position_at_end(scattered)
        pos = [(*w.origin(*position(b.add(vsplat(first), x))), b.icmp_signed("<", x, vsplat(live))) for x in lanes]
        with loop(b, 0, kc, name="gather") as k:
            offset, di, dj = tap(k)
            o = gep(b, out, b.mul(k, c64(P)))
            for v, (hi0, wi0, base, lane_ok) in enumerate(pos):
                mask = b.and_(
                    lane_ok, b.and_(inside(b.add(hi0, vsplat(di)), g["H"]), inside(b.add(wi0, vsplat(dj)), g["W"]))
                )
                x = w.gathered(b.add(base, vsplat(offset)), mask)
                b.store(operand(x), vec_ptr(b, gep(b, o, c64(v * VW)), gen.vty), align=4)
        b.branch(next_panel)
        b.position_at_end(next_panel)
        finish_panel(gen, b, out, kc, P)
    b.ret_void()


def _window_runs(gen, b, stride, g, X_int, tap, kc, out, first, split, live, position):
    """A panel's rows of taps, its columns in two output rows at most and `stride` apart
    along W in X: the lanes before `split` from row (n, ho) of pixel `first`, from its
    column on, the rest from the next row (or example), from its column 0 on. A vector
    whose lanes lie in one row, inside X's row, is `stride` plain loads, every
    stride-th float kept; any other vector's lanes are one masked load of stride·VW
    floats from each row (intrinsics.strided_load), an address outside X only where its
    lane is off, which reads nothing. (The masks' arithmetic, on i64 lanes, took about
    a third of a stem convolution's time when every vector was loaded masked.)"""
    P, VW = gen.cfg.nr, gen.cfg.vw
    iv, operand = ir.VectorType(i64, VW), stored_operand(gen, b)
    vsplat = lambda x: splat(b, x, iv)
    lanes = [ir.Constant(iv, list(range(v * VW, (v + 1) * VW))) for v in range(P // VW)]
    n_a, ho_a, wo_a = position(first)
    n_b, ho_b, _ = position(b.add(first, split))
    rows = []
    for n, ho, wo, lo, hi in (
        (n_a, ho_a, wo_a, c64(0), smin(b, split, live)),
        (n_b, ho_b, b.sub(c64(0), split), split, live),
    ):
        hi0 = b.sub(b.mul(ho, g["stride_h"]), g["pad_h"])
        wi0 = b.sub(b.mul(wo, c64(stride)), g["pad_w"])  # the column of lane 0, as if the row began there
        base = b.add(b.mul(n, g["sn"]), b.add(b.mul(hi0, g["sh"]), wi0))
        lane_ok = [b.and_(b.icmp_signed(">=", x, vsplat(lo)), b.icmp_signed("<", x, vsplat(hi))) for x in lanes]
        rows.append((hi0, wi0, base, lo, hi, lane_ok))
    # the row each vector's lanes all lie in (the first's, else the second's): a row's
    # lanes are [lo, hi), and each vector's choice is the same for every tap
    in_first = [b.icmp_signed("<=", c64((v + 1) * VW), rows[0][4]) for v in range(len(lanes))]
    in_one = [
        b.or_(
            in_first[v],
            b.and_(b.icmp_signed(">=", c64(v * VW), rows[1][3]), b.icmp_signed("<=", c64((v + 1) * VW), rows[1][4])),
        )
        for v in range(len(lanes))
    ]

    def address(start):
        return b.inttoptr(b.add(X_int, b.mul(start, c64(4))), fptr)

    with loop(b, 0, kc, name=f"runs{stride}") as k:
        offset, di, dj = tap(k)
        o = gep(b, out, b.mul(k, c64(P)))
        for v, x in enumerate(lanes):
            dst = vec_ptr(b, gep(b, o, c64(v * VW)), gen.vty)
            pick = lambda q: b.select(in_first[v], rows[0][q], rows[1][q])
            hi0, wi0, base = pick(0), pick(1), pick(2)
            column = b.add(b.add(wi0, dj), c64(stride * v * VW))  # of the vector's first lane
            whole = b.and_(
                in_one[v],
                b.and_(
                    b.icmp_unsigned("<", b.add(hi0, di), g["H"]),
                    b.and_(
                        b.icmp_unsigned("<", column, g["W"]),
                        b.icmp_unsigned("<", b.add(column, c64(stride * VW - 1)), g["W"]),
                    ),
                ),
            )
            with b.if_else(whole) as (plain, edge):
                with plain:
                    at = b.add(b.add(base, offset), c64(stride * v * VW))
                    parts = [
                        b.load(vec_ptr(b, address(b.add(at, c64(s * VW))), gen.vty), align=4) for s in range(stride)
                    ]
                    b.store(operand(every(b, parts, stride, 0)), dst, align=4)
                with edge:
                    value = None
                    for hi0, wi0, base, _, _, lane_ok in rows:
                        row_ok = splat(b, b.icmp_unsigned("<", b.add(hi0, di), g["H"]), ir.VectorType(i1, VW))
                        column = b.add(b.mul(x, vsplat(c64(stride))), vsplat(b.add(wi0, dj)))
                        mask = b.and_(b.and_(lane_ok[v], b.icmp_unsigned("<", column, vsplat(g["W"]))), row_ok)
                        loaded, _ = strided_load(
                            gen.m, b, address(b.add(b.add(base, offset), c64(stride * v * VW))), mask, stride
                        )
                        value = loaded if value is None else b.select(mask, loaded, value)
                    b.store(operand(value), dst, align=4)
