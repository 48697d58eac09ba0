"""ONNX export of a model's inference graph (`dlc export`, docs/interop.md).

`to_onnx(model, params)` turns an evaluation-mode `Model` (dropout off, batchnorm on its
running statistics) and its parameter arrays into an `onnx.ModelProto`: the graph inputs
are the model's non-target inputs, the graph outputs its `output` declarations, the
parameters initializers under their dlc names. Each primitive has an export rule in
`EXPORT_RULES`, keyed by its name (as compiler/native/rules/ keys its lowerings): one of
its own, or the ONNX op its record names (`onnx`) on the same operands; the primitives that
never occur in an inference graph are in `NOT_EXPORTABLE` with the reason.

Opset 18: the first in which every reduction takes its axes as an input (ReduceMax's
came in 18, after Shape's start and end in 15), so the rules need no per-op variants;
runtimes have run it since 2023 (onnxruntime 1.14), and nothing newer is needed.

Symbolic dims stay symbolic: a graph input's axis is `dim_param` "B" or "T", and where an
operation needs a size at run time (a reshape, a broadcast, an arange over T), it is
computed from the Shape of an input axis that carries the symbol (with Mul and Add for
B*T or T - 1), so one file serves every batch size and sequence length. A `scan` becomes
one ONNX `Scan` node whose body is the scan's body: carries are its state variables,
sequences its scan inputs (read backwards for `reverse`), invariants references to the
enclosing graph's values. Every node's doc_string is the .dl place it comes from (with
the user's call for a place in the standard library).
"""

from __future__ import annotations

from typing import Callable

import numpy as np

import dlc
from dlc.compiler.ir.dims import Dim
from dlc.compiler.errors import DlcError, Span, optional_package
from dlc.compiler.ir.evaluate import Eval
from dlc.compiler.ir.graph import DTYPES, FLOAT_DTYPES, ONNX_ELEM_TYPES, Graph, Pattern, TensorType
from dlc.compiler.frontend.model import Model
from dlc.compiler.ir.primitives import MASKED, PRIMITIVES
from dlc.compiler.onnx import qdq
from dlc.compiler.passes.int8 import integer_products

OPSET = 18
INT64_MAX = np.iinfo(np.int64).max

# the primitives an inference graph never holds: an export finding one refuses the model
NOT_EXPORTABLE = {
    "random": "random numbers are drawn in training only (dropout); an evaluation graph that draws them "
    "cannot be reproduced by an ONNX runtime",
    "conv2d_weight_grad": "a gradient: it occurs only in the gradient graph",
    "maxpool2d_grad": "a gradient: it occurs only in the gradient graph",
    "avgpool2d_grad": "a gradient: it occurs only in the gradient graph",
    "maxpool2d_gather": "a second derivative: it occurs only in a Hessian-vector product graph",
    "scatter_add": "the gradient of gather: it occurs only in the gradient graph",
    "attention_grad": "a gradient: it occurs only in the gradient graph",
    "replica_mean": "data-parallel training only (sync_batchnorm): an evaluation graph never holds it",
}

# (builder, node, operand names, **attrs) -> the names of the node's outputs
EXPORT_RULES: dict[str, Callable] = {}


def export_rule(*names: str):
    """Decorator: the export rule of the primitives `names`."""

    def register(rule):
        for name in names:
            EXPORT_RULES[name] = rule
        return rule

    return register


def to_onnx(model: Model, params: dict, source_name: str | None = None, quantization: dict | None = None):
    """The ONNX model of `model`'s outputs (an evaluation-mode Model) with the parameter and
    state arrays `params` (by dlc name, as a checkpoint holds them) as initializers.
    `source_name` (default: the model's file) goes into the model's doc_string. With a
    `quantization` (QuantizedProduct by product name, compiler/ir/int8.py), its integer
    products are exported in QDQ form (compiler/onnx/qdq.py)."""
    onnx = optional_package("onnx", "onnx", "ONNX export")
    if model.training:
        raise DlcError(f"export the evaluation-mode model: build {model.name} with training=False", model.span)
    model.require_outputs("to export")
    outputs = {k[len("output:") :]: t for k, t in model.graph.outputs.items() if k.startswith("output:")}
    export = _Export(onnx, model, params, quantization or {})
    main = export.main
    for name, t in outputs.items():
        if name in export.taken_names:
            raise DlcError(f"output {name} has the name of an input or parameter; ONNX needs distinct names", t.span)
        main.wanted.setdefault(t.key(), name)
    main.run(list(outputs.values()))
    graph = onnx.helper.make_graph(
        main.nodes,
        model.name,
        export.graph_inputs,
        [
            export.value_info(name, t.type)
            for name, t in zip(main.finish(list(outputs.values()), list(outputs)), outputs.values())
        ],
        initializer=list(export.initializers.values()),
        doc_string=f"model {model.name} of {source_name or model.span.file}, exported by dlc {dlc.__version__}",
    )
    opsets = [onnx.helper.make_opsetid("", OPSET)]
    proto = onnx.helper.make_model(
        graph, opset_imports=opsets, producer_name="dlc", producer_version=dlc.__version__, doc_string=graph.doc_string
    )
    proto.ir_version = onnx.helper.find_min_ir_version_for(opsets)  # the oldest runtime that can read it
    return proto


def save_onnx(model: Model, params: dict, path, source_name: str | None = None, quantization: dict | None = None):
    """Write `to_onnx(model, params, source_name, quantization)` to `path`."""
    proto = to_onnx(model, params, source_name, quantization)
    try:
        with open(path, "wb") as f:
            f.write(proto.SerializeToString())
    except OSError as e:
        raise DlcError(f"cannot write {path}: {e.strerror}", Span.whole(path)) from None


def source_place(span: Span | None) -> str:
    """A node's doc_string: its .dl place, and the user's call for the standard library."""
    if span is None:
        return ""
    return str(span) if span.caller is None else f"{span}, called from {span.caller}"


class _Export:
    """What the graphs of one export share: the initializers, the sizes of the symbolic
    dims and the shape vectors made from them (all in the main graph, which every scan
    body can read), and constants."""

    def __init__(self, onnx, model: Model, params: dict, quantization: dict):
        self.onnx, self.model, self.params = onnx, model, params
        # the integer products of the quantization, by node of the model's graph (never in a scan's body)
        self.integer = {
            p.node: (p, quantization[p.weight])
            for p in integer_products(model.graph).values()
            if p.weight in quantization
        }
        self.initializers: dict = {}
        self.cache: dict = {}  # key -> value name in the main graph
        self.graph_inputs = []
        self.symbols: dict = {}  # symbol -> (input name, axis, span)
        for inp in model.inputs:
            if inp.is_target:
                continue
            self.graph_inputs.append(self.value_info(inp.name, inp.type))
            for axis, d in enumerate(inp.type.shape):
                if isinstance(d, Dim) and d == Dim.sym(str(d)):
                    self.symbols.setdefault(str(d), (inp.name, axis, inp.span))
        self.taken_names = {i.name for i in model.inputs} | {p.name for p in model.params}
        self.main = _Builder(self, model.graph, "", {})

    def value_info(self, name: str, typ: TensorType):
        shape = [d if isinstance(d, int) else str(d) for d in typ.shape]
        return self.onnx.helper.make_tensor_value_info(name, self.elem_type(typ.dtype), shape)

    def elem_type(self, dtype: str) -> int:
        return ONNX_ELEM_TYPES[dtype]

    def initializer(self, name: str, typ: TensorType, span: Span | None) -> str:
        if name not in self.initializers:
            if name not in self.params:
                raise DlcError(f"no value given for parameter {name} ({typ})", span)
            value = np.asarray(self.params[name])
            if value.shape != tuple(typ.shape) or value.dtype.kind not in "biuf":
                raise DlcError(f"parameter {name} is {typ}, the value given is {value.dtype}{list(value.shape)}", span)
            self.initializers[name] = self.onnx.numpy_helper.from_array(value.astype(DTYPES[typ.dtype]), name)
        return name

    def constant_initializer(self, name: str, value: np.ndarray) -> str:
        """An initializer that is not a parameter (an int8 product's weights and scales)."""
        self.initializers.setdefault(name, self.onnx.numpy_helper.from_array(np.asarray(value), name))
        return name

    def cached(self, key, make: Callable) -> str:
        if key not in self.cache:
            self.cache[key] = make()
        return self.cache[key]

    def const(self, value, dtype: str) -> str:
        """A constant in the main graph, one per value."""
        arr = np.asarray(value, DTYPES[dtype])
        return self.cached(
            ("const", dtype, arr.shape, arr.tobytes()),
            lambda: self.main.op(
                "Constant", [], name_hint=f"%const{len(self.cache)}", value=self.onnx.numpy_helper.from_array(arr)
            ),
        )

    def size(self, d) -> str:
        """int64[1]: the run-time value of a dim (a polynomial over the input's symbols)."""
        if isinstance(d, int):
            return self.const([d], "i64")
        return self.cached(("size", d), lambda: self._polynomial(d))

    def _polynomial(self, d: Dim) -> str:
        total, hint = None, f"%size({d})"
        terms = sorted(d.terms.items())
        for k, (monomial, coefficient) in enumerate(terms):
            factors = [self._symbol(s) for s in monomial]
            if coefficient != 1 or not factors:
                factors.append(self.const([coefficient], "i64"))
            term = factors[0]
            for i, f in enumerate(factors[1:]):
                last = k == len(terms) - 1 and i == len(factors) - 2 and total is None
                term = self.main.op("Mul", [term, f], name_hint=hint if last else None)
            total = (
                term
                if total is None
                else self.main.op("Add", [total, term], name_hint=hint if k == len(terms) - 1 else None)
            )
        return total

    def _symbol(self, s: str) -> str:
        if s not in self.symbols:
            raise DlcError(
                f"the size {s} is not an axis of any input, so the exported graph cannot know it", self.main.span
            )
        name, axis, span = self.symbols[s]
        return self.cached(
            ("size", Dim.sym(s)),
            lambda: self.main.op("Shape", [name], name_hint=f"%size({s})", span=span, start=axis, end=axis + 1),
        )

    def vector(self, values) -> str:
        """int64[len(values)] of ints and dims (a shape, the starts of a slice)."""
        values = tuple(values)
        if all(isinstance(v, int) for v in values):
            return self.const(values, "i64")

        def concat():
            pieces, run = [], []
            for v in values:
                if isinstance(v, int):
                    run.append(v)
                    continue
                if run:
                    pieces.append(self.const(run, "i64"))
                    run = []
                pieces.append(self.size(v))
            if run:
                pieces.append(self.const(run, "i64"))
            if len(pieces) == 1:
                return pieces[0]
            return self.main.op("Concat", pieces, axis=0, name_hint="%[" + ", ".join(map(str, values)) + "]")

        return self.cached(("vector", values), concat)


class _Builder:
    """The ONNX nodes of one dlc graph: the model's, or a scan's body (its prefix names the
    scan, so that value names are unique in the whole model). `args` are the names a body's
    `arg` nodes stand for: its own inputs, or values of the enclosing graphs."""

    def __init__(self, export: _Export, graph: Graph, prefix: str, wanted: dict, args=()):
        self.export, self.graph, self.prefix = export, graph, prefix
        self.wanted = wanted  # value key -> the name it must have (a graph output)
        self.args = list(args)
        self.nodes: list = []
        self.names: dict = {}  # (node, out) -> value name
        self.span: Span | None = graph.span
        self.node: int | None = None
        self.made = 0  # values made for the current node

    def fresh(self) -> str:
        """A value name after the dlc node being exported: %12, then %12_2, %12_3, ..."""
        self.made += 1
        return f"{self.prefix}%{self.node}" + (f"_{self.made}" if self.made > 1 else "")

    def op(self, op_type: str, inputs: list, name_hint: str | None = None, span: Span | None = None, **attrs) -> str:
        """Add a node with one output, named `name_hint` (in this graph's namespace) or after
        the current dlc node; its doc_string is `span`, by default the current node's place."""
        return self._add(op_type, inputs, [self.prefix + name_hint if name_hint else self.fresh()], span, attrs)[0]

    def ops(self, op_type: str, inputs: list, count: int, **attrs) -> list:
        return self._add(op_type, inputs, [self.fresh() for _ in range(count)], None, attrs)

    def _add(self, op_type: str, inputs: list, outputs: list, span: Span | None, attrs: dict) -> list:
        self.nodes.append(
            self.export.onnx.helper.make_node(
                op_type, list(inputs), outputs, name=outputs[0], doc_string=source_place(span or self.span), **attrs
            )
        )
        return outputs

    def const(self, value, dtype: str) -> str:
        return self.export.const(value, dtype)

    def run(self, results: list):
        integer = self.export.integer if self.graph is self.export.model.graph else {}
        live = _live(self.graph, [t.node for t in results], integer)
        elided = _free_broadcasts(self.graph, live)
        for n in self.graph.order():
            if n not in live:
                continue
            data = self.graph.nx.nodes[n]
            op, self.span, self.node, self.made = data["op"], data["span"], n, 0
            xs = [self.names[t.key()] for t in _operands(self.graph, n, integer)]
            if n in elided:
                self.names[(n, 0)] = xs[0]
                continue
            rule = EXPORT_RULES.get(op)
            if rule is None:
                reason = NOT_EXPORTABLE.get(op, "it has no export rule")
                raise DlcError.at_user_line(f"{op} cannot be exported to ONNX: {reason}", self.span)
            first = len(self.nodes)
            if n in integer:
                outs = qdq.integer_product(self, *integer[n], xs[0], rule, **data["attrs"])
            else:
                outs = rule(self, n, xs, **data["attrs"])
            for j, name in enumerate(outs):
                want = self.wanted.get((n, j))
                made_here = any(name in node.output for node in self.nodes[first:])
                if want is not None and made_here and name not in self.export.cache.values():
                    _rename(self.nodes[first:], name, want)  # made just now: the output takes its name
                    name = want
                self.names[(n, j)] = name
        self.node = None

    def finish(self, results: list, names: list | None = None) -> list:
        """The names of the graph's outputs (`names`, or any): each made by a node of this graph,
        once (an Identity gives another name to an input, an outer value or a value output twice)."""
        made = {o for node in self.nodes for o in node.output}
        out, used = [], set()
        for i, t in enumerate(results):
            name = self.names[t.key()]
            want = names[i] if names is not None else None
            if name not in made or name in used or (want is not None and name != want):
                self.span = self.graph.nx.nodes[t.node]["span"]
                name = self.op("Identity", [name], name_hint=want or f"%out{i}")
            used.add(name)
            out.append(name)
        return out


def _operands(graph: Graph, n: int, integer: dict) -> list:
    """The operands node `n` reads: an integer product reads its weights from their int8
    initializer (compiler/onnx/qdq.py), not from the float32 parameter."""
    operands = graph.inputs(n)
    return operands[:1] if n in integer else operands


def _live(graph: Graph, results: list, integer: dict) -> set:
    """`results` and the nodes whose values they read: no float32 parameter (nor its reshape)
    that only integer products read is exported."""
    seen, todo = set(results), list(results)
    while todo:
        for t in _operands(graph, todo.pop(), integer):
            if t.node not in seen:
                seen.add(t.node)
                todo.append(t.node)
    return seen


def _rename(nodes: list, old: str, new: str):
    for node in nodes:
        for field in (node.input, node.output):
            for i, v in enumerate(field):
                if v == old:
                    field[i] = new
        if node.name == old:
            node.name = new


def _free_broadcasts(graph: Graph, live: set) -> set:
    """The broadcasts an ONNX runtime does by itself: each reader is elementwise (the
    export rules of those with several operands use ONNX ops that broadcast as numpy does:
    Add, Where, ...) and has an operand of the full shape that is not a broadcast, so no
    Expand is needed (a bias added to a product, a mean subtracted from its input)."""
    free = set()
    for n in live:
        if graph.op(n) != "broadcast" or graph.outputs.readers((n, 0)):
            continue
        readers = set(graph.nx.successors(n)) & live
        if readers and all(
            PRIMITIVES[graph.op(r)].pattern is Pattern.ELEMENTWISE
            and any(graph.op(x.node) != "broadcast" and x.shape == graph.types(r)[0].shape for x in graph.inputs(r))
            for r in readers
        ):
            free.add(n)
    return free


# ---- sources ------------------------------------------------------------------------------------------
@export_rule("input")
def _input(b, n, xs, name, type, **_):
    model = b.export.model
    if any(i.name == name and i.is_target for i in model.inputs):
        raise DlcError(f"an output depends on the target {name}, which is not given at inference", b.span)
    return [name]


@export_rule("param")
def _param(b, n, xs, name, type, **_):
    return [b.export.initializer(name, type, b.span)]


@export_rule("arg")
def _arg(b, n, xs, index, **_):
    return [b.args[index]]


@export_rule("constant")
def _constant(b, n, xs, value, dtype):
    return [b.op("Constant", [], value=b.export.onnx.numpy_helper.from_array(np.asarray(value, DTYPES[dtype])))]


@export_rule("dim_size")
def _dim_size(b, n, xs, dim):
    size = b.op("Cast", [b.export.size(dim)], to=b.export.elem_type("i32"))
    return [b.op("Squeeze", [size, b.const([0], "i64")])]


@export_rule("iota")
def _iota(b, n, xs, shape, axis, dtype):
    if all(isinstance(d, int) for d in shape):  # a constant: the reference computes it
        return _constant(b, n, xs, PRIMITIVES["iota"].impl(Eval(float_dtype=None), [], shape, axis, dtype)[0], dtype)
    limit = b.op("Squeeze", [b.export.size(shape[axis]), b.const([0], "i64")])
    r = b.op("Range", [b.const(0, "i64"), limit, b.const(1, "i64")])
    r = b.op("Cast", [r], to=b.export.elem_type(dtype))
    r = b.op("Reshape", [r, b.const([-1 if i == axis else 1 for i in range(len(shape))], "i64")])
    return [b.op("Expand", [r, b.export.vector(shape)])]


# ---- elementwise ----------------------------------------------------------------------------------------
def _same(b, n, xs):
    """The ONNX op of the node's primitive (its record's `onnx`) on the same operands."""
    return [b.op(PRIMITIVES[b.graph.op(n)].onnx, xs)]


@export_rule("stop_gradient")
def _stop_gradient(b, n, xs):
    return xs  # no gradients here: the value itself


def _dtype(b, n) -> str:
    """The dtype of the node's first operand."""
    return b.graph.inputs(n)[0].dtype


@export_rule("lt", "le", "gt", "ge")
def _order(b, n, xs):
    if _dtype(b, n) == "bool":  # ONNX orders numbers only: false < true as 0 < 1
        xs = [b.op("Cast", [x], to=b.export.elem_type("i32")) for x in xs]
    return _same(b, n, xs)


@export_rule("select")
def _select(b, n, xs):
    if b.graph.types(n)[0].dtype != "bool":
        return _same(b, n, xs)
    c, x, y = xs  # onnxruntime has no Where on bools: (c and x) or (not c and y)
    return [b.op("Or", [b.op("And", [c, x]), b.op("And", [b.op("Not", [c]), y])])]


@export_rule("erf")
def _erf(b, n, xs):
    if _dtype(b, n) != "f64":
        return _same(b, n, xs)
    # onnxruntime has no Erf on doubles: this one is computed in float32 (7 digits)
    erf = _same(b, n, [b.op("Cast", xs, to=b.export.elem_type("f32"))])[0]
    return [b.op("Cast", [erf], to=b.export.elem_type("f64"))]


@export_rule("ne")
def _ne(b, n, xs):
    return [b.op("Not", [b.op("Equal", xs)])]


@export_rule("fma")
def _fma(b, n, xs):
    return [b.op("Add", [b.op("Mul", xs[:2]), xs[2]])]


@export_rule("div")
def _div(b, n, xs):
    if _dtype(b, n) in FLOAT_DTYPES:
        return _same(b, n, xs)
    x, y = xs  # integers divide rounding down, as numpy's //: (x - x mod y) / y is exact
    return [b.op("Div", [b.op("Sub", [x, b.op("Mod", xs, fmod=0)]), y])]


@export_rule("mod")
def _mod(b, n, xs):
    dtype = _dtype(b, n)
    if dtype not in FLOAT_DTYPES:
        return [b.op("Mod", xs, fmod=0)]  # the sign of the divisor, as numpy
    x, y = xs  # ONNX's float mod is C's fmod (the sign of x); numpy moves it to the sign of y
    r = b.op("Mod", xs, fmod=1)
    zero = b.const(0, dtype)
    differ = b.op("Xor", [b.op("Less", [r, zero]), b.op("Less", [y, zero])])
    fix = b.op("And", [differ, b.op("Not", [b.op("Equal", [r, zero])])])
    return [b.op("Where", [fix, b.op("Add", [r, y]), r])]


@export_rule("expm1")
def _expm1(b, n, xs):
    """Kahan's exp(x) - 1 that keeps the digits of a small x: (u - 1) x / log(u), u = exp(x)."""
    x, dtype = xs[0], _dtype(b, n)
    u = b.op("Exp", [x])
    um1 = b.op("Sub", [u, b.const(1, dtype)])
    kahan = b.op("Div", [b.op("Mul", [um1, x]), b.op("Log", [u])])
    out = b.op("Where", [b.op("IsInf", [u]), u, kahan])
    out = b.op("Where", [b.op("Equal", [um1, b.const(-1, dtype)]), um1, out])
    return [b.op("Where", [b.op("Equal", [u, b.const(1, dtype)]), x, out])]


@export_rule("log1p")
def _log1p(b, n, xs):
    """Kahan's log(1 + x) that keeps the digits of a small x: log(u) x / (u - 1), u = 1 + x."""
    x, dtype = xs[0], _dtype(b, n)
    u = b.op("Add", [x, b.const(1, dtype)])
    log_u = b.op("Log", [u])
    kahan = b.op("Div", [b.op("Mul", [log_u, x]), b.op("Sub", [u, b.const(1, dtype)])])
    out = b.op("Where", [b.op("IsInf", [u]), u, kahan])
    return [b.op("Where", [b.op("Equal", [u, b.const(1, dtype)]), x, out])]


@export_rule("cast")
def _cast(b, n, xs, dtype):
    return [b.op("Cast", xs, to=b.export.elem_type(dtype))]


for _prim in PRIMITIVES.values():  # the others: their ONNX op on the same operands
    if _prim.onnx is not None and _prim.name not in EXPORT_RULES:
        export_rule(_prim.name)(_same)


# ---- shapes ----------------------------------------------------------------------------------------
@export_rule("broadcast")
def _broadcast(b, n, xs, shape):
    return [b.op("Expand", [xs[0], b.export.vector(shape)])]


@export_rule("reshape")
def _reshape(b, n, xs, shape):
    symbolic = [i for i, d in enumerate(shape) if not isinstance(d, int)]
    if len(symbolic) == 1:  # one dim the others determine: -1 needs no size
        shape = tuple(-1 if i == symbolic[0] else d for i, d in enumerate(shape))
    return [b.op("Reshape", [xs[0], b.export.vector(shape)])]


@export_rule("transpose")
def _transpose(b, n, xs, perm):
    return [b.op("Transpose", xs, perm=list(perm))]


def _from_end(v, size, end: bool):
    """A slice bound as ONNX takes it: an int, counting from the end when it is the size
    minus a number (T - 1 of an axis of size T), else the dim."""
    if isinstance(v, int):
        return v
    offset = v - size
    if isinstance(offset, int):
        return INT64_MAX if end and offset >= 0 else offset
    return v


@export_rule("slice")
def _slice(b, n, xs, starts, stops, steps):
    shape = b.graph.inputs(n)[0].shape
    axes = [i for i, (a, z, s, d) in enumerate(zip(starts, stops, steps, shape)) if (a, z, s) != (0, d, 1)]
    # an axis of a fixed size cut to a symbolic length (a table of 64 positions cut to T): a
    # Gather of the Range, whose length onnxruntime's symbolic shape inference knows as T, where
    # it takes a Slice's as min(64, T) and then cannot add it to an axis of T
    ranged = [i for i in axes if isinstance(shape[i], int) and not isinstance(stops[i] - starts[i], int)]
    x = xs[0]
    for i in ranged:
        bounds = [b.op("Squeeze", [b.export.size(v), b.const([0], "i64")]) for v in (starts[i], stops[i])]
        x = b.op("Gather", [x, b.op("Range", [*bounds, b.const(steps[i], "i64")])], axis=i)
    axes = [i for i in axes if i not in ranged]
    if not axes:
        return [x]
    lo = [_from_end(starts[i], shape[i], False) for i in axes]
    hi = [_from_end(stops[i], shape[i], True) for i in axes]
    return [
        b.op(
            "Slice",
            [
                x,
                b.export.vector(lo),
                b.export.vector(hi),
                b.const(axes, "i64"),
                b.const([steps[i] for i in axes], "i64"),
            ],
        )
    ]


@export_rule("pad")
def _pad(b, n, xs, lo, hi, interior):
    x = xs[0]
    shape = list(b.graph.inputs(n)[0].shape)
    for axis, gap in enumerate(interior):
        if gap:  # `gap` zeros after every element: pad a new axis after it, merge, drop the last gap
            d = shape[axis]
            x = b.op("Unsqueeze", [x, b.const([axis + 1], "i64")])
            x = b.op(
                "Pad",
                [x, b.const([0] * (len(shape) + 1) + [0] * (axis + 1) + [gap] + [0] * (len(shape) - axis - 1), "i64")],
            )
            x = b.op("Reshape", [x, b.export.vector(shape[:axis] + [d * (gap + 1)] + shape[axis + 1 :])])
            x = b.op("Slice", [x, b.const([0], "i64"), b.const([-gap], "i64"), b.const([axis], "i64")])
            shape[axis] = d + (d - 1) * gap
    if all(p == 0 for p in lo + hi):
        return [x]
    return [b.op("Pad", [x, b.export.vector(tuple(lo) + tuple(hi))])]


@export_rule("concat")
def _concat(b, n, xs, axis):
    return [b.op("Concat", xs, axis=axis)]


@export_rule("gather")
def _gather(b, n, xs):
    return [b.op("Gather", xs, axis=0)]


# ---- reductions and contraction --------------------------------------------------------------------------
def _reduce(combine: Callable):
    """The rule of a reduction whose ONNX nodes `combine(b, x, axes)` gives."""

    def rule(b, n, xs, axes):
        if not axes:  # nothing to reduce (an empty axes input would reduce every axis)
            return xs
        x, dtype = xs[0], _dtype(b, n)
        if dtype == "bool":  # ONNX reduces numbers: count, then any
            x = b.op("Cast", [x], to=b.export.elem_type("i32"))
        out = combine(b, x, list(axes))
        return [b.op("Cast", [out], to=b.export.elem_type("bool")) if dtype == "bool" else out]

    return rule


def _sum(b, x: str, axes: list) -> str:
    return b.op("ReduceSum", [x, b.const(axes, "i64")], keepdims=0)


def _largest(b, x: str, axes: list) -> str:
    """The maximum over `axes`, those axes dropped: along each axis in turn the entry ArgMax
    finds (GatherElements), then a Squeeze. Not ReduceMax: its axes are an input from opset
    18 on, and onnxruntime's symbolic shape inference (its quant_pre_process) leaves its
    output without a shape; nor TopK, whose output ONNX's own shape inference gives made-up
    dims for B and T. The maximum is the same value either way."""
    for axis in axes:
        x = b.op("GatherElements", [x, b.op("ArgMax", [x], axis=axis, keepdims=1)], axis=axis)
    return b.op("Squeeze", [x, b.const(axes, "i64")])


export_rule("reduce_sum")(_reduce(_sum))
export_rule("reduce_max")(_reduce(_largest))


@export_rule("argmax")
def _argmax(b, n, xs, axis):
    x = xs[0] if _dtype(b, n) != "bool" else b.op("Cast", xs, to=b.export.elem_type("i32"))
    index = b.op("ArgMax", [x], axis=axis, keepdims=0)  # the first maximum, as numpy
    return [b.op("Cast", [index], to=b.export.elem_type("i32"))]


@export_rule("matmul")
def _matmul(b, n, xs, ta=False, tb=False):
    rank = b.graph.inputs(n)[0].rank
    if rank == 2:
        return [b.op("Gemm", xs, transA=int(ta), transB=int(tb))]
    swap = list(range(rank - 2)) + [rank - 1, rank - 2]
    a, c = (b.op("Transpose", [x], perm=swap) if t else x for x, t in zip(xs, (ta, tb)))
    return [b.op("MatMul", [a, c])]


@export_rule("attention")
def _attention(b, n, xs, scale, bounded=False):
    """As the primitive's definition: the scores, masked, their softmax times v, and the
    log-sum-exp of each row where the graph reads it (ONNX runtimes have no fused attention at
    opset 18). Key counts are refused: a softmax over no keys is NaN in ONNX, 0 in dlc."""
    if bounded:
        raise DlcError.at_user_line(
            "attention bounded by key counts (fused_attention's keys, cached_attention's length) cannot be "
            "exported to ONNX: export the model that masks the keys instead",
            b.span,
        )
    q, k, v = xs[:3]
    dtype, rank = _dtype(b, n), b.graph.inputs(n)[0].rank
    kt = b.op("Transpose", [k], perm=list(range(rank - 2)) + [rank - 1, rank - 2])
    scores = b.op("Mul", [b.op("MatMul", [q, kt]), b.const(scale, dtype)])
    if len(xs) > 3:
        mask = b.graph.inputs(n)[3]
        scores = (
            b.op("Where", [xs[3], scores, b.const(MASKED, dtype)])
            if mask.dtype == "bool"
            else b.op("Add", [scores, xs[3]])
        )
    o = b.op("MatMul", [b.op("Softmax", [scores], axis=-1), v])
    if not b.graph.uses(b.graph.outputs_of(n)[1]):  # the training's: a prediction reads o alone
        return [o]
    return [o, b.op("ReduceLogSumExp", [scores, b.const([-1], "i64")], keepdims=0)]


# ---- windows (NCHW) ------------------------------------------------------------------------------------
def _window(stride, padding, **attrs) -> dict:
    """ONNX's window attributes: the padding before and after each spatial axis."""
    return {"strides": list(stride), "pads": list(padding) * 2, **attrs}


@export_rule("conv2d")
def _conv2d(b, n, xs, stride, padding, dilation, groups):
    return [b.op("Conv", xs, **_window(stride, padding, dilations=list(dilation), group=groups))]


@export_rule("conv2d_input_grad")
def _conv_transpose(b, n, xs, stride, padding, dilation, groups, input_hw):
    """conv_transpose: the output_padding is what input_hw adds to the windows' reach."""
    w = b.graph.inputs(n)[1].shape
    reach = [
        (size - 1) * s - 2 * p + d * (k - 1) + 1
        for size, s, p, d, k in zip(b.graph.inputs(n)[0].shape[2:], stride, padding, dilation, w[2:])
    ]
    return [
        b.op(
            "ConvTranspose",
            xs,
            **_window(
                stride,
                padding,
                dilations=list(dilation),
                group=groups,
                output_padding=[h - r for h, r in zip(input_hw, reach)],
            ),
        )
    ]


@export_rule("maxpool2d")
def _maxpool2d(b, n, xs, kernel, stride, padding):
    return [b.op("MaxPool", xs, **_window(stride, padding, kernel_shape=list(kernel)))]


@export_rule("avgpool2d")
def _avgpool2d(b, n, xs, kernel, stride, padding):
    return [b.op("AveragePool", xs, **_window(stride, padding, kernel_shape=list(kernel), count_include_pad=1))]


# ---- scan ---------------------------------------------------------------------------------------------
@export_rule("scan")
def _scan(b, n, xs, body, length, reverse, n_carry, xs_axes, ys_axes, **_):
    """One ONNX Scan: carries are its state variables, sequences its scan inputs (read
    from the end for `reverse`, the stacks then filled from the end too, so step t lands
    at index t), invariants the body's references to the enclosing graph's values."""
    export, n_seq = b.export, len(xs_axes)
    carries, seqs, invariants = xs[:n_carry], xs[n_carry : n_carry + n_seq], xs[n_carry + n_seq :]
    prefix = f"{b.prefix}scan{n}/"
    inputs = [export.value_info(f"{prefix}arg{i}", a.type) for i, a in enumerate(body.args[: n_carry + n_seq])]
    if not seqs:  # a Scan takes its length from its scan inputs: give it one of `length` zeros
        seqs, xs_axes = [b.op("ConstantOfShape", [export.vector((length,))])], (0,)
        inputs.append(export.value_info(f"{prefix}step", TensorType("f32", ())))
    sub = _Builder(export, body, prefix, {}, [i.name for i in inputs[: n_carry + n_seq]] + invariants)
    results = list(body.outputs.values())
    sub.run(results)
    outputs = [export.value_info(name, t.type) for name, t in zip(sub.finish(results), results)]
    graph = export.onnx.helper.make_graph(sub.nodes, f"{b.graph.name}.scan{n}", inputs, outputs)
    stacks = {"scan_output_axes": list(ys_axes), "scan_output_directions": [int(reverse)] * len(ys_axes)}
    return b.ops(
        "Scan",
        carries + seqs,
        len(results),
        body=graph,
        num_scan_inputs=len(seqs),
        scan_input_axes=list(xs_axes),
        scan_input_directions=[int(reverse)] * len(seqs),
        **(stacks if ys_axes else {}),
    )
