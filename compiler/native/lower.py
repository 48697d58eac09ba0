"""Lowering: a graph becomes a kernel program (program.py) — buffers and a list of loop kernels.

`Lowering` walks the graph in order and calls each node's lowering rule (compiler/native/rules/:
the registry, and the rules of the families that emit no kernel of their own; each kernel
kind's rules are in its package, compiler/native/kernels/<kind>/). An elementwise
primitive without a rule becomes an `Op` node, which code generation emits with the
primitive's scalar rule (scalar.py). View ops (broadcast, transpose, slice, reshape of
contiguous data) only change coefficients, so they cost nothing. Elementwise ops build
expression trees; which values are inlined into their readers' kernels and which are
stored by a map kernel of their own is decided before, by the fusion pass (fusion.py),
which also joins map kernels over one space into one loop afterwards (horizontal fusion).
Lowered for `precision` "bf16", every GEMM kernel (of a matmul or a convolution) rounds its
operands to bfloat16 and sums in float32, and every other kernel multiplies in float32, as in
the float32 program (compiler/native/bf16.py; docs/native.md, bfloat16 mixed precision). Lowering never
loads LLVM: the kinds' loop code is imported by code generation alone
(tests/native/test_llvm_free.py).
"""

from __future__ import annotations

from dlc.compiler.ir.dims import Dim, numel
from dlc.compiler.ir.graph import FLOAT_DTYPES, PRIMITIVES, Graph, Pattern, Tensor, collector_paused
from dlc.compiler.native import PACK_WEIGHTS, PRECISIONS
from dlc.compiler.native.fusion import Fusion, epilogues, fuse_maps, fuse_sums, keep_in_registers
from dlc.compiler.native.choose.conv import im2col_by_planes, stored_channels_first
from dlc.compiler.native.choose.int8 import Int8Conv
from dlc.compiler.native.choose.int8 import chosen as int8_choice
from dlc.compiler.native.kernels.im2col import PlanesIm2colKernel
from dlc.compiler.native.kernels.int8 import Int8Weights
from dlc.compiler.native.kernels.map import MapKernel
from dlc.compiler.native.program import (
    Affine,
    Buffer,
    Const,
    Guarded,
    Index,
    KernelProgram,
    Load,
    Size,
    contiguous,
    row_major,
)
from dlc.compiler.native.program.registry import LOWERED_FLOATS, NotLowerable
from dlc.compiler.native.rules import load, lowering_rule
from dlc.compiler.passes.int8 import products
from dlc.compiler.passes.examples import examples_in_turn

POOLINGS = ("maxpool2d", "avgpool2d")  # their rules read an image's windows in place, laid out as it is


class Lowering:
    """The lowering of one graph (a scan's body has one of its own, sharing the program):
    each node's rule, in graph order, sets the expressions of its outputs and emits the
    kernels that compute what must be in memory, as the graph's fusion decided."""

    def __init__(
        self,
        graph: Graph,
        program: KernelProgram | None = None,
        args=(),
        depth: int = 0,
        loop: tuple | None = None,
        fusion: Fusion | None = None,
        bf16: bool = False,
        steps: tuple = (),
        pack_weights: str | None = None,
        int8: dict | None = None,
    ):
        self.graph = graph
        self.int8 = int8 or {}  # node -> Int8Weights of the integer products (kernels/int8)
        self.bf16 = bf16  # GEMMs' operands rounded to bfloat16 (compiler/native/bf16.py)
        self.pack_weights = pack_weights  # GEMMs' weights packed: PACK_WEIGHTS (kernels/gemm: packed_weight)
        self.weight_packs = None  # its WeightPacksKernel, once a GEMM takes a weight
        # an integer product's operand is computed by the map that quantizes it, but for a
        # convolution read by kernel rows, whose padded copy reads it stored (int8._quantized_padded)
        inlined = frozenset(n for n, w in self.int8.items() if not w.by_kernel_rows)
        self.fusion = fusion or Fusion(graph, quantized=inlined)
        self.p = program or KernelProgram()
        self.kernels = self.p.kernels if program is None else []
        self.args, self.depth = list(args), depth
        self.steps = steps  # the step numbers random draws see, one Dim per enclosing scan (primitives._random)
        self.loop = loop  # of a scan's body: (the lowering the scan is in, the scan's first buffer)
        self.packs: dict = {}  # GEMM operands packed before a scan in this graph -> their buffer
        self.slots: dict = {}  # of a scan's body: tensor key -> its step's place in a stacked output
        self.values: dict = {}  # tensor key -> expression over its own shape
        self.cols: dict = {}  # im2col buffers by (window expression, shape)
        self.channel_copies: dict = {}  # tensor key -> its copy channels first (`channels_first`)
        self.channels_first_keys = stored_channels_first(graph)  # values `place` lays out [C, N, ...]
        self.laid_out: dict = {}  # tensor key -> its place so laid out, once stored
        self.between: dict | None = None  # tensor key -> whether it lies between integer convolutions

    def emit(self, kernel, into: list | None = None):
        kernel.nodes, kernel.origin = self.fusion.group(kernel.node), self.fusion.origin(kernel.node)
        (self.kernels if into is None else into).append(kernel)

    def run(self) -> KernelProgram:
        for n in self.graph.order():
            self.node(n)
        taken = set()
        for name, t in self.graph.outputs.items():
            load = self.materialize(t, role="output")
            if load.buffer in taken:  # two outputs of one value: each gets its own buffer
                buf = self.p.buffer(t.dtype, numel(t.shape), "output")
                self.emit(MapKernel(t.shape, buf.id, Affine(0, row_major(t.shape)), load, node=t.node))
                load = contiguous(buf.id, t.shape, t.dtype)
            taken.add(load.buffer)
            self.p.outputs[name] = load.buffer
        self.p.kernels[:] = fuse_sums(fuse_maps(self.p.kernels))
        keep_in_registers(self.p)
        epilogues(self.p)
        syms = set(self.p.symbols)
        for b in self.p.buffers:
            if isinstance(b.size, Dim):
                syms |= b.size.symbols()
        self.p.symbols = sorted(syms)
        return self.p

    # -- values --
    def expr(self, t: Tensor):
        return self.values[t.key()]

    def materialize(self, t: Tensor, role="temp") -> Load:
        """The value of t in memory, contiguous (a map kernel writes it if needed). An
        output gets a buffer of its own unless a kernel already wrote it."""
        e = self.expr(t)
        assert isinstance(e, (Load, Const, Index, Size)) or t.key() in self.fusion.stored, (
            f"the fusion inlines %{t.node} ({self.graph.op(t.node)}) into its readers, yet it is stored"
        )
        if isinstance(e, Load) and e.at == Affine(0, row_major(t.shape)):
            b = self.p.buffers[e.buffer]
            if role == "temp" or b.role in ("temp", "output"):
                if role == "output":
                    b.role = "output"
                return e
        buf = self.p.buffer(t.dtype, numel(t.shape), role)
        self.emit(MapKernel(t.shape, buf.id, Affine(0, row_major(t.shape)), e, node=t.node))
        load = contiguous(buf.id, t.shape, t.dtype)
        self.values[t.key()] = load
        return load

    def stored(self, t: Tensor) -> Load:
        """The value of t in memory, where a kernel wrote it or, written by a map kernel
        now, at its `place`: read as an expression, not necessarily contiguous."""
        e = self.expr(t)
        if isinstance(e, Load) and (
            e in (self.slots.get(t.key()), self.laid_out.get(t.key())) or e.at == Affine(0, row_major(t.shape))
        ):
            return e
        load = self.place(t)
        self.emit(MapKernel(t.shape, load.buffer, load.at, e, node=t.node))
        self.values[t.key()] = load
        return load

    def channels_first(self, t: Tensor, node: int) -> Load:
        """t [N, C, ...] in memory as [C, N, ...], contiguous: a GEMM over the whole batch
        takes it as one C x N·(...) matrix. Read where it lies so (a convolution's output,
        kernels/conv), else copied by a map kernel, once per tensor (a convolution's two
        gradients share the copy of the output gradient)."""
        shape = (t.shape[1], t.shape[0], *t.shape[2:])
        e = self.use(t)
        if isinstance(e, Load) and first_two_swapped(e.at).coeffs == row_major(shape):
            return Load(e.buffer, first_two_swapped(e.at), e.dtype)
        if t.key() not in self.channel_copies:
            buf = self.p.buffer(t.dtype, numel(t.shape), "temp")
            self.emit(MapKernel(shape, buf.id, Affine(0, row_major(shape)), e.remap(first_two_swapped), node=node))
            self.channel_copies[t.key()] = contiguous(buf.id, shape, t.dtype)
        return self.channel_copies[t.key()]

    def place(self, t: Tensor, rows: bool = False) -> Load:
        """Where a kernel writes the value t: at its step's place in a scan's stacked
        output when the body yields it (written there, it is not copied after), else in
        a fresh temporary, contiguous or, for the values only pointwise convolutions read
        (`channels_first_keys`), channels first, or for some of an int8 program's images,
        channels last (`channels_last_place`). `rows`: the writer stores a matrix by rows with a
        leading dim (a GEMM's C), so only a rank-2 place with unit column stride does."""
        slot = self.slots.get(t.key())
        if slot is not None and (not rows or t.rank == 2 and slot.at.coeffs[1] == 1):
            return slot
        if slot is None and not rows and t.key() in self.channels_first_keys:
            # read by pointwise convolutions' GEMMs over the batch alone (choose/conv.py)
            buf = self.p.buffer(t.dtype, numel(t.shape), "temp")
            swapped = (t.shape[1], t.shape[0], *t.shape[2:])
            self.laid_out[t.key()] = Load(buf.id, first_two_swapped(Affine(0, row_major(swapped))), t.dtype)
            return self.laid_out[t.key()]
        last = None if slot is not None or rows else self.channels_last_place(t, self.values.get(t.key()))
        return last or contiguous(self.p.buffer(t.dtype, numel(t.shape), "temp").id, t.shape, t.dtype)

    def channels_last_place(self, t: Tensor, e) -> Load | None:
        """A fresh temporary for the image t, computed by expression e, laid out channels
        last ([N, H, W, C]) where `channels_last` says so; else None."""
        if not self.channels_last(t, e):
            return None
        _, c, h, w = t.shape
        buf = self.p.buffer(t.dtype, numel(t.shape), "temp")
        self.laid_out[t.key()] = Load(buf.id, Affine(0, (h * w * c, 1, w * c, c)), t.dtype)
        return self.laid_out[t.key()]

    def channels_last(self, t: Tensor, e) -> bool:
        """Whether an int8 program stores the image t [N, C, H, W], computed by expression e,
        channels last ([N, H, W, C]): where e reads its images channels last (an integer
        convolution's sums, or what is stored so) and only integer convolutions read t, or
        poolings on the way to them, which read any layout in place; so the maps between two
        integer convolutions (the epilogue, a pooling, the next one's quantization) load and
        store along the channels, contiguously, and nothing transposes (docs/native.md, int8)."""
        if not self.int8 or e is None or t.rank != 4 or t.shape[1] == 1 or not self._read_channels_last(t):
            return False
        pixels = []
        for leaf in e.leaves():
            if not isinstance(leaf, (Load, Guarded)):
                return False
            at = (leaf.load if isinstance(leaf, Guarded) else leaf).at
            if any(not (isinstance(c, int) and c == 0) for c in at.coeffs[2:]):
                pixels.append(at.coeffs)
        return bool(pixels) and all(c[1] == 1 and c[3] != 1 for c in pixels)

    def _read_channels_last(self, t: Tensor) -> bool:
        """Whether t is an image between integer convolutions: read only by them, by poolings
        or by elementwise maps of its shape whose results are so read too (a residual stream:
        a block's input, added to its last convolution's sums), and so on, or by reductions
        (a global average pooling at the end); each of those reads any layout in place."""
        if self.between is None:  # every value's, its readers' results before it
            self.between = {}
            for n in reversed(self.graph.order()):
                for r in self.graph.outputs_of(n):
                    self.between[r.key()] = not self.graph.outputs.readers(r.key()) and all(
                        self._reads_channels_last(v, k, r)
                        for _, v, k, out in self.graph.nx.out_edges(n, keys=True, data="out")
                        if out == r.out
                    )
        return self.between[t.key()]

    def _reads_channels_last(self, v: int, k: int, t: Tensor) -> bool:
        """Whether node v, reading t as its operand k, reads it as an image between integer
        convolutions (_read_channels_last: its result's known already)."""
        op = self.graph.op(v)
        pattern = PRIMITIVES[op].pattern
        if v in self.int8 and k == 0 or pattern is Pattern.REDUCTION:
            return True
        if op in POOLINGS or pattern is Pattern.ELEMENTWISE:
            (result,) = self.graph.outputs_of(v)
            return (op in POOLINGS or result.shape == t.shape) and self.between[result.key()]
        return False

    @staticmethod
    def fuse_maps(kernels: list) -> list:
        """The horizontal fusion of a list of kernels (fusion.fuse_maps), for a rule that
        makes one of its own: a scan's body (kernels/ is below fusion.py)."""
        return fuse_maps(kernels)

    def nested(self, body: Graph, args: list, first: int, fusion: Fusion, steps: tuple) -> "Lowering":
        """The lowering of a scan's body (kernels/scan), into this program: `first`, the
        scan's first buffer (those from there on may change from step to step)."""
        return Lowering(
            body, self.p, args, self.depth + 1, loop=(self, first), fusion=fusion, bf16=self.bf16, steps=steps
        )

    def set(self, n: int, e, out: int = 0):
        self.values[(n, out)] = e

    def node(self, n: int):
        op = self.graph.op(n)
        rule = lowering_rule(op, int8=n in self.int8)
        if rule is None:
            raise NotLowerable(f"the native backend does not compile {op} yet", self.graph.nx.nodes[n]["span"])
        ins = self.graph.inputs(n)
        floats = LOWERED_FLOATS.get(op)
        unsupported = floats and {t.dtype for t in ins} & set(FLOAT_DTYPES) - set(floats)
        if unsupported:
            raise NotLowerable(
                f"the native backend computes {op} in {', '.join(floats)} only, not "
                f"{', '.join(sorted(unsupported))} yet",
                self.graph.nx.nodes[n]["span"],
            )
        rule(self, n, ins, self.graph.attrs(n), self.graph.types(n)[0])

    def use(self, t: Tensor):
        """The expression for an operand: in memory where the fusion stores it, else
        inlined into the reader."""
        return self.stored(t) if t.key() in self.fusion.stored else self.expr(t)

    def matrix(self, t: Tensor) -> tuple:
        """(buffer, offset, leading dim, batch stride, transposed storage) of a matmul
        operand: any view whose rows or columns are contiguous and whose batch dims fold
        into one stride; anything else is first copied out contiguously."""
        e = self.use(t)
        for _ in range(2):
            if isinstance(e, Load):
                *batch, r, c = e.at.coeffs
                shape = t.shape[:-2]
                folds = all(batch[i] == batch[i + 1] * shape[i + 1] for i in range(len(batch) - 1))
                stride = batch[-1] if batch else 0
                if folds and c == 1 and r != 0:
                    return (e.buffer, e.at.offset, r, stride, False)
                if folds and r == 1 and c != 0:
                    return (e.buffer, e.at.offset, c, stride, True)
            e = self.materialize(t)
        raise AssertionError("a contiguous operand is always a matrix")

    # -- windows, as convolution and pooling read them ----------------------------------------
    def image(self, x: Tensor) -> Load:
        """The image x [N, C, H, W] in memory, as its windows read it: where it lies when it
        is laid out channels last, else contiguous."""
        e = self.expr(x)
        if self.channels_last(x, e):
            return e if isinstance(e, Load) else self.stored(x)
        return self.materialize(x)

    def windows(self, x: Tensor, stride, padding, fill=0.0, order="nhwcij", dilation=(1, 1)):
        """x read through its windows over the iteration [N, Ho, Wo, C, kh, kw] ("nhwcij",
        the im2col layout) or [N, C, Ho, Wo, kh, kw] ("nchwij"); the taps `dilation` apart;
        x where it lies when it is laid out channels last, else contiguous."""
        src = self.image(x)
        h, w = x.shape[2:]
        sn, sc, sh, sw = src.at.coeffs
        (st_h, st_w), (ph, pw), (dh, dw) = stride, padding, dilation
        if order == "nhwcij":
            coeffs = (sn, st_h * sh, st_w * sw, sc, dh * sh, dw * sw)
            row = (0, st_h, 0, 0, dh, 0)
            col = (0, 0, st_w, 0, 0, dw)
        else:
            coeffs = (sn, sc, st_h * sh, st_w * sw, dh * sh, dw * sw)
            row = (0, 0, st_h, 0, dh, 0)
            col = (0, 0, 0, st_w, 0, dw)
        offset = -ph * sh - pw * sw + src.at.offset
        load = Load(src.buffer, Affine(offset, coeffs), x.dtype)
        if not (ph or pw):
            return load
        guards = ((Affine(-ph, row), h), (Affine(-pw, col), w))
        return Guarded(load, guards, fill)

    def padded(self, x: Tensor, padding, fill=0.0):
        """x [N, C, H, W] read over the iteration [N, C, H + 2 ph, W + 2 pw], `fill` in its
        border: its windows of one pixel, the taps' axes dropped."""
        e = self.windows(x, (1, 1), padding, fill, order="nchwij")
        load = e.load if isinstance(e, Guarded) else e
        load = Load(load.buffer, Affine(load.at.offset, load.at.coeffs[:4]), load.dtype)
        if not isinstance(e, Guarded):
            return load
        return Guarded(load, tuple((Affine(a.offset, a.coeffs[:4]), size) for a, size in e.guards), fill)

    def im2col(self, x: Tensor, window_shape, attrs, n) -> Buffer:
        """x's windows laid out [N, Ho, Wo, C, kh, kw]; written once and shared by the
        convolution and its weight gradient, which read the same windows."""
        shape = (x.shape[0],) + tuple(window_shape)
        e = self.windows(x, attrs["stride"], attrs["padding"], dilation=attrs["dilation"])
        if (e, shape) not in self.cols:
            cols = self.p.buffer("f32", numel(shape), "temp")
            src = self.image(x)
            sn, sc, sh, sw = src.at.coeffs
            if im2col_by_planes(x.shape, (sh, sw), src.dtype):
                self.emit(
                    PlanesIm2colKernel(
                        src.buffer,
                        cols.id,
                        Affine(src.at.offset, (sn, sc)),
                        tuple(x.shape),
                        window_shape[:2],
                        window_shape[3:],
                        attrs["stride"],
                        attrs["padding"],
                        attrs["dilation"],
                        node=n,
                    )
                )
            else:
                self.emit(MapKernel(shape, cols.id, Affine(0, row_major(shape)), e, node=n))
            self.cols[e, shape] = cols
        return self.cols[e, shape]


def first_two_swapped(a: Affine) -> Affine:
    """An index map over [A, B, ...] as one over [B, A, ...]."""
    return Affine(a.offset, (a.coeffs[1], a.coeffs[0], *a.coeffs[2:]))


def integer_weights(graph: Graph, quantization: dict) -> dict:
    """node -> Int8Weights of each integer product of `graph` (compiler/passes/int8.py) that
    `quantization` (QuantizedProduct by product name) quantizes."""
    out = {}
    for p in products(graph):
        if p.weight not in quantization:
            continue
        if not p.integer:  # the graph passes made it another product
            raise NotLowerable(
                f"the native backend cannot compute this {p.op} in int8 as the quantization says: "
                f"after the graph passes {p.reason}",
                p.span,
            )
        attrs = graph.attrs(p.node)
        how = int8_choice(Int8Conv(p.weight_shape, attrs)).name if p.op == "conv2d" else "int8 matmul"
        out[p.node] = Int8Weights.of(p, quantization[p.weight], attrs.get("groups", 1), how)
    return out


@collector_paused()
def lower(
    graph: Graph,
    precision: str = "f32",
    pack_weights: str | None = None,
    int8: dict | None = None,
    forward: bool = False,
) -> KernelProgram:
    """The kernel program of `graph`, its matmuls and convolutions taking operands of
    `precision` (PRECISIONS). `pack_weights` (a prediction, whose weights change only
    between calls; PACK_WEIGHTS): its GEMMs' weights are packed by its first kernel, which
    packs only when they changed (kernels/gemm: WeightPacksKernel). `int8`: the
    quantization (QuantizedProduct by product name, docs/quantization.md) whose integer
    products become int8 kernels (kernels/int8), the rest of the graph float32. A
    prediction, or a `forward` pass alone (an evaluation), runs its first layers an example
    at a time (compiler/passes/examples.py), unless it has int8 products."""
    if precision not in PRECISIONS:
        raise ValueError(f"no precision '{precision}' ({', '.join(PRECISIONS)})")
    if pack_weights not in (None, *PACK_WEIGHTS):
        raise ValueError(f"no way of packing weights '{pack_weights}' ({', '.join(PACK_WEIGHTS)})")
    load()
    if (pack_weights or forward) and not int8:
        graph = examples_in_turn(graph)
    return Lowering(
        graph, bf16=precision == "bf16", pack_weights=pack_weights, int8=integer_weights(graph, int8) if int8 else None
    ).run()
