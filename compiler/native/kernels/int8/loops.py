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

Every sum is exact in int32 (K · 255 · 127 < 2^31, compiler/ir/int8.py LONGEST_SUM; with
`sdot`, K · 128 · 127), so the order, the vector width, the instruction and the split of rows
over threads change no bit. The store: the sums less (z_x − bias) · Σ q_w, the integers
Σ a · q_w − z_x · Σ q_w whatever the instruction, converted to float32 (ties to even) and
times M[o], masked past the last channel."""
from __future__ import annotations

from llvmlite import ir

from dlc.compiler.native.codegen import jit
from dlc.compiler.native.codegen.gemm import _carrying_loop, _gep, _loop, _max, _min
from dlc.compiler.native.codegen.intrinsics import declare, masked, splat
from dlc.compiler.native.codegen.types import f32, i8, i32, i64
from dlc.compiler.native.kernels.map.loops import map_body

ROWS = 4            # rows of a register tile
TERMS = 4           # the terms of a 32-bit lane (kernels/int8 TERMS)
UNROLLED_TAPS = 9   # a convolution's taps up to which its loop over them is unrolled (3 x 3)


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
        return "llvm.aarch64.neon.usdot.v4i32.v16i8" if jit.host_has("i8mm") else \
            "llvm.aarch64.neon.sdot.v4i32.v16i8" if jit.host_has("dotprod") else None
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
            if self.bias:               # u8 − 128 as s8: the top bit flipped
                a = b.xor(a, ir.Constant(self.vty, [0x80808080 - (1 << 32)] * self.width))
            return b.call(self.fn, [acc, b.bitcast(a, operand), b.bitcast(w, operand)])
        b, n = self.b, self.width * TERMS
        a8, w8 = b.bitcast(a, ir.VectorType(i8, n)), b.bitcast(w, ir.VectorType(i8, n))

        def part(v, start, step, widen):     # lanes start, start + step, ... widened to i32
            picked = b.shuffle_vector(v, ir.Constant(v.type, ir.Undefined),
                                      ir.Constant(ir.VectorType(i32, n // step), list(range(start, n, step))))
            return widen(picked, ir.VectorType(i32, n // step))
        pairs = [b.mul(part(a8, j, 2, b.zext), part(w8, j, 2, b.sext)) for j in (0, 1)]
        s = b.add(*pairs)                   # the sums of pairs: vpmaddwd's
        half = ir.VectorType(i32, self.width)
        quads = [b.shuffle_vector(s, ir.Constant(s.type, ir.Undefined),
                                  ir.Constant(half, list(range(j, 2 * self.width, 2)))) for j in (0, 1)]
        return b.add(acc, b.add(*quads))


def int8_rows(kb, k, first):
    """Rows [first[0], first[1]) of an Int8Kernel: tiles of ROWS rows, then the rest one by one,
    then the epilogue on them all."""
    b = kb.b
    lo, hi = first
    tiles = b.add(lo, b.mul(b.sdiv(b.sub(hi, lo), _c(ROWS)), _c(ROWS)))
    with _loop(b, lo, tiles, ROWS, "r") as r:
        _rows(kb, k, r, ROWS)
    with _loop(b, tiles, hi, 1, "rest") as r:
        _rows(kb, k, r, 1)
    if k.epilogue is not None:
        _epilogue(kb, k, lo, hi)


def _rows(kb, k, r, count: int):
    """Rows r .. r + count - 1: every group's channels."""
    b, g = kb.b, k.weights
    width = lanes()
    vectors = 2 if width == 8 else 4       # 16 accumulators of AVX-512's or NEON's 32 registers, 8 of AVX2's 16
    with _loop(b, _c(0), _c(g.groups), 1, "g") as group:
        for start in range(0, g.channels, width * vectors):
            _tile(kb, k, r, count, group, start, min(vectors, -(-(g.channels - start) // width)), width)


def _tile(kb, k, r, count: int, group, start: int, vectors: int, width: int):
    """The sums of `count` rows from r by `vectors` vectors of channels from `start` of group
    `group`, stored."""
    b, g = kb.b, k.weights
    vty = ir.VectorType(i32, width)
    dot = _Dot(kb.m, b, width)
    a = kb.buffer(k.a[0], "i8")
    w = kb.buffer(k.w, "i8")
    steps, whole = -(-g.k // TERMS), g.k // TERMS
    row_starts = [b.add(b.add(kb.dim(k.a[1]), b.mul(b.add(r, _c(j)), kb.dim(k.a[2]))), b.mul(group, _c(g.k)))
                  for j in range(count)]
    # the packed weights of (group, step t, channel o): byte ((group · steps + t) · padded + o) · 4
    panel = b.mul(group, _c(steps * g.padded * TERMS))

    def weights(t):
        base = b.add(panel, b.add(b.mul(t, _c(g.padded * TERMS)), _c(start * TERMS)))
        return [b.load(b.bitcast(_gep(b, w, b.add(base, _c(v * width * TERMS))), vty.as_pointer()), align=1)
                for v in range(vectors)]

    def step(t, accs, terms):
        ws = weights(t)
        out = []
        for j in range(count):
            four = terms(row_starts[j], t)
            out += [dot(accs[j * vectors + v], four, ws[v]) for v in range(vectors)]
        return out

    def loaded(row, t):     # four whole terms: one 32-bit load
        word = b.load(b.bitcast(_gep(b, a, b.add(row, b.mul(t, _c(TERMS)))), i32.as_pointer()), align=1)
        return splat(b, word, vty)

    def gathered(row, t):   # the last terms, fewer than four: byte by byte, never past the row
        word = ir.Constant(i32, 0)
        for j in range(g.k - whole * TERMS):
            byte = b.zext(b.load(_gep(b, a, b.add(row, _c(whole * TERMS + j)))), i32)
            word = b.or_(word, b.shl(byte, ir.Constant(i32, 8 * j)))
        return splat(b, word, vty)

    zero = [ir.Constant(vty, [0] * width)] * (count * vectors)
    if k.window is not None:
        accs = _window_sums(kb, k, r, count, group, zero, weights, dot, vectors, width)
    else:
        with _carrying_loop(b, _c(whole), zero, "t") as (t, accs, nxt):
            nxt.extend(step(t, accs, loaded))
        accs = accs if steps == whole else step(_c(whole), accs, gathered)
    _store(kb, k, r, count, group, start, vectors, width, accs, dot.bias)


def _window_sums(kb, k, r, count, group, zero, weights, dot, vectors, width):
    """The sums of rows r .. r + count - 1 of a convolution reading its windows in place
    (Int8Kernel.window): row (n, ho, wo), tap (i, j) at (ho · sh − ph + i · dh, wo · sw − pw
    + j · dw) of the channels-last u8 image, four of the group's channels a step (one
    32-bit load; the last, of fewer, byte by byte, its weights past them zero); a tap
    outside the image reads z_x (the image's first bytes loaded instead: never past its
    ends)."""
    b, g = kb.b, k.weights
    vty = ir.VectorType(i32, width)
    height, wide, channels, kh, kw, (sh, sw), (ph, pw), (dh, dw) = k.window
    h_, w_, c_ = kb.dim(height), kb.dim(wide), kb.dim(channels)
    ho, wo = (kb.dim(d) for d in k.pixels)
    own = channels // g.groups                  # the group's channels of a tap
    per, whole = g.tap_channels // TERMS, own // TERMS
    a = kb.buffer(k.a[0], "i8")
    z = g.zero * 0x01010101
    fill = ir.Constant(i32, z - (1 << 32) if z >= 1 << 31 else z)
    places = []
    for j in range(count):
        i = b.add(r, _c(j))
        n, p = b.sdiv(i, b.mul(ho, wo)), b.srem(i, b.mul(ho, wo))
        places.append((n, b.sub(b.mul(b.sdiv(p, wo), _c(sh)), _c(ph)), b.sub(b.mul(b.srem(p, wo), _c(sw)), _c(pw))))
    channel0 = b.mul(group, _c(own))

    def inside(v, size):
        return b.and_(b.icmp_signed(">=", v, _c(0)), b.icmp_signed("<", v, size))

    def step(tap, c4, accs, rows, word):
        ws = weights(b.add(b.mul(tap, _c(per)), c4))
        out = []
        for j, (valid, at) in enumerate(rows):
            four = splat(b, b.select(valid, word(b.add(at, b.mul(c4, _c(TERMS)))), fill), vty)
            out += [dot(accs[j * vectors + v], four, ws[v]) for v in range(vectors)]
        return out

    def loaded(at):         # four channels: one 32-bit load
        return b.load(b.bitcast(_gep(b, a, at), i32.as_pointer()), align=1)

    def gathered(at):       # the last channels, fewer than four
        word = ir.Constant(i32, 0)
        for t in range(own - whole * TERMS):
            byte = b.zext(b.load(_gep(b, a, b.add(at, _c(t)))), i32)
            word = b.or_(word, b.shl(byte, ir.Constant(i32, 8 * t)))
        return word

    def at_tap(tap, ti, tj, accs):
        rows = []
        for n, h0, w0 in places:
            h, w = b.add(h0, b.mul(ti, _c(dh))), b.add(w0, b.mul(tj, _c(dw)))
            valid = b.and_(inside(h, h_), inside(w, w_))
            at = b.add(b.mul(b.add(b.mul(b.add(b.mul(n, h_), h), w_), w), c_), channel0)
            rows.append((valid, b.select(valid, at, _c(0))))
        if whole:
            with _carrying_loop(b, _c(whole), accs, "c") as (c4, accs, following):
                following.extend(step(tap, c4, accs, rows, loaded))
        return accs if whole == per else step(tap, _c(whole), accs, rows, gathered)

    if kh * kw <= UNROLLED_TAPS:
        for tap in range(kh * kw):
            zero = at_tap(_c(tap), _c(tap // kw), _c(tap % kw), zero)
        return zero
    with _carrying_loop(b, _c(kh * kw), zero, "tap") as (tap, accs, nxt):
        nxt.extend(at_tap(tap, b.sdiv(tap, _c(kw)), b.srem(tap, _c(kw)), accs))
    return accs


def _store(kb, k, r, count, group, start, vectors, width, accs, bias):
    """c[r + j, group · channels + o] = f32(acc − (z_x − bias) · sums[o]) · M[o] (acc: the sums
    of (a − bias) · q_w), masked past the channels."""
    b, g = kb.b, k.weights
    vty, fty = ir.VectorType(i32, width), ir.VectorType(f32, width)
    _, store = masked(kb.m, fty)
    c = kb.buffer(k.c[0], "f32")
    at = b.add(b.mul(group, _c(g.padded)), _c(start))
    sums = kb.buffer(k.sums, "i32")
    mult = kb.buffer(k.multipliers, "f32")
    zero = ir.Constant(vty, [g.zero - bias] * width)
    for v in range(vectors):
        o = b.add(at, _c(v * width))
        off = b.mul(b.load(b.bitcast(_gep(b, sums, o), vty.as_pointer()), align=4), zero)
        m = b.load(b.bitcast(_gep(b, mult, o), fty.as_pointer()), align=4)
        left = g.channels - start - v * width
        mask = ir.Constant(ir.VectorType(ir.IntType(1), width), [lane < left for lane in range(width)])
        for j in range(count):
            y = b.fmul(b.sitofp(b.sub(accs[j * vectors + v], off), fty), m)
            column = b.add(b.mul(group, _c(g.channels)), _c(start + v * width))
            place = b.add(kb.dim(k.c[1]), b.add(b.mul(b.add(r, _c(j)), kb.dim(k.c[2])), column))
            ptr = b.bitcast(_gep(b, c, place), fty.as_pointer())
            if left >= width:
                b.store(y, ptr, align=4)
            else:
                b.call(store, [y, ptr, ir.Constant(i32, 4), mask])


def _epilogue(kb, k, lo, hi):
    """The epilogue map at every element of rows [lo, hi): [row, channel], or for a
    convolution [n, channel, p] with row = n · Ho · Wo + p, each image's run of pixels in
    turn, the map's own loop order (its stores contiguous)."""
    b = kb.b
    channels = k.weights.groups * k.weights.channels
    if k.pixels is None:
        kb.loops((b.sub(hi, lo), channels), lambda idx: map_body(kb, k.epilogue, kb.p, [b.add(lo, idx[0]), idx[1]]))
        return
    pixels = b.mul(*(kb.dim(d) for d in k.pixels))
    first = b.sdiv(lo, pixels)

    def image(n):
        start = b.mul(n, pixels)
        p0, p1 = b.sub(_max(b, lo, start), start), b.sub(_min(b, hi, b.add(start, pixels)), start)
        kb.loops((channels, b.sub(p1, p0)),
                 lambda idx: map_body(kb, k.epilogue, kb.p, [n, idx[0], b.add(p0, idx[1])]))
    images = b.sub(b.sdiv(b.add(hi, b.sub(pixels, _c(1))), pixels), first)       # those rows [lo, hi) reach
    kb.loops((images,), lambda idx: image(b.add(first, idx[0])))
