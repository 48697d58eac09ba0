"""The direct convolution, for few taps (no im2col buffer), and the lowering rules of
conv2d and its two gradients, which choose between it, im2col and a GEMM (its columns in
a buffer, or packed by the GEMM from the image itself), the small GEMM and accumulation
(col2im). The loops are in loops.py."""
from __future__ import annotations

from dataclasses import dataclass

from dlc.compiler.ir.dims import concrete, numel
from dlc.compiler.ir.graph import Tensor
from dlc.compiler.native import FEW_COLUMNS, TILE_CHANNELS
from dlc.compiler.native.kernels.accumulate import AccumulateKernel
from dlc.compiler.native.kernels.gemm import GemmKernel, WeightTransformKernel, packed_a_weight, weight_flag, weight_packed_a
from dlc.compiler.native.kernels.map import FusedMapKernel, MapKernel, image_epilogue
from dlc.compiler.native.kernels.reduce import ReduceKernel
from dlc.compiler.native.kernels.small_gemm import SmallGemmKernel
from dlc.compiler.native.kernels.winograd import WinogradInputKernel, WinogradOutputKernel
from dlc.compiler.native.kernels.winograd.transforms import G, WINDOW, tiles, two_sided
from dlc.compiler.native.program import Affine, Const, Kernel, Load, Op, contiguous, render, row_major
from dlc.compiler.native.program.registry import register_lowering

SMALL_FILTER = 4096     # O * C * kh * kw up to which a weight gradient is a SmallGemmKernel
DIRECT_TAPS = 256       # C * kh * kw up to which a convolution is direct (ConvKernel), not im2col + GEMM
SMALL_GEMM_PARTS = 16   # runs of the batch a SmallGemmKernel sums apart (the threads' shares)
FEW_PIXELS_ROW = 8      # output rows narrower than which a grouped weight gradient is a reduction (ReduceKernel)
GROUPED_TAPS = 64       # C / groups * kh * kw up to which a grouped convolution is a map over its outputs
IMAGE_CHANNELS = 4      # input channels up to which a direct convolution into whole tiles of filters is by channels
SMALL_PLANE = 16        # outputs a channel up to which a depthwise convolution is by channels
WINDOWS_FILTERS = 64    # filters from which a direct convolution is a GEMM when it can read the image's windows
EXAMPLE_PIXELS = 784    # an example's output pixels from which a prediction's GEMM of windows is one per example
WINOGRAD_CHANNELS = 32  # channels in and out from which a 3 x 3 stride-1 convolution is Winograd's (kernels/winograd)
WINOGRAD_TILES = 16     # an example's tiles from which it is (fewer: its GEMMs' columns are too few to hide U's reads)


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
    convolution's, `depthwise_by_channels`; `_by_channels` and `_depthwise_by_channels`
    say which convolutions)."""
    x: int
    w: int | None
    out: int
    x_shape: tuple        # N, C, H, W
    w_shape: tuple        # O, C, kh, kw
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

    @property
    def channels(self):
        """The output's channels (O)."""
        return self.w_shape[1] * self.groups if self.transposed else self.w_shape[0]

    def flops(self, sizes: dict) -> int:
        """Every output, input gradient or weight gradient element sums over the taps of
        the others: one multiply-add per weight and output position."""
        return 2 * numel(self.w_shape) * numel([concrete(self.x_shape[0], sizes), *self.out_hw])

    def text(self) -> list:
        what = f"b{self.x} * b{self.w}" if self.g is None else f"weight gradient of b{self.x} * w from b{self.g}"
        what += f" in {self.groups} groups" if self.groups > 1 else ""
        what += ", by channels" if self.by_channels else ""
        what += ", then in its store:" if self.epilogue else ""
        return [f"direct conv {render.shape(self.x_shape)} by {render.shape(self.w_shape)}: b{self.out} = {what}"
                f"{render.located(self)}"] + ["  " + line for line in (self.epilogue.text() if self.epilogue else [])]

    def accesses(self) -> tuple:
        if self.g is not None:
            return {self.x, self.g}, {self.out, self.partial}
        reads, writes = self.epilogue.accesses() if self.epilogue else (set(), set())
        return {self.x, self.w} | reads, {self.out} | writes

    def with_epilogue(self, m) -> "ConvKernel | None":
        """This convolution computing the map m on its outputs once stored, where m's space
        is the output's, its rows and columns merged into one run of pixels (an (example,
        group) pair's outputs, or an output row's, are one loop), and m reads the output at
        the index it is stored at."""
        if self.g is not None or self.epilogue is not None:
            return None
        taken = image_epilogue(m, self.out, (self.x_shape[0], self.channels, *self.out_hw))
        return None if taken is None else self.taking(taken[1], out=taken[0], epilogue=taken[1], node=taken[1].node)

    def emit(self, f):
        """The examples times the groups (or tiles of channels), or the output rows, on a
        thread team (loops.py `team_rows`); the weight gradient's parts on a team, then
        their sum on the calling thread."""
        from dlc.compiler.native.kernels.conv.loops import (conv, conv_by_channels, conv_weight_grad,
                                                             depthwise_by_channels, team_rows)
        from dlc.compiler.native.codegen.shared_loops import sum_parts
        work = numel(self.w_shape) * numel(self.x_shape[:1] + self.out_hw)
        if self.g is None:
            if not self.by_channels:
                loops = conv
            else:       # the stem's filters in the lanes, or a depthwise convolution's channels
                loops = conv_by_channels if self.groups == 1 else depthwise_by_channels
            return f.team(lambda kb, first: loops(kb, self, first), team_rows(self), work)
        kb = f.team(lambda kb, first: conv_weight_grad(kb, self, first), self.parts, work)
        taps = numel(self.w_shape[1:])
        sum_parts(kb, self.partial, self.parts, self.w_shape[0], taps, (self.out, 0, taps))
        return kb


# ---- lowering rules ------------------------------------------------------------------------------
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

def _winograd(lw, s: ConvShape, attrs) -> bool:
    """Whether a convolution of shape s that would be a GEMM of its windows is Winograd's
    F(2 x 2, 3 x 3) (kernels/winograd) instead: 3 x 3, stride 1, no dilation, one group,
    padding up to 2 (so that its input gradient, padded 2 - p, is one too), at least
    WINOGRAD_CHANNELS channels in and out (fewer make GEMMs too short for the transforms'
    passes to pay), at least WINOGRAD_TILES tiles an example (at fewer, as ResNet-18's last
    two stages at 64 x 64 pixels, its products of U's 16 matrices, 16/9 of the filters'
    size, with few columns each are bound by reading U: a built library's batch-1
    prediction took 1.43 of onnxruntime's time against 1.04 with its GEMMs of windows),
    where its tiles' products are at most two thirds of the convolution's (a 3 x 3 image's
    4 tiles of 16 are more); in float32 only (a bf16 program rounds a convolution's own
    operands: kernels/conv's paths, compiler/native/bf16.py), its sizes but the batch known."""
    if lw.bf16 or (s.kh, s.kw) != (3, 3) or attrs["stride"] != (1, 1) or attrs["dilation"] != (1, 1) \
            or s.groups != 1 or not 0 <= min(attrs["padding"]) <= max(attrs["padding"]) <= 2 \
            or not all(isinstance(d, int) for d in (s.C, s.O, s.Ho, s.Wo)) or min(s.C, s.O) < WINOGRAD_CHANNELS:
        return False
    th, tw = tiles((s.Ho, s.Wo))
    return th * tw >= WINOGRAD_TILES and 3 * WINDOW * WINDOW * th * tw <= 2 * 9 * s.Ho * s.Wo

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
    ready = weight_flag(lw, w.buffer)       # a prediction's weights: transformed once, until they change
    # a built library's U: packed for the GEMM then, and U itself only the transform's
    u = lw.p.buffer("f32", positions * filters * C, "temp", f"{lw.p.buffers[w.buffer].name} winograd")
    u_of = (u.id, 0, C, filters * C)
    pack = packed_a_weight(lw, u_of, filters, C, positions, n) if ready else None
    if ready and pack is None:      # kept between calls for the GEMM
        u.role = "packed"
    (o_stride, c_stride, i_stride, j_stride), shape = w.at.coeffs, (filters, C)
    taps = [[Load(w.buffer, Affine(w.at.offset + i * i_stride + j * j_stride, (o_stride, c_stride)), "f32")
             for j in range(3)] for i in range(3)]
    arithmetic = (lambda a, b: Op("add", (a, b), "f32"), lambda a, b: Op("sub", (a, b), "f32"),
                  lambda v, c: Op("mul", (v, Const(float(c), "f32")), "f32"))
    filters_t = two_sided(G, taps, *arithmetic)
    transform = FusedMapKernel(shape, [MapKernel(shape, u.id, Affine((xi * WINDOW + nu) * filters * C, (C, 1)),
                                                 filters_t[xi][nu], node=n)
                                       for xi in range(WINDOW) for nu in range(WINDOW)], node=n)
    lw.emit(WeightTransformKernel("winograd filters", transform, ready, pack, node=n))
    v = lw.p.buffer("f32", positions * C * columns, "temp")
    lw.emit(WinogradInputKernel(x.buffer, v.id, x_shape, (th, tw), padding, node=n))
    m = lw.p.buffer("f32", positions * filters * columns, "temp")
    lw.emit(GemmKernel(filters, columns, C, positions, u_of, (v.id, 0, columns, C * columns),
                       (m.id, 0, columns, filters * columns), False, False, pack and pack.out, pack and ready,
                       packed_a=pack is not None, node=n))
    lw.emit(WinogradOutputKernel(m.id, out, (N, filters, *out_hw), (th, tw), node=n))

def _flipped(w: Load, kh: int, kw: int) -> Load:
    """w [O, C, kh, kw] read as [C, O, kh, kw] with its taps flipped, w[o, c, kh-1-i, kw-1-j]:
    the filters of a stride-1 convolution's input gradient (a convolution of g)."""
    so, sci, si, sj = w.at.coeffs
    return Load(w.buffer, Affine(w.at.offset + (kh - 1) * si + (kw - 1) * sj, (sci, so, -si, -sj)), "f32")

def _direct(taps, kw, attrs) -> bool:
    """Whether a convolution is a ConvKernel: few taps per output (C / groups · kh · kw),
    where im2col's buffer and a GEMM with so short a K cost more than the products, a row
    of taps that fits in registers, stride 1 or 2 along W (its rows are loaded as vectors,
    every other lane of two with stride 2), no dilation."""
    return isinstance(taps, int) and taps <= DIRECT_TAPS and kw <= 8 and attrs["stride"][1] in (1, 2) and \
        attrs["dilation"] == (1, 1)

# what computes a convolution product by each way of lowering it (`conv_path`): the kinds of
# kernel the bf16 rule reads (compiler/native/bf16.py)
PATH_KERNELS = {"pointwise": "gemm", "im2col": "gemm", "col2im": "gemm", "small filters": "small_gemm",
                "direct": "direct conv", "grouped taps": "map", "few pixels": "reduction",
                "grouped accumulation": "accumulation"}

def conv_shape(op: str, ins: tuple, out: tuple, groups: int) -> ConvShape:
    """The ConvShape of a conv2d (x, w -> y) or of its gradients (x, g -> w; g, w -> x), from
    the shapes of its operands and its output."""
    a, b = ins
    if op == "conv2d":
        return ConvShape.of(a, b, out, groups)
    return ConvShape.of(a, out, b, groups) if op == "conv2d_weight_grad" else ConvShape.of(out, b, a, groups)

def conv_path(op: str, s: ConvShape, attrs) -> str:
    """How a conv2d or one of its gradients of shape s is lowered (the rules below branch on
    it), by its shape alone — in a bf16 program as in float32:
    - conv2d: "pointwise" (GEMMs), "direct" (ConvKernel), "grouped taps" (a map over the
      outputs of a small-grouped one that is not direct), "im2col" (a GEMM per group);
    - conv2d_weight_grad: "pointwise", "few pixels" (a grouped one's reduction), "direct",
      "small filters" (SmallGemmKernel), "im2col";
    - conv2d_input_grad: "direct" (stride 1), "grouped accumulation", "pointwise", "col2im"."""
    pointwise = _pointwise(s.kh, s.kw, attrs)
    if op == "conv2d":
        if pointwise or _direct(s.group_taps, s.kw, attrs):
            return "pointwise" if pointwise else "direct"
        return "grouped taps" if s.groups > 1 and isinstance(s.group_taps, int) and s.group_taps <= GROUPED_TAPS \
            else "im2col"
    if op == "conv2d_weight_grad":
        if pointwise:
            return "pointwise"
        if s.groups > 1 and isinstance(s.Wo, int) and s.Wo < FEW_PIXELS_ROW and s.group_taps <= GROUPED_TAPS:
            return "few pixels"
        if _direct(s.group_taps, s.kw, attrs) and (s.groups > 1 or (s.kh, s.kw) != (1, 1)):
            # a 1 x 1 one's (a strided projection) would sum along an example's rows of few
            # pixels, a few lanes of each vector: im2col instead
            return "direct"
        return "small filters" if s.groups == 1 and isinstance(s.O * s.taps, int) and s.O * s.taps <= SMALL_FILTER \
            else "im2col"
    stride_1 = attrs["stride"] == (1, 1)
    if s.groups > 1:
        return "direct" if _direct(s.group_filters * s.kh * s.kw, s.kw, attrs) and stride_1 else "grouped accumulation"
    if pointwise:
        return "pointwise"
    return "direct" if _direct(s.taps, s.kw, attrs) and stride_1 else "col2im"

def _over_the_batch(lw, x: Tensor, pixels, filters) -> bool:
    """Whether a pointwise convolution is one GEMM over the batch, reading x's copy channels
    first: in training, where its weight gradient reads that copy anyway; elsewhere where an
    example has few pixels, O ≥ 2·HW (the last stages'), so that a GEMM per example as x
    lies, reading all of W (O·C) for each example's HW columns, would move more than the
    copy (2·C·HW floats an example, read and written). Its gradients are over the batch
    whatever the pixels (their copies of x and g channels first are shared)."""
    return _weight_grad_reads(lw.graph, x) or isinstance(pixels, int) and 2 * pixels <= filters

def _windows_apply(lw, s: ConvShape) -> bool:
    """Whether a convolution's GEMMs (the product and its weight gradient) may read their
    columns from the image (GemmKernel's `windows`) rather than from im2col's buffer: in
    float32 (the bf16 routines' panels are packed otherwise) where an example has more
    than FEW_COLUMNS pixels (fewer are multiplied without packing, from the buffer as it
    lies)."""
    return not lw.bf16 and isinstance(s.pixels, int) and s.pixels > FEW_COLUMNS

def _from_the_image(lw, x: Tensor, s: ConvShape) -> bool:
    """Whether a convolution's product reads its columns from the image x: where they
    may (_windows_apply) and no weight gradient of x reads them from im2col's buffer (a
    SmallGemmKernel's, for small filters: the buffer is then written anyway, and shared)."""
    graph = lw.graph
    return _windows_apply(lw, s) and \
        not any(conv_path("conv2d_weight_grad", conv_shape("conv2d_weight_grad", tuple(u.shape for u in graph.inputs(v)),
                                                           graph.types(v)[0].shape, graph.attrs(v)["groups"]),
                          graph.attrs(v)) == "small filters" for v in _weight_grads(graph, x))

def _by_channels(s: ConvShape) -> bool:
    """Whether a direct convolution (one that is not a GEMM of windows: _many_filters) has
    output channels in its vectors' lanes (`ConvKernel.by_channels`): an image's few
    channels (IMAGE_CHANNELS: a network's stem) into filters in whole tiles (TILE_CHANNELS,
    vectors of any width), one group. The pixels' kernel loads each row of taps as vectors
    of pixels, every other one at stride 2, for a block of 6 filters at a time; a tile of 6
    pixels times 16 filters broadcasts each input value from where it lies (MobileNetV2's
    stem, 3 x 3 on 3 channels into 32 at 224 x 224 pixels, batch 8, 2 threads: 2.6 ms
    against 5.6). With 64 filters the GEMM of windows stays as fast or faster (ResNet's
    stem: 18.9 ms against 22.4)."""
    return s.groups == 1 and isinstance(s.C, int) and s.C <= IMAGE_CHANNELS and s.O % TILE_CHANNELS == 0


def _depthwise_by_channels(s: ConvShape, x_shape: tuple) -> bool:
    """Whether a direct depthwise convolution (one filter a channel) has channels in its
    vectors' lanes (loops.py `depthwise_by_channels`): its channels in whole tiles
    (TILE_CHANNELS) and planes of at most SMALL_PLANE outputs, whose rows would fill few
    of a vector's lanes of pixels (MobileNetV2's last stages at 64 x 64 pixels: 4 x 4 and
    2 x 2). On 2 threads of a Zen 3 (AVX2), alternating: 576 channels of 4 x 4 at batch 8
    took 0.43 of the pixels' kernel's time; 960 of 7 x 7 0.96 (1.00 at batch 1), and
    192 of 8 x 8, whose rows fill a vector, 1.42."""
    sizes = (s.C, s.O, *x_shape[2:], s.Ho, s.Wo)
    return s.groups == s.C == s.O and all(isinstance(d, int) for d in sizes) and s.C % TILE_CHANNELS == 0 \
        and s.Ho * s.Wo <= SMALL_PLANE


def _many_filters(s: ConvShape) -> bool:
    """Whether a direct convolution is rather a GEMM of the image's windows, where it reads
    them (_from_the_image): many filters (WINDOWS_FILTERS), one group — the GEMM's tiles
    filled (batch 8, 2 threads: ResNet's 7 x 7 stem on 3 channels, 64 filters, at 224 x 224 pixels 13 ms
    against 26 direct; 3 x 3 on 3 channels, 64 filters, at 64 x 64 1.4 against 3.1; on 16
    channels at 56 x 56 3.4 against 3.9; with 32 filters or fewer the direct kernel was as
    fast or faster). Its weight gradient stays direct: as a GEMM of windows the latter
    took 5.4 ms against 3.4, the stem's 25 against 29–33."""
    return s.groups == 1 and s.O >= WINDOWS_FILTERS

def _per_example(lw, x: Tensor, s: ConvShape) -> bool:
    """Whether a convolution's product is a GEMM per example of its windows rather than one
    over the batch: in a program that does not train its filters (no weight gradient reads
    x: a prediction's), one group, the columns read from the image (_from_the_image), each
    example's at least EXAMPLE_PIXELS, so that each GEMM's columns fill its panels and the
    filters, read again for each example, are few beside them (ResNet-18 at 224 x 224
    pixels: its stem and its convolutions into 28 x 28 pixels; a library's call 2-3 %
    faster at batch 1 and 8, 12 % at batch 8 on a noisier host, the two alternating on an
    AMD Zen 3; 196 pixels, the 14 x 14 stage's too, measured even)."""
    return s.groups == 1 and isinstance(s.pixels, int) and s.pixels >= EXAMPLE_PIXELS \
        and not _weight_grads(lw.graph, x) and _from_the_image(lw, x, s)

def _columns_gemm(lw, n, x: Tensor, s: ConvShape, attrs, mnk: tuple, a: tuple, c: tuple, trans_b: bool,
                  from_the_image: bool, examples: bool = False):
    """The GEMM per group (M, N, K = mnk) of A and x's columns as B — transposed with
    `trans_b` (the product's), as they lie otherwise (the weight gradient's) — into C:
    packed from x itself (GemmKernel's `windows`, the geometry gemm.WINDOW_GEOMETRY says),
    or read from im2col's buffer. `examples` (one group, from the image): one GEMM per
    example instead, B the windows of that example's image."""
    if from_the_image:
        xm = lw.materialize(x)
        sn, sc, sh, sw = xm.at.coeffs
        geometry = (s.Ho, s.Wo, s.kh, s.kw, *x.shape[2:], sn, sc, sh, sw, *attrs["stride"], *attrs["padding"],
                    *attrs["dilation"])
        batch, stride = (s.N, sn) if examples else (s.groups, s.C // s.groups * sc)
        _filters_gemm(lw, n, mnk, batch, a, (xm.buffer, xm.at.offset, 0, stride), c, trans_b, windows=geometry)
    else:
        cols = lw.im2col(x, (s.Ho, s.Wo, s.C, s.kh, s.kw), attrs, n)
        _filters_gemm(lw, n, mnk, s.groups, a, (cols.id, 0, s.taps, s.group_taps), c, trans_b, bf16=lw.bf16)

def _filters_gemm(lw, n, mnk: tuple, batch, a: tuple, b: tuple, c: tuple, trans_b: bool, **kw):
    """The GemmKernel of a convolution's product with its filters as op(A) (a), which a
    built library packs once until they change (kernels/gemm `weight_packed_a`)."""
    made = weight_packed_a(lw, a, mnk[0], mnk[2], batch, n)
    packed, ready = made or (None, None)
    lw.emit(GemmKernel(*mnk, batch, a, b, c, False, trans_b, packed, ready, packed_a=made is not None, node=n, **kw))


def _weight_grads(graph, x: Tensor) -> list:
    """The convolution weight gradients that read x as their x."""
    return [v for v in graph.nx.successors(x.node)
            if graph.op(v) == "conv2d_weight_grad" and graph.inputs(v)[0].key() == x.key()]

def _weight_grad_reads(graph, x: Tensor) -> bool:
    """Whether a pointwise convolution's weight gradient reads x as its x."""
    return any(_pointwise_node(graph, v) for v in _weight_grads(graph, x))

def _pointwise_node(graph, v: int) -> bool:
    """Whether node v is a pointwise convolution or one of its gradients."""
    op = graph.op(v)
    if op not in CHANNELS_FIRST_OPERANDS:
        return False
    kernel = graph.types(v)[0].shape[2:] if op == "conv2d_weight_grad" else graph.inputs(v)[1].shape[2:]
    return _pointwise(*kernel, graph.attrs(v))

# the operands a pointwise convolution's GEMMs over the batch read channels first
CHANNELS_FIRST_OPERANDS = {"conv2d": (0,), "conv2d_weight_grad": (0, 1), "conv2d_input_grad": (0,)}

def stored_channels_first(graph) -> set:
    """The keys of the values a kernel stores channels first, [C, N, ...]
    (Lowering.place): the operands of a train step's pointwise convolutions (x and g) that
    nothing else reads — their GEMMs over the batch read them channels first, so the map
    that computes one writes it so, and no copy is made."""
    def channels_first_only(v, t):
        operands = [i for i, u in enumerate(graph.inputs(v)) if u.key() == t.key()]
        return not operands or _pointwise_node(graph, v) and set(operands) <= set(CHANNELS_FIRST_OPERANDS[graph.op(v)]) \
            and (graph.op(v) != "conv2d" or _weight_grad_reads(graph, t))
    keys = set()
    for n in graph.nodes_with("conv2d_weight_grad"):
        for t in graph.inputs(n) if _pointwise_node(graph, n) else ():
            if not graph.outputs.readers(t.key()) and all(channels_first_only(v, t) for v in graph.nx.successors(t.node)):
                keys.add(t.key())
    return keys

def _pointwise(kh, kw, attrs) -> bool:
    """Whether a convolution is a matrix product as its input lies: 1 x 1, stride 1, no
    padding, one group, so y[n] (O x H·W) = W (O x C) @ x[n] (C x H·W), without columns."""
    return (kh, kw) == (1, 1) and attrs["stride"] == (1, 1) and attrs["padding"] == (0, 0) and attrs["groups"] == 1

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
                xa = windows.remap(lambda a: Affine(a.offset + a.coeffs[1] * c + a.coeffs[4] * i + a.coeffs[5] * j,
                                                     (a.coeffs[0], a.coeffs[1] * cg, 0, a.coeffs[2], a.coeffs[3])))
                wa = wm.remap(lambda a: Affine(a.offset + a.coeffs[1] * c + a.coeffs[2] * i + a.coeffs[3] * j,
                                                (0, a.coeffs[0] * og, a.coeffs[0], 0, 0)))
                products.append(Op("mul", (xa, wa), "f32"))
    return products

@register_lowering("conv2d", floats=("f32",))
def _conv2d(lw, n, ins, attrs, typ):
    x, w = ins
    groups = attrs["groups"]
    s = conv_shape("conv2d", (x.shape, w.shape), typ.shape, groups)
    path = conv_path("conv2d", s, attrs)
    out = lw.p.buffer("f32", numel(typ.shape), "temp")
    wm = lw.materialize(w)
    if path == "pointwise":
        # the pointwise convolutions of depthwise-separable networks (a direct conv's few taps
        # per output would leave most of these products' C unused)
        if _over_the_batch(lw, x, s.pixels, s.O):
            # one GEMM over the batch, y stored [O, N, H, W]: y (O x N*HW) = W (O x C) @ x as
            # C x N*HW (channels first)
            xt, columns = lw.channels_first(x, n), s.N * s.pixels
            _filters_gemm(lw, n, (s.O, columns, s.C), 1, (wm.buffer, wm.at.offset, s.C, 0),
                          (xt.buffer, xt.at.offset, columns, 0), (out.id, 0, columns, 0), False, bf16=lw.bf16)
            lw.set(n, Load(out.id, Affine(0, (s.pixels, columns, s.Wo, 1)), typ.dtype))
            return
        # a prediction's, of many pixels: y[n] (O x HW) = W @ x[n] (C x HW) as x lies, each product wide enough
        xm = lw.materialize(x)
        _filters_gemm(lw, n, (s.O, s.pixels, s.C), s.N, (wm.buffer, wm.at.offset, s.C, 0),
                      (xm.buffer, xm.at.offset, s.pixels, s.C * s.pixels), (out.id, 0, s.pixels, s.O * s.pixels), False,
                      bf16=lw.bf16)
        lw.set(n, contiguous(out.id, typ.shape, typ.dtype))
        return
    if path == "direct" and _many_filters(s) and _from_the_image(lw, x, s):
        path = "im2col"
    if path == "direct" and (_by_channels(s) or _depthwise_by_channels(s, x.shape)):
        # the filters as [O / TILE_CHANNELS, C / groups · kh·kw, TILE_CHANNELS]: a tile's taps one after
        # another, each a row of its channels for the kernel's vectors (as [C·kh·kw, O], the
        # rows of a tile's 147 taps of a 7 x 7 stem fell in a quarter of the L1 cache's sets);
        # a prediction's, kept between calls: made once until a weight changes
        tiles_shape = (s.O // TILE_CHANNELS, w.shape[1], s.kh, s.kw, TILE_CHANNELS)
        ready = weight_flag(lw, wm.buffer)
        wt = lw.p.buffer("f32", numel(w.shape), "packed" if ready else "temp",
                         f"{lw.p.buffers[wm.buffer].name} by channels")
        o_, c_, i_, j_ = wm.at.coeffs
        copy = MapKernel(tiles_shape, wt.id, Affine(0, row_major(tiles_shape)),
                         Load(wm.buffer, Affine(wm.at.offset, (TILE_CHANNELS * o_, c_, i_, j_, o_)), "f32"), node=n)
        lw.emit(WeightTransformKernel("filters by channels", copy, ready, node=n))
        xm = lw.materialize(x)
        lw.emit(ConvKernel(xm.buffer, wt.id, out.id, x.shape, w.shape, (s.Ho, s.Wo), attrs["stride"][0],
                           attrs["padding"], groups=groups, stride_w=attrs["stride"][1], by_channels=True, node=n))
        lw.set(n, contiguous(out.id, typ.shape, typ.dtype))
        return
    if path == "direct":
        # depthwise ones too (groups = C): each output channel's taps over its group's channels
        xm = lw.materialize(x)
        lw.emit(ConvKernel(xm.buffer, wm.buffer, out.id, x.shape, w.shape, (s.Ho, s.Wo), attrs["stride"][0],
                           attrs["padding"], groups=groups, stride_w=attrs["stride"][1], node=n))
        lw.set(n, contiguous(out.id, typ.shape, typ.dtype))
        return
    if path == "grouped taps":
        # depthwise and small groups strided along W or dilated: a map over the outputs
        # summing their taps (the loop over Wo vectorizes), where a GEMM per group would
        # multiply with a K of a few taps
        total, *rest = _group_taps(lw, x, w, attrs)
        for v in rest:
            total = Op("add", (total, v), "f32")
        shape = (s.N, groups, s.group_filters, s.Ho, s.Wo)
        lw.emit(MapKernel(shape, out.id, Affine(0, row_major(shape)), total, node=n))
        lw.set(n, contiguous(out.id, typ.shape, typ.dtype))
        return
    if path == "im2col" and _winograd(lw, s, attrs):
        _winograd_conv(lw, n, lw.materialize(x), x.shape, wm, s.O, attrs["padding"], (s.Ho, s.Wo), out.id)
        lw.set(n, contiguous(out.id, typ.shape, typ.dtype))
        return
    if _per_example(lw, x, s):
        # y[n] (O x HoWo) = W (O x C*kh*kw) @ windows of x[n]: a batch of GEMMs, y stored as it
        # lies, so that the map after it runs in place (over the batch, y [O, N, Ho, Wo] was a
        # buffer of its own, which that map then copied)
        _columns_gemm(lw, n, x, s, attrs, (s.O, s.pixels, s.taps), (wm.buffer, wm.at.offset, s.taps, 0),
                      (out.id, 0, s.pixels, s.O * s.pixels), trans_b=True, from_the_image=True, examples=True)
        lw.set(n, contiguous(out.id, typ.shape, typ.dtype))
        return
    # one GEMM over the batch per group, y stored [O, N, Ho, Wo]: y_g (Og x N*HoWo) = W_g (Og x Cg*kh*kw)
    # @ cols_g^T, cols_g the group's columns of cols (as N GEMMs of HoWo columns each, a first
    # layer's 6 x 784 products ran at a third the speed)
    og, cgkk, columns = s.group_filters, s.group_taps, s.N * s.pixels
    _columns_gemm(lw, n, x, s, attrs, (og, columns, cgkk), (wm.buffer, wm.at.offset, cgkk, og * cgkk),
                  (out.id, 0, columns, og * columns), True, _from_the_image(lw, x, s))
    lw.set(n, Load(out.id, Affine(0, (s.pixels, s.N * s.pixels, s.Wo, 1)), typ.dtype))

@register_lowering("conv2d_weight_grad", floats=("f32",))
def _conv2d_weight_grad(lw, n, ins, attrs, typ):
    x, g = ins
    groups = attrs["groups"]
    s = conv_shape("conv2d_weight_grad", (x.shape, g.shape), typ.shape, groups)
    path = conv_path("conv2d_weight_grad", s, attrs)
    out = lw.p.buffer("f32", numel(typ.shape), "temp")
    if path == "pointwise":
        # dW (O x C) = g as O x N*HW @ (x as C x N*HW)^T: one GEMM, every example's pixels its
        # K, both channels first (the copies the forward product and the input gradient read)
        gt, xt, rows = lw.channels_first(g, n), lw.channels_first(x, n), s.N * s.pixels
        lw.emit(GemmKernel(s.O, s.C, rows, 1, (gt.buffer, gt.at.offset, rows, 0), (xt.buffer, xt.at.offset, rows, 0),
                           (out.id, 0, s.C, 0), False, True, bf16=lw.bf16, node=n))
        lw.set(n, contiguous(out.id, typ.shape, typ.dtype))
        return
    if path == "few pixels":
        # rows of few pixels, which would fill a few lanes of the direct kernel's vectors (a
        # depthwise one at 4 x 4 pixels ran at 1-3 GFLOP/s): dW [groups, Og, Cg, kh, kw] summed
        # over [N, Ho, Wo] by a reduction, each thread its groups
        og, cg = s.group_filters, s.C // groups
        windows = lw.windows(x, attrs["stride"], attrs["padding"], order="nchwij", dilation=attrs["dilation"])
        # windows over [N, C, Ho, Wo, kh, kw] -> [groups, Og, Cg, kh, kw, N, Ho, Wo]
        xa = windows.remap(lambda a: Affine(a.offset, (a.coeffs[1] * cg, 0, a.coeffs[1], a.coeffs[4], a.coeffs[5],
                                                       a.coeffs[0], a.coeffs[2], a.coeffs[3])))
        ga = lw.use(g).remap(lambda a: Affine(a.offset, (a.coeffs[1] * og, a.coeffs[1], 0, 0, 0, a.coeffs[0],
                                                         a.coeffs[2], a.coeffs[3])))
        shape = (groups, og, cg, s.kh, s.kw, s.N, s.Ho, s.Wo)
        lw.emit(ReduceKernel(shape, (5, 6, 7), "sum", out.id, Op("mul", (ga, xa), "f32"), node=n))
        lw.set(n, contiguous(out.id, typ.shape, typ.dtype))
        return
    if path == "direct":
        xm, gm = lw.materialize(x), lw.materialize(g)
        partial = lw.p.buffer("f32", SMALL_GEMM_PARTS * s.O * s.group_taps, "temp")
        lw.emit(ConvKernel(xm.buffer, None, out.id, x.shape, typ.shape, (s.Ho, s.Wo), attrs["stride"][0], attrs["padding"],
                           gm.buffer, partial.id, SMALL_GEMM_PARTS, groups=groups,
                           stride_w=attrs["stride"][1], node=n))
        lw.set(n, contiguous(out.id, typ.shape, typ.dtype))
        return
    if path == "small filters":
        # few, small filters (a first layer): dW stays in registers while every
        # example's g[n] (O x HoWo) @ cols[n] (HoWo x CKK) streams by
        cols = lw.im2col(x, (s.Ho, s.Wo, s.C, s.kh, s.kw), attrs, n)
        gm = lw.materialize(g)
        partial = lw.p.buffer("f32", SMALL_GEMM_PARTS * s.O * s.taps, "temp")
        lw.emit(SmallGemmKernel(s.O, s.taps, s.pixels, s.N, (gm.buffer, gm.at.offset, s.pixels, s.O * s.pixels),
                                (cols.id, 0, s.taps, s.pixels * s.taps), (out.id, 0, s.taps), partial.id, SMALL_GEMM_PARTS,
                                bf16=lw.bf16, node=n))
    else:
        # g as [O, N*HoWo] (channels first): dW_g (Og x Cg*kh*kw) = g_g @ cols_g (N*HoWo x Cg*kh*kw),
        # one GEMM over the batch per group, cols_g packed from x itself where windows apply
        gt = lw.channels_first(g, n)
        og, cgkk, rows = s.group_filters, s.group_taps, s.N * s.pixels
        _columns_gemm(lw, n, x, s, attrs, (og, cgkk, rows), (gt.buffer, gt.at.offset, rows, og * rows),
                      (out.id, 0, cgkk, og * cgkk), False, _windows_apply(lw, s))
    lw.set(n, contiguous(out.id, typ.shape, typ.dtype))

@register_lowering("conv2d_input_grad", floats=("f32",))
def _conv2d_input_grad(lw, n, ins, attrs, typ):
    g, w = ins
    groups = attrs["groups"]
    s = conv_shape("conv2d_input_grad", (g.shape, w.shape), typ.shape, groups)
    path = conv_path("conv2d_input_grad", s, attrs)
    H, W = typ.shape[2:]
    (st_h, st_w), (ph, pw), (dh, dw) = attrs["stride"], attrs["padding"], attrs["dilation"]
    sn, sc, sh, sw = row_major(typ.shape)
    out = lw.p.buffer("f32", numel(typ.shape), "temp")
    if path == "direct" and groups > 1:
        # a stride-1 grouped convolution's input gradient is one too: g convolved with the
        # filters flipped, each input channel summing over its group's outputs
        gm, wm = lw.materialize(g), lw.materialize(w)
        lw.emit(ConvKernel(gm.buffer, wm.buffer, out.id, g.shape, w.shape, (H, W), 1, (s.kh - 1 - ph, s.kw - 1 - pw),
                           transposed=True, groups=groups, node=n))
        lw.set(n, contiguous(out.id, typ.shape, typ.dtype))
        return
    if path == "grouped accumulation":
        # each group's few filters: dx[n, g*Cg + c, window (i, j) of (ho, wo)] += dy[n, g*Og + o, ho, wo]
        # * w[g*Og + o, c, i, j] over [N, groups, Cg, Og, kh, kw, Ho, Wo], without columns
        cg = s.C // groups
        dy = lw.use(g).remap(lambda a: Affine(a.offset, (a.coeffs[0], a.coeffs[1] * s.group_filters, 0, a.coeffs[1], 0, 0,
                                                          a.coeffs[2], a.coeffs[3])))
        wm = lw.materialize(w)
        wt = wm.remap(lambda a: Affine(a.offset, (0, a.coeffs[0] * s.group_filters, a.coeffs[1], a.coeffs[0], a.coeffs[2],
                                                   a.coeffs[3], 0, 0)))
        at = Affine(-ph * sh - pw * sw, (sn, cg * sc, sc, 0, dh * sh, dw * sw, st_h * sh, st_w * sw))
        guards = ((Affine(-ph, (0, 0, 0, 0, dh, 0, st_h, 0)), H), (Affine(-pw, (0, 0, 0, 0, 0, dw, 0, st_w)), W))
        lw.emit(AccumulateKernel((s.N, groups, cg, s.group_filters, s.kh, s.kw, s.Ho, s.Wo), out.id, at, guards,
                                 Op("mul", (dy, wt), "f32"), node=n))
        lw.set(n, contiguous(out.id, typ.shape, typ.dtype))
        return
    wm = lw.materialize(w)
    columns = s.N * s.pixels
    if path == "pointwise":
        # the columns are dx itself, stored [C, N, H, W]: dx (C x N*HW) = W^T (C x O) @ g as O x N*HW
        gt = lw.channels_first(g, n)
        lw.emit(GemmKernel(s.C, columns, s.O, 1, (wm.buffer, wm.at.offset, s.C, 0), (gt.buffer, gt.at.offset, columns, 0),
                           (out.id, 0, columns, 0), True, False, bf16=lw.bf16, node=n))
        lw.set(n, Load(out.id, Affine(0, (s.pixels, columns, W, 1)), typ.dtype))
        return
    if path == "direct":
        # g convolved with the filters flipped, their channels swapped: one pass, no columns
        gm = lw.materialize(g)
        lw.emit(ConvKernel(gm.buffer, wm.buffer, out.id, g.shape, w.shape, (H, W), 1, (s.kh - 1 - ph, s.kw - 1 - pw),
                           transposed=True, node=n))
        lw.set(n, contiguous(out.id, typ.shape, typ.dtype))
        return
    flipped = ConvShape(s.N, s.O, s.C, s.kh, s.kw, H, W, 1)
    flipped_padding = (dh * (s.kh - 1) - ph, dw * (s.kw - 1) - pw)
    flipped_attrs = {"stride": (1, 1), "padding": flipped_padding, "dilation": (dh, dw)}
    if (st_h, st_w) == (1, 1) and _winograd(lw, flipped, flipped_attrs):
        # a stride-1 convolution's input gradient (or a transposed convolution) is a
        # convolution of g with the filters flipped and their channels swapped
        _winograd_conv(lw, n, lw.materialize(g), g.shape, _flipped(wm, s.kh, s.kw), s.C, flipped_padding, (H, W),
                       out.id)
        lw.set(n, contiguous(out.id, typ.shape, typ.dtype))
        return
    if (st_h, st_w) == (1, 1) and min(flipped_padding) >= 0 and _windows_apply(lw, flipped):
        # a stride-1 convolution's input gradient is a convolution too, of g with the filters
        # flipped and their channels swapped (padding d·(k - 1) - p): a GEMM of g's windows, dx
        # stored [C, N, H, W], with neither col2im's columns nor its accumulation
        wf = lw.p.buffer("f32", numel(w.shape), "temp")
        shape = (s.C, s.O, s.kh, s.kw)
        lw.emit(MapKernel(shape, wf.id, Affine(0, row_major(shape)), _flipped(wm, s.kh, s.kw), node=n))
        taps, columns = s.O * s.kh * s.kw, s.N * H * W
        _columns_gemm(lw, n, g, flipped, flipped_attrs,
                      (s.C, columns, taps), (wf.id, 0, taps, 0), (out.id, 0, columns, 0), True, True)
        lw.set(n, Load(out.id, Affine(0, (H * W, columns, W, 1)), typ.dtype))
        return
    cols = lw.p.buffer("f32", s.N * s.taps * s.pixels, "temp")
    # the columns transposed, [C, kh, kw, N, Ho, Wo], in one GEMM over the batch: cols (CKK x N*HoWo)
    # = W^T (W is O x CKK) @ g as O x N*HoWo (channels first; a GEMM per example multiplied the whole
    # of W by a few columns each, at a small stage's 2 x 2 pixels), so that col2im's innermost loop
    # walks Wo, along the rows of both
    gt = lw.channels_first(g, n)
    lw.emit(GemmKernel(s.taps, columns, s.O, 1, (wm.buffer, wm.at.offset, s.taps, 0), (gt.buffer, gt.at.offset, columns, 0),
                       (cols.id, 0, columns, 0), True, False, bf16=lw.bf16, node=n))
    at = Affine(-ph * sh - pw * sw, (sn, sc, dh * sh, dw * sw, st_h * sh, st_w * sw))
    guards = ((Affine(-ph, (0, 0, dh, 0, st_h, 0)), H), (Affine(-pw, (0, 0, 0, dw, 0, st_w)), W))
    shape = (s.N, s.C, s.kh, s.kw, s.Ho, s.Wo)
    per_channel = s.kh * s.kw * columns             # cols' stride along C
    lw.emit(AccumulateKernel(shape, out.id, at, guards,
                             Load(cols.id, Affine(0, (s.pixels, per_channel, s.kw * columns, columns, s.Wo, 1)), "f32"), node=n))
    lw.set(n, contiguous(out.id, typ.shape, typ.dtype))
