"""Lowering: a graph becomes a kernel program (program.py) — buffers and a list of loop kernels.

Each primitive has a lowering rule, registered here by name (`register_lowering`), as
JAX registers its rules beside each primitive; an elementwise primitive without one
becomes an `Op` node, which code generation emits with the primitive's scalar rule
(scalar.py). View ops (broadcast, transpose, slice, reshape of contiguous data) only
change coefficients, so they cost nothing. Elementwise ops build expression trees; which
values are inlined into their readers' kernels and which are stored by a map kernel of
their own is decided before, by the fusion pass (fusion.py). Reductions fuse their
elementwise producers. Matmuls become GEMM calls. Lowered for `precision` "bf16", every
matmul and convolution kernel rounds its operands to bfloat16 and sums in float32
(docs/native.md, bfloat16 mixed precision).
"""
from __future__ import annotations

from typing import Callable

import numpy as np

from dlc.compiler.ir.dims import Dim, numel, symbols
from dlc.compiler.errors import DlcError
from dlc.compiler.ir.graph import DTYPES, FLOAT_DTYPES, Graph, Tensor, collector_paused
from dlc.compiler.ir.primitives import PRIMITIVES
from dlc.compiler.native.kernels import (AccumulateKernel, AttentionKernel, ConvKernel, FusedMapKernel, GemmKernel, HostCallKernel,
                                         MapKernel, MaxPoolGradKernel, PackKernel, ReduceKernel, ScanKernel,
                                         ScatterAddKernel, SmallGemmKernel)
from dlc.compiler.native import PRECISIONS
from dlc.compiler.native.fusion import Fusion
from dlc.compiler.native.memory import linearize
from dlc.compiler.native.program import (Affine, Buffer, Const, Gather, Guarded, Index, KernelProgram, Load, Op, Random,
                                         Size, buffer_of, contiguous, leaves, remap, row_major)

SMALL_FILTER = 4096     # O * C * kh * kw up to which a weight gradient is a SmallGemmKernel
DIRECT_TAPS = 256       # C * kh * kw up to which a convolution is direct (ConvKernel), not im2col + GEMM
SMALL_GEMM_PARTS = 16   # runs of the batch a SmallGemmKernel sums apart (the threads' shares)
SMALL_WINDOW = 16       # kh * kw up to which pooling is a map over its outputs (else a reduction)
GROUPED_TAPS = 64       # C / groups * kh * kw up to which a grouped convolution is a map over its outputs


class NotLowerable(DlcError):
    """The native backend does not compile this primitive yet (located at its node)."""


# (lowering, node, operands, attrs, type of output 0) -> None: sets the node's values
LOWERINGS: dict[str, Callable] = {}
# the float dtypes a rule computes in, where it is not every dtype the type rule accepts
LOWERED_FLOATS: dict[str, tuple] = {}


def register_lowering(*names: str, floats: tuple | None = None):
    """Decorator: the lowering rule of the primitives `names`; `floats`, the only float
    dtypes it computes in (the GEMM and the window kernels: f32)."""
    def register(rule):
        for name in names:
            LOWERINGS[name] = rule
            if floats is not None:
                LOWERED_FLOATS[name] = floats
        return rule
    return register


def lowering_rule(name: str) -> Callable | None:
    """A primitive's lowering rule: its own, else, elementwise, an Op node."""
    if name in LOWERINGS:
        return LOWERINGS[name]
    return _elementwise if PRIMITIVES[name].kind == "elementwise" else None


class Lowering:
    """The lowering of one graph (a scan's body has one of its own, sharing the program):
    each node's rule, in graph order, sets the expressions of its outputs and emits the
    kernels that compute what must be in memory, as the graph's fusion decided."""

    def __init__(self, graph: Graph, program: KernelProgram | None = None, args=(), depth: int = 0,
                 loop: tuple | None = None, fusion: Fusion | None = None, bf16: bool = False, steps: tuple = ()):
        self.g = graph
        self.bf16 = bf16              # matmul and convolution operands rounded to bfloat16
        self.fusion = fusion or Fusion(graph)
        self.p = program or KernelProgram()
        self.kernels = self.p.kernels if program is None else []
        self.args, self.depth = list(args), depth
        self.steps = steps            # the step numbers random draws see, one Dim per enclosing scan (primitives._random)
        self.loop = loop              # of a scan's body: (the lowering the scan is in, the scan's first buffer)
        self.packs: dict = {}         # GEMM operands packed before a scan in this graph -> their buffer
        self.slots: dict = {}         # of a scan's body: tensor key -> its step's place in a stacked output
        self.values: dict = {}        # tensor key -> expression over its own shape
        self.cols: dict = {}          # im2col buffers by (window expression, shape)
        self.bf16_copies: dict = {}   # tensor key -> its copy rounded to bfloat16 (`rounded`)

    def emit(self, kernel, into: list | None = None):
        kernel.nodes, kernel.origin = self.fusion.group(kernel.node), self.fusion.origin(kernel.node)
        (self.kernels if into is None else into).append(kernel)

    def run(self) -> KernelProgram:
        for n in self.g.order():
            self.node(n)
        taken = set()
        for name, t in self.g.outputs.items():
            load = self.materialize(t, kind="output")
            if load.buffer in taken:        # two outputs of one value: each gets its own buffer
                buf = self.p.buffer(t.dtype, numel(t.shape), "output")
                self.emit(MapKernel(t.shape, buf.id, Affine(0, row_major(t.shape)), load, node=t.node))
                load = contiguous(buf.id, t.shape, t.dtype)
            taken.add(load.buffer)
            self.p.outputs[name] = load.buffer
        self.p.kernels[:] = fuse_maps(self.p.kernels)
        keep_in_registers(self.p)
        syms = set(self.p.symbols)
        for b in self.p.buffers:
            if isinstance(b.size, Dim):
                syms |= b.size.symbols()
        self.p.symbols = sorted(syms)
        return self.p

    # -- values --
    def expr(self, t: Tensor):
        return self.values[t.key()]

    def materialize(self, t: Tensor, kind="temp") -> Load:
        """The value of t in memory, contiguous (a map kernel writes it if needed). An
        output gets a buffer of its own unless a kernel already wrote it."""
        e = self.expr(t)
        assert isinstance(e, (Load, Const, Index, Size)) or t.key() in self.fusion.stored, \
            f"the fusion inlines %{t.node} ({self.g.op(t.node)}) into its readers, yet it is stored"
        if isinstance(e, Load) and e.at == Affine(0, row_major(t.shape)):
            b = self.p.buffers[e.buffer]
            if kind == "temp" or b.kind in ("temp", "output"):
                if kind == "output":
                    b.kind = "output"
                return e
        buf = self.p.buffer(t.dtype, numel(t.shape), kind)
        self.emit(MapKernel(t.shape, buf.id, Affine(0, row_major(t.shape)), e, node=t.node))
        load = contiguous(buf.id, t.shape, t.dtype)
        self.values[t.key()] = load
        return load

    def rounded(self, t: Tensor, node: int) -> Load:
        """t in memory as an operand of float32 products; for bf16 products, rounded to
        bfloat16 by a map kernel first (once per tensor), so that a kernel multiplying in
        float32 (the direct convolution) computes what bf16 products summed in float32
        do, without rounding each operand at each of its taps."""
        if not self.bf16:
            return self.materialize(t)
        if t.key() not in self.bf16_copies:
            buf = self.p.buffer("f32", numel(t.shape), "temp")
            self.emit(MapKernel(t.shape, buf.id, Affine(0, row_major(t.shape)), Op("round_bf16", (self.use(t),), "f32"),
                                node=node))
            self.bf16_copies[t.key()] = contiguous(buf.id, t.shape, "f32")
        return self.bf16_copies[t.key()]

    def stored(self, t: Tensor) -> Load:
        """The value of t in memory, where a kernel wrote it or, written by a map kernel
        now, at its `place`: read as an expression, not necessarily contiguous."""
        e = self.expr(t)
        if isinstance(e, Load) and (e == self.slots.get(t.key()) or e.at == Affine(0, row_major(t.shape))):
            return e
        load = self.place(t)
        self.emit(MapKernel(t.shape, load.buffer, load.at, e, node=t.node))
        self.values[t.key()] = load
        return load

    def place(self, t: Tensor, rows: bool = False) -> Load:
        """Where a kernel writes the value t: at its step's place in a scan's stacked
        output when the body yields it (written there, it is not copied after), else in
        a fresh contiguous temporary. `rows`: the writer stores a matrix by rows with a
        leading dim (a GEMM's C), so only a rank-2 place with unit column stride does."""
        slot = self.slots.get(t.key())
        if slot is not None and (not rows or t.rank == 2 and slot.at.coeffs[1] == 1):
            return slot
        return contiguous(self.p.buffer(t.dtype, numel(t.shape), "temp").id, t.shape, t.dtype)

    def set(self, n: int, e, out: int = 0):
        self.values[(n, out)] = e

    def node(self, n: int):
        op = self.g.op(n)
        rule = lowering_rule(op)
        if rule is None:
            raise NotLowerable(f"the native backend does not compile {op} yet", self.g.g.nodes[n]["span"])
        ins = self.g.inputs(n)
        floats = LOWERED_FLOATS.get(op)
        unsupported = floats and {t.dtype for t in ins} & set(FLOAT_DTYPES) - set(floats)
        if unsupported:
            raise NotLowerable(f"the native backend computes {op} in {', '.join(floats)} only, not "
                               f"{', '.join(sorted(unsupported))} yet", self.g.g.nodes[n]["span"])
        rule(self, n, ins, self.g.attrs(n), self.g.types(n)[0])

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

    def packed_before_loop(self, operand: tuple, k, n, trans: bool, node: int) -> int | None:
        """The buffer holding a GEMM operand (of `matrix`) packed once before the scan this
        graph is the body of, when the operand is the same at every step — made before
        the loop, at an offset without the step (a recurrent weight) — else None. It is
        packed before the outermost scan it is the same in, once for all its GEMMs."""
        if self.loop is None:
            return None
        from dlc.compiler.native.gemm import packed_floats     # the GEMM's layout (no LLVM needed)
        outer, first = self.loop
        buffer, offset, ld = operand[:3]
        if buffer >= first or f"$t{self.depth - 1}" in symbols([offset]):
            return None
        hoisted = outer.packed_before_loop(operand, k, n, trans, node)
        if hoisted is not None:
            return hoisted
        key = (buffer, offset, ld, k, n, trans)
        if key not in outer.packs:
            out = self.p.buffer("f32", packed_floats(k, n, tiles=self.bf16), "temp")
            self.emit(PackKernel(k, n, (buffer, offset, ld), trans, out.id, self.bf16, node=node), into=outer.kernels)
            outer.packs[key] = out.id
        return outer.packs[key]

    # -- windows, as convolution and pooling read them ----------------------------------------
    def windows(self, x: Tensor, stride, padding, fill=0.0, order="nhwcij", dilation=(1, 1)):
        """x read through its windows over the iteration [N, Ho, Wo, C, kh, kw] ("nhwcij",
        the im2col layout) or [N, C, Ho, Wo, kh, kw] ("nchwij"); the taps `dilation` apart."""
        src = self.materialize(x)
        h, w = x.shape[2:]
        sn, sc, sh, sw = row_major(x.shape)
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

    def im2col(self, x: Tensor, window_shape, attrs, n) -> Buffer:
        """x's windows laid out [N, Ho, Wo, C, kh, kw]; written once and shared by the
        convolution and its weight gradient, which read the same windows."""
        shape = (x.shape[0],) + tuple(window_shape)
        e = self.windows(x, attrs["stride"], attrs["padding"], dilation=attrs["dilation"])
        if (e, shape) not in self.cols:
            cols = self.p.buffer("f32", numel(shape), "temp")
            self.emit(MapKernel(shape, cols.id, Affine(0, row_major(shape)), e, node=n))
            self.cols[e, shape] = cols
        return self.cols[e, shape]


# ---- the lowering rules ----------------------------------------------------------------------------
@register_lowering("arg")
def _arg(lw, n, ins, attrs, typ):
    lw.set(n, lw.args[attrs["index"]])


@register_lowering("input", "param")
def _given(lw, n, ins, attrs, typ):
    op = lw.g.op(n)
    buf = lw.p.buffer(typ.dtype, numel(typ.shape), op, attrs["name"])
    (lw.p.inputs if op == "input" else lw.p.params)[attrs["name"]] = buf.id
    lw.set(n, contiguous(buf.id, typ.shape, typ.dtype))


@register_lowering("constant")
def _constant(lw, n, ins, attrs, typ):
    value = np.asarray(attrs["value"])
    if value.ndim == 0:
        lw.set(n, Const(value.item(), typ.dtype))
    else:
        buf = lw.p.buffer(typ.dtype, value.size, "const", data=value.astype(DTYPES[typ.dtype]).ravel())
        lw.set(n, contiguous(buf.id, typ.shape, typ.dtype))


@register_lowering("iota")
def _iota(lw, n, ins, attrs, typ):
    coeffs = tuple(1 if r == attrs["axis"] else 0 for r in range(typ.rank))
    lw.set(n, Index(Affine(0, coeffs), typ.dtype))


@register_lowering("dim_size")
def _dim_size(lw, n, ins, attrs, typ):
    lw.set(n, Size(attrs["dim"]))


@register_lowering("random")
def _random(lw, n, ins, attrs, typ):
    if attrs["dist"] not in ("uniform", "normal"):
        raise NotLowerable(f"the native backend does not compile random {attrs['dist']} yet",
                           lw.g.g.nodes[n]["span"])
    key = lw.materialize(ins[0])
    lw.set(n, Random(key.buffer, attrs["stream"], Affine(0, row_major(typ.shape)), typ.dtype, lw.steps,
                     attrs["dist"]))


def _elementwise(lw, n, ins, attrs, typ):
    lw.set(n, Op(lw.g.op(n), tuple(lw.use(x) for x in ins), typ.dtype))


@register_lowering("stop_gradient")
def _stop_gradient(lw, n, ins, attrs, typ):
    lw.set(n, lw.use(ins[0]))


@register_lowering("broadcast")
def _broadcast(lw, n, ins, attrs, typ):
    x = ins[0]
    shape = attrs["shape"]
    lead = len(shape) - x.rank

    def bcast(a):
        coeffs = [0] * lead + [c if x.shape[i] != 1 or shape[lead + i] == 1 else 0
                               for i, c in enumerate(a.coeffs)]
        return Affine(a.offset, tuple(coeffs))
    lw.set(n, remap(lw.use(x), bcast))


@register_lowering("transpose")
def _transpose(lw, n, ins, attrs, typ):
    perm = attrs["perm"]
    lw.set(n, remap(lw.use(ins[0]), lambda a: Affine(a.offset, tuple(a.coeffs[p] for p in perm))))


@register_lowering("slice")
def _slice(lw, n, ins, attrs, typ):
    starts, steps = attrs["starts"], attrs["steps"]
    lw.set(n, remap(lw.use(ins[0]), lambda a: Affine(
        a.offset + sum((c * s for c, s in zip(a.coeffs, starts)), 0),
        tuple(c * st for c, st in zip(a.coeffs, steps)))))


@register_lowering("reshape")
def _reshape(lw, n, ins, attrs, typ):
    x = ins[0]
    e = lw.use(x)
    if not (isinstance(e, Load) and e.at.coeffs == row_major(x.shape)):
        e = lw.materialize(x)
    lw.set(n, Load(e.buffer, Affine(e.at.offset, row_major(typ.shape)), typ.dtype))


@register_lowering("reduce_sum", "reduce_max")
def _reduce(lw, n, ins, attrs, typ):
    x = ins[0]
    buf = lw.p.buffer(typ.dtype, numel(typ.shape), "temp")
    lw.emit(ReduceKernel(x.shape, attrs["axes"], lw.g.op(n)[7:], buf.id, lw.use(x), node=n))
    lw.set(n, contiguous(buf.id, typ.shape, typ.dtype))


@register_lowering("argmax")
def _argmax(lw, n, ins, attrs, typ):
    x = ins[0]
    buf = lw.p.buffer("i32", numel(typ.shape), "temp")
    lw.emit(ReduceKernel(x.shape, (attrs["axis"],), "argmax", buf.id, lw.use(x), node=n))
    lw.set(n, contiguous(buf.id, typ.shape, typ.dtype))


@register_lowering("concat")
def _concat(lw, n, ins, attrs, typ):
    out = lw.place(lw.g.outputs_of(n)[0])
    strides = out.at.coeffs
    start = 0
    for x in ins:
        at = Affine(out.at.offset + start * strides[attrs["axis"]], strides)
        lw.emit(MapKernel(x.shape, out.buffer, at, lw.use(x), node=n))
        start = start + x.shape[attrs["axis"]]
    lw.set(n, out)


@register_lowering("pad")
def _pad(lw, n, ins, attrs, typ):
    buf = lw.p.buffer(typ.dtype, numel(typ.shape), "temp")
    strides = row_major(typ.shape)
    lw.emit(MapKernel(typ.shape, buf.id, Affine(0, strides), Const(0, typ.dtype), node=n))
    offset = sum((lo * s for lo, s in zip(attrs["lo"], strides)), 0)
    inner = tuple(s * (i + 1) for s, i in zip(strides, attrs["interior"]))
    lw.emit(MapKernel(ins[0].shape, buf.id, Affine(offset, inner), lw.use(ins[0]), node=n))
    lw.set(n, contiguous(buf.id, typ.shape, typ.dtype))


@register_lowering("gather")
def _gather(lw, n, ins, attrs, typ):
    table, idx = ins
    t = lw.materialize(table)
    k = idx.rank
    row_coeffs = (0,) * k + row_major(table.shape)[1:]
    idx_e = remap(lw.use(idx), lambda a: Affine(a.offset, a.coeffs + (0,) * (typ.rank - k)))
    site = lw.p.fault("gather", table.shape[0], lw.g.g.nodes[n]["span"])
    lw.set(n, Gather(t.buffer, idx_e, Affine(0, row_coeffs), row_major(table.shape)[0], typ.dtype,
                     table.shape[0], site))


@register_lowering("scatter_add")
def _scatter_add(lw, n, ins, attrs, typ):
    idx, upd = ins
    u = lw.materialize(upd)
    buf = lw.p.buffer(typ.dtype, numel(typ.shape), "temp")
    site = lw.p.fault("gather", typ.shape[0], lw.g.g.nodes[n]["span"])
    lw.emit(ScatterAddKernel(idx.shape, numel(typ.shape[1:]), buf.id, lw.use(idx), u.buffer,
                             typ.shape[0], site, node=n))
    lw.set(n, contiguous(buf.id, typ.shape, typ.dtype))


@register_lowering("matmul", floats=("f32",))
def _matmul(lw, n, ins, attrs, typ):
    a, b = ins
    la, lb = lw.matrix(a), lw.matrix(b)
    ta, tb = attrs["ta"] != la[4], attrs["tb"] != lb[4]
    out = lw.place(lw.g.outputs_of(n)[0], rows=True)
    m, nn = typ.shape[-2], typ.shape[-1]
    k = a.shape[-2] if attrs["ta"] else a.shape[-1]
    batch = numel(typ.shape[:-2])
    packed = lw.packed_before_loop(lb, k, nn, tb, n) if lb[3] == 0 or batch == 1 else None
    c = (out.buffer, out.at.offset, out.at.coeffs[-2] if typ.rank >= 2 else nn, m * nn)
    lw.emit(GemmKernel(m, nn, k, batch, la[:4], lb[:4], c, ta, tb, packed, lw.bf16, node=n))
    lw.set(n, out)


@register_lowering("attention", "attention_grad", floats=("f32",))
def _attention(lw, n, ins, attrs, typ):
    """One kernel over the (batch, head) matrices, each read and written in place: a
    head's columns of [B, T, heads, d] are strided rows, not a transposed copy. The
    mask, an expression over the scores' index, is computed where each score is
    (docs/native.md, "Attention")."""
    grad = lw.g.op(n) == "attention_grad"
    operands = ins[:6] if grad else ins[:3]
    mask = ins[len(operands)] if len(ins) > len(operands) else None
    q, k, v = ins[:3]
    batch = q.shape[:-2]
    d, dv = q.shape[-1], v.shape[-1]
    writes = []
    for j, t in enumerate(lw.g.types(n)):
        buf = lw.p.buffer(t.dtype, numel(t.shape), "temp").id
        load, operand = _rows_in_place(buf, t.shape) if t.rank == q.rank else _vector_rows(buf, t.shape)
        lw.set(n, load, out=j)
        writes.append(operand)
    scratch = lw.p.buffer("f32", numel(batch) * AttentionKernel.scratch_floats(d, dv), "temp")
    lw.emit(AttentionKernel(batch, q.shape[-2], k.shape[-2], d, dv, attrs["scale"],
                            lw.use(mask) if mask is not None else None,
                            tuple(_row_matrices(lw, t, t.rank < q.rank) for t in operands),
                            tuple(writes), scratch.id, mask is not None and mask.dtype == "bool", grad, node=n))


def _row_matrices(lw, t: Tensor, vector: bool) -> tuple:
    """(buffer, offset, batch coefficients, row stride) of an attention operand [..., T, d]
    whose rows are contiguous, in place when its view has them (q, k, v of a multi-head
    layer: transposed heads), else copied out contiguously; of a `vector` (the lse
    [..., T]), as matrices of one-element rows."""
    e = lw.use(t)
    if vector:
        e = e if isinstance(e, Load) else lw.materialize(t)
        return e.buffer, e.at.offset, e.at.coeffs[:-1], e.at.coeffs[-1]
    if not (isinstance(e, Load) and e.at.coeffs[-1] == 1 and e.at.coeffs[-2] != 0):
        e = lw.materialize(t)
    return e.buffer, e.at.offset, e.at.coeffs[:-2], e.at.coeffs[-2]


def _vector_rows(buf: int, shape) -> tuple:
    """An lse [..., T], contiguous, as matrices of one-element rows."""
    load = contiguous(buf, shape, "f32")
    return load, (buf, 0, load.at.coeffs[:-1], 1)


def _rows_in_place(buf: int, shape) -> tuple:
    """An output [..., heads, T, d] stored [..., T, heads, d]: the layout its reader, the
    layer's `reshape(transpose(o, 0, 2, 1, 3), B, T, D)`, takes without a copy. With one
    batch dim it is contiguous."""
    if len(shape) < 4:
        load = contiguous(buf, shape, "f32")
        return load, (buf, 0, load.at.coeffs[:-2], shape[-1])
    *outer, heads, rows, d = shape
    stored = row_major(tuple(outer) + (rows, heads, d))
    coeffs = stored[:len(outer)] + (d, heads * d, 1)
    return Load(buf, Affine(0, coeffs), "f32"), (buf, 0, coeffs[:-2], heads * d)


@register_lowering("replica_mean", floats=("f32",))
def _replica_mean(lw, n, ins, attrs, typ):
    """A copy of x, which the host then averages over the ranks in place."""
    buf = lw.p.buffer(typ.dtype, numel(typ.shape), "temp")
    lw.emit(MapKernel(typ.shape, buf.id, Affine(0, row_major(typ.shape)), lw.use(ins[0]), node=n))
    lw.emit(HostCallKernel(lw.p.host("replica_mean").id, buf.id, node=n))
    lw.set(n, contiguous(buf.id, typ.shape, typ.dtype))


@register_lowering("scan")
def _scan(lw, n, ins, attrs, typ):
    """A loop over the body's kernels."""
    body, length, nc = attrs["body"], attrs["length"], attrs["n_carry"]
    xs_axes, ys_axes = attrs["xs_axes"], attrs["ys_axes"]
    var = f"$t{lw.depth}"
    t = Dim.sym(var)
    extra = {var} | (length.symbols() if isinstance(length, Dim) else set())
    lw.p.symbols = sorted(set(lw.p.symbols) | extra)
    outs = lw.g.outputs_of(n)
    first = len(lw.p.buffers)       # buffers from here on may change from step to step
    # carries live in `current` buffers, set from their initial values before the loop
    current = []
    for x in ins[:nc]:
        buf = lw.p.buffer(x.dtype, numel(x.shape), "temp")
        lw.emit(MapKernel(x.shape, buf.id, Affine(0, row_major(x.shape)), lw.use(x), node=x.node))
        current.append(contiguous(buf.id, x.shape, x.dtype))
    args = list(current)
    for x, axis in zip(ins[nc:nc + len(xs_axes)], xs_axes):
        # step t of a sequence is a slice of its expression: a view of a buffer, or
        # (used only here) computed inside the loop, step by step — `xs @ W + b`
        # never goes through memory with its bias added
        args.append(remap(lw.use(x), lambda a, axis=axis: Affine(
            a.offset + a.coeffs[axis] * t, a.coeffs[:axis] + a.coeffs[axis + 1:])))
    args += [lw.use(x) for x in ins[nc + len(xs_axes):]]
    if attrs.get("segment_of"):     # a checkpointed scan's segment: its steps are the plain scan's (scan.py)
        k, front = attrs["segment_of"]
        steps = lw.steps[:-1] + (lw.steps[-1] * k + t - front,)
    else:
        steps = lw.steps + (t,)
    sub = Lowering(body, lw.p, args, lw.depth + 1, loop=(lw, first), fusion=lw.fusion.bodies[n], bf16=lw.bf16,
                   steps=steps)
    results = list(body.outputs.values())
    # each per-step output has a stacked buffer; a value the body computes into memory
    # is written at its place there (Lowering.place), any other is copied there at the end
    stacked, places = [], []
    carried = {y.key() for y in results[:nc]}
    for y, axis, out in zip(results[nc:], ys_axes, outs[nc:]):
        buf = lw.p.buffer(out.dtype, numel(out.shape), "temp")
        full = row_major(out.shape)
        places.append(Load(buf.id, Affine(t * full[axis], full[:axis] + full[axis + 1:]), out.dtype))
        stacked.append(contiguous(buf.id, out.shape, out.dtype))
        if y.key() not in sub.slots and y.key() not in carried:
            sub.slots[y.key()] = places[-1]
    for m in body.order():
        sub.node(m)
    # new carries are computed first (into fresh buffers: the body may still read the
    # current ones), then the per-step outputs not in place yet, reading the fresh
    # carries when they are the same values, then the copies
    fresh = [sub.materialize(y) for y in results[:nc]]
    for y, place in zip(results[nc:], places):
        if sub.expr(y) != place:
            lw.emit(MapKernel(y.shape, place.buffer, place.at, sub.expr(y), node=n), into=sub.kernels)
    for cur, new, y in zip(current, fresh, results[:nc]):
        lw.emit(MapKernel(y.shape, cur.buffer, cur.at, new, node=n), into=sub.kernels)
    lw.emit(ScanKernel(length, attrs["reverse"], var, fuse_maps(sub.kernels), node=n))
    for j, value in enumerate(current + stacked):
        lw.set(n, value, j)


# ---- windows: convolution (im2col + GEMM) and pooling --------------------------------------------
def _conv_dims(x: tuple, w: tuple, y: tuple, groups: int) -> tuple:
    """(N, C, O, kh, kw, Ho, Wo, C·kh·kw, Ho·Wo, Og, Cg·kh·kw) of x [N, C, H, W] convolved with
    w [O, C / groups, kh, kw] into y [N, O, Ho, Wo]: the GEMM shapes of a convolution and its
    gradients, a GEMM per group of Og = O / groups filters and Cg = C / groups channels."""
    (N, C), (O, _, kh, kw), (Ho, Wo) = x[:2], w, y[2:]
    return N, C, O, kh, kw, Ho, Wo, C * kh * kw, Ho * Wo, O // groups, C // groups * kh * kw


def _direct(taps, kw, attrs) -> bool:
    """Whether a convolution is a ConvKernel: few taps per output (C / groups · kh · kw),
    where im2col's buffer and a GEMM with so short a K cost more than the products, a row
    of taps that fits in registers, stride 1 or 2 along W (its rows are loaded as vectors,
    every other lane of two with stride 2), no dilation."""
    return isinstance(taps, int) and taps <= DIRECT_TAPS and kw <= 8 and attrs["stride"][1] in (1, 2) and \
        attrs["dilation"] == (1, 1)


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
                xa = remap(windows, lambda a: Affine(a.offset + a.coeffs[1] * c + a.coeffs[4] * i + a.coeffs[5] * j,
                                                     (a.coeffs[0], a.coeffs[1] * cg, 0, a.coeffs[2], a.coeffs[3])))
                wa = remap(wm, lambda a: Affine(a.offset + a.coeffs[1] * c + a.coeffs[2] * i + a.coeffs[3] * j,
                                                (0, a.coeffs[0] * og, a.coeffs[0], 0, 0)))
                products.append(Op("mul", (xa, wa), "f32"))
    return products


@register_lowering("conv2d", floats=("f32",))
def _conv2d(lw, n, ins, attrs, typ):
    x, w = ins
    groups = attrs["groups"]
    N, C, O, kh, kw, Ho, Wo, ckk, hw, og, cgkk = _conv_dims(x.shape, w.shape, typ.shape, groups)
    out = lw.p.buffer("f32", numel(typ.shape), "temp")
    wm = lw.materialize(w)
    if _pointwise(kh, kw, attrs):
        # the pointwise convolutions of depthwise-separable networks: a GEMM per example
        # (a direct conv's few taps per output would leave most of these products' C unused)
        xm = lw.materialize(x)
        lw.emit(GemmKernel(O, hw, C, N, (wm.buffer, wm.at.offset, C, 0), (xm.buffer, xm.at.offset, hw, C * hw),
                           (out.id, 0, hw, O * hw), False, False, bf16=lw.bf16, node=n))
        lw.set(n, contiguous(out.id, typ.shape, typ.dtype))
        return
    if _direct(cgkk, kw, attrs):
        # depthwise ones too (groups = C): each output channel's taps over its group's channels
        xm, wm = lw.rounded(x, n), lw.rounded(w, n)
        lw.emit(ConvKernel(xm.buffer, wm.buffer, out.id, x.shape, w.shape, (Ho, Wo), attrs["stride"][0],
                           attrs["padding"], groups=groups, stride_w=attrs["stride"][1], node=n))
        lw.set(n, contiguous(out.id, typ.shape, typ.dtype))
        return
    if groups > 1 and isinstance(cgkk, int) and cgkk <= GROUPED_TAPS and not lw.bf16:
        # depthwise and small groups strided along W or dilated: a map over the outputs
        # summing their taps (the loop over Wo vectorizes), where a GEMM per group would
        # multiply with a K of a few taps (in bf16 the GEMM below, which rounds its operands)
        total, *rest = _group_taps(lw, x, w, attrs)
        for v in rest:
            total = Op("add", (total, v), "f32")
        shape = (N, groups, og, Ho, Wo)
        lw.emit(MapKernel(shape, out.id, Affine(0, row_major(shape)), total, node=n))
        lw.set(n, contiguous(out.id, typ.shape, typ.dtype))
        return
    cols = lw.im2col(x, (Ho, Wo, C, kh, kw), attrs, n)
    # one GEMM over the batch per group, y stored [O, N, Ho, Wo]: y_g (Og x N*HoWo) = W_g (Og x Cg*kh*kw)
    # @ cols_g^T, cols_g the group's columns of cols (as N GEMMs of HoWo columns each, a first
    # layer's 6 x 784 products ran at a third the speed)
    lw.emit(GemmKernel(og, N * hw, cgkk, groups, (wm.buffer, wm.at.offset, cgkk, og * cgkk), (cols.id, 0, ckk, cgkk),
                       (out.id, 0, N * hw, og * N * hw), False, True, bf16=lw.bf16, node=n))
    lw.set(n, Load(out.id, Affine(0, (hw, N * hw, Wo, 1)), typ.dtype))

@register_lowering("conv2d_weight_grad", floats=("f32",))
def _conv2d_weight_grad(lw, n, ins, attrs, typ):
    x, g = ins
    groups = attrs["groups"]
    N, C, O, kh, kw, Ho, Wo, ckk, hw, og, cgkk = _conv_dims(x.shape, typ.shape, g.shape, groups)
    out = lw.p.buffer("f32", numel(typ.shape), "temp")
    if _direct(cgkk, kw, attrs):
        xm, gm = lw.rounded(x, n), lw.rounded(g, n)
        partial = lw.p.buffer("f32", SMALL_GEMM_PARTS * O * cgkk, "temp")
        lw.emit(ConvKernel(xm.buffer, None, out.id, x.shape, typ.shape, (Ho, Wo), attrs["stride"][0], attrs["padding"],
                           gm.buffer, partial.id, SMALL_GEMM_PARTS, groups=groups,
                           stride_w=attrs["stride"][1], node=n))
        lw.set(n, contiguous(out.id, typ.shape, typ.dtype))
        return
    cols = lw.im2col(x, (Ho, Wo, C, kh, kw), attrs, n)
    if groups == 1 and isinstance(O * ckk, int) and O * ckk <= SMALL_FILTER:
        # few, small filters (a first layer): dW stays in registers while every
        # example's g[n] (O x HoWo) @ cols[n] (HoWo x CKK) streams by
        gm = lw.materialize(g)
        partial = lw.p.buffer("f32", SMALL_GEMM_PARTS * O * ckk, "temp")
        lw.emit(SmallGemmKernel(O, ckk, hw, N, (gm.buffer, gm.at.offset, hw, O * hw),
                                (cols.id, 0, ckk, hw * ckk), (out.id, 0, ckk), partial.id, SMALL_GEMM_PARTS,
                                bf16=lw.bf16, node=n))
    else:
        # g as [O, N*HoWo]: dW_g (Og x Cg*kh*kw) = g2_g @ cols_g (N*HoWo x Cg*kh*kw), one GEMM per group
        g2 = lw.p.buffer("f32", O * N * hw, "temp")
        swap = lambda a: Affine(a.offset, (a.coeffs[1], a.coeffs[0], a.coeffs[2], a.coeffs[3]))
        lw.emit(MapKernel((O, N, Ho, Wo), g2.id, Affine(0, row_major((O, N, Ho, Wo))),
                            remap(lw.use(g), swap), node=n))
        lw.emit(GemmKernel(og, cgkk, N * hw, groups, (g2.id, 0, N * hw, og * N * hw), (cols.id, 0, ckk, cgkk),
                           (out.id, 0, cgkk, og * cgkk), False, False, bf16=lw.bf16, node=n))
    lw.set(n, contiguous(out.id, typ.shape, typ.dtype))

@register_lowering("conv2d_input_grad", floats=("f32",))
def _conv2d_input_grad(lw, n, ins, attrs, typ):
    g, w = ins
    groups = attrs["groups"]
    N, C, O, kh, kw, Ho, Wo, ckk, hw, og, cgkk = _conv_dims(typ.shape, w.shape, g.shape, groups)
    H, W = typ.shape[2:]
    (st_h, st_w), (ph, pw), (dh, dw) = attrs["stride"], attrs["padding"], attrs["dilation"]
    sn, sc, sh, sw = row_major(typ.shape)
    out = lw.p.buffer("f32", numel(typ.shape), "temp")
    if groups > 1 and _direct(og * kh * kw, kw, attrs) and (st_h, st_w) == (1, 1):
        # a stride-1 grouped convolution's input gradient is one too: g convolved with the
        # filters flipped, each input channel summing over its group's outputs
        gm, wm = lw.rounded(g, n), lw.rounded(w, n)
        lw.emit(ConvKernel(gm.buffer, wm.buffer, out.id, g.shape, w.shape, (H, W), 1, (kh - 1 - ph, kw - 1 - pw),
                           transposed=True, groups=groups, node=n))
        lw.set(n, contiguous(out.id, typ.shape, typ.dtype))
        return
    if groups > 1:
        if lw.bf16:
            raise NotLowerable("the native backend does not compile the input gradient of a grouped convolution in "
                               "bf16 yet", lw.g.g.nodes[n]["span"])
        # each group's few filters: dx[n, g*Cg + c, window (i, j) of (ho, wo)] += dy[n, g*Og + o, ho, wo]
        # * w[g*Og + o, c, i, j] over [N, groups, Cg, Og, kh, kw, Ho, Wo], without columns
        cg = C // groups
        dy = remap(lw.use(g), lambda a: Affine(a.offset, (a.coeffs[0], a.coeffs[1] * og, 0, a.coeffs[1], 0, 0,
                                                          a.coeffs[2], a.coeffs[3])))
        wm = lw.materialize(w)
        wt = remap(wm, lambda a: Affine(a.offset, (0, a.coeffs[0] * og, a.coeffs[1], a.coeffs[0], a.coeffs[2],
                                                   a.coeffs[3], 0, 0)))
        at = Affine(-ph * sh - pw * sw, (sn, cg * sc, sc, 0, dh * sh, dw * sw, st_h * sh, st_w * sw))
        guards = ((Affine(-ph, (0, 0, 0, 0, dh, 0, st_h, 0)), H), (Affine(-pw, (0, 0, 0, 0, 0, dw, 0, st_w)), W))
        lw.emit(AccumulateKernel((N, groups, cg, og, kh, kw, Ho, Wo), out.id, at, guards,
                                 Op("mul", (dy, wt), "f32"), node=n))
        lw.set(n, contiguous(out.id, typ.shape, typ.dtype))
        return
    gm, wm = lw.materialize(g), lw.materialize(w)
    if _pointwise(kh, kw, attrs):
        # dx[n] (C x H·W) = W^T (C x O) @ g[n] (O x H·W): the columns are dx itself
        lw.emit(GemmKernel(C, hw, O, N, (wm.buffer, wm.at.offset, C, 0), (gm.buffer, gm.at.offset, hw, O * hw),
                           (out.id, 0, hw, C * hw), True, False, bf16=lw.bf16, node=n))
        lw.set(n, contiguous(out.id, typ.shape, typ.dtype))
        return
    if _direct(ckk, kw, attrs) and (st_h, st_w) == (1, 1):
        # g convolved with the filters flipped, their channels swapped: one pass, no columns
        gr, wr = lw.rounded(g, n), lw.rounded(w, n)
        lw.emit(ConvKernel(gr.buffer, wr.buffer, out.id, g.shape, w.shape, (H, W), 1, (kh - 1 - ph, kw - 1 - pw),
                           transposed=True, node=n))
        lw.set(n, contiguous(out.id, typ.shape, typ.dtype))
        return
    cols = lw.p.buffer("f32", N * ckk * hw, "temp")
    # the columns transposed, [N, C, kh, kw, Ho, Wo]: cols[n] (CKK x HoWo) = W^T (W is O x CKK) @ g[n]
    # (O x HoWo), so that col2im's innermost loop walks Wo, along the rows of both
    lw.emit(GemmKernel(ckk, hw, O, N, (wm.buffer, wm.at.offset, ckk, 0), (gm.buffer, gm.at.offset, hw, O * hw),
                       (cols.id, 0, hw, ckk * hw), True, False, bf16=lw.bf16, node=n))
    at = Affine(-ph * sh - pw * sw, (sn, sc, dh * sh, dw * sw, st_h * sh, st_w * sw))
    guards = ((Affine(-ph, (0, 0, dh, 0, st_h, 0)), H), (Affine(-pw, (0, 0, 0, dw, 0, st_w)), W))
    shape = (N, C, kh, kw, Ho, Wo)
    lw.emit(AccumulateKernel(shape, out.id, at, guards, contiguous(cols.id, shape, "f32"), node=n))
    lw.set(n, contiguous(out.id, typ.shape, typ.dtype))

@register_lowering("maxpool2d", floats=("f32",))
def _maxpool2d(lw, n, ins, attrs, typ):
    _pool(lw, n, ins, attrs, typ, "max")

@register_lowering("avgpool2d", floats=("f32",))
def _avgpool2d(lw, n, ins, attrs, typ):
    _pool(lw, n, ins, attrs, typ, "sum")

def _pool(lw, n, ins, attrs, typ, op):
    x = ins[0]
    N, C, Ho, Wo = typ.shape
    kh, kw = attrs["kernel"]
    fill = -np.inf if op == "max" else 0.0
    e = lw.windows(x, attrs["stride"], attrs["padding"], fill, order="nchwij")
    if op == "sum":
        e = Op("mul", (e, Const(1.0 / (kh * kw), "f32")), "f32")
    out = lw.p.buffer("f32", numel(typ.shape), "temp")
    if kh * kw <= SMALL_WINDOW:
        # a map over the outputs folding the window's loads: the loop over Wo vectorizes
        # (strided loads) and runs on the map's team, where a reduction's 2x2 inner loop did not
        at = _taps(e, kh, kw)
        total = at[0]
        for v in at[1:]:
            total = Op("maximum" if op == "max" else "add", (total, v), "f32")
        lw.emit(MapKernel(typ.shape, out.id, Affine(0, row_major(typ.shape)), total, node=n))
    else:
        lw.emit(ReduceKernel((N, C, Ho, Wo, kh, kw), (4, 5), op, out.id, e, node=n))
    lw.set(n, contiguous(out.id, typ.shape, typ.dtype))

def _taps(windows, kh, kw) -> list:
    """The window's kh * kw taps, each an expression over the outputs [N, C, Ho, Wo]."""
    return [remap(windows, lambda a, i=i, j=j: Affine(a.offset + a.coeffs[4] * i + a.coeffs[5] * j, a.coeffs[:4]))
            for i in range(kh) for j in range(kw)]

@register_lowering("maxpool2d_gather", floats=("f32",))
def _maxpool2d_gather(lw, n, ins, attrs, typ):
    """A map over the outputs: a running maximum of x's taps carries y's tap along (a
    later tap wins only when greater: the first maximum, as maxpool2d_grad)."""
    (x, y), (kh, kw) = ins, attrs["kernel"]
    xs = _taps(lw.windows(x, attrs["stride"], attrs["padding"], -np.inf, order="nchwij"), kh, kw)
    ys = _taps(lw.windows(y, attrs["stride"], attrs["padding"], 0.0, order="nchwij"), kh, kw)
    best, picked = xs[0], ys[0]
    for xv, yv in zip(xs[1:], ys[1:]):
        picked = Op("select", (Op("gt", (xv, best), "bool"), yv, picked), "f32")
        best = Op("maximum", (best, xv), "f32")
    out = lw.p.buffer("f32", numel(typ.shape), "temp")
    lw.emit(MapKernel(typ.shape, out.id, Affine(0, row_major(typ.shape)), picked, node=n))
    lw.set(n, contiguous(out.id, typ.shape, typ.dtype))

@register_lowering("avgpool2d_grad", floats=("f32",))
def _avgpool2d_grad(lw, n, ins, attrs, typ):
    g = ins[0]
    N, C, H, W = typ.shape
    Ho, Wo = g.shape[2:]
    (kh, kw), (st_h, st_w), (ph, pw) = attrs["kernel"], attrs["stride"], attrs["padding"]
    sn, sc, sh, sw = row_major(typ.shape)
    at = Affine(-ph * sh - pw * sw, (sn, sc, st_h * sh, st_w * sw, sh, sw))
    guards = ((Affine(-ph, (0, 0, st_h, 0, 1, 0)), H), (Affine(-pw, (0, 0, 0, st_w, 0, 1)), W))
    share = remap(lw.use(g), lambda a: Affine(a.offset, a.coeffs + (0, 0)))
    share = Op("mul", (share, Const(1.0 / (kh * kw), "f32")), "f32")
    out = lw.p.buffer("f32", numel(typ.shape), "temp")
    lw.emit(AccumulateKernel((N, C, Ho, Wo, kh, kw), out.id, at, guards, share, node=n))
    lw.set(n, contiguous(out.id, typ.shape, typ.dtype))

@register_lowering("maxpool2d_grad", floats=("f32",))
def _maxpool2d_grad(lw, n, ins, attrs, typ):
    x, g = ins
    xm, gm = lw.materialize(x), lw.materialize(g)
    out = lw.p.buffer("f32", numel(typ.shape), "temp")
    lw.emit(MaxPoolGradKernel(xm.buffer, gm.buffer, out.id, typ.shape, g.shape[2:],
                                            attrs["kernel"], attrs["stride"], attrs["padding"], node=n))
    lw.set(n, contiguous(out.id, typ.shape, typ.dtype))


def _fusable(group: list, k: MapKernel) -> bool:
    """Whether k can join the group's loop: every access to a buffer the group (with k)
    writes is a plain load or store at one and the same index — or the buffer is
    written only by the pieces of one concat (disjoint parts) and read by none."""
    members = group + [k]
    writers: dict = {}
    for m in members:
        writers.setdefault(m.out, []).append(m)
    at: dict = {}
    for m in members:
        for x in leaves(m.expr):
            buf = buffer_of(x)
            if buf in writers and (not isinstance(x, Load) or at.setdefault(buf, x.at) != x.at):
                return False
    for buf, ms in writers.items():
        one_concat = buf not in at and len({m.node for m in ms}) == 1 and ms[0].origin[:1] and \
            ms[0].origin[0][0] == "concat"
        if not one_concat and len({m.out_at for m in ms} | ({at[buf]} if buf in at else set())) > 1:
            return False
    return True


def fuse_maps(kernels: list) -> list:
    """Consecutive map kernels over the same iteration space become one loop (an RNN
    step's gates, cell, saved values and carries: one pass instead of a dozen)."""
    out, group = [], []

    def close():
        if len(group) > 1:
            out.append(FusedMapKernel(group[0].shape, list(group), node=group[0].node,
                                      nodes=tuple(dict.fromkeys(v for m in group for v in m.nodes)),
                                      origin=tuple(dict.fromkeys(o for m in group for o in m.origin))))
        else:
            out.extend(group)
        group.clear()
    for k in kernels:
        space = k.map_space()
        if group and not (space is not None and space == group[0].shape and _fusable(group, k)):
            close()
        (group if space is not None else out).append(k)
    close()
    return out


def keep_in_registers(program: KernelProgram):
    """Mark the stores of fused maps that nothing reads: a temporary written by one member
    and read by no other kernel — only by later members of its loop, which take the value
    from a register (an LSTM step's cell and hidden state before their carry copies)."""
    fused, readers, writers = [], {}, {}
    for _, k, _ in linearize(program.kernels):
        parts = k.members()
        if len(parts) > 1:
            fused.append(k)
        for j, (reads, writes) in enumerate(parts):
            for bid in reads:
                readers.setdefault(bid, set()).add((id(k), j))
            for bid in writes:
                writers.setdefault(bid, set()).add((id(k), j))
    for k in fused:
        k.registers = frozenset(
            m.out for j, m in enumerate(k.maps)
            if program.buffers[m.out].kind == "temp" and writers[m.out] == {(id(k), j)}
            and all(f == id(k) and i > j for f, i in readers.get(m.out, ())))


@collector_paused()
def lower(graph: Graph, precision: str = "f32") -> KernelProgram:
    """The kernel program of `graph`, its matmuls and convolutions taking operands of
    `precision` (PRECISIONS)."""
    if precision not in PRECISIONS:
        raise ValueError(f"no precision '{precision}' ({', '.join(PRECISIONS)})")
    return Lowering(graph, bf16=precision == "bf16").run()
