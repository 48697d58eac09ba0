"""The int8 product's loops (kernels/int8), in LLVM IR: a register tile of ROWS rows by up to
VECTORS vectors of output channels, each step four terms of every row (their four u8 bytes,
one 32-bit load, in every lane) times each channel's four s8 weights (the packed weights'
32-bit lanes), summed into int32 lanes:

- `vpdpbusd` where the target has it (AVX512_VNNI, 16 lanes; AVX-VNNI or AVX512_VNNI with
  AVX512VL, 8 lanes): it sums the four u8 · s8 products of a lane exactly into the 32-bit
  lane, wrapping, never saturating (that is `vpdpbusds`); AArch64's `usdot` (i8mm, 4 lanes)
  the same;
- AArch64's `sdot` (dotprod, 4 lanes), whose products are s8 · s8: the activations flipped
  to s8 (xor 0x80: a − 128), so the sums are Σ (a − 128) · q_w, which the store makes the
  same integers (_Dot.bias);
- elsewhere plain vector IR: the bytes widened to 32 bits, multiplied and summed by pairs,
  which LLVM's x86 backend makes `vpmaddwd` (a u8 · s8 product fits 16 bits: 255 · 128 <
  2^15; never `vpmaddubsw`, which saturates the sum of two), AArch64's `smull`/`smlal`.

Where the target has AMX-INT8, blocks of 16 rows run on the tiles first (`on_tiles`,
`_tile_rows`): `tdpbusd` sums 64 terms of 16 rows by 16 channels per instruction, as exactly
(codegen/amx.py); a thread's rows after its last block of 16 take the register tiles.

Every sum is exact in int32 (K · 255 · 127 < 2^31, compiler/ir/int8.py LONGEST_SUM; with
`sdot`, K · 128 · 127), so the order, the vector width, the instruction and the split of rows
over threads change no bit. The store: the sums less (z_x − bias) · Σ q_w, the integers
Σ a · q_w − z_x · Σ q_w whatever the instruction, converted to float32 (ties to even) and
times M[o], masked past the last channel."""

from __future__ import annotations

import contextlib

from llvmlite import ir

from dlc.compiler.native.codegen import jit
from dlc.compiler.native.codegen.amx import TILE_BYTES, TILE_ROWS, has_tiles, tile_ops
from dlc.compiler.native.codegen.gemm.ir_helpers import carrying_loop, gep, loop, smax, smin
from dlc.compiler.native.codegen.intrinsics import declare, masked, splat
from dlc.compiler.native.codegen.types import f32, i8, i32, i64
from dlc.compiler.native.kernels.map.loops import lane_count, loop_order, map_body

ROWS = 4  # rows of a register tile
TERMS = 4  # the terms of a 32-bit lane (kernels/int8 TERMS)
UNROLLED_TAPS = 9  # a convolution's taps up to which its loop over them is unrolled (3 x 3)
WINDOW_BYTES = 2048  # the bytes of K of 16 windows gathered at once for the tiles (32 KB on the stack)
EPILOGUE_BYTES = 32 * 1024  # the float32 sums of a block of rows between two runs of the epilogue (L1's size)
STACK_SUMS = 256 * 1024  # the largest block of sums kept on a thread's stack (16 rows of 4,096 channels)


def lanes() -> int:
    """The int32 lanes of a vector: 16 with AVX-512, 4 on AArch64 (NEON's 128 bits), else 8."""
    return 16 if jit.host_has("avx512f") else 4 if jit.target_arch() == "aarch64" else 8


def dot_instruction(width: int) -> str | None:
    """The intrinsic of `width` lanes that sums four byte products a lane where the target
    has one (vpdpbusd, usdot, sdot), else None."""
    if width == 16 and jit.host_has("avx512vnni"):
        return "llvm.x86.avx512.vpdpbusd.512"
    if width == 8 and (jit.host_has("avxvnni") or jit.host_has("avx512vnni") and jit.host_has("avx512vl")):
        return "llvm.x86.avx512.vpdpbusd.256"
    if width == 4 and jit.target_arch() == "aarch64":
        return (
            "llvm.aarch64.neon.usdot.v4i32.v16i8"
            if jit.host_has("i8mm")
            else "llvm.aarch64.neon.sdot.v4i32.v16i8"
            if jit.host_has("dotprod")
            else None
        )
    return None


def _c(v: int):
    return ir.Constant(i64, v)


class _Dot:
    """acc + the sums of four (a − bias) · w products per 32-bit lane (a: u8 bytes, w: s8
    bytes); `bias` 128 where the instruction multiplies s8 by s8 (sdot), else 0."""

    def __init__(self, module, b, width: int):
        self.b, self.width = b, width
        self.vty = ir.VectorType(i32, width)
        name = dot_instruction(width)
        self.bias = 128 if name and ".sdot." in name else 0
        operand = ir.VectorType(i8, width * TERMS) if name and name.startswith("llvm.aarch64") else self.vty
        self.fn = declare(module, name, self.vty, [self.vty, operand, operand]) if name else None

    def __call__(self, acc, a, w):
        if self.fn is not None:
            b, operand = self.b, self.fn.function_type.args[1]
            if self.bias:  # u8 − 128 as s8: the top bit flipped
                a = b.xor(a, ir.Constant(self.vty, [0x80808080 - (1 << 32)] * self.width))
            return b.call(self.fn, [acc, b.bitcast(a, operand), b.bitcast(w, operand)])
        b, n = self.b, self.width * TERMS
        a8, w8 = b.bitcast(a, ir.VectorType(i8, n)), b.bitcast(w, ir.VectorType(i8, n))

        def part(v, start, step, widen):  # lanes start, start + step, ... widened to i32
            picked = b.shuffle_vector(
                v,
                ir.Constant(v.type, ir.Undefined),
                ir.Constant(ir.VectorType(i32, n // step), list(range(start, n, step))),
            )
            return widen(picked, ir.VectorType(i32, n // step))

        pairs = [b.mul(part(a8, j, 2, b.zext), part(w8, j, 2, b.sext)) for j in (0, 1)]
        s = b.add(*pairs)  # the sums of pairs: vpmaddwd's
        half = ir.VectorType(i32, self.width)
        quads = [
            b.shuffle_vector(s, ir.Constant(s.type, ir.Undefined), ir.Constant(half, list(range(j, 2 * self.width, 2))))
            for j in (0, 1)
        ]
        return b.add(acc, b.add(*quads))


def on_tiles(k) -> bool:
    """Whether kernel k's blocks of TILE_ROWS rows run on the AMX tiles: where the target has
    AMX-INT8 (and Linux grants the tile state), a matmul's, and a convolution's (not a
    depthwise one: its own loops, _depthwise_rows) whose group
    fills a tile's 16 columns (fewer channels leave most of each tdpbusd's sums unused: a
    depthwise convolution ran 1.5x slower on the tiles) and whose windows are gathered in
    pieces of whole tiles (_pieces)."""
    g = k.weights
    return (
        lanes() == 16
        and not g.depthwise
        and has_tiles("tdpbusd")
        and (k.window is None or g.channels >= TILE_ROWS and _pieces(k) is not None)
    )


def _pieces(k) -> list | None:
    """A convolution's taps in the pieces its windows are gathered in for the tiles, (first
    tap, taps): all of them where K (padded to whole tiles) fits WINDOW_BYTES, else as many
    as fit, each piece starting at a whole tile (a tap's channels a multiple of 64); None
    where neither holds."""
    g = k.weights
    taps, width = g.taps, g.tap_channels
    if g.steps * TERMS <= WINDOW_BYTES:
        return [(0, taps)]
    if width % TILE_BYTES or width > WINDOW_BYTES:
        return None
    per = WINDOW_BYTES // width
    return [(t, min(per, taps - t)) for t in range(0, taps, per)]


def int8_rows(kb, k, first):
    """A team's slice [first[0], first[1]) of an Int8Kernel's rows · shared_blocks units:
    where the product has fewer rows than channels, the same share of its blocks of
    channels, every row of them (_channel_share); else the same share of its rows
    (_row_share)."""
    b = kb.b
    lo, hi = first
    blocks = shared_blocks(k)
    if blocks == 1:
        _row_share(kb, k, lo, hi)
        return
    rows = kb.dim(k.rows)
    few = b.and_(b.icmp_signed(">", rows, _c(0)), b.icmp_signed("<", rows, _c(k.weights.channels)))
    with b.if_else(few) as (by_channels, by_rows):
        with by_channels:
            _channel_share(kb, k, b.sdiv(lo, rows), b.sdiv(hi, rows), rows)
        with by_rows:
            _row_share(kb, k, b.sdiv(lo, _c(blocks)), b.sdiv(hi, _c(blocks)))


def _vectors(width: int) -> int:
    """The vectors of channels of a register tile: 16 accumulators of AVX-512's or NEON's 32
    registers, 8 of AVX2's 16."""
    return 2 if width == 8 else 4


def shared_blocks(k) -> int:
    """The blocks of channels (a register tile's) the team may share out instead of rows
    (_channel_share), or 1: for one group of at least two blocks, in registers (not the AMX
    tiles' blocks of rows), not a depthwise convolution (whose loops are its own). The team
    then splits rows · blocks units: a slice of them is the same share of the rows, or of
    the blocks (Int8Kernel.emit)."""
    g, width = k.weights, lanes()
    block = width * _vectors(width)
    if g.groups != 1 or g.depthwise or on_tiles(k) or g.channels < 2 * block:
        return 1
    return -(-g.channels // block)


def _channel_share(kb, k, first, last, rows):
    """Blocks of channels [first, last) of every row: a product of fewer rows than channels
    (a batch of one's dense layer, a convolution over a few pixels), whose threads each read
    their share of the weights, not all of them for their few rows (the weights are most of
    what such a product reads). The epilogue follows on those channels, a block of rows at
    a time (_in_blocks)."""
    b, g = kb.b, k.weights
    width = lanes()
    vectors = _vectors(width)
    block = width * vectors
    blocks, whole = -(-g.channels // block), g.channels // block

    def sums_of(r0, r1):
        def every_row(start, count):
            _row_tiles(b, r0, r1, lambda r, rows: _tile(kb, k, r, rows, _c(0), start, count, width))

        with loop(b, first, smin(b, last, _c(whole)), 1, "block") as j:
            every_row(b.mul(j, _c(block)), vectors)
        if whole < blocks:  # the last block's channels, fewer than a block
            with b.if_then(b.icmp_signed(">", last, _c(whole))):
                every_row(whole * block, -(-(g.channels - whole * block) // width))

    channel_range = b.mul(first, _c(block)), smin(b, b.mul(last, _c(block)), _c(g.channels))
    _in_blocks(kb, k, _c(0), rows, ROWS, sums_of, channel_range)


def _row_share(kb, k, lo, hi):
    """Rows [lo, hi), every channel, with its epilogue in blocks of about EPILOGUE_BYTES of
    float32 sums (whole tiles of rows), each block's run while its sums are in cache. A
    block's rows: a depthwise convolution's by _depthwise_rows; else blocks of TILE_ROWS rows
    on the AMX tiles where it takes them (on_tiles), then register tiles of ROWS rows, then
    the rest one by one. On the tiles, both ends of a thread's slice move up to a multiple of
    16 (or the last row): the slices still cover every row once, and only the last rows of
    all can miss a block of 16."""
    b = kb.b
    tiles = on_tiles(k)
    if tiles:
        rows = kb.dim(k.rows)
        lo, hi = (
            smin(b, b.mul(b.sdiv(b.add(x, _c(TILE_ROWS - 1)), _c(TILE_ROWS)), _c(TILE_ROWS)), rows) for x in (lo, hi)
        )
    _in_blocks(kb, k, lo, hi, TILE_ROWS, lambda start, end: _block(kb, k, start, end, tiles))


def _in_blocks(kb, k, lo, hi, multiple: int, sums_of, channel_range=None):
    """sums_of(start, end) for rows [lo, hi): all at once where the kernel has no epilogue,
    else in blocks of about EPILOGUE_BYTES of float32 sums (whole multiples of `multiple`
    rows), each followed by the epilogue on them (of `channel_range`'s channels, else all)
    while they are in cache, kept on the thread's stack where they fit (_sums_in)."""
    b = kb.b
    if k.epilogue is None:
        sums_of(lo, hi)
        return
    channels = k.weights.groups * k.weights.channels
    block = max(1, EPILOGUE_BYTES // (4 * channels * multiple)) * multiple
    kept = k.c[2] == channels and 4 * block * channels <= STACK_SUMS
    sums = _stack(kb, block * channels, f32) if kept else None
    with loop(b, lo, hi, block, "block") as start:
        end = smin(b, b.add(start, _c(block)), hi)
        with _sums_in(kb, k, sums, start):
            sums_of(start, end)
            _epilogue(kb, k, start, end, channel_range)


@contextlib.contextmanager
def _sums_in(kb, k, sums, start):
    """The sums of the block of rows from `start` stored to, and the epilogue reading them
    from, `sums` on the thread's stack (where not None) instead of c: row `start` at its
    first element. c's own rows are then never written, and a block's sums stay in L1
    rather than streaming through memory, once as they are stored and again as their
    lines are written back."""
    if sums is None:
        yield
        return
    b, key = kb.b, (k.c[0], "f32")
    before = kb.ptrs.get(key)
    first = b.add(kb.dim(k.c[1]), b.mul(start, kb.dim(k.c[2])))
    kb.ptrs[key] = b.gep(sums, [b.neg(first)])  # not inbounds: below the block, indexed back into it
    try:
        yield
    finally:
        if before is None:
            del kb.ptrs[key]
        else:
            kb.ptrs[key] = before


def _block(kb, k, lo, hi, tiles: bool):
    """The sums of rows [lo, hi), stored."""
    b = kb.b
    if k.weights.depthwise:
        _depthwise_rows(kb, k, lo, hi)
        return
    start = lo
    if tiles:
        start = _whole(b, lo, hi, TILE_ROWS)
        with loop(b, lo, start, TILE_ROWS, "tr") as r:
            _tile_rows(kb, k, r)
    _row_tiles(b, start, hi, lambda r, rows: _rows(kb, k, r, rows))


def _row_tiles(b, lo, hi, body):
    """body(r, ROWS) for each register tile of rows from lo, then body(r, 1) for each row
    left before hi."""
    whole = _whole(b, lo, hi, ROWS)
    with loop(b, lo, whole, ROWS, "r") as r:
        body(r, ROWS)
    with loop(b, whole, hi, 1, "rest") as r:
        body(r, 1)


def _depthwise_rows(kb, k, lo, hi):
    """Rows [lo, hi) of a depthwise convolution (Int8Weights.depthwise). A row (a pixel)
    takes its channels a vector at a time, up to 4 vectors at once, and its taps four at a
    time: the pixel's u8 channels at each of the four taps (one load a vector; z_x outside
    the image), interleaved so that each 32-bit lane holds one channel's four terms, then one
    dot product of the target's (_Dot: vpdpbusd) with the four taps' s8 weights of those
    channels, packed so (Int8Weights: a matmul's [steps, channels, 4] of K = taps, zero
    weights past the taps); the channels past the last whole vector by masked loads. Stored
    as the other integer products' sums are (_store). The pixels are walked, not divided out
    of the row at each one."""
    b, g = kb.b, k.weights
    width = lanes()
    vectors = 4  # 4 sums, four loads and their interleaving in flight: within AVX2's 16 registers too
    block = width * vectors
    windows = _Windows(kb, k)
    dot = _Dot(kb.m, b, width)
    a, w = kb.buffer(k.a[0], "i8"), kb.buffer(k.w, "i8")
    bty, vty = ir.VectorType(i8, width), ir.VectorType(i32, width)
    mload, _ = masked(kb.m, bty)
    fill = ir.Constant(bty, [g.zero - 256 if g.zero > 127 else g.zero] * width)
    nothing = ir.Constant(bty, [0] * width)
    outside = b.bitcast(_stack(kb, width, i8), bty.as_pointer())
    b.store(fill, outside, align=64)
    taps = g.k
    pairs = ir.Constant(ir.VectorType(i32, 2 * width), list(range(2 * width)))
    # byte 4c + j of the four taps' vectors side by side: tap j's channel c
    quads = ir.Constant(
        ir.VectorType(i32, 4 * width),
        [(j // 2) * 2 * width + (j % 2) * width + c for c in range(width) for j in range(TERMS)],
    )

    def sums(origin, start, count: int, left: int):
        """The sums of `count` vectors of channels from `start` (`left` channels from there)."""

        def terms(tap, v):
            """Tap `tap`'s u8 channels of vector v (a Python int: of the window; else a value
            in 0 .. taps + 2, none past the taps: the last quad's missing ones read nothing)."""
            known = isinstance(tap, int)
            if known and tap >= taps:
                return nothing
            t = _c(tap) if known else tap
            valid, at = windows.tap(origin, _c(0), b.sdiv(t, _c(windows.kw)), b.srem(t, _c(windows.kw)))
            if not known:  # the last quad's taps past the window read the z_x bytes
                valid = b.and_(valid, b.icmp_signed("<", t, _c(taps)))
            # outside the image the z_x bytes on the stack: a select of the address, not of the
            # bytes, which LLVM would merge into a mask of each interleaved byte
            ptr = b.bitcast(gep(b, a, b.add(at, b.add(start, _c(v * width)))), bty.as_pointer())
            ptr = b.select(valid, ptr, outside)
            if left - v * width >= width:
                return b.load(ptr, align=1)
            mask = ir.Constant(ir.VectorType(ir.IntType(1), width), [lane < left - v * width for lane in range(width)])
            return b.call(mload, [ptr, ir.Constant(i32, 1), mask, nothing])

        def quad(q, accs):
            """accs plus taps 4q .. 4q + 3 (q: an int, or a value)."""
            first = b.mul(q, _c(TERMS)) if not isinstance(q, int) else None
            out = []
            for v in range(count):
                four = [terms(4 * q + j if first is None else b.add(first, _c(j)), v) for j in range(TERMS)]
                side = [b.shuffle_vector(four[j], four[j + 1], pairs) for j in (0, 2)]
                interleaved = b.bitcast(b.shuffle_vector(side[0], side[1], quads), vty)
                step = q if first is not None else _c(q)
                byte = b.mul(b.add(b.mul(step, _c(g.padded)), b.add(start, _c(v * width))), _c(TERMS))
                weights = b.load(b.bitcast(gep(b, w, byte), vty.as_pointer()), align=1)
                out.append(dot(accs[v], interleaved, weights))
            return out

        accs = [ir.Constant(vty, [0] * width)] * count
        steps = -(-taps // TERMS)
        if taps <= UNROLLED_TAPS:
            for q in range(steps):
                accs = quad(q, accs)
            return accs
        with carrying_loop(b, _c(steps), accs, "quad") as (q, now, nxt):
            nxt.extend(quad(q, now))
        return now

    with carrying_loop(b, hi, list(windows.position(lo)), "pixel", lo) as (r, pixel, following):
        following.extend(windows.following(*pixel))
        origin = windows.origin_of(*pixel)
        whole = g.channels // block
        if whole:
            with loop(b, _c(0), _c(whole * block), block, "channels") as start:
                _store(kb, k, r, 1, _c(0), start, vectors, width, sums(origin, start, vectors, block), dot.bias)
        left = g.channels - whole * block
        if left:
            count = -(-left // width)
            tail = sums(origin, _c(whole * block), count, left)
            _store(kb, k, r, 1, _c(0), whole * block, count, width, tail, dot.bias)


def _whole(b, lo, hi, n: int):
    """The end of the whole blocks of n rows from lo before hi."""
    return b.add(lo, b.mul(b.sdiv(b.sub(hi, lo), _c(n)), _c(n)))


def _stack(kb, count: int, ty):
    """A block of `count` values of type ty on the stack, 64-byte aligned: a pointer to the first."""
    block = kb.alloca(ir.ArrayType(ty, count))
    block.align = 64
    return kb.b.bitcast(block, ty.as_pointer())


def _tile_rows(kb, k, r):
    """Rows r .. r + 15 on the AMX tiles, every group's channels: 16 x 16 int32 sums per 16
    channels (up to 4 tiles at once), summed over K 64 bytes at a time by tdpbusd of a tile
    of the rows' u8 terms (16 rows of 64 bytes) and one of the packed weights (16 steps of
    16 channels' four s8 terms: their layout, K padded with zero weights to whole tiles),
    stored through a block on the stack by the register tiles' store (_store). A matmul's
    rows are read in place, but for their last bytes short of a whole tile, copied
    (masked) to a tile on the stack; a convolution's 16 windows are gathered to the stack
    (_gather_windows), once a group, or in pieces of whole taps (_pieces) for each 64
    channels when they are more than WINDOW_BYTES."""
    b, g = kb.b, k.weights
    load, dot, store, zero = tile_ops(kb.m, "tdpbusd")
    T, B = TILE_ROWS, TILE_BYTES
    shape = [ir.Constant(ir.IntType(16), T), ir.Constant(ir.IntType(16), B)]
    a, w = kb.buffer(k.a[0], "i8"), kb.buffer(k.w, "i8")
    sums = _stack(kb, T * 4 * T, i32)
    if k.window is not None:
        pieces = _pieces(k)
        depth = max(taps for _, taps in pieces) * g.tap_channels if len(pieces) > 1 else g.steps * TERMS
        block = _stack(kb, T * depth + B, i8)
    else:
        inside = g.k // B
        tail = _stack(kb, T * B, i8) if g.k % B else None
    with loop(b, _c(0), _c(g.groups), 1, "g") as group:
        panel = b.mul(group, _c(g.steps))

        def summed(accs, count, start, first, tiles, terms):
            """accs plus K tiles first .. first + tiles - 1 (terms(kt): the rows' tile kt of them)."""

            def step(kt, accs):
                at = b.add(panel, b.mul(_c(T), b.add(_c(first), kt)))
                a_tile, out = terms(kt), []
                for v in range(count):
                    byte = b.mul(b.add(b.mul(at, _c(g.padded)), _c(start + v * T)), _c(TERMS))
                    w_tile = b.call(load, shape + [gep(b, w, byte), _c(g.padded * TERMS)])
                    out.append(b.call(dot, shape + [shape[1], accs[v], a_tile, w_tile]))
                return out

            if tiles == 1:
                return step(_c(0), accs)
            with carrying_loop(b, _c(tiles), accs, "kt") as (kt, accs, nxt):
                nxt.extend(step(kt, accs))
            return accs

        def gathered(kt):
            return b.call(load, shape + [gep(b, block, b.mul(kt, _c(B))), _c(depth)])

        if k.window is not None:
            if len(pieces) == 1:
                _gather_windows(kb, k, r, group, block, depth, pieces[0])

            def products(accs, count, start):
                for first, taps in pieces:
                    if len(pieces) > 1:
                        _gather_windows(kb, k, r, group, block, depth, (first, taps))
                    accs = summed(
                        accs, count, start, first * g.tap_channels // B, -(-taps * g.tap_channels // B), gathered
                    )
                return accs
        else:
            lda = kb.dim(k.a[2])
            row = b.add(b.add(kb.dim(k.a[1]), b.mul(r, lda)), b.mul(group, _c(g.k)))
            if tail is not None:
                _copy_tail(kb, a, row, lda, g.k - inside * B, inside * B, tail)

            def products(accs, count, start):
                if inside:
                    accs = summed(
                        accs,
                        count,
                        start,
                        0,
                        inside,
                        lambda kt: b.call(load, shape + [gep(b, a, b.add(row, b.mul(kt, _c(B)))), lda]),
                    )
                if tail is not None:
                    accs = summed(accs, count, start, inside, 1, lambda kt: b.call(load, shape + [tail, _c(B)]))
                return accs

        for start in range(0, g.channels, 4 * T):
            count = min(4, -(-(g.channels - start) // T))
            accs = products([b.call(zero, shape) for _ in range(count)], count, start)
            for v, tile in enumerate(accs):
                b.call(store, shape + [b.bitcast(gep(b, sums, _c(v * T)), i8.as_pointer()), _c(4 * T * 4), tile])
            vty = ir.VectorType(i32, T)
            rows = [
                b.load(b.bitcast(gep(b, sums, _c(j * 4 * T + v * T)), vty.as_pointer()), align=64)
                for j in range(T)
                for v in range(count)
            ]
            _store(kb, k, r, T, group, start, count, T, rows, 0)  # tdpbusd: u8 · s8


def _copy_tail(kb, a, first, lda, n: int, at: int, tail):
    """Bytes at .. at + n (n < 64) of rows first, first + lda, ... (16) to the tile `tail`,
    zeros past them: masked loads that never read past a row's terms."""
    b = kb.b
    vty = ir.VectorType(i8, TILE_BYTES)
    mload, _ = masked(kb.m, vty)
    mask = ir.Constant(ir.VectorType(ir.IntType(1), TILE_BYTES), [lane < n for lane in range(TILE_BYTES)])
    for j in range(TILE_ROWS):
        src = b.bitcast(gep(b, a, b.add(b.add(first, b.mul(_c(j), lda)), _c(at))), vty.as_pointer())
        row = b.call(mload, [src, ir.Constant(i32, 1), mask, ir.Constant(vty, [0] * TILE_BYTES)])
        b.store(row, b.bitcast(gep(b, tail, _c(j * TILE_BYTES)), vty.as_pointer()), align=64)


def _gather_windows(kb, k, r, group, block, depth: int, piece: tuple):
    """The terms of windows r .. r + 15 of a convolution (_Windows) at the taps of `piece`
    (first tap, taps) to `block`, row j at j · depth in _window_sums' order: each tap's
    channels of the group at (tap − first) · tap channels, by masked loads of up to 64
    bytes (never past the image), z_x for a tap outside the image. Each load's 64 bytes are stored whole: past the tap's channels they
    land on the next tap's (stored after them), or past the row's terms, whose weights are
    zero (so any byte there adds nothing), the last row's on the 64 bytes past the block's
    rows."""
    b, g = kb.b, k.weights
    windows = _Windows(kb, k)
    own = windows.own
    vty = ir.VectorType(i8, TILE_BYTES)
    mload, _ = masked(kb.m, vty)
    a = kb.buffer(k.a[0], "i8")
    fill = ir.Constant(vty, [g.zero - 256 if g.zero > 127 else g.zero] * TILE_BYTES)
    nothing = ir.Constant(vty, [0] * TILE_BYTES)
    with loop(b, _c(0), _c(TILE_ROWS), 1, "window") as j:
        origin = windows.origin(b.add(r, j))
        row = b.mul(j, _c(depth))

        def tap_terms(tap, ti, tj, carried):
            valid, at = windows.tap(origin, group, ti, tj)
            to = b.add(row, b.mul(b.sub(tap, _c(piece[0])), _c(g.tap_channels)))
            for c0 in range(0, own, TILE_BYTES):
                mask = ir.Constant(
                    ir.VectorType(ir.IntType(1), TILE_BYTES), [lane < own - c0 for lane in range(TILE_BYTES)]
                )
                src = b.bitcast(gep(b, a, b.add(at, _c(c0))), vty.as_pointer())
                terms = b.select(valid, b.call(mload, [src, ir.Constant(i32, 1), mask, nothing]), fill)
                b.store(terms, b.bitcast(gep(b, block, b.add(to, _c(c0))), vty.as_pointer()), align=1)
            return carried

        windows.over_taps([], tap_terms, *piece)


def _rows(kb, k, r, count: int):
    """Rows r .. r + count - 1: every group's channels."""
    b, g = kb.b, k.weights
    width = lanes()
    vectors = _vectors(width)
    with loop(b, _c(0), _c(g.groups), 1, "g") as group:
        for start in range(0, g.channels, width * vectors):
            _tile(kb, k, r, count, group, start, min(vectors, -(-(g.channels - start) // width)), width)


def _tile(kb, k, r, count: int, group, start, vectors: int, width: int):
    """The sums of `count` rows from r by `vectors` vectors of channels from `start` of group
    `group` (an int, or a value: a block of whole vectors), stored."""
    b, g = kb.b, k.weights
    vty = ir.VectorType(i32, width)
    dot = _Dot(kb.m, b, width)
    a = kb.buffer(k.a[0], "i8")
    w = kb.buffer(k.w, "i8")
    whole = g.k // TERMS
    row_starts = [
        b.add(b.add(kb.dim(k.a[1]), b.mul(b.add(r, _c(j)), kb.dim(k.a[2]))), b.mul(group, _c(g.k)))
        for j in range(count)
    ]
    # the packed weights of (group, step t, channel o): byte ((group · steps + t) · padded + o) · 4
    panel = b.mul(group, _c(g.steps * g.padded * TERMS))

    def weights(t):
        at = b.mul(start, _c(TERMS)) if isinstance(start, ir.Value) else _c(start * TERMS)
        base = b.add(panel, b.add(b.mul(t, _c(g.padded * TERMS)), at))
        return [
            b.load(b.bitcast(gep(b, w, b.add(base, _c(v * width * TERMS))), vty.as_pointer()), align=1)
            for v in range(vectors)
        ]

    def step(t, accs, terms):
        ws = weights(t)
        out = []
        for j in range(count):
            four = terms(row_starts[j], t)
            out += [dot(accs[j * vectors + v], four, ws[v]) for v in range(vectors)]
        return out

    def loaded(row, t):  # four whole terms: one 32-bit load
        word = b.load(b.bitcast(gep(b, a, b.add(row, b.mul(t, _c(TERMS)))), i32.as_pointer()), align=1)
        return splat(b, word, vty)

    def gathered(row, t):  # the last terms, fewer than four: byte by byte, never past the row
        word = ir.Constant(i32, 0)
        for j in range(g.k - whole * TERMS):
            byte = b.zext(b.load(gep(b, a, b.add(row, _c(whole * TERMS + j)))), i32)
            word = b.or_(word, b.shl(byte, ir.Constant(i32, 8 * j)))
        return splat(b, word, vty)

    zero = [ir.Constant(vty, [0] * width)] * (count * vectors)
    if k.window is not None:
        accs = _window_sums(kb, k, r, count, group, zero, weights, dot, vectors, width)
    else:
        with carrying_loop(b, _c(whole), zero, "t") as (t, accs, nxt):
            nxt.extend(step(t, accs, loaded))
        accs = accs if g.k == whole * TERMS else step(_c(whole), accs, gathered)
    _store(kb, k, r, count, group, start, vectors, width, accs, dot.bias)


class _Windows:
    """The windows of a convolution's rows (Int8Kernel.window): row i = (n, ho, wo), tap (ti, tj)
    at (ho · sh − ph + ti · dh, wo · sw − pw + tj · dw) of the channels-last u8 image."""

    def __init__(self, kb, k):
        self.b, self.k = kb.b, k
        height, wide, channels, self.kh, self.kw, self.stride, self.padding, self.dilation = k.window
        self.size = (kb.dim(height), kb.dim(wide), kb.dim(channels))
        self.pixels = [kb.dim(d) for d in k.pixels]
        # a tap's bytes: its group's channels; a kernel row's, its run of kw · C in whole steps
        # of four (the bytes past the run, the next pixel's or the image's slack, times zero weights)
        self.own = k.weights.tap_channels if k.weights.by_kernel_rows else channels // k.weights.groups

    def origin(self, i):
        """(n, the window's first row, its first column) of row i."""
        return self.origin_of(*self.position(i))

    def position(self, i):
        """The output pixel (n, y, x) of row i."""
        b, (ho, wo) = self.b, self.pixels
        n, p = b.sdiv(i, b.mul(ho, wo)), b.srem(i, b.mul(ho, wo))
        return n, b.sdiv(p, wo), b.srem(p, wo)

    def following(self, n, y, x) -> list:
        """The output pixel after (n, y, x), without dividing."""
        b, (ho, wo) = self.b, self.pixels
        x = b.add(x, _c(1))
        row_ends = b.icmp_signed("==", x, wo)
        y = b.select(row_ends, b.add(y, _c(1)), y)
        image_ends = b.icmp_signed("==", y, ho)
        return [b.select(image_ends, b.add(n, _c(1)), n), b.select(image_ends, _c(0), y), b.select(row_ends, _c(0), x)]

    def origin_of(self, n, y, x):
        """(n, the window's first row, its first column) of output pixel (n, y, x)."""
        b, (sh, sw), (ph, pw) = self.b, self.stride, self.padding
        return n, b.sub(b.mul(y, _c(sh)), _c(ph)), b.sub(b.mul(x, _c(sw)), _c(pw))

    def tap(self, origin, group, ti, tj):
        """(whether tap (ti, tj) of the window at `origin` is inside the image, the byte of its
        group's first channel there, else 0: never past the image's ends)."""
        b, (n, h0, w0), (h_, w_, c_), (dh, dw) = self.b, origin, self.size, self.dilation
        h, w = b.add(h0, b.mul(ti, _c(dh))), b.add(w0, b.mul(tj, _c(dw)))
        if self.padding == (0, 0):  # every window lies inside the image
            valid = ir.Constant(ir.IntType(1), 1)
        else:
            valid = b.and_(_inside(b, h, h_), _inside(b, w, w_))
        at = b.add(b.mul(b.add(b.mul(b.add(b.mul(n, h_), h), w_), w), c_), b.mul(group, _c(self.own)))
        return valid, b.select(valid, at, _c(0))

    def over_taps(self, carried, body, first: int = 0, taps: int | None = None):
        """body(tap, ti, tj, carried) -> the next carried values over taps first .. first +
        taps - 1 (all) in order: unrolled up to UNROLLED_TAPS, else a loop."""
        b, kw = self.b, self.kw
        taps = self.kh * kw if taps is None else taps
        if taps <= UNROLLED_TAPS:
            for tap in range(first, first + taps):
                carried = body(_c(tap), _c(tap // kw), _c(tap % kw), carried)
            return carried
        with carrying_loop(b, _c(first + taps), carried, "tap", first) as (tap, now, nxt):
            nxt.extend(body(tap, b.sdiv(tap, _c(kw)), b.srem(tap, _c(kw)), now))
        return now


def _inside(b, v, size):
    return b.and_(b.icmp_signed(">=", v, _c(0)), b.icmp_signed("<", v, size))


def _window_sums(kb, k, r, count, group, zero, weights, dot, vectors, width):
    """The sums of rows r .. r + count - 1 of a convolution reading its windows in place
    (_Windows), four of the group's channels of a tap a step (one 32-bit load; the last,
    of fewer, byte by byte, its weights past them zero); a tap outside the image reads z_x."""
    b, g = kb.b, k.weights
    vty = ir.VectorType(i32, width)
    windows = _Windows(kb, k)
    own = windows.own
    per, whole = g.tap_channels // TERMS, own // TERMS
    a = kb.buffer(k.a[0], "i8")
    z = g.zero * 0x01010101
    fill = ir.Constant(i32, z - (1 << 32) if z >= 1 << 31 else z)
    origins = [windows.origin(b.add(r, _c(j))) for j in range(count)]

    def step(tap, c4, accs, rows, word):
        ws = weights(b.add(b.mul(tap, _c(per)), c4))
        out = []
        for j, (valid, at) in enumerate(rows):
            four = splat(b, b.select(valid, word(b.add(at, b.mul(c4, _c(TERMS)))), fill), vty)
            out += [dot(accs[j * vectors + v], four, ws[v]) for v in range(vectors)]
        return out

    def loaded(at):  # four channels: one 32-bit load
        return b.load(b.bitcast(gep(b, a, at), i32.as_pointer()), align=1)

    def gathered(at):  # the last channels, fewer than four
        word = ir.Constant(i32, 0)
        for t in range(own - whole * TERMS):
            byte = b.zext(b.load(gep(b, a, b.add(at, _c(t)))), i32)
            word = b.or_(word, b.shl(byte, ir.Constant(i32, 8 * t)))
        return word

    def at_tap(tap, ti, tj, accs):
        rows = [windows.tap(origin, group, ti, tj) for origin in origins]
        if whole:
            with carrying_loop(b, _c(whole), accs, "c") as (c4, accs, following):
                following.extend(step(tap, c4, accs, rows, loaded))
        return accs if whole == per else step(tap, _c(whole), accs, rows, gathered)

    return windows.over_taps(zero, at_tap)


def _store(kb, k, r, count, group, start, vectors, width, accs, bias):
    """c[r + j, group · channels + o] = f32(acc − (z_x − bias) · sums[o]) · M[o] (acc: the sums
    of (a − bias) · q_w), masked past the channels."""
    b, g = kb.b, k.weights
    vty, fty = ir.VectorType(i32, width), ir.VectorType(f32, width)
    _, store = masked(kb.m, fty)
    c = kb.buffer(k.c[0], "f32")
    whole = not isinstance(start, int)  # a value: a block of whole vectors inside the channels
    first = start if whole else _c(start)
    at = b.add(b.mul(group, _c(g.padded)), first)
    sums = kb.buffer(k.sums, "i32")
    mult = kb.buffer(k.multipliers, "f32")
    zero = ir.Constant(vty, [g.zero - bias] * width)
    for v in range(vectors):
        o = b.add(at, _c(v * width))
        off = b.mul(b.load(b.bitcast(gep(b, sums, o), vty.as_pointer()), align=4), zero)
        m = b.load(b.bitcast(gep(b, mult, o), fty.as_pointer()), align=4)
        left = width if whole else g.channels - start - v * width
        mask = ir.Constant(ir.VectorType(ir.IntType(1), width), [lane < left for lane in range(width)])
        for j in range(count):
            y = b.fmul(b.sitofp(b.sub(accs[j * vectors + v], off), fty), m)
            column = b.add(b.mul(group, _c(g.channels)), b.add(first, _c(v * width)))
            place = b.add(kb.dim(k.c[1]), b.add(b.mul(b.add(r, _c(j)), kb.dim(k.c[2])), column))
            ptr = b.bitcast(b.gep(c, [place]), fty.as_pointer())  # not inbounds: c may be a block's (_sums_in)
            if left >= width:
                b.store(y, ptr, align=4)
            else:
                b.call(store, [y, ptr, ir.Constant(i32, 4), mask])


def _epilogue(kb, k, lo, hi, channel_range=None):
    """The epilogue map at every element of rows [lo, hi) (`channel_range` (c0, c1): of those
    channels only, else all): [row, channel], or for a convolution [n, channel, p] with
    row = n · Ho · Wo + p, each image's run of pixels in turn, the channels innermost where
    it stores them contiguously (channels last), else the pixels (its stores contiguous
    either way); in vectors where the map's own loop would be (kernels/map lane_count)."""
    b, m = kb.b, k.epilogue
    c0, c1 = channel_range or (_c(0), _c(k.weights.groups * k.weights.channels))
    channels = b.sub(c1, c0)

    def lanes(axis: int):
        count = lane_count(m, axis)
        return None if count is None else (count, axis)

    if k.pixels is None:
        at = lambda idx: map_body(kb, m, kb.p, [b.add(lo, idx[0]), b.add(c0, idx[1])])
        kb.loops((b.sub(hi, lo), channels), at, lanes=lanes(1))
        return
    pixels = b.mul(*(kb.dim(d) for d in k.pixels))
    first = b.sdiv(lo, pixels)
    along_channels = loop_order(m)[-1] == 1  # it stores channels last

    def image(n):
        start = b.mul(n, pixels)
        p0, p1 = b.sub(smax(b, lo, start), start), b.sub(smin(b, hi, b.add(start, pixels)), start)
        at = lambda c, p: map_body(kb, m, kb.p, [n, b.add(c0, c), b.add(p0, p)])
        if along_channels:
            kb.loops((b.sub(p1, p0), channels), lambda idx: at(idx[1], idx[0]), lanes=lanes(1))
        else:
            kb.loops((channels, b.sub(p1, p0)), lambda idx: at(*idx), lanes=lanes(2))

    images = b.sub(b.sdiv(b.add(hi, b.sub(pixels, _c(1))), pixels), first)  # those rows [lo, hi) reach
    kb.loops((images,), lambda idx: image(b.add(first, idx[0])))
