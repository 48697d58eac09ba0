"""Lowering: a graph becomes a kernel program — buffers and a list of loop kernels.

Values are expressions over an iteration index. Leaves are affine in the index: a load
from a buffer at offset + sum(coeff[r] * i[r]), the index itself (iota), or counter-based
random bits at a linear index. View ops (broadcast, transpose, slice, reshape of
contiguous data) only change coefficients, so they cost nothing. Elementwise ops build
expression trees; a value used once is inlined into its consumer (fusion), a value used
several times, or needed in memory (matmul operands, graph outputs), is materialized by
a map kernel. Reductions fuse their elementwise producers. Matmuls become GEMM calls.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from ..dims import Dim, numel
from ..errors import DlcError
from ..graph import DTYPES, Graph, Tensor

# ---- expressions -----------------------------------------------------------------------------


@dataclass(frozen=True)
class Affine:
    """offset + sum(coeffs[r] * i[r]) over the iteration index i."""
    offset: object
    coeffs: tuple

    def remap(self, offset_shift, coeffs):
        return Affine(self.offset + offset_shift, tuple(coeffs))


@dataclass(frozen=True)
class Load:
    buffer: int
    at: Affine
    dtype: str


@dataclass(frozen=True)
class Index:
    """The value of an affine function of the index (iota)."""
    at: Affine
    dtype: str


@dataclass(frozen=True)
class Random:
    """A draw of the counter-based generator at linear index `at`: uniform in (0, 1), or
    normal (Box-Muller on a second stream), as primitives._random."""
    key: int             # buffer holding (seed, step)
    stream: int
    at: Affine
    dtype: str
    steps: tuple = ()    # the step symbols of the enclosing scans, outermost first
    dist: str = "uniform"


@dataclass(frozen=True)
class Const:
    value: float
    dtype: str


@dataclass(frozen=True)
class Size:
    """A runtime dim as an i32 scalar."""
    dim: object
    dtype: str = "i32"


@dataclass(frozen=True)
class Op:
    name: str
    args: tuple
    dtype: str


@dataclass(frozen=True)
class Gather:
    """table[idx, rest]: rows picked by an integer expression; `rows` is the table's
    affine over the iteration's trailing (row) dims, `stride` the row stride. An index
    outside [0, count) reads 0 and reports fault `site` (Program.faults)."""
    table: int
    idx: object
    rows: Affine
    stride: object
    dtype: str
    count: object        # rows of the table
    site: int


@dataclass(frozen=True)
class Guarded:
    """A load that reads `fill` where an index falls outside the input (padding):
    each guard is (affine row index, size) and must satisfy 0 <= index < size."""
    load: Load
    guards: tuple
    fill: float


def remap(e, shift_fn):
    """Apply an index change to every affine leaf of an expression. shift_fn maps an
    Affine to a new Affine."""
    if isinstance(e, Load):
        return Load(e.buffer, shift_fn(e.at), e.dtype)
    if isinstance(e, Index):
        return Index(shift_fn(e.at), e.dtype)
    if isinstance(e, Random):
        return Random(e.key, e.stream, shift_fn(e.at), e.dtype, e.steps, e.dist)
    if isinstance(e, Gather):
        return Gather(e.table, remap(e.idx, shift_fn), shift_fn(e.rows), e.stride, e.dtype, e.count, e.site)
    if isinstance(e, Guarded):
        return Guarded(remap(e.load, shift_fn), tuple((shift_fn(a), n) for a, n in e.guards), e.fill)
    if isinstance(e, Op):
        return Op(e.name, tuple(remap(a, shift_fn) for a in e.args), e.dtype)
    return e


# ---- buffers and kernels ------------------------------------------------------------------------
@dataclass
class Buffer:
    id: int
    dtype: str
    size: object          # elements, a dim polynomial
    kind: str             # input, param, temp, output, const
    name: str = ""
    data: np.ndarray | None = None


@dataclass
class MapKernel:
    """out[i] = expr(i) for every i in shape; out is written contiguously at `out_at`."""
    shape: tuple
    out: int
    out_at: Affine
    expr: object
    node: int = -1
    origin: tuple = ()    # (op, span) of the graph nodes it computes, set by Lowering.emit


@dataclass
class FusedMapKernel:
    """Map kernels over one iteration space run as one loop: every iteration does each
    member's store in order. Legal when the members touch a buffer that one of them
    writes only at the index being written (see fuse_maps)."""
    shape: tuple
    maps: list
    node: int = -1
    origin: tuple = ()    # (op, span) of the graph nodes it computes, set by Lowering.emit


@dataclass
class ReduceKernel:
    """out[kept(i)] = op over the reduced axes of expr(i), for i in the input shape."""
    shape: tuple
    axes: tuple
    op: str               # sum, max, argmax
    out: int
    expr: object
    node: int = -1
    origin: tuple = ()    # (op, span) of the graph nodes it computes, set by Lowering.emit


@dataclass
class GemmKernel:
    """C[b] = op(A[b]) @ op(B[b]); A, B given by buffer, offset, leading dim, batch stride."""
    m: object
    n: object
    k: object
    batch: object
    a: tuple              # (buffer, offset, ld, batch stride)
    b: tuple
    c: tuple
    trans_a: bool
    trans_b: bool
    node: int = -1
    origin: tuple = ()    # (op, span) of the graph nodes it computes, set by Lowering.emit


@dataclass
class SmallGemmKernel:
    """C (m x n) = sum over the batch of A[b] (m x k) @ B[b] (k x n), all row-major. C is
    small enough to stay in vector registers while K and the batch stream through, so
    nothing is packed (a first convolution's weight gradient: 6 x 25, K = 784 per example)."""
    m: int
    n: int
    k: object
    batch: object
    a: tuple              # (buffer, offset, ld, batch stride)
    b: tuple
    c: tuple              # (buffer, offset, ld)
    node: int = -1
    origin: tuple = ()    # (op, span) of the graph nodes it computes, set by Lowering.emit


@dataclass
class ScatterAddKernel:
    """out = 0; then out[idx(i), r] += upd[flat(i), r] for every index i of idx_shape.
    An index outside [0, count) adds nothing and reports fault `site`."""
    idx_shape: tuple
    row: object
    out: int
    idx: object           # integer expression over idx_shape
    upd: int
    count: object         # rows of out
    site: int
    node: int = -1
    origin: tuple = ()    # (op, span) of the graph nodes it computes, set by Lowering.emit


@dataclass
class AccumulateKernel:
    """out[at(i)] += expr(i) for every i in shape whose guards hold (out zeroed first):
    the adjoint of reading windows (col2im, average-pool gradients)."""
    shape: tuple
    out: int
    at: Affine
    guards: tuple
    expr: object
    node: int = -1
    origin: tuple = ()    # (op, span) of the graph nodes it computes, set by Lowering.emit


@dataclass
class MaxPoolGradKernel:
    """dx (zeroed) [window argmax] += g for every output position (first maximum wins)."""
    x: int
    g: int
    out: int
    shape: tuple          # N, C, H, W of x
    out_hw: tuple
    kernel: tuple
    stride: tuple
    padding: tuple
    node: int = -1
    origin: tuple = ()    # (op, span) of the graph nodes it computes, set by Lowering.emit


@dataclass
class Program:
    buffers: list = field(default_factory=list)
    kernels: list = field(default_factory=list)
    outputs: dict = field(default_factory=dict)     # name -> buffer id
    inputs: dict = field(default_factory=dict)      # input name -> buffer id
    params: dict = field(default_factory=dict)      # param name -> buffer id
    symbols: list = field(default_factory=list)     # symbolic dim names, in the order of the sizes array
    faults: list = field(default_factory=list)      # (what, count, span) of each index check, by site

    def buffer(self, dtype, size, kind, name="", data=None) -> Buffer:
        b = Buffer(len(self.buffers), dtype, size, kind, name, data)
        self.buffers.append(b)
        return b

    def fault(self, what: str, count, span) -> int:
        """The site of a run-time check that an index of `what` lies in [0, count): the
        kernels report a failure (dlc_fault = site + 1), the engine raises it at `span`."""
        self.faults.append((what, count, span))
        return len(self.faults) - 1


SMALL_FILTER = 4096     # O * C * kh * kw up to which a weight gradient is a SmallGemmKernel


class NotLowerable(DlcError):
    """The native backend does not compile this primitive yet (located at its node)."""


def row_major(shape) -> tuple:
    strides, acc = [], 1
    for d in reversed(shape):
        strides.append(acc)
        acc = acc * d
    return tuple(reversed(strides))


def contiguous(buffer: int, shape, dtype) -> Load:
    return Load(buffer, Affine(0, row_major(shape)), dtype)


# ---- the lowering ------------------------------------------------------------------------------------
VIEWS = {"broadcast", "transpose", "slice", "reshape", "stop_gradient"}
ELEMENTWISE = {"neg", "exp", "log", "log1p", "tanh", "logistic", "sqrt", "abs", "sign", "sin", "cos", "erf",
               "add", "sub", "mul", "div", "mod", "pow", "maximum", "minimum", "lt", "le", "gt", "ge", "eq",
               "ne", "logical_and", "logical_or", "logical_not", "select", "cast"}


@dataclass
class ScanKernel:
    """for t in 0..length (or back): sizes[var] = t, then run the body's kernels."""
    length: object
    reverse: bool
    var: str              # the symbol of the step index, "$t0", "$t1", ... by nesting depth
    body: list
    node: int = -1
    origin: tuple = ()    # (op, span) of the graph nodes it computes, set by Lowering.emit


class Lowering:
    def __init__(self, graph: Graph, program: Program | None = None, args=(), depth: int = 0):
        self.g = graph
        self.p = program or Program()
        self.kernels = self.p.kernels if program is None else []
        self.args, self.depth = list(args), depth
        self.values: dict = {}        # tensor key -> expression over its own shape
        self.uses: dict = {}
        for u, v, out in graph.g.edges(data="out"):
            self.uses[(u, out)] = self.uses.get((u, out), 0) + 1
        outputs = {t.key() for t in graph.outputs.values()}
        self.pinned = outputs         # values that must live in memory
        self.cols: dict = {}          # im2col buffers by (window expression, shape)

    def emit(self, kernel, into: list | None = None):
        kernel.origin = self.origin(kernel.node)
        (self.kernels if into is None else into).append(kernel)

    def origin(self, n: int) -> tuple:
        """(op, span) of node n and of the producers fused into its kernel: values
        inlined into its expression and free views, in graph order."""
        if n not in self.g.g.nodes:
            return ()
        seen, todo = {n}, [n] if self.g.op(n) != "scan" else []
        while todo:
            for x in self.g.inputs(todo.pop()):
                op = self.g.op(x.node)
                inlined = not isinstance(self.values.get(x.key()), Load) or op in VIEWS
                if x.node not in seen and op not in ("input", "param", "arg") and inlined:
                    seen.add(x.node)
                    todo.append(x.node)
        return tuple((self.g.op(v), self.g.g.nodes[v]["span"]) for v in [n] + sorted(seen - {n}))

    def run(self) -> Program:
        for n in self.g.order():
            self.node(n)
        taken = set()
        for name, t in self.g.outputs.items():
            load = self.materialize(t, kind="output")
            if load.buffer in taken:        # two outputs of one value: each gets its own buffer
                buf = self.p.buffer(t.dtype, numel(t.shape), "output")
                self.emit(MapKernel(t.shape, buf.id, Affine(0, row_major(t.shape)), load, t.node))
                load = contiguous(buf.id, t.shape, t.dtype)
            taken.add(load.buffer)
            self.p.outputs[name] = load.buffer
        self.p.kernels[:] = fuse_maps(self.p.kernels)
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
        if isinstance(e, Load) and e.at == Affine(0, row_major(t.shape)):
            b = self.p.buffers[e.buffer]
            if kind == "temp" or b.kind in ("temp", "output"):
                if kind == "output":
                    b.kind = "output"
                return e
        buf = self.p.buffer(t.dtype, numel(t.shape), kind)
        self.emit(MapKernel(t.shape, buf.id, Affine(0, row_major(t.shape)), e, t.node))
        load = contiguous(buf.id, t.shape, t.dtype)
        self.values[t.key()] = load
        return load

    def set(self, n: int, e, out: int = 0):
        self.values[(n, out)] = e

    def node(self, n: int):
        g, op, attrs = self.g, self.g.op(n), self.g.attrs(n)
        typ = g.types(n)[0]
        ins = g.inputs(n)
        if op == "arg":
            self.set(n, self.args[attrs["index"]])
        elif op in ("input", "param"):
            buf = self.p.buffer(typ.dtype, numel(typ.shape), op, attrs["name"])
            (self.p.inputs if op == "input" else self.p.params)[attrs["name"]] = buf.id
            self.set(n, contiguous(buf.id, typ.shape, typ.dtype))
        elif op == "constant":
            value = np.asarray(attrs["value"])
            if value.ndim == 0:
                self.set(n, Const(value.item(), typ.dtype))
            else:
                buf = self.p.buffer(typ.dtype, value.size, "const", data=value.astype(DTYPES[typ.dtype]).ravel())
                self.set(n, contiguous(buf.id, typ.shape, typ.dtype))
        elif op == "iota":
            coeffs = tuple(1 if r == attrs["axis"] else 0 for r in range(typ.rank))
            self.set(n, Index(Affine(0, coeffs), typ.dtype))
        elif op == "dim_size":
            self.set(n, Size(attrs["dim"]))
        elif op == "random":
            if attrs["dist"] not in ("uniform", "normal"):
                raise NotLowerable(f"the native backend does not compile random {attrs['dist']} yet",
                                   self.g.g.nodes[n]["span"])
            key = self.materialize(ins[0])
            steps = tuple(f"$t{d}" for d in range(self.depth))
            self.set(n, Random(key.buffer, attrs["stream"], Affine(0, row_major(typ.shape)), typ.dtype, steps,
                               attrs["dist"]))
        elif op in ELEMENTWISE:
            args = tuple(self.use(x) for x in ins)
            name = op if op != "cast" else f"cast_{typ.dtype}"
            self.set(n, Op(name, args, typ.dtype))
        elif op == "stop_gradient":
            self.set(n, self.use(ins[0]))
        elif op == "broadcast":
            x = ins[0]
            shape = attrs["shape"]
            lead = len(shape) - x.rank

            def bcast(a, x=x, shape=shape, lead=lead):
                coeffs = [0] * lead + [c if x.shape[i] != 1 or shape[lead + i] == 1 else 0
                                       for i, c in enumerate(a.coeffs)]
                return Affine(a.offset, tuple(coeffs))
            self.set(n, remap(self.use(x), bcast))
        elif op == "transpose":
            perm = attrs["perm"]
            self.set(n, remap(self.use(ins[0]), lambda a: Affine(a.offset, tuple(a.coeffs[p] for p in perm))))
        elif op == "slice":
            starts, steps = attrs["starts"], attrs["steps"]
            self.set(n, remap(self.use(ins[0]), lambda a: Affine(
                a.offset + sum((c * s for c, s in zip(a.coeffs, starts)), 0),
                tuple(c * st for c, st in zip(a.coeffs, steps)))))
        elif op == "reshape":
            x = ins[0]
            e = self.use(x)
            if not (isinstance(e, Load) and e.at.coeffs == row_major(x.shape)):
                e = self.materialize(x)
            self.set(n, Load(e.buffer, Affine(e.at.offset, row_major(typ.shape)), typ.dtype))
        elif op in ("reduce_sum", "reduce_max"):
            x = ins[0]
            buf = self.p.buffer(typ.dtype, numel(typ.shape), "temp")
            self.emit(ReduceKernel(x.shape, attrs["axes"], op[7:], buf.id, self.use(x), n))
            self.set(n, contiguous(buf.id, typ.shape, typ.dtype))
        elif op == "argmax":
            x = ins[0]
            buf = self.p.buffer("i32", numel(typ.shape), "temp")
            self.emit(ReduceKernel(x.shape, (attrs["axis"],), "argmax", buf.id, self.use(x), n))
            self.set(n, contiguous(buf.id, typ.shape, typ.dtype))
        elif op == "matmul":
            self.matmul(n, ins, attrs, typ)
        elif op == "concat":
            buf = self.p.buffer(typ.dtype, numel(typ.shape), "temp")
            strides = row_major(typ.shape)
            start = 0
            for x in ins:
                at = Affine(start * strides[attrs["axis"]], strides)
                self.emit(MapKernel(x.shape, buf.id, at, self.use(x), n))
                start = start + x.shape[attrs["axis"]]
            self.set(n, contiguous(buf.id, typ.shape, typ.dtype))
        elif op == "pad":
            buf = self.p.buffer(typ.dtype, numel(typ.shape), "temp")
            strides = row_major(typ.shape)
            self.emit(MapKernel(typ.shape, buf.id, Affine(0, strides), Const(0, typ.dtype), n))
            offset = sum((lo * s for lo, s in zip(attrs["lo"], strides)), 0)
            inner = tuple(s * (i + 1) for s, i in zip(strides, attrs["interior"]))
            self.emit(MapKernel(ins[0].shape, buf.id, Affine(offset, inner), self.use(ins[0]), n))
            self.set(n, contiguous(buf.id, typ.shape, typ.dtype))
        elif op == "gather":
            table, idx = ins
            t = self.materialize(table)
            k = idx.rank
            row_coeffs = (0,) * k + row_major(table.shape)[1:]
            idx_e = remap(self.use(idx), lambda a: Affine(a.offset, a.coeffs + (0,) * (typ.rank - k)))
            site = self.p.fault("gather", table.shape[0], self.g.g.nodes[n]["span"])
            self.set(n, Gather(t.buffer, idx_e, Affine(0, row_coeffs), row_major(table.shape)[0], typ.dtype,
                               table.shape[0], site))
        elif op == "scatter_add":
            idx, upd = ins
            u = self.materialize(upd)
            buf = self.p.buffer(typ.dtype, numel(typ.shape), "temp")
            site = self.p.fault("gather", typ.shape[0], self.g.g.nodes[n]["span"])
            self.emit(ScatterAddKernel(idx.shape, numel(typ.shape[1:]), buf.id, self.use(idx), u.buffer,
                                       typ.shape[0], site, n))
            self.set(n, contiguous(buf.id, typ.shape, typ.dtype))
        elif op == "scan":
            self.scan(n, ins, attrs)
        elif op in ("conv2d", "conv2d_input_grad", "conv2d_weight_grad", "maxpool2d", "avgpool2d",
                    "maxpool2d_grad", "avgpool2d_grad"):
            getattr(self, op)(n, ins, attrs, typ)
        else:
            raise NotLowerable(f"the native backend does not compile {op} yet", self.g.g.nodes[n]["span"])

    def use(self, t: Tensor):
        """The expression for an operand: inlined when used once or cheap, else in memory."""
        e = self.expr(t)
        cheap = isinstance(e, (Load, Const, Index, Size))
        if cheap or self.uses.get(t.key(), 0) <= 1 and t.key() not in self.pinned:
            return e
        return self.materialize(t)

    def matmul(self, n, ins, attrs, typ):
        a, b = ins
        la, lb = self.matrix(a), self.matrix(b)
        ta, tb = attrs["ta"] != la[4], attrs["tb"] != lb[4]
        buf = self.p.buffer(typ.dtype, numel(typ.shape), "temp")
        m, nn = typ.shape[-2], typ.shape[-1]
        k = a.shape[-2] if attrs["ta"] else a.shape[-1]
        batch = numel(typ.shape[:-2])
        self.emit(GemmKernel(m, nn, k, batch, la[:4], lb[:4], (buf.id, 0, nn, m * nn), ta, tb, n))
        self.set(n, contiguous(buf.id, typ.shape, typ.dtype))

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


    # -- scan: a loop over the body's kernels ---------------------------------------------------
    def scan(self, n, ins, attrs):
        body, length, nc = attrs["body"], attrs["length"], attrs["n_carry"]
        xs_axes, ys_axes = attrs["xs_axes"], attrs["ys_axes"]
        var = f"$t{self.depth}"
        t = Dim.sym(var)
        extra = {var} | (length.symbols() if isinstance(length, Dim) else set())
        self.p.symbols = sorted(set(self.p.symbols) | extra)
        outs = self.g.outputs_of(n)
        # carries live in `current` buffers, set from their initial values before the loop
        current = []
        for x in ins[:nc]:
            buf = self.p.buffer(x.dtype, numel(x.shape), "temp")
            self.emit(MapKernel(x.shape, buf.id, Affine(0, row_major(x.shape)), self.use(x), x.node))
            current.append(contiguous(buf.id, x.shape, x.dtype))
        args = list(current)
        for x, axis in zip(ins[nc:nc + len(xs_axes)], xs_axes):
            # step t of a sequence is a slice of its expression: a view of a buffer, or
            # (used only here) computed inside the loop, step by step — `xs @ W + b`
            # never goes through memory with its bias added
            args.append(remap(self.use(x), lambda a, axis=axis: Affine(
                a.offset + a.coeffs[axis] * t, a.coeffs[:axis] + a.coeffs[axis + 1:])))
        args += [self.use(x) for x in ins[nc + len(xs_axes):]]
        sub = Lowering(body, self.p, args, self.depth + 1)
        for m in body.order():
            sub.node(m)
        results = list(body.outputs.values())
        # new carries are computed first (into fresh buffers: the body may still read the
        # current ones), then per-step outputs go into their stacked buffers at step t,
        # reading the fresh carries when they are the same values, then the copies
        fresh = [sub.materialize(y) for y in results[:nc]]
        stacked = []
        for y, axis, out in zip(results[nc:], ys_axes, outs[nc:]):
            buf = self.p.buffer(out.dtype, numel(out.shape), "temp")
            full = row_major(out.shape)
            self.emit(MapKernel(y.shape, buf.id, Affine(t * full[axis], full[:axis] + full[axis + 1:]),
                                sub.expr(y), n), into=sub.kernels)
            stacked.append(contiguous(buf.id, out.shape, out.dtype))
        for cur, new, y in zip(current, fresh, results[:nc]):
            self.emit(MapKernel(y.shape, cur.buffer, cur.at, new, n), into=sub.kernels)
        self.emit(ScanKernel(length, attrs["reverse"], var, fuse_maps(sub.kernels), n))
        for j, value in enumerate(current + stacked):
            self.set(n, value, j)

    # -- windows: convolution (im2col + GEMM) and pooling ------------------------------------
    def windows(self, x: Tensor, stride, padding, fill=0.0, order="nhwcij"):
        """x read through its windows over the iteration [N, Ho, Wo, C, kh, kw] ("nhwcij",
        the im2col layout) or [N, C, Ho, Wo, kh, kw] ("nchwij")."""
        src = self.materialize(x)
        h, w = x.shape[2:]
        sn, sc, sh, sw = row_major(x.shape)
        (st_h, st_w), (ph, pw) = stride, padding
        if order == "nhwcij":
            coeffs = (sn, st_h * sh, st_w * sw, sc, sh, sw)
            row = (0, st_h, 0, 0, 1, 0)
            col = (0, 0, st_w, 0, 0, 1)
        else:
            coeffs = (sn, sc, st_h * sh, st_w * sw, sh, sw)
            row = (0, 0, st_h, 0, 1, 0)
            col = (0, 0, 0, st_w, 0, 1)
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
        e = self.windows(x, attrs["stride"], attrs["padding"])
        if (e, shape) not in self.cols:
            cols = self.p.buffer("f32", numel(shape), "temp")
            self.emit(MapKernel(shape, cols.id, Affine(0, row_major(shape)), e, n))
            self.cols[e, shape] = cols
        return self.cols[e, shape]

    def conv2d(self, n, ins, attrs, typ):
        x, w = ins
        N, C, H, W = x.shape
        O, _, kh, kw = w.shape
        Ho, Wo = typ.shape[2:]
        ckk, hw = C * kh * kw, Ho * Wo
        cols = self.im2col(x, (Ho, Wo, C, kh, kw), attrs, n)
        wm = self.materialize(w)
        out = self.p.buffer("f32", numel(typ.shape), "temp")
        # y[n] (O x HoWo) = W (O x CKK) @ cols[n]^T
        self.emit(GemmKernel(O, hw, ckk, N, (wm.buffer, wm.at.offset, ckk, 0), (cols.id, 0, ckk, hw * ckk),
                                         (out.id, 0, hw, O * hw), False, True, n))
        self.set(n, contiguous(out.id, typ.shape, typ.dtype))

    def conv2d_weight_grad(self, n, ins, attrs, typ):
        x, g = ins
        N, C, H, W = x.shape
        O, _, kh, kw = typ.shape
        Ho, Wo = g.shape[2:]
        ckk, hw = C * kh * kw, Ho * Wo
        cols = self.im2col(x, (Ho, Wo, C, kh, kw), attrs, n)
        out = self.p.buffer("f32", numel(typ.shape), "temp")
        if isinstance(O * ckk, int) and O * ckk <= SMALL_FILTER:
            # few, small filters (a first layer): dW stays in registers while every
            # example's g[n] (O x HoWo) @ cols[n] (HoWo x CKK) streams by
            gm = self.materialize(g)
            self.emit(SmallGemmKernel(O, ckk, hw, N, (gm.buffer, gm.at.offset, hw, O * hw),
                                      (cols.id, 0, ckk, hw * ckk), (out.id, 0, ckk), n))
        else:
            # g as [O, N*HoWo]: dW (O x CKK) = g2 @ cols (N*HoWo x CKK), one GEMM
            g2 = self.p.buffer("f32", O * N * hw, "temp")
            swap = lambda a: Affine(a.offset, (a.coeffs[1], a.coeffs[0], a.coeffs[2], a.coeffs[3]))
            self.emit(MapKernel((O, N, Ho, Wo), g2.id, Affine(0, row_major((O, N, Ho, Wo))),
                                remap(self.use(g), swap), n))
            self.emit(GemmKernel(O, ckk, N * hw, 1, (g2.id, 0, N * hw, 0), (cols.id, 0, ckk, 0),
                                 (out.id, 0, ckk, 0), False, False, n))
        self.set(n, contiguous(out.id, typ.shape, typ.dtype))

    def conv2d_input_grad(self, n, ins, attrs, typ):
        g, w = ins
        N, C, H, W = typ.shape
        O, _, kh, kw = w.shape
        Ho, Wo = g.shape[2:]
        ckk, hw = C * kh * kw, Ho * Wo
        gm, wm = self.materialize(g), self.materialize(w)
        cols = self.p.buffer("f32", N * hw * ckk, "temp")
        # cols[n] (HoWo x CKK) = g[n]^T (g[n] is O x HoWo) @ W (O x CKK)
        self.emit(GemmKernel(hw, ckk, O, N, (gm.buffer, gm.at.offset, hw, O * hw),
                                         (wm.buffer, wm.at.offset, ckk, 0), (cols.id, 0, ckk, hw * ckk), True, False, n))
        out = self.p.buffer("f32", numel(typ.shape), "temp")
        (st_h, st_w), (ph, pw) = attrs["stride"], attrs["padding"]
        sn, sc, sh, sw = row_major(typ.shape)
        at = Affine(-ph * sh - pw * sw, (sn, st_h * sh, st_w * sw, sc, sh, sw))
        guards = ((Affine(-ph, (0, st_h, 0, 0, 1, 0)), H), (Affine(-pw, (0, 0, st_w, 0, 0, 1)), W))
        shape = (N, Ho, Wo, C, kh, kw)
        self.emit(AccumulateKernel(shape, out.id, at, guards, contiguous(cols.id, shape, "f32"), n))
        self.set(n, contiguous(out.id, typ.shape, typ.dtype))

    def maxpool2d(self, n, ins, attrs, typ):
        self.pool(n, ins, attrs, typ, "max")

    def avgpool2d(self, n, ins, attrs, typ):
        self.pool(n, ins, attrs, typ, "sum")

    def pool(self, n, ins, attrs, typ, op):
        x = ins[0]
        N, C, Ho, Wo = typ.shape
        kh, kw = attrs["kernel"]
        fill = -np.inf if op == "max" else 0.0
        e = self.windows(x, attrs["stride"], attrs["padding"], fill, order="nchwij")
        if op == "sum":
            e = Op("mul", (e, Const(1.0 / (kh * kw), "f32")), "f32")
        out = self.p.buffer("f32", numel(typ.shape), "temp")
        self.emit(ReduceKernel((N, C, Ho, Wo, kh, kw), (4, 5), op, out.id, e, n))
        self.set(n, contiguous(out.id, typ.shape, typ.dtype))

    def avgpool2d_grad(self, n, ins, attrs, typ):
        g = ins[0]
        N, C, H, W = typ.shape
        Ho, Wo = g.shape[2:]
        (kh, kw), (st_h, st_w), (ph, pw) = attrs["kernel"], attrs["stride"], attrs["padding"]
        sn, sc, sh, sw = row_major(typ.shape)
        at = Affine(-ph * sh - pw * sw, (sn, sc, st_h * sh, st_w * sw, sh, sw))
        guards = ((Affine(-ph, (0, 0, st_h, 0, 1, 0)), H), (Affine(-pw, (0, 0, 0, st_w, 0, 1)), W))
        share = remap(self.use(g), lambda a: Affine(a.offset, a.coeffs + (0, 0)))
        share = Op("mul", (share, Const(1.0 / (kh * kw), "f32")), "f32")
        out = self.p.buffer("f32", numel(typ.shape), "temp")
        self.emit(AccumulateKernel((N, C, Ho, Wo, kh, kw), out.id, at, guards, share, n))
        self.set(n, contiguous(out.id, typ.shape, typ.dtype))

    def maxpool2d_grad(self, n, ins, attrs, typ):
        x, g = ins
        xm, gm = self.materialize(x), self.materialize(g)
        out = self.p.buffer("f32", numel(typ.shape), "temp")
        self.emit(MaxPoolGradKernel(xm.buffer, gm.buffer, out.id, typ.shape, g.shape[2:],
                                                attrs["kernel"], attrs["stride"], attrs["padding"], n))
        self.set(n, contiguous(out.id, typ.shape, typ.dtype))


def leaves(e):
    """The memory reads of an expression: Load, Gather, Guarded and Random leaves."""
    if isinstance(e, (Load, Random)):
        yield e
    elif isinstance(e, Gather):
        yield e
        yield from leaves(e.idx)
    elif isinstance(e, Guarded):
        yield e
    elif isinstance(e, Op):
        for a in e.args:
            yield from leaves(a)


def buffer_of(leaf) -> int:
    """The buffer a memory-reading leaf reads."""
    return leaf.table if isinstance(leaf, Gather) else leaf.key if isinstance(leaf, Random) else \
        leaf.load.buffer if isinstance(leaf, Guarded) else leaf.buffer


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
            out.append(FusedMapKernel(group[0].shape, list(group), group[0].node,
                                      tuple(dict.fromkeys(o for m in group for o in m.origin))))
        else:
            out.extend(group)
        group.clear()
    for k in kernels:
        joins = isinstance(k, MapKernel) and bool(k.shape)
        if group and not (joins and k.shape == group[0].shape and _fusable(group, k)):
            close()
        (group if joins else out).append(k)
    close()
    return out


def lower(graph: Graph) -> Program:
    return Lowering(graph).run()
