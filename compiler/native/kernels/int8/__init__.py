"""The int8 product (docs/quantization.md, "The arithmetic"): u8 rows times s8 weights, exact
int32 sums, back to float32 in the store as

    y[i, o] = f32(Σ_k a[i, k] · q_w[o, k] − z_x · Σ_k q_w[o, k]) · M[o]

the kernel kind of a quantized program's integer products (a matmul's rows, a convolution's
windows), and their lowering: the product's input is quantized by the map that computes it
(quantize-on-store: the value is never stored in float32 unless something else reads it),
a convolution's rows are the windows of that u8 tensor, padded with z_x. The loops are in
loops.py."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from dlc.compiler.ir import int8
from dlc.compiler.ir.dims import concrete, numel
from dlc.compiler.native.kernels.map import MapKernel, merged, read_once
from dlc.compiler.native.program import Affine, Const, Kernel, Load, Op, contiguous, render, row_major
from dlc.compiler.native.program.registry import register_lowering
from dlc.compiler.passes.int8 import Product

TERMS = 4  # the terms a 32-bit lane sums per step: vpdpbusd's four u8 · s8 pairs
CHANNEL_BLOCK = 16  # the weights' channels padded to a multiple of the widest vector of i32 lanes
STEP_BLOCK = 16  # their steps of four terms padded to a multiple of an AMX tile's rows (64 bytes of K)


@dataclass(frozen=True, eq=False)
class Int8Weights:
    """One integer product's numbers as the kernel reads them, per group of `channels` output
    channels and `k` terms: `packed` the s8 weights [groups, steps, padded channels, 4]
    (term 4t + j of channel o at [g, t, o, j]; zeros past k and past the channels; ceil(k / 4)
    steps padded to whole AMX tiles, STEP_BLOCK), `sums`
    Σ_k q_w [groups, padded channels] (int32; z_x times one is exact: K ≤ LONGEST_SUM), `multipliers`
    M[o] [groups, padded channels]; the input's scale and zero point. A convolution's terms
    are in the order (i, j, c), each tap's channels of a group padded with zero weights to
    a multiple of 4 (`taps` taps of `tap_channels` channels, which its kernel reads in place:
    Int8Kernel.window), or read by kernel rows ("int8 kernel rows"), each kernel row's kw · C
    terms (j, c) so padded (`taps` kh); a matmul's, its K in order (taps 0). `implementation`: the name of
    a convolution's (choose/int8.py), else "int8 matmul". A depthwise convolution's (one
    channel and one filter a group) are packed as a matmul's of one group of all its channels
    and K = taps (`tap_channels` 1): its kernel sums a vector of a pixel's channels four taps
    at a time."""

    packed: np.ndarray
    sums: np.ndarray
    multipliers: np.ndarray
    scale: np.float32
    zero: int
    groups: int
    channels: int
    k: int
    taps: int = 0
    tap_channels: int = 0
    implementation: str = "int8 matmul"

    @classmethod
    def of(
        cls, p: Product, q: int8.QuantizedProduct, groups: int, implementation: str = "int8 matmul"
    ) -> "Int8Weights":
        """Of product p (compiler/passes/int8.py) quantized as q, in `groups` groups, for
        `implementation`."""
        w = q.weight.reshape(p.weight_shape)
        taps = tap_channels = 0
        if implementation == "int8 depthwise":  # [C, 1, kh, kw]: one group of every channel, a term a tap
            c, _, kh, kw = w.shape
            groups, taps, tap_channels = 1, kh * kw, 1
            rows = w.reshape(c, taps)
        elif p.op == "matmul":  # [K, N] (or [N, K] with tb): channel rows of K terms
            rows = w if p.channel_axis == 0 else w.T
        else:  # [O, C / groups, kh, kw] -> [O, taps, a tap's terms padded]: taps (i, j) of C / groups, or kernel rows i of kw · C
            o, c, kh, kw = w.shape
            taps, run = (kh, kw * c) if implementation == "int8 kernel rows" else (kh * kw, c)
            tap_channels = -(-run // TERMS) * TERMS
            runs = w.transpose(0, 2, 3, 1).reshape(o, taps, run)
            rows = np.pad(runs, ((0, 0), (0, 0), (0, tap_channels - run))).reshape(o, -1)
        total, k = rows.shape
        channels = total // groups
        padded = -(-channels // CHANNEL_BLOCK) * CHANNEL_BLOCK
        steps = -(-k // (TERMS * STEP_BLOCK)) * STEP_BLOCK
        w = np.zeros((groups, padded, steps * TERMS), np.int8)
        w[:, :channels, :k] = rows.reshape(groups, channels, k)
        packed = np.ascontiguousarray(w.reshape(groups, padded, steps, TERMS).transpose(0, 2, 1, 3))
        sums = np.zeros((groups, padded), np.int32)
        sums[:, :channels] = rows.astype(np.int64).sum(axis=1).reshape(groups, channels)
        multipliers = np.zeros((groups, padded), np.float32)
        multipliers[:, :channels] = q.multipliers().reshape(groups, channels)
        return cls(
            packed,
            sums,
            multipliers,
            np.float32(q.input_scale),
            int(q.input_zero_point),
            groups,
            channels,
            k,
            taps,
            tap_channels,
            implementation,
        )

    @property
    def depthwise(self) -> bool:
        return self.implementation == "int8 depthwise"

    @property
    def by_kernel_rows(self) -> bool:
        """Whether its convolution reads a window's kernel rows as runs, from a padded copy."""
        return self.implementation == "int8 kernel rows"

    @property
    def padded(self) -> int:
        return self.packed.shape[2]

    @property
    def steps(self) -> int:
        """The packed steps of four terms a group: ceil(k / 4) padded to whole tiles."""
        return self.packed.shape[1]


@dataclass
class Int8Kernel(Kernel):
    """c[i, g · channels + o] = f32(Σ_k a[i, g · k + t] · w[g, o, t] − z_x · sums[g, o]) · M[g, o]
    for `rows` rows i (a: u8 rows, (buffer, offset, row stride); c: (buffer, offset, row
    stride)), in `groups` groups of `channels` channels and k terms (`weights`: Int8Weights,
    its arrays in the const buffers w, sums, multipliers). `epilogue`: the map that alone
    reads c, run on each thread's rows once they are final, while they are in cache: over
    [rows, channels] as c lies (a matmul's), or over [N, O, Ho · Wo] with c's rows the
    positions (n, ho, wo) (a convolution's, `pixels` = (Ho, Wo); its map's image rows and
    columns merged into one run of pixels). `window`: a convolution's rows read in place, its
    windows of a [N, H, W, C] u8 tensor a (channels last), terms (i, j, c) four channels
    at a time, z_x outside: (H, W, C, kh, kw, stride, padding, dilation); read by kernel rows
    (Int8Weights), of the tensor padded in memory: kw 1 and padding 0, each tap a run of
    the weights' tap channels."""

    rows: object
    weights: Int8Weights
    a: tuple
    w: int
    sums: int
    multipliers: int
    c: tuple
    pixels: tuple | None = None
    epilogue: object = None
    window: tuple | None = None

    def flops(self, sizes: dict) -> int:
        g = self.weights
        return 2 * int(concrete(self.rows, sizes)) * g.groups * g.channels * g.k

    def text(self) -> list:
        g = self.weights
        if g.depthwise:
            kh, kw = self.window[3:5]
            what = f"int8 depthwise {kh}x{kw} [{self.rows} x {g.channels}]: b{self.c[0]} = u8 b{self.a[0]} windows * "
        else:
            groups = f" in {g.groups} groups" if g.groups > 1 else ""
            rows = {"int8 kernel rows": " kernel rows", "int8 windows": " windows"}.get(g.implementation, "")
            what = (
                f"int8 [{self.rows} x {g.k}] @ [{g.k} x {g.channels}]{groups}: b{self.c[0]} = u8 b{self.a[0]}{rows} @ "
            )
        return [
            f"{what}s8 b{self.w}, z_x {g.zero}{', then in its store:' if self.epilogue else ''}{render.located(self)}"
        ] + ["  " + line for line in (self.epilogue.text() if self.epilogue else [])]

    def accesses(self) -> tuple:
        reads, writes = self.epilogue.accesses() if self.epilogue else (set(), set())
        return {self.a[0], self.w, self.sums, self.multipliers} | reads, {self.c[0]} | writes

    def with_epilogue(self, m) -> "Int8Kernel | None":
        """This kernel computing the map m after each block of rows, where m reads c at one
        index that walks c as the class's docstring says."""
        buf, offset, ld = self.c
        read = read_once(m, buf) if self.epilogue is None else None
        if read is None:
            return None
        channels = self.weights.groups * self.weights.channels
        if self.pixels is None:
            fits = m.shape == (self.rows, channels) and read.at == Affine(offset, (ld, 1))
        else:
            ho, wo = self.pixels
            m = merged(m, 2) if len(m.shape) == 4 else None
            fits = (
                m is not None
                and m.shape[1:] == (channels, ho * wo)
                and read_once(m, buf).at == Affine(offset, (ho * wo * ld, 1, ld))
            )
        if not fits:
            return None
        return self.taking(m, epilogue=m, node=m.node)

    def emit(self, f):
        """Its rows split over a thread team, or where they are fewer than its channels, its
        channels (loops.shared_blocks)."""
        from dlc.compiler.native.kernels.int8.loops import int8_rows, shared_blocks

        g = self.weights
        units = self.rows * shared_blocks(self)
        return f.team(lambda kb, first: int8_rows(kb, self, first), units, self.rows * (g.groups * g.padded * g.k))


# ---- lowering rules ------------------------------------------------------------------------------
def _consts(lw, w: Int8Weights) -> tuple:
    """The const buffers of the weights' arrays: (packed, sums, multipliers)."""
    return tuple(
        lw.p.buffer(dtype, a.size, "const", data=a.ravel()).id
        for dtype, a in (("i8", w.packed), ("i32", w.sums), ("f32", w.multipliers))
    )


def _quantized(lw, x, w: Int8Weights, channels_last: bool = False) -> Load:
    """x quantized to u8 in memory, contiguous (an image [N, C, H, W] `channels_last`:
    [N, H, W, C]), by the map that computes x (int8.quantize: clip(rint(x / s_x) + z_x, 0,
    255), NaN as 0.0)."""
    buf = lw.p.buffer("i8", numel(x.shape), "temp")
    at = Affine(0, row_major(x.shape))
    if channels_last:
        _, c, h, wide = x.shape
        at = Affine(0, (h * wide * c, 1, wide * c, c))
    lw.emit(MapKernel(x.shape, buf.id, at, _quantize(lw.use(x), w), node=x.node))
    return Load(buf.id, at, "i8")


def _quantize(e, w: Int8Weights) -> Op:
    return Op("quantize_u8", (e, Const(float(w.scale), "f32"), Const(float(w.zero), "f32")), "i8")


def _quantized_padded(lw, x, w: Int8Weights, padding: tuple, slack: int) -> tuple:
    """An image x [N, C, H, W] quantized to u8 channels last inside a border of `padding`
    pixels of z_x (0.0 quantized: a zero point is exact), [N, H + 2 ph, W + 2 pw, C], then
    `slack` bytes (a kernel row's last step of four reads past its run): (buffer, its height
    and width)."""
    (n, c, h, wide), (ph, pw) = x.shape, padding
    hp, wp = h + 2 * ph, wide + 2 * pw
    buf = lw.p.buffer("i8", n * hp * wp * c + slack, "temp")
    e = _quantize(lw.padded(x, padding, fill=0.0), w)
    lw.emit(MapKernel((n, c, hp, wp), buf.id, Affine(0, (hp * wp * c, 1, wp * c, c)), e, node=x.node))
    return buf.id, hp, wp


@register_lowering("matmul", int8=True)
def _int8_matmul(lw, n, ins, attrs, typ):
    x, w = ins[0], lw.int8[n]
    q = _quantized(lw, x, w)
    rows = numel(x.shape[:-1])
    out = lw.p.buffer("f32", numel(typ.shape), "temp")
    lw.emit(Int8Kernel(rows, w, (q.buffer, 0, w.k), *_consts(lw, w), (out.id, 0, w.channels), node=n))
    lw.set(n, contiguous(out.id, typ.shape, typ.dtype))


@register_lowering("conv2d", int8=True)
def _int8_conv2d(lw, n, ins, attrs, typ):
    """The rows: x's windows, read in place from its u8 copy channels last, z_x outside it
    (a pointwise convolution's, its pixels as they lie: choose/int8.py); the output
    [N·Ho·Wo, O] (channels last), read as y [N, O, Ho, Wo]."""
    x, w = ins[0], lw.int8[n]
    (N, C, H, W), (ho, wo) = x.shape, typ.shape[2:]
    kh, kw = lw.graph.inputs(n)[1].shape[2:]
    channels = w.groups * w.channels
    out = lw.p.buffer("f32", numel(typ.shape), "temp")
    window = (H, W, C, kh, kw, attrs["stride"], attrs["padding"], attrs["dilation"])
    if w.by_kernel_rows:  # a kernel row a tap, in an image padded in memory
        q, H, W = _quantized_padded(lw, x, w, attrs["padding"], w.tap_channels - kw * C)
        window = (H, W, C, kh, 1, attrs["stride"], (0, 0), attrs["dilation"])
    else:
        q = _quantized(lw, x, w, channels_last=True).buffer
    if w.implementation == "int8 pointwise":
        window = None
    lw.emit(
        Int8Kernel(N * ho * wo, w, (q, 0, C), *_consts(lw, w), (out.id, 0, channels), (ho, wo), window=window, node=n)
    )
    lw.set(n, Load(out.id, Affine(0, (ho * wo * channels, 1, wo * channels, channels)), typ.dtype))
