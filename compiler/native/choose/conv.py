"""How a conv2d, its input gradient and its weight gradient are computed: an ordered list of
implementations for each (`CONV2D`, `CONV2D_INPUT_GRAD`, `CONV2D_WEIGHT_GRAD`), the first
that applies chosen (`chosen`), each threshold beside the entries that read it. One list
serves float32 and bf16: where an implementation computes in float32 only (Winograd's),
its test says so. The values a train step's pointwise
convolutions read channels first are stored so (`stored_channels_first`)."""

from __future__ import annotations

from dataclasses import dataclass

from dlc.compiler.ir.graph import Tensor
from dlc.compiler.native import FEW_COLUMNS, TILE_CHANNELS
from dlc.compiler.native.choose import Implementation, first
from dlc.compiler.native.kernels.conv import ConvShape, conv_shape, input_grad_as_conv
from dlc.compiler.native.kernels.winograd.transforms import WINDOW, tiles


@dataclass(frozen=True)
class Conv:
    """A conv2d or one of its gradients as its list reads it: `op`, its shape `s` (the
    forward convolution's: x [N, C, H, W] by w [O, C / groups, kh, kw] into y [N, O, Ho, Wo]),
    `x_shape` (x's, the input gradient's output), `x` (the image operand of a conv2d or a
    weight gradient, whose readers the choice looks at; None for an input gradient), its
    attributes, the graph it is in, and whether the program multiplies in bf16."""

    graph: object
    op: str
    s: ConvShape
    x_shape: tuple
    x: Tensor | None
    attrs: dict
    bf16: bool

    @staticmethod
    def of(graph, op: str, ins: tuple, out_shape: tuple, attrs: dict, bf16: bool) -> "Conv":
        """The convolution node of `op` reading operands `ins` (Tensors) into `out_shape`."""
        a, b = ins
        s = conv_shape(op, (a.shape, b.shape), out_shape, attrs["groups"])
        x_shape = out_shape if op == "conv2d_input_grad" else a.shape
        return Conv(graph, op, s, tuple(x_shape), None if op == "conv2d_input_grad" else a, attrs, bf16)

    @staticmethod
    def node(graph, n: int, bf16: bool) -> "Conv":
        return Conv.of(graph, graph.op(n), tuple(graph.inputs(n)), graph.types(n)[0].shape, graph.attrs(n), bf16)


def chosen(c: Conv) -> Implementation:
    """The implementation that computes convolution c: the first of its list that applies."""
    return first(LISTS[c.op], c)


PLANE_FLOATS = 64  # an image plane's floats up to which im2col's columns are shuffles of it (kernels/im2col)


def im2col_by_planes(x_shape: tuple, plane_strides: tuple, dtype: str) -> bool:
    """Whether im2col's columns of x [N, C, H, W] are PlanesIm2colKernel's, each plane one
    vector: a float32 image whose planes are H x W contiguous (`plane_strides`, of h and w:
    (W, 1)), of sizes known and at most PLANE_FLOATS floats. Else a map over the windows."""
    C, H, W = x_shape[1:]
    known = all(isinstance(d, int) for d in (C, H, W))
    return dtype == "f32" and known and H * W <= PLANE_FLOATS and tuple(plane_strides) == (W, 1)


# ---- what several lists read -----------------------------------------------------------------------
DIRECT_TAPS = 256  # C * kh * kw up to which a convolution is direct (ConvKernel), not im2col + GEMM


def _pointwise(kh, kw, attrs) -> bool:
    """Whether a convolution is a matrix product as its input lies: 1 x 1, stride 1, no
    padding, one group, so y[n] (O x H·W) = W (O x C) @ x[n] (C x H·W), without columns."""
    return (kh, kw) == (1, 1) and attrs["stride"] == (1, 1) and attrs["padding"] == (0, 0) and attrs["groups"] == 1


def _direct(taps, kw, attrs) -> bool:
    """Whether a convolution is a ConvKernel: few taps per output (C / groups · kh · kw),
    where im2col's buffer and a GEMM with so short a K cost more than the products, a row
    of taps that fits in registers, stride 1 or 2 along W (its rows are loaded as vectors,
    every other lane of two with stride 2), no dilation."""
    return (
        isinstance(taps, int)
        and taps <= DIRECT_TAPS
        and kw <= 8
        and attrs["stride"][1] in (1, 2)
        and attrs["dilation"] == (1, 1)
    )


def _windows_apply(c: Conv, s: ConvShape) -> bool:
    """Whether a convolution's GEMMs (the product and its weight gradient) of shape s may
    read their columns from the image (GemmKernel's `windows`) rather than from im2col's
    buffer: where an example has more than FEW_COLUMNS pixels (fewer are multiplied without
    packing, from the buffer as it lies), in float32 and bf16 alike (the bf16 routines round
    or pair the windows as they pack im2col's columns)."""
    return isinstance(s.pixels, int) and s.pixels > FEW_COLUMNS


def _from_the_image(c: Conv) -> bool:
    """Whether a convolution's product reads its columns from its image x: where they may
    (_windows_apply) and no weight gradient of x reads them from im2col's buffer (a
    "small filters" one's: the buffer is then written anyway, and shared)."""
    return _windows_apply(c, c.s) and not any(
        chosen(Conv.node(c.graph, v, c.bf16)).name == "small filters" for v in _weight_grads(c.graph, c.x)
    )


def _weight_grads(graph, x: Tensor) -> list:
    """The convolution weight gradients that read x as their x."""
    return [
        v
        for v in graph.nx.successors(x.node)
        if graph.op(v) == "conv2d_weight_grad" and graph.inputs(v)[0].key() == x.key()
    ]


WINOGRAD_CHANNELS = 32  # channels in and out from which a 3 x 3 stride-1 convolution is Winograd's (kernels/winograd)
WINOGRAD_TILES = 16  # an example's tiles from which it is (fewer: its GEMMs' columns are too few to hide U's reads)


def _winograd(c: Conv, s: ConvShape, attrs) -> bool:
    """Whether a convolution of shape s (the input gradient's, that of the convolution of g it
    is) is Winograd's F(2 x 2, 3 x 3) (kernels/winograd): 3 x 3, stride 1, no dilation, one
    group, padding up to 2 (so that its input gradient, padded 2 - p, is one too), at least
    WINOGRAD_CHANNELS channels in and out (fewer make GEMMs too short for the transforms'
    passes to pay), at least WINOGRAD_TILES tiles an example (at fewer, as ResNet-18's last
    two stages at 64 x 64 pixels, its products of U's 16 matrices, 16/9 of the filters'
    size, with few columns each are bound by reading U: a built library's batch-1
    prediction took 1.43 of onnxruntime's time against 1.04 with its GEMMs of windows),
    where its tiles' products are at most two thirds of the convolution's (a 3 x 3 image's
    4 tiles of 16 are more); in float32 only (a bf16 program rounds a convolution's own
    operands: compiler/native/bf16.py), its sizes but the batch known."""
    if (
        c.bf16
        or (s.kh, s.kw) != (3, 3)
        or attrs["stride"] != (1, 1)
        or attrs["dilation"] != (1, 1)
        or s.groups != 1
        or not 0 <= min(attrs["padding"]) <= max(attrs["padding"]) <= 2
        or not all(isinstance(d, int) for d in (s.C, s.O, s.Ho, s.Wo))
        or min(s.C, s.O) < WINOGRAD_CHANNELS
    ):
        return False
    th, tw = tiles((s.Ho, s.Wo))
    return th * tw >= WINOGRAD_TILES and 3 * WINDOW * WINDOW * th * tw <= 2 * 9 * s.Ho * s.Wo


# ---- conv2d ------------------------------------------------------------------------------------------
def _pointwise_over_the_batch(c: Conv) -> bool:
    """A pointwise convolution read channels first, one GEMM over the batch: in training,
    where its weight gradient reads that copy anyway; elsewhere where an example has few
    pixels, O ≥ 2·HW (the last stages'), so that a GEMM per example as x lies, reading all
    of W (O·C) for each example's HW columns, would move more than the copy (2·C·HW floats
    an example, read and written). Its gradients are over the batch whatever the pixels
    (their copies of x and g channels first are shared)."""
    return _pointwise(c.s.kh, c.s.kw, c.attrs) and (
        _weight_grad_reads(c.graph, c.x) or isinstance(c.s.pixels, int) and 2 * c.s.pixels <= c.s.O
    )


WINDOWS_FILTERS = 64  # filters from which a direct convolution is a GEMM when it can read the image's windows


def _many_filters(c: Conv) -> bool:
    """One group and many filters (WINDOWS_FILTERS): a GEMM's tiles filled."""
    return c.s.groups == 1 and c.s.O >= WINDOWS_FILTERS


def _bf16_gemm(c: Conv) -> bool:
    """Whether a convolution or gradient the direct kernel would compute is, in a bf16
    program, a GEMM in bf16 (the entries below: windows, im2col's columns, col2im): of many filters
    (_many_filters: ResNet's stem and its 1 x 1 stride-2 projections). The direct kernel
    multiplies float32 vectors, the bf16 GEMM bfloat16 pairs (AMX tiles, vdpbf16ps, BFDOT),
    and the product and weight gradient share one buffer of columns."""
    return c.bf16 and _many_filters(c)


def _direct_conv(c: Conv) -> bool:
    """A direct convolution (_direct), but where it has many filters (_many_filters) and can
    read its image's windows (_from_the_image), a GEMM of those, and in a bf16 program a GEMM
    of those or of im2col's columns (_bf16_gemm; the entries below) — the GEMM's tiles filled (batch 8,
    2 threads: ResNet's 7 x 7 stem on 3 channels, 64 filters, at 224 x 224 pixels 13 ms
    against 26 direct; 3 x 3 on 3 channels, 64 filters, at 64 x 64 1.4 against 3.1; on 16
    channels at 56 x 56 3.4 against 3.9; with 32 filters or fewer the direct kernel was as
    fast or faster). In float32 its weight gradient stays direct: as a GEMM of windows the
    latter took 5.4 ms against 3.4, the stem's 25 against 29–33."""
    return _direct(c.s.group_taps, c.s.kw, c.attrs) and not (_many_filters(c) and _from_the_image(c) or _bf16_gemm(c))


def _strided_pointwise(c: Conv) -> bool:
    """A 1 x 1 convolution strided (no padding, one group) of many filters (_many_filters)
    whose examples have at most FEW_COLUMNS output pixels each, too few for the GEMM of
    the image's windows (_windows_apply): the direct kernel's rows of a few pixels would
    fill a few lanes of its vectors (ResNet's projections at 64 x 64 pixels into 4 x 4 and
    2 x 2, 5-11 GFLOP/s). Its pixels, gathered channels first by a map (a quarter of x at
    stride 2), are the columns of one GEMM over the batch, whose filters a prediction packs
    once. In a program that does not train them (no weight gradient reads x: a
    prediction's): a train step's weight gradient of it is a GEMM of im2col's columns,
    which a GEMM of its product could share (not built: its product stays direct, and in
    bf16 the GEMM of those columns, _bf16_gemm)."""
    s = c.s
    return (
        (s.kh, s.kw) == (1, 1)
        and c.attrs["stride"] != (1, 1)
        and c.attrs["padding"] == (0, 0)
        and _many_filters(c)
        and isinstance(s.pixels, int)
        and s.pixels <= FEW_COLUMNS
        and not _weight_grads(c.graph, c.x)
    )


IMAGE_CHANNELS = 4  # input channels up to which a direct convolution into whole tiles of filters is by channels
SMALL_PLANE = 16  # outputs a channel up to which a depthwise convolution is by channels


def _by_channels(c: Conv) -> bool:
    """A direct convolution with output channels in its vectors' lanes
    (`ConvKernel.by_channels`) where its vectors of pixels would be few or short:
    - an image's few channels (IMAGE_CHANNELS: a network's stem) into filters in whole tiles
      (TILE_CHANNELS, vectors of any width), one group. The pixels' kernel loads each row of
      taps as vectors of pixels, every other one at stride 2, for a block of 6 filters at a
      time; a tile of 6 pixels times 16 filters broadcasts each input value from where it
      lies (MobileNetV2's stem, 3 x 3 on 3 channels into 32 at 224 x 224 pixels, batch 8, 2
      threads: 2.6 ms against 5.6). With 64 filters the GEMM of windows stays as fast or
      faster (ResNet's stem: 18.9 ms against 22.4);
    - a depthwise one (one filter a channel; loops.py `depthwise_by_channels`): its channels
      in whole tiles and planes of at most SMALL_PLANE outputs, whose rows would fill few of
      a vector's lanes of pixels (MobileNetV2's last stages at 64 x 64 pixels: 4 x 4 and
      2 x 2). On 2 threads of a Zen 3 (AVX2), alternating: 576 channels of 4 x 4 at batch 8
      took 0.43 of the pixels' kernel's time; 960 of 7 x 7 0.96 (1.00 at batch 1), and 192 of
      8 x 8, whose rows fill a vector, 1.42."""
    s = c.s
    stem = s.groups == 1 and isinstance(s.C, int) and s.C <= IMAGE_CHANNELS and s.O % TILE_CHANNELS == 0
    sizes = (s.C, s.O, *c.x_shape[2:], s.Ho, s.Wo)
    depthwise = (
        s.groups == s.C == s.O
        and all(isinstance(d, int) for d in sizes)
        and s.C % TILE_CHANNELS == 0
        and s.Ho * s.Wo <= SMALL_PLANE
    )
    return _direct_conv(c) and (stem or depthwise)


GROUPED_TAPS = 64  # C / groups * kh * kw up to which a grouped convolution is a map over its outputs


def _grouped_taps(c: Conv) -> bool:
    return c.s.groups > 1 and isinstance(c.s.group_taps, int) and c.s.group_taps <= GROUPED_TAPS


EXAMPLE_PIXELS = 784  # an example's output pixels from which a prediction's GEMM of windows is one per example


def _per_example(c: Conv) -> bool:
    """A GEMM per example of its windows rather than one over the batch: in a program that
    does not train its filters (no weight gradient reads x: a prediction's), one group, the
    columns read from the image (_from_the_image), each example's at least EXAMPLE_PIXELS,
    so that each GEMM's columns fill its panels and the filters, read again for each
    example, are few beside them (ResNet-18 at 224 x 224 pixels: its stem and its
    convolutions into 28 x 28 pixels; a library's call 2-3 % faster at batch 1 and 8, 12 %
    at batch 8 on a noisier host, the two alternating on an AMD Zen 3; 196 pixels, the
    14 x 14 stage's too, measured even)."""
    s = c.s
    return (
        s.groups == 1
        and isinstance(s.pixels, int)
        and s.pixels >= EXAMPLE_PIXELS
        and not _weight_grads(c.graph, c.x)
        and _from_the_image(c)
    )


CONV2D = (
    Implementation(
        "pointwise over the batch",
        "gemm",
        _pointwise_over_the_batch,
        "a 1 x 1 convolution is a GEMM as x lies; over the batch where x is read channels first anyway "
        "(its weight gradient's copy) or an example's pixels are few beside the filters",
    ),
    Implementation(
        "pointwise per example",
        "gemm",
        lambda c: _pointwise(c.s.kh, c.s.kw, c.attrs),
        "a GEMM of an example's pixels as x lies, each wide enough, and no copy of x",
    ),
    Implementation(
        "pointwise of the strided pixels",
        "gemm",
        _strided_pointwise,
        "a prediction's strided 1 x 1 convolution of many filters into few pixels: a GEMM over the batch of "
        "its pixels gathered channels first, not the direct kernel's rows of a few lanes",
    ),
    Implementation(
        "direct by channels",
        "direct conv",
        _by_channels,
        "a stem's few channels or a depthwise convolution's small planes: vectors of filters, not of "
        "the few or short rows of pixels",
    ),
    Implementation(
        "direct", "direct conv", _direct_conv, "few taps an output: no im2col buffer, and no GEMM of so short a K"
    ),
    Implementation(
        "grouped taps",
        "map",
        _grouped_taps,
        "a small-grouped convolution the direct kernel cannot take (strided along W, dilated): a map "
        "summing each output's few taps, not a GEMM per group with a K of a few taps",
    ),
    Implementation(
        "winograd",
        "winograd",
        lambda c: _winograd(c, c.s, c.attrs),
        "a 3 x 3 stride-1 convolution of many channels: 16 products a 4 x 4 tile for 36 "
        "(kernels/winograd), float32 only",
    ),
    Implementation(
        "windows per example",
        "gemm",
        _per_example,
        "a prediction's many pixels an example: a GEMM of its windows each, y stored as it lies for the map after it",
    ),
    Implementation(
        "windows over the batch",
        "gemm",
        _from_the_image,
        "a GEMM per group packing its columns from the image itself, no im2col buffer",
    ),
    Implementation("im2col", "gemm", lambda c: True, "a GEMM per group over the batch of im2col's columns"),
)


# ---- conv2d_weight_grad ------------------------------------------------------------------------------
FEW_PIXELS_ROW = 8  # output rows narrower than which a grouped weight gradient is a reduction (ReduceKernel)


def _few_pixels(c: Conv) -> bool:
    s = c.s
    return s.groups > 1 and isinstance(s.Wo, int) and s.Wo < FEW_PIXELS_ROW and s.group_taps <= GROUPED_TAPS


def _direct_weight_grad(c: Conv) -> bool:
    """Direct (_direct) but a 1 x 1 one of one group (a strided projection), which would
    sum along an example's rows of few pixels, a few lanes of each vector, and in a bf16
    program one of many filters (_bf16_gemm), whose GEMM reads the product's columns."""
    s = c.s
    return _direct(s.group_taps, s.kw, c.attrs) and (s.groups > 1 or (s.kh, s.kw) != (1, 1)) and not _bf16_gemm(c)


SMALL_FILTER = 4096  # O * C * kh * kw up to which a weight gradient is a SmallGemmKernel


def _small_filters(c: Conv) -> bool:
    s = c.s
    return s.groups == 1 and isinstance(s.O * s.taps, int) and s.O * s.taps <= SMALL_FILTER


CONV2D_WEIGHT_GRAD = (
    Implementation(
        "pointwise",
        "gemm",
        lambda c: _pointwise(c.s.kh, c.s.kw, c.attrs),
        "dW = g @ x^T, every example's pixels the K, both read channels first",
    ),
    Implementation(
        "few pixels",
        "reduction",
        _few_pixels,
        "a grouped one's rows of few pixels would fill a few lanes of the direct kernel's vectors: "
        "a reduction over the batch and the pixels",
    ),
    Implementation(
        "direct",
        "direct conv",
        _direct_weight_grad,
        "few taps: the batch summed in parts by the direct kernel, no columns",
    ),
    Implementation(
        "small filters",
        "small_gemm",
        _small_filters,
        "few, small filters (a first layer): dW stays in registers while every example's columns stream by",
    ),
    Implementation(
        "windows",
        "gemm",
        lambda c: _windows_apply(c, c.s),
        "a GEMM per group over the batch, its columns packed from the image",
    ),
    Implementation("im2col", "gemm", lambda c: True, "a GEMM per group over the batch of im2col's columns"),
)


# ---- conv2d_input_grad -------------------------------------------------------------------------------
def _stride_1(c: Conv) -> bool:
    return c.attrs["stride"] == (1, 1)


def _winograd_of_g(c: Conv) -> bool:
    return _stride_1(c) and _winograd(c, *input_grad_as_conv(c.s, c.x_shape[2:], c.attrs))


def _windows_of_g(c: Conv) -> bool:
    flipped, attrs = input_grad_as_conv(c.s, c.x_shape[2:], c.attrs)
    return _stride_1(c) and min(attrs["padding"]) >= 0 and _windows_apply(c, flipped)


def _depthwise_stride_2(c: Conv) -> bool:
    """A depthwise convolution (a filter a channel) of stride 2, undilated, on images of a
    static size."""
    s = c.s
    depthwise = s.groups == s.C == s.O and s.groups > 1
    static = all(isinstance(d, int) for d in (s.C, *c.x_shape[2:], s.Ho, s.Wo))
    return depthwise and static and c.attrs["stride"] == (2, 2) and c.attrs["dilation"] == (1, 1)


CONV2D_INPUT_GRAD = (
    Implementation(
        "grouped direct",
        "direct conv",
        lambda c: c.s.groups > 1 and _stride_1(c) and _direct(c.s.group_filters * c.s.kh * c.s.kw, c.s.kw, c.attrs),
        "a stride-1 grouped convolution's input gradient is one too, of few taps: g convolved with the filters flipped",
    ),
    Implementation(
        "depthwise upsampling",
        "direct conv",
        _depthwise_stride_2,
        "a stride-2 depthwise convolution's input gradient: each output once, from the taps of its row's and "
        "column's parity, the even and odd columns in vectors of their own, interleaved as stored",
    ),
    Implementation(
        "grouped accumulation",
        "accumulation",
        lambda c: c.s.groups > 1,
        "each group's few filters: each product added into its window of dx, without columns",
    ),
    Implementation(
        "pointwise",
        "gemm",
        lambda c: _pointwise(c.s.kh, c.s.kw, c.attrs),
        "dx = W^T @ g, stored channels first: the columns are dx itself",
    ),
    Implementation(
        "direct",
        "direct conv",
        lambda c: _stride_1(c) and _direct(c.s.taps, c.s.kw, c.attrs) and not _bf16_gemm(c),
        "few taps: g convolved with the filters flipped, their channels swapped, in one pass",
    ),
    Implementation(
        "winograd", "winograd", _winograd_of_g, "the convolution of g it is (stride 1) is Winograd's, float32 only"
    ),
    Implementation(
        "windows",
        "gemm",
        _windows_of_g,
        "the convolution of g it is (stride 1) as a GEMM of g's windows: neither col2im's columns nor its accumulation",
    ),
    Implementation(
        "col2im", "gemm", lambda c: True, "one GEMM over the batch into columns, accumulated into dx (col2im)"
    ),
)

LISTS = {"conv2d": CONV2D, "conv2d_weight_grad": CONV2D_WEIGHT_GRAD, "conv2d_input_grad": CONV2D_INPUT_GRAD}


# ---- the values stored channels first ----------------------------------------------------------------
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
        return (
            not operands
            or _pointwise_node(graph, v)
            and set(operands) <= set(CHANNELS_FIRST_OPERANDS[graph.op(v)])
            and (graph.op(v) != "conv2d" or _weight_grad_reads(graph, t))
        )

    keys = set()
    for n in graph.nodes_with("conv2d_weight_grad"):
        for t in graph.inputs(n) if _pointwise_node(graph, n) else ():
            readers = graph.nx.successors(t.node)
            if not graph.outputs.readers(t.key()) and all(channels_first_only(v, t) for v in readers):
                keys.add(t.key())
    return keys
