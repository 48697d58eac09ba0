"""The direct convolution, for few taps (no im2col buffer), and the implementations of
conv2d and its two gradients that compute with it, im2col and a GEMM (its columns in a
buffer, or packed by the GEMM from the image itself), the small GEMM, a map, a reduction
and accumulation (col2im), each registered under the name of its entry in the lists of
compiler/native/choose/conv.py, which choose among them. The loops are in loops.py."""

from __future__ import annotations

import functools
from dataclasses import dataclass, replace

from dlc.compiler.ir.dims import concrete, numel
from dlc.compiler.ir.graph import Tensor
from dlc.compiler.native import TILE_CHANNELS
from dlc.compiler.native.kernels.accumulate import AccumulateKernel
from dlc.compiler.native.kernels.gemm import GemmKernel, WeightTransformKernel, weight_flag, weight_packed_a
from dlc.compiler.native.kernels.map import MapKernel, image_epilogue
from dlc.compiler.native.kernels.reduce import ReduceKernel
from dlc.compiler.native.kernels.small_gemm import SmallGemmKernel
from dlc.compiler.native.program import Affine, Kernel, Load, Op, contiguous, render, row_major
from dlc.compiler.native.program.registry import register_implementation

SMALL_GEMM_PARTS = 16  # runs of the batch a SmallGemmKernel sums apart (the threads' shares)


@dataclass
class ConvKernel(Kernel):
    """A direct convolution, for few taps (C*kh*kw): no im2col buffer. x [N, C, H, W]
    (0 outside), w [O, C, kh, kw], stride 1 or 2 along W. Without `g`:
    out [N, O, Ho, Wo] = sum over c, i, j of w[o, c, i, j] * x[n, c, ho*sh + i - ph, wo*sw + j - pw];
    `transposed`: w is [C, O, kh, kw] and read w[c, o, kh-1-i, kw-1-j] — with x the output
    gradient and padding k - 1 - p, the input gradient of a stride-1 convolution.
    With `g` [N, O, Ho, Wo] (`w` unused), the weight gradient: out [O, C, kh, kw] = sum over
    n, ho, wo of g[n, o, ho, wo] * x[...], the batch in `parts` runs summed apart into
    `partial` (parts x O x C*kh*kw) and then in order, as SmallGemmKernel. It multiplies in
    float32, in a bf16 program too (compiler/native/bf16.py). `epilogue`: the map that alone
    reads out (a bias, an activation), run on each (example, group) pair's outputs, or with
    one group each output row's, once stored, while they are in cache, instead of in a pass
    of its own (fusion.epilogues), as a GEMM's. `by_channels`: w is [O / 16, C / groups ·
    kh·kw, 16] (a copy the lowering makes) and the lanes of the kernel's vectors are output
    channels, not pixels (loops.py `conv_by_channels`, and with groups, a depthwise
    convolution's, `depthwise_by_channels`; compiler/native/choose/conv.py `_by_channels`
    says which convolutions). `upsampling`: x is the output gradient of a stride-2 depthwise
    convolution (w [C, 1, kh, kw], `padding` the convolution's) and out its input gradient,
    of `out_hw` pixels (loops.py `depthwise_upsampling`)."""

    x: int
    w: int | None
    out: int
    x_shape: tuple  # N, C, H, W
    w_shape: tuple  # O, C, kh, kw
    out_hw: tuple
    stride_h: int
    padding: tuple
    g: int | None = None
    partial: int | None = None
    parts: int = 1
    transposed: bool = False
    groups: int = 1
    stride_w: int = 1
    epilogue: object = None
    by_channels: bool = False
    upsampling: bool = False

    @property
    def channels(self):
        """The output's channels (O)."""
        return self.w_shape[1] * self.groups if self.transposed else self.w_shape[0]

    def flops(self, sizes: dict) -> int:
        """Every output, input gradient or weight gradient element sums over the taps of
        the others: one multiply-add per weight and output position."""
        return 2 * numel(self.w_shape) * numel([concrete(self.x_shape[0], sizes), *self._positions()])

    def _positions(self) -> tuple:
        """The positions (rows, columns) each weight multiplies at: the output's, or g's
        when upsampling (each of g's values meets each tap once)."""
        return self.x_shape[2:] if self.upsampling else self.out_hw

    def text(self) -> list:
        what = f"b{self.x} * b{self.w}" if self.g is None else f"weight gradient of b{self.x} * w from b{self.g}"
        what += f" in {self.groups} groups" if self.groups > 1 else ""
        what += ", by channels" if self.by_channels else ""
        what += ", upsampled by 2" if self.upsampling else ""
        what += ", then in its store:" if self.epilogue else ""
        return [
            f"direct conv {render.shape(self.x_shape)} by {render.shape(self.w_shape)}: b{self.out} = {what}"
            f"{render.located(self)}"
        ] + ["  " + line for line in (self.epilogue.text() if self.epilogue else [])]

    def accesses(self) -> tuple:
        if self.g is not None:
            return {self.x, self.g}, {self.out, self.partial}
        reads, writes = self.epilogue.accesses() if self.epilogue else (set(), set())
        return {self.x, self.w} | reads, {self.out} | writes

    def renamed(self, names: dict) -> "ConvKernel":
        if self.g is not None:  # the weight gradient: no w
            return replace(
                self, x=names[self.x], w=None, out=names[self.out], g=names[self.g], partial=names[self.partial]
            )
        return replace(
            self,
            x=names[self.x],
            w=names[self.w],
            out=names[self.out],
            epilogue=self.epilogue and self.epilogue.renamed(names),
        )

    def with_epilogue(self, m) -> "ConvKernel | None":
        """This convolution computing the map m on its outputs once stored, where m's space
        is the output's, its rows and columns merged into one run of pixels (an (example,
        group) pair's outputs, or an output row's, are one loop), and m reads the output at
        the index it is stored at."""
        if self.g is not None or self.epilogue is not None or self.upsampling:
            return None
        taken = image_epilogue(m, self.out, (self.x_shape[0], self.channels, *self.out_hw))
        return None if taken is None else self.taking(taken[1], out=taken[0], epilogue=taken[1], node=taken[1].node)

    def emit(self, f):
        """The examples times the groups (or tiles of channels), or the output rows, on a
        thread team (loops.py `team_rows`); the weight gradient's parts on a team, then
        their sum on the calling thread."""
        from dlc.compiler.native.kernels.conv.loops import (
            conv,
            conv_by_channels,
            conv_weight_grad,
            depthwise_by_channels,
            depthwise_upsampling,
            team_rows,
        )
        from dlc.compiler.native.codegen.shared_loops import sum_parts

        work = numel(self.w_shape) * numel(self.x_shape[:1] + self._positions())
        if self.g is None:
            if self.upsampling:
                loops = depthwise_upsampling
            elif not self.by_channels:
                loops = conv
            else:  # the stem's filters in the lanes, or a depthwise convolution's channels
                loops = conv_by_channels if self.groups == 1 else depthwise_by_channels
            return f.team(lambda kb, first: loops(kb, self, first), team_rows(self), work)
        kb = f.team(lambda kb, first: conv_weight_grad(kb, self, first), self.parts, work)
        taps = numel(self.w_shape[1:])
        sum_parts(kb, self.partial, self.parts, self.w_shape[0], taps, (self.out, 0, taps))
        return kb


# ---- shapes ---------------------------------------------------------------------------------------
@dataclass(frozen=True)
class ConvShape:
    """The sizes of x [N, C, H, W] convolved with w [O, C / groups, kh, kw] into y [N, O, Ho, Wo],
    and the GEMM shapes of a convolution and its gradients: a GEMM per group of
    O / groups filters and C / groups channels."""

    N: object
    C: object
    O: object
    kh: int
    kw: int
    Ho: object
    Wo: object
    groups: int

    @staticmethod
    def of(x: tuple, w: tuple, y: tuple, groups: int) -> "ConvShape":
        (N, C), (O, _, kh, kw), (Ho, Wo) = x[:2], w, y[2:]
        return ConvShape(N, C, O, kh, kw, Ho, Wo, groups)

    @property
    def taps(self):
        """C·kh·kw: an output's products, the K of the convolution's GEMM."""
        return self.C * self.kh * self.kw

    @property
    def pixels(self):
        """Ho·Wo: the outputs of one example and filter."""
        return self.Ho * self.Wo

    @property
    def group_filters(self):
        return self.O // self.groups

    @property
    def group_taps(self):
        """C / groups · kh · kw: an output's products within its group."""
        return self.C // self.groups * self.kh * self.kw


def conv_shape(op: str, ins: tuple, out: tuple, groups: int) -> ConvShape:
    """The ConvShape of a conv2d (x, w -> y) or of its gradients (x, g -> w; g, w -> x), from
    the shapes of its operands and its output."""
    a, b = ins
    if op == "conv2d":
        return ConvShape.of(a, b, out, groups)
    return ConvShape.of(a, out, b, groups) if op == "conv2d_weight_grad" else ConvShape.of(out, b, a, groups)


def input_grad_as_conv(s: ConvShape, x_hw: tuple, attrs) -> tuple:
    """A stride-1 convolution's input gradient as the convolution of g it is, with the
    filters flipped and their channels swapped (`flipped_filters`): its shape (g's channels
    in, x's out, over x's pixels) and attributes (stride 1, padding d·(k - 1) - p)."""
    (ph, pw), (dh, dw) = attrs["padding"], attrs["dilation"]
    return ConvShape(s.N, s.O, s.C, s.kh, s.kw, *x_hw, 1), {
        "stride": (1, 1),
        "padding": (dh * (s.kh - 1) - ph, dw * (s.kw - 1) - pw),
        "dilation": (dh, dw),
    }


def flipped_filters(w: Load, kh: int, kw: int) -> Load:
    """w [O, C, kh, kw] read as [C, O, kh, kw] with its taps flipped, w[o, c, kh-1-i, kw-1-j]:
    the filters of a stride-1 convolution's input gradient (a convolution of g)."""
    so, sci, si, sj = w.at.coeffs
    return Load(w.buffer, Affine(w.at.offset + (kh - 1) * si + (kw - 1) * sj, (sci, so, -si, -sj)), "f32")


def _columns_gemm(
    lw,
    n,
    x: Tensor,
    s: ConvShape,
    attrs,
    mnk: tuple,
    a: tuple,
    c: tuple,
    trans_b: bool,
    from_the_image: bool,
    examples: bool = False,
):
    """The GEMM per group (M, N, K = mnk) of A and x's columns as B — transposed with
    `trans_b` (the product's), as they lie otherwise (the weight gradient's) — into C:
    packed from x itself (GemmKernel's `windows`, the geometry gemm/interface.py's WINDOW_GEOMETRY says),
    or read from im2col's buffer. `examples` (one group, from the image): one GEMM per
    example instead, B the windows of that example's image."""
    if from_the_image:
        xm = lw.materialize(x)
        sn, sc, sh, sw = xm.at.coeffs
        geometry = (
            s.Ho,
            s.Wo,
            s.kh,
            s.kw,
            *x.shape[2:],
            sn,
            sc,
            sh,
            sw,
            *attrs["stride"],
            *attrs["padding"],
            *attrs["dilation"],
        )
        batch, stride = (s.N, sn) if examples else (s.groups, s.C // s.groups * sc)
        _filters_gemm(
            lw, n, mnk, batch, a, (xm.buffer, xm.at.offset, 0, stride), c, trans_b, bf16=lw.bf16, windows=geometry
        )
    else:
        cols = lw.im2col(x, (s.Ho, s.Wo, s.C, s.kh, s.kw), attrs, n)
        _filters_gemm(lw, n, mnk, s.groups, a, (cols.id, 0, s.taps, s.group_taps), c, trans_b, bf16=lw.bf16)


def _filters_gemm(lw, n, mnk: tuple, batch, a: tuple, b: tuple, c: tuple, trans_b: bool, **kw):
    """The GemmKernel of a convolution's product with its filters as op(A) (a), which a
    prediction packs once until they change (kernels/gemm `weight_packed_a`)."""
    made = weight_packed_a(lw, a, mnk[0], mnk[2], batch, n)
    packed, ready = made or (None, None)
    lw.emit(GemmKernel(*mnk, batch, a, b, c, False, trans_b, packed, ready, packed_a=made is not None, node=n, **kw))


def _group_taps(lw, x: Tensor, w: Tensor, attrs) -> list:
    """The products of a grouped convolution's taps (c, i, j) over the iteration
    [N, groups, O / groups, Ho, Wo]: x's window at channel g * Cg + c times w[g * Og + o, c, i, j]."""
    groups, (_, cg, kh, kw) = attrs["groups"], w.shape
    og = w.shape[0] // groups
    windows = lw.windows(x, attrs["stride"], attrs["padding"], order="nchwij", dilation=attrs["dilation"])
    wm = lw.materialize(w)
    products = []
    for c in range(cg):
        for i in range(kh):
            for j in range(kw):
                xa = windows.remap(
                    lambda a: Affine(
                        a.offset + a.coeffs[1] * c + a.coeffs[4] * i + a.coeffs[5] * j,
                        (a.coeffs[0], a.coeffs[1] * cg, 0, a.coeffs[2], a.coeffs[3]),
                    )
                )
                wa = wm.remap(
                    lambda a: Affine(
                        a.offset + a.coeffs[1] * c + a.coeffs[2] * i + a.coeffs[3] * j,
                        (0, a.coeffs[0] * og, a.coeffs[0], 0, 0),
                    )
                )
                products.append(Op("mul", (xa, wa), "f32"))
    return products


# ---- implementations: how compiler/native/choose/conv.py's entries compute ---------------------------
@register_implementation("conv2d", "pointwise over the batch")
def _pointwise_over_the_batch(lw, n, ins, attrs, typ, s: ConvShape):
    x, w = ins
    wm = lw.materialize(w)
    _over_the_batch_of(lw, n, wm, lw.channels_first(x, n), typ, s)


@register_implementation("conv2d", "pointwise of the strided pixels")
def _strided_pointwise(lw, n, ins, attrs, typ, s: ConvShape):
    # the pixels a strided 1 x 1 convolution reads, gathered channels first [C, N, Ho, Wo] by
    # a map, are the columns of one GEMM over the batch
    x, w = ins
    wm = lw.materialize(w)
    picked = lw.windows(x, attrs["stride"], (0, 0), order="nchwij")  # [N, C, Ho, Wo, 1, 1]
    sn, sc, sh, sw = picked.at.coeffs[:4]
    shape = (s.C, s.N, s.Ho, s.Wo)
    pixels = lw.p.buffer("f32", numel(shape), "temp")
    source = Load(picked.buffer, Affine(picked.at.offset, (sc, sn, sh, sw)), "f32")
    lw.emit(MapKernel(shape, pixels.id, Affine(0, row_major(shape)), source, node=n))
    _over_the_batch_of(lw, n, wm, contiguous(pixels.id, shape, "f32"), typ, s)


def _over_the_batch_of(lw, n, wm: Load, xt: Load, typ, s: ConvShape):
    """A pointwise convolution's one GEMM over the batch of its pixels xt, laid out
    C x N·Ho·Wo (channels first), y stored [O, N, Ho, Wo]: y (O x N·HoWo) = W (O x C) @ xt."""
    out = lw.p.buffer("f32", numel(typ.shape), "temp")
    columns = s.N * s.pixels
    _filters_gemm(
        lw,
        n,
        (s.O, columns, s.C),
        1,
        (wm.buffer, wm.at.offset, s.C, 0),
        (xt.buffer, xt.at.offset, columns, 0),
        (out.id, 0, columns, 0),
        False,
        bf16=lw.bf16,
    )
    lw.set(n, Load(out.id, Affine(0, (s.pixels, columns, s.Wo, 1)), typ.dtype))


@register_implementation("conv2d", "pointwise per example")
def _pointwise_per_example(lw, n, ins, attrs, typ, s: ConvShape):
    # y[n] (O x HW) = W @ x[n] (C x HW) as x lies
    x, w = ins
    out = lw.p.buffer("f32", numel(typ.shape), "temp")
    wm = lw.materialize(w)
    xm = lw.materialize(x)
    _filters_gemm(
        lw,
        n,
        (s.O, s.pixels, s.C),
        s.N,
        (wm.buffer, wm.at.offset, s.C, 0),
        (xm.buffer, xm.at.offset, s.pixels, s.C * s.pixels),
        (out.id, 0, s.pixels, s.O * s.pixels),
        False,
        bf16=lw.bf16,
    )
    lw.set(n, contiguous(out.id, typ.shape, typ.dtype))


def _conv_kernel(lw, n, ins, attrs, typ, s: ConvShape, by_channels: bool):
    """A ConvKernel (depthwise ones too, groups = C: each output channel's taps over its
    group's channels). `by_channels`: the filters as [O / TILE_CHANNELS, C / groups · kh·kw,
    TILE_CHANNELS], a tile's taps one after another, each a row of its channels for the
    kernel's vectors (as [C·kh·kw, O], the rows of a tile's 147 taps of a 7 x 7 stem fell in
    a quarter of the L1 cache's sets); a prediction's kept between calls, made once until a
    weight changes."""
    x, w = ins
    out = lw.p.buffer("f32", numel(typ.shape), "temp")
    wm = lw.materialize(w)
    filters = wm.buffer
    if by_channels:
        tiles_shape = (s.O // TILE_CHANNELS, w.shape[1], s.kh, s.kw, TILE_CHANNELS)
        ready = weight_flag(lw, wm.buffer)
        wt = lw.p.buffer(
            "f32", numel(w.shape), "packed" if ready else "temp", f"{lw.p.buffers[wm.buffer].name} by channels"
        )
        o_, c_, i_, j_ = wm.at.coeffs
        copy = MapKernel(
            tiles_shape,
            wt.id,
            Affine(0, row_major(tiles_shape)),
            Load(wm.buffer, Affine(wm.at.offset, (TILE_CHANNELS * o_, c_, i_, j_, o_)), "f32"),
            node=n,
        )
        lw.emit(WeightTransformKernel("filters by channels", copy, ready, node=n))
        filters = wt.id
    xm = lw.materialize(x)
    lw.emit(
        ConvKernel(
            xm.buffer,
            filters,
            out.id,
            x.shape,
            w.shape,
            (s.Ho, s.Wo),
            attrs["stride"][0],
            attrs["padding"],
            groups=s.groups,
            stride_w=attrs["stride"][1],
            by_channels=by_channels,
            node=n,
        )
    )
    lw.set(n, contiguous(out.id, typ.shape, typ.dtype))


register_implementation("conv2d", "direct by channels")(functools.partial(_conv_kernel, by_channels=True))
register_implementation("conv2d", "direct")(functools.partial(_conv_kernel, by_channels=False))


@register_implementation("conv2d", "grouped taps")
def _grouped_taps(lw, n, ins, attrs, typ, s: ConvShape):
    # a map over the outputs summing their taps (the loop over Wo vectorizes)
    x, w = ins
    out = lw.p.buffer("f32", numel(typ.shape), "temp")
    lw.materialize(w)  # before x's windows, as every product's rule
    total, *rest = _group_taps(lw, x, w, attrs)
    for v in rest:
        total = Op("add", (total, v), "f32")
    shape = (s.N, s.groups, s.group_filters, s.Ho, s.Wo)
    lw.emit(MapKernel(shape, out.id, Affine(0, row_major(shape)), total, node=n))
    lw.set(n, contiguous(out.id, typ.shape, typ.dtype))


@register_implementation("conv2d", "windows per example")
def _windows_per_example(lw, n, ins, attrs, typ, s: ConvShape):
    # y[n] (O x HoWo) = W (O x C*kh*kw) @ windows of x[n]: a batch of GEMMs, y stored as it
    # lies, so that the map after it runs in place (over the batch, y [O, N, Ho, Wo] was a
    # buffer of its own, which that map then copied)
    x, w = ins
    out = lw.p.buffer("f32", numel(typ.shape), "temp")
    wm = lw.materialize(w)
    _columns_gemm(
        lw,
        n,
        x,
        s,
        attrs,
        (s.O, s.pixels, s.taps),
        (wm.buffer, wm.at.offset, s.taps, 0),
        (out.id, 0, s.pixels, s.O * s.pixels),
        trans_b=True,
        from_the_image=True,
        examples=True,
    )
    lw.set(n, contiguous(out.id, typ.shape, typ.dtype))


def _over_the_batch(lw, n, ins, attrs, typ, s: ConvShape, from_the_image: bool):
    """One GEMM over the batch per group, y stored [O, N, Ho, Wo]: y_g (Og x N*HoWo) =
    W_g (Og x Cg*kh*kw) @ cols_g^T, cols_g the group's columns, packed from the image or
    im2col's (as N GEMMs of HoWo columns each, a first layer's 6 x 784 products ran at a
    third the speed)."""
    x, w = ins
    out = lw.p.buffer("f32", numel(typ.shape), "temp")
    wm = lw.materialize(w)
    og, cgkk, columns = s.group_filters, s.group_taps, s.N * s.pixels
    _columns_gemm(
        lw,
        n,
        x,
        s,
        attrs,
        (og, columns, cgkk),
        (wm.buffer, wm.at.offset, cgkk, og * cgkk),
        (out.id, 0, columns, og * columns),
        True,
        from_the_image,
    )
    lw.set(n, Load(out.id, Affine(0, (s.pixels, s.N * s.pixels, s.Wo, 1)), typ.dtype))


register_implementation("conv2d", "windows over the batch")(functools.partial(_over_the_batch, from_the_image=True))
register_implementation("conv2d", "im2col")(functools.partial(_over_the_batch, from_the_image=False))


@register_implementation("conv2d_weight_grad", "pointwise")
def _pointwise_weight_grad(lw, n, ins, attrs, typ, s: ConvShape):
    # dW (O x C) = g as O x N*HW @ (x as C x N*HW)^T: one GEMM, every example's pixels its
    # K, both channels first (the copies the forward product and the input gradient read)
    x, g = ins
    out = lw.p.buffer("f32", numel(typ.shape), "temp")
    gt, xt, rows = lw.channels_first(g, n), lw.channels_first(x, n), s.N * s.pixels
    lw.emit(
        GemmKernel(
            s.O,
            s.C,
            rows,
            1,
            (gt.buffer, gt.at.offset, rows, 0),
            (xt.buffer, xt.at.offset, rows, 0),
            (out.id, 0, s.C, 0),
            False,
            True,
            bf16=lw.bf16,
            node=n,
        )
    )
    lw.set(n, contiguous(out.id, typ.shape, typ.dtype))


@register_implementation("conv2d_weight_grad", "few pixels")
def _few_pixels(lw, n, ins, attrs, typ, s: ConvShape):
    # dW [groups, Og, Cg, kh, kw] summed over [N, Ho, Wo] by a reduction, each thread its groups
    x, g = ins
    out = lw.p.buffer("f32", numel(typ.shape), "temp")
    og, cg = s.group_filters, s.C // s.groups
    windows = lw.windows(x, attrs["stride"], attrs["padding"], order="nchwij", dilation=attrs["dilation"])
    # windows over [N, C, Ho, Wo, kh, kw] -> [groups, Og, Cg, kh, kw, N, Ho, Wo]
    xa = windows.remap(
        lambda a: Affine(
            a.offset,
            (a.coeffs[1] * cg, 0, a.coeffs[1], a.coeffs[4], a.coeffs[5], a.coeffs[0], a.coeffs[2], a.coeffs[3]),
        )
    )
    ga = lw.use(g).remap(
        lambda a: Affine(a.offset, (a.coeffs[1] * og, a.coeffs[1], 0, 0, 0, a.coeffs[0], a.coeffs[2], a.coeffs[3]))
    )
    shape = (s.groups, og, cg, s.kh, s.kw, s.N, s.Ho, s.Wo)
    lw.emit(ReduceKernel(shape, (5, 6, 7), "sum", out.id, Op("mul", (ga, xa), "f32"), node=n))
    lw.set(n, contiguous(out.id, typ.shape, typ.dtype))


@register_implementation("conv2d_weight_grad", "direct")
def _direct_weight_grad(lw, n, ins, attrs, typ, s: ConvShape):
    x, g = ins
    out = lw.p.buffer("f32", numel(typ.shape), "temp")
    xm, gm = lw.materialize(x), lw.materialize(g)
    partial = lw.p.buffer("f32", SMALL_GEMM_PARTS * s.O * s.group_taps, "temp")
    lw.emit(
        ConvKernel(
            xm.buffer,
            None,
            out.id,
            x.shape,
            typ.shape,
            (s.Ho, s.Wo),
            attrs["stride"][0],
            attrs["padding"],
            gm.buffer,
            partial.id,
            SMALL_GEMM_PARTS,
            groups=s.groups,
            stride_w=attrs["stride"][1],
            node=n,
        )
    )
    lw.set(n, contiguous(out.id, typ.shape, typ.dtype))


@register_implementation("conv2d_weight_grad", "small filters")
def _small_filters(lw, n, ins, attrs, typ, s: ConvShape):
    # dW stays in registers while every example's g[n] (O x HoWo) @ cols[n] (HoWo x CKK) streams by
    x, g = ins
    out = lw.p.buffer("f32", numel(typ.shape), "temp")
    cols = lw.im2col(x, (s.Ho, s.Wo, s.C, s.kh, s.kw), attrs, n)
    gm = lw.materialize(g)
    partial = lw.p.buffer("f32", SMALL_GEMM_PARTS * s.O * s.taps, "temp")
    lw.emit(
        SmallGemmKernel(
            s.O,
            s.taps,
            s.pixels,
            s.N,
            (gm.buffer, gm.at.offset, s.pixels, s.O * s.pixels),
            (cols.id, 0, s.taps, s.pixels * s.taps),
            (out.id, 0, s.taps),
            partial.id,
            SMALL_GEMM_PARTS,
            bf16=lw.bf16,
            node=n,
        )
    )
    lw.set(n, contiguous(out.id, typ.shape, typ.dtype))


def _weight_grad_over_the_batch(lw, n, ins, attrs, typ, s: ConvShape, from_the_image: bool):
    """g as [O, N*HoWo] (channels first): dW_g (Og x Cg*kh*kw) = g_g @ cols_g (N*HoWo x
    Cg*kh*kw), one GEMM over the batch per group, cols_g packed from x itself or im2col's."""
    x, g = ins
    out = lw.p.buffer("f32", numel(typ.shape), "temp")
    gt = lw.channels_first(g, n)
    og, cgkk, rows = s.group_filters, s.group_taps, s.N * s.pixels
    _columns_gemm(
        lw,
        n,
        x,
        s,
        attrs,
        (og, cgkk, rows),
        (gt.buffer, gt.at.offset, rows, og * rows),
        (out.id, 0, cgkk, og * cgkk),
        False,
        from_the_image,
    )
    lw.set(n, contiguous(out.id, typ.shape, typ.dtype))


register_implementation("conv2d_weight_grad", "windows")(
    functools.partial(_weight_grad_over_the_batch, from_the_image=True)
)
register_implementation("conv2d_weight_grad", "im2col")(
    functools.partial(_weight_grad_over_the_batch, from_the_image=False)
)


def _input_grad_of_one_kernel(lw, n, ins, typ, stride_h: int, padding: tuple, **fields):
    """dx of one ConvKernel over g (the kernel's x) and the filters, `fields` saying how."""
    g, w = ins
    out = lw.p.buffer("f32", numel(typ.shape), "temp")
    gm, wm = lw.materialize(g), lw.materialize(w)
    lw.emit(
        ConvKernel(
            gm.buffer, wm.buffer, out.id, g.shape, w.shape, tuple(typ.shape[2:]), stride_h, padding, node=n, **fields
        )
    )
    lw.set(n, contiguous(out.id, typ.shape, typ.dtype))


@register_implementation("conv2d_input_grad", "grouped direct")
def _grouped_direct_input_grad(lw, n, ins, attrs, typ, s: ConvShape):
    # g convolved with the filters flipped, each input channel summing over its group's outputs
    (ph, pw) = attrs["padding"]
    _input_grad_of_one_kernel(lw, n, ins, typ, 1, (s.kh - 1 - ph, s.kw - 1 - pw), transposed=True, groups=s.groups)


@register_implementation("conv2d_input_grad", "depthwise upsampling")
def _depthwise_upsampling(lw, n, ins, attrs, typ, s: ConvShape):
    _input_grad_of_one_kernel(lw, n, ins, typ, 2, tuple(attrs["padding"]), groups=s.groups, stride_w=2, upsampling=True)


@register_implementation("conv2d_input_grad", "grouped accumulation")
def _grouped_accumulation(lw, n, ins, attrs, typ, s: ConvShape):
    # dx[n, g*Cg + c, window (i, j) of (ho, wo)] += dy[n, g*Og + o, ho, wo] * w[g*Og + o, c, i, j]
    # over [N, groups, Cg, Og, kh, kw, Ho, Wo], without columns
    g, w = ins
    H, W = typ.shape[2:]
    (st_h, st_w), (ph, pw), (dh, dw) = attrs["stride"], attrs["padding"], attrs["dilation"]
    sn, sc, sh, sw = row_major(typ.shape)
    out = lw.p.buffer("f32", numel(typ.shape), "temp")
    cg = s.C // s.groups
    dy = lw.use(g).remap(
        lambda a: Affine(
            a.offset, (a.coeffs[0], a.coeffs[1] * s.group_filters, 0, a.coeffs[1], 0, 0, a.coeffs[2], a.coeffs[3])
        )
    )
    wm = lw.materialize(w)
    wt = wm.remap(
        lambda a: Affine(
            a.offset, (0, a.coeffs[0] * s.group_filters, a.coeffs[1], a.coeffs[0], a.coeffs[2], a.coeffs[3], 0, 0)
        )
    )
    at = Affine(-ph * sh - pw * sw, (sn, cg * sc, sc, 0, dh * sh, dw * sw, st_h * sh, st_w * sw))
    guards = ((Affine(-ph, (0, 0, 0, 0, dh, 0, st_h, 0)), H), (Affine(-pw, (0, 0, 0, 0, 0, dw, 0, st_w)), W))
    lw.emit(
        AccumulateKernel(
            (s.N, s.groups, cg, s.group_filters, s.kh, s.kw, s.Ho, s.Wo),
            out.id,
            at,
            guards,
            Op("mul", (dy, wt), "f32"),
            node=n,
        )
    )
    lw.set(n, contiguous(out.id, typ.shape, typ.dtype))


@register_implementation("conv2d_input_grad", "pointwise")
def _pointwise_input_grad(lw, n, ins, attrs, typ, s: ConvShape):
    # the columns are dx itself, stored [C, N, H, W]: dx (C x N*HW) = W^T (C x O) @ g as O x N*HW
    g, w = ins
    out = lw.p.buffer("f32", numel(typ.shape), "temp")
    wm = lw.materialize(w)
    columns = s.N * s.pixels
    gt = lw.channels_first(g, n)
    lw.emit(
        GemmKernel(
            s.C,
            columns,
            s.O,
            1,
            (wm.buffer, wm.at.offset, s.C, 0),
            (gt.buffer, gt.at.offset, columns, 0),
            (out.id, 0, columns, 0),
            True,
            False,
            bf16=lw.bf16,
            node=n,
        )
    )
    lw.set(n, Load(out.id, Affine(0, (s.pixels, columns, typ.shape[3], 1)), typ.dtype))


@register_implementation("conv2d_input_grad", "direct")
def _direct_input_grad(lw, n, ins, attrs, typ, s: ConvShape):
    # g convolved with the filters flipped, their channels swapped: one pass, no columns
    (ph, pw) = attrs["padding"]
    _input_grad_of_one_kernel(lw, n, ins, typ, 1, (s.kh - 1 - ph, s.kw - 1 - pw), transposed=True)


@register_implementation("conv2d_input_grad", "windows")
def _windows_input_grad(lw, n, ins, attrs, typ, s: ConvShape):
    # a GEMM of g's windows with the filters flipped and their channels swapped, dx stored [C, N, H, W]
    g, w = ins
    H, W = typ.shape[2:]
    out = lw.p.buffer("f32", numel(typ.shape), "temp")
    wm = lw.materialize(w)
    flipped, flipped_attrs = input_grad_as_conv(s, (H, W), attrs)
    wf = lw.p.buffer("f32", numel(w.shape), "temp")
    shape = (s.C, s.O, s.kh, s.kw)
    lw.emit(MapKernel(shape, wf.id, Affine(0, row_major(shape)), flipped_filters(wm, s.kh, s.kw), node=n))
    taps, columns = s.O * s.kh * s.kw, s.N * H * W
    _columns_gemm(
        lw, n, g, flipped, flipped_attrs, (s.C, columns, taps), (wf.id, 0, taps, 0), (out.id, 0, columns, 0), True, True
    )
    lw.set(n, Load(out.id, Affine(0, (H * W, columns, W, 1)), typ.dtype))


@register_implementation("conv2d_input_grad", "col2im")
def _col2im(lw, n, ins, attrs, typ, s: ConvShape):
    # the columns transposed, [C, kh, kw, N, Ho, Wo], in one GEMM over the batch: cols (CKK x N*HoWo)
    # = W^T (W is O x CKK) @ g as O x N*HoWo (channels first; a GEMM per example multiplied the whole
    # of W by a few columns each, at a small stage's 2 x 2 pixels), so that col2im's innermost loop
    # walks Wo, along the rows of both
    g, w = ins
    H, W = typ.shape[2:]
    (st_h, st_w), (ph, pw), (dh, dw) = attrs["stride"], attrs["padding"], attrs["dilation"]
    sn, sc, sh, sw = row_major(typ.shape)
    out = lw.p.buffer("f32", numel(typ.shape), "temp")
    wm = lw.materialize(w)
    columns = s.N * s.pixels
    cols = lw.p.buffer("f32", s.N * s.taps * s.pixels, "temp")
    gt = lw.channels_first(g, n)
    lw.emit(
        GemmKernel(
            s.taps,
            columns,
            s.O,
            1,
            (wm.buffer, wm.at.offset, s.taps, 0),
            (gt.buffer, gt.at.offset, columns, 0),
            (cols.id, 0, columns, 0),
            True,
            False,
            bf16=lw.bf16,
            node=n,
        )
    )
    at = Affine(-ph * sh - pw * sw, (sn, sc, dh * sh, dw * sw, st_h * sh, st_w * sw))
    guards = ((Affine(-ph, (0, 0, dh, 0, st_h, 0)), H), (Affine(-pw, (0, 0, 0, dw, 0, st_w)), W))
    shape = (s.N, s.C, s.kh, s.kw, s.Ho, s.Wo)
    per_channel = s.kh * s.kw * columns  # cols' stride along C
    lw.emit(
        AccumulateKernel(
            shape,
            out.id,
            at,
            guards,
            Load(cols.id, Affine(0, (s.pixels, per_channel, s.kw * columns, columns, s.Wo, 1)), "f32"),
            node=n,
        )
    )
    lw.set(n, contiguous(out.id, typ.shape, typ.dtype))
