"""Winograd's minimal filtering F(2 x 2, 3 x 3) (Lavin and Gray, "Fast Algorithms for
Convolutional Neural Networks", 2016): a 3 x 3 stride-1 convolution as 16 GEMMs of 2.25
times fewer products than its own (16 for a tile of 4 outputs, against 36), between
transforms that only add (and halve).

Each 2 x 2 tile of outputs y[n, o] is Aᵀ [U ⊙ V] A summed over the channels, where
U = G g Gᵀ (4 x 4) transforms a filter g[o, c] and V = Bᵀ d B the 4 x 4 window d of
x[n, c] the tile reads. For each of the 16 positions (ξ, ν) of a 4 x 4 tile the sum over
the channels is a matrix product, M[ξν] (O x tiles) = U[ξν] (O x C) @ V[ξν] (C x tiles):

    filters  U [16, O, C]            WeightTransformKernel (kernels/gemm: a prediction's weights once, until they change)
    input    V [16, C, N·TH·TW]      WinogradInputKernel, from x's windows
    product  M [16, O, N·TH·TW]      GemmKernel, a batch of 16
    output   y [N, O, Ho, Wo]        WinogradOutputKernel, then its epilogue (a bias, an activation)

TH x TW tiles cover an example's Ho x Wo outputs (the last row or column of tiles may
overhang: those outputs are not stored). The transforms add in a fixed order and never
fuse a multiply with an add, so every vector width gives the same bits. The tile size is
the matrices of transforms.py and nothing else: F(4 x 4, 3 x 3) (a quarter of the products) took
ResNet-18's prediction at 224 x 224 pixels from 132 to 123 ms, but its error, about ten
times a direct sum's, put the logits 1.6e-5 from onnxruntime's, and five Adam steps of
examples/vgg_cnn.dl 6 % from the reference engine's loss (2e-6 with these). Its implementations of
conv2d and of the input gradient are here, compiler/native/choose/conv.py chooses them
(docs/native.md, "Winograd's convolution"); its loops are in loops.py."""

from __future__ import annotations

from dataclasses import dataclass, replace

from dlc.compiler.ir.dims import numel
from dlc.compiler.native.kernels.conv import ConvShape, flipped_filters, input_grad_as_conv
from dlc.compiler.native.kernels.gemm import GemmKernel, WeightTransformKernel, packed_a_weight, weight_flag
from dlc.compiler.native.kernels.map import FusedMapKernel, MapKernel, image_epilogue
from dlc.compiler.native.kernels.winograd.transforms import G, TILE, WINDOW, tiles, two_sided
from dlc.compiler.native.program import Affine, Const, Kernel, Load, Op, contiguous, render
from dlc.compiler.native.program.registry import register_implementation


@dataclass
class WinogradInputKernel(Kernel):
    """V[ξ·4 + ν, c, n·TH·TW + th·TW + tw] = (Bᵀ d B)[ξ, ν], d the 4 x 4 window of x[n, c]
    (x [N, C, H, W] contiguous) at rows 2·th - ph ... and columns 2·tw - pw ... (0 outside
    x). Its windows are a convolution's of a 4 x 4 filter with stride 2, so the direct
    convolution's row loads (conv/loops.py ConvRows) read them: `w_shape`, `stride_w` and
    `out_hw` say so."""

    x: int
    out: int
    x_shape: tuple
    tiles: tuple  # TH, TW
    padding: tuple

    stride_w = TILE

    @property
    def w_shape(self) -> tuple:
        return 1, 1, WINDOW, WINDOW

    @property
    def out_hw(self) -> tuple:
        return self.tiles

    def text(self) -> list:
        return [
            f"winograd input {render.shape(self.x_shape)}: b{self.out} = Bᵀ d B of the {self.tiles[0]} x "
            f"{self.tiles[1]} tiles of b{self.x}{render.located(self)}"
        ]

    def accesses(self) -> tuple:
        return {self.x}, {self.out}

    def renamed(self, names: dict) -> "WinogradInputKernel":
        return replace(self, x=names[self.x], out=names[self.out])

    def emit(self, f):
        from dlc.compiler.native.kernels.winograd.loops import input_transform

        N, C = self.x_shape[:2]
        return f.team(
            lambda kb, first: input_transform(kb, self, first), N * C, N * C * self.tiles[0] * self.tiles[1] * 100
        )


@dataclass
class WinogradOutputKernel(Kernel):
    """y[n, o, 2·th + a, 2·tw + b] = (Aᵀ M A)[a, b] of the 4 x 4 tile
    M[:, o, n·TH·TW + th·TW + tw] (`products`), for the outputs inside y [N, O, Ho, Wo];
    `epilogue`: the map that alone reads y, run on each (example, channel) plane once it
    is stored, as a direct convolution's (ConvKernel)."""

    products: int
    out: int
    out_shape: tuple
    tiles: tuple
    epilogue: object = None

    @property
    def out_hw(self) -> tuple:
        """Its rows of tiles, as ConvRows chunks them."""
        return self.tiles

    def text(self) -> list:
        return [
            f"winograd output {render.shape(self.out_shape)}: b{self.out} = Aᵀ M A of b{self.products}"
            f"{', then in its store:' if self.epilogue else ''}{render.located(self)}"
        ] + ["  " + line for line in (self.epilogue.text() if self.epilogue else [])]

    def accesses(self) -> tuple:
        reads, writes = self.epilogue.accesses() if self.epilogue else (set(), set())
        return {self.products} | reads, {self.out} | writes

    def renamed(self, names: dict) -> "WinogradOutputKernel":
        return replace(
            self,
            products=names[self.products],
            out=names[self.out],
            epilogue=self.epilogue and self.epilogue.renamed(names),
        )

    def with_epilogue(self, m) -> "WinogradOutputKernel | None":
        if self.epilogue is not None:
            return None
        taken = image_epilogue(m, self.out, self.out_shape)
        return None if taken is None else self.taking(taken[1], out=taken[0], epilogue=taken[1], node=taken[1].node)

    def emit(self, f):
        from dlc.compiler.native.kernels.winograd.loops import output_transform

        N, O = self.out_shape[:2]
        return f.team(
            lambda kb, first: output_transform(kb, self, first), N * O, N * O * self.tiles[0] * self.tiles[1] * 60
        )


def _winograd_conv(lw, n, x: Load, x_shape: tuple, w: Load, filters: int, padding: tuple, out_hw: tuple, out: int):
    """y (`out`, [N, filters, *out_hw]) = x [N, C, H, W] convolved (stride 1) with the
    3 x 3 filters `w`, an index map over [filters, C, i, j] into their buffer (flipped and
    swapped for an input gradient), by Winograd's F(2 x 2, 3 x 3): the filters transformed
    by a fused map of 16 members (a WeightTransformKernel), the image by WinogradInputKernel,
    a batch of 16 GEMMs, WinogradOutputKernel (kernels/winograd)."""
    N, C = x_shape[:2]
    th, tw = tiles(out_hw)
    columns = N * th * tw
    positions = WINDOW * WINDOW
    ready = weight_flag(lw, w.buffer)  # a prediction's weights: transformed once, until they change
    # a built library's U: packed for the GEMM then, and U itself only the transform's
    u = lw.p.buffer("f32", positions * filters * C, "temp", f"{lw.p.buffers[w.buffer].name} winograd")
    u_of = (u.id, 0, C, filters * C)
    pack = packed_a_weight(lw, u_of, filters, C, positions, n) if ready else None
    if ready and pack is None:  # kept between calls for the GEMM
        u.role = "packed"
    (o_stride, c_stride, i_stride, j_stride), shape = w.at.coeffs, (filters, C)
    taps = [
        [
            Load(w.buffer, Affine(w.at.offset + i * i_stride + j * j_stride, (o_stride, c_stride)), "f32")
            for j in range(3)
        ]
        for i in range(3)
    ]
    arithmetic = (
        lambda a, b: Op("add", (a, b), "f32"),
        lambda a, b: Op("sub", (a, b), "f32"),
        lambda v, c: Op("mul", (v, Const(float(c), "f32")), "f32"),
    )
    filters_t = two_sided(G, taps, *arithmetic)
    transform = FusedMapKernel(
        shape,
        [
            MapKernel(shape, u.id, Affine((xi * WINDOW + nu) * filters * C, (C, 1)), filters_t[xi][nu], node=n)
            for xi in range(WINDOW)
            for nu in range(WINDOW)
        ],
        node=n,
    )
    lw.emit(WeightTransformKernel("winograd filters", transform, ready, pack, node=n))
    v = lw.p.buffer("f32", positions * C * columns, "temp")
    lw.emit(WinogradInputKernel(x.buffer, v.id, x_shape, (th, tw), padding, node=n))
    m = lw.p.buffer("f32", positions * filters * columns, "temp")
    lw.emit(
        GemmKernel(
            filters,
            columns,
            C,
            positions,
            u_of,
            (v.id, 0, columns, C * columns),
            (m.id, 0, columns, filters * columns),
            False,
            False,
            pack and pack.out,
            pack and ready,
            packed_a=pack is not None,
            node=n,
        )
    )
    lw.emit(WinogradOutputKernel(m.id, out, (N, filters, *out_hw), (th, tw), node=n))


@register_implementation("conv2d", "winograd")
def _winograd_conv2d(lw, n, ins, attrs, typ, s: ConvShape):
    x, w = ins
    out = lw.p.buffer("f32", numel(typ.shape), "temp")
    wm = lw.materialize(w)
    _winograd_conv(lw, n, lw.materialize(x), x.shape, wm, s.O, attrs["padding"], (s.Ho, s.Wo), out.id)
    lw.set(n, contiguous(out.id, typ.shape, typ.dtype))


@register_implementation("conv2d_input_grad", "winograd")
def _winograd_input_grad(lw, n, ins, attrs, typ, s: ConvShape):
    """A stride-1 convolution's input gradient (or a transposed convolution): the
    convolution of g it is, with the filters flipped and their channels swapped."""
    g, w = ins
    out = lw.p.buffer("f32", numel(typ.shape), "temp")
    wm = lw.materialize(w)
    _, flipped_attrs = input_grad_as_conv(s, typ.shape[2:], attrs)
    _winograd_conv(
        lw,
        n,
        lw.materialize(g),
        g.shape,
        flipped_filters(wm, s.kh, s.kw),
        s.C,
        flipped_attrs["padding"],
        typ.shape[2:],
        out.id,
    )
    lw.set(n, contiguous(out.id, typ.shape, typ.dtype))
