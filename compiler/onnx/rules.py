"""The rule of each ONNX op type: the .dl code for a node.

`RULES` maps an op type to a `Rule`; the importer (onnx_import.py) calls `Node(...).emit`,
which folds a node whose inputs are all known, or else runs its rule. A rule reads the node
through `Node` (attributes, inputs as .dl operands, static inputs, shapes) and returns the
.dl expression of its result: a string for the first output, a list for several, an array
for a value known now, or a `Value` to alias one. The elementwise ops are one table of
templates (`ELEMENTWISE`), in the manner of tinygrad's code_for_op; the others are
functions. Patterns written as library calls (dense, conv2d, batchnorm, layernorm, lstm,
gru, rnn) absorb the nodes that follow them (an Add of the bias, an activation).
"""
from __future__ import annotations

import os

from dataclasses import dataclass
from math import prod
from typing import Callable

import numpy as np

from dlc.compiler.ir.dims import Dim, exact_div
from dlc.compiler.onnx.importer import (DTYPES, NP_DTYPES, SMALL, Expand, Unsupported, Value, layer_hint, literal,
                                     shape_tuple)

FLOAT = ("f32", "f64")
INT = ("i32", "i64")
NUMBER = FLOAT + INT
ANY = NUMBER + ("bool",)
# the largest finite float of each width: padding that never wins a max, the bound of IsInf
LARGEST = {"f32": "3.4028234663852886e38", "f64": "1.7976931348623157e308"}


@dataclass
class Rule:
    emit: Callable
    static: tuple = ()              # inputs that must be known when importing
    attrs: tuple = ()               # the attributes the rule reads; any other is refused
    shape_only: bool = False        # its result depends on the inputs' shapes, not their values


RULES: dict[str, Rule] = {}


def rule(*ops, static=(), attrs=(), shape_only=False):
    def register(fn):
        for op in ops:
            RULES[op] = Rule(fn, static, tuple(attrs), shape_only)
        return fn
    return register


class Multi(str):
    """A .dl expression that gives a tuple, one item per output of the node: bound as
    `a, b = expr`."""


class Expr(str):
    """A .dl expression with what the importer knows of its value: `fill`, the one number
    it is filled with; `transposed`, (the ONNX value it permutes, the permutation); `shape`,
    where ONNX's shape inference may not know it (a reshape to computed dims)."""

    def __new__(cls, text: str, fill=None, transposed=None, shape=None):
        out = super().__new__(cls, text)
        out.fill, out.transposed, out.shape = fill, transposed, shape
        return out


class Node:
    """One ONNX node as a rule sees it."""

    def __init__(self, imp, proto):
        self.imp, self.proto, self.op = imp, proto, proto.op_type
        self.label = proto.name or next((o for o in proto.output if o), proto.op_type)
        self.results = list(proto.output)     # the values the result binds (the last absorbed node's)
        self.names: dict = {}                 # output index -> the binding name chosen beforehand
        onnx = imp.onnx
        self.attrs = {a.name: _attribute(onnx, a) for a in proto.attribute}
        schema = imp.schema(proto)
        self.version = schema.since_version if schema is not None else 0

    # -- errors --
    def where(self) -> str:
        return f"node '{self.label}' ({self.op}, opset {self.imp.opset})"

    def refuse(self, what: str, kind: str = "attribute"):
        raise Unsupported(f"{self.imp.source}: {self.where()}: dlc cannot import {what}", kind)

    # -- attributes --
    def attr(self, name: str, default=None):
        return self.attrs.get(name, default)

    def setting(self, attr: str, index: int, default=None):
        """An attribute that later opsets made an input: the attribute, else the static input."""
        if attr in self.attrs:
            return self.attrs[attr]
        if self.has(index):
            return self.static(index, attr).tolist()
        return default

    # -- inputs --
    def has(self, i: int) -> bool:
        return i < len(self.proto.input) and bool(self.proto.input[i])

    def value(self, i: int) -> Value:
        return self.imp.values[self.proto.input[i]]

    def x(self, i: int) -> str:
        """Input i as a .dl operand."""
        return self.imp.operand(self.proto.input[i])

    def const(self, i: int):
        return self.value(i).const if self.has(i) else None

    def static(self, i: int, what: str = "") -> np.ndarray:
        a = self.const(i)
        if a is None:
            self.refuse(f"its input {i} ({what or self.proto.input[i]}) computed at run time: dlc needs it when "
                        "importing (a constant, an initializer, or computed from shapes)", "input")
        return a

    def dtype(self, i: int) -> str:
        v = self.value(i)
        if v.dtype is None and not v.onnx_type:        # shape inference did not tell: dlc does
            self._type_now(i)
        if v.dtype is None:
            self.refuse(f"{_type_name(self.imp, v.onnx_type)} values", "dtype")
        return v.dtype

    def shape(self, i: int) -> tuple:
        """Input i's dims: ints, or Dims of the model's input symbols."""
        v = self.value(i)
        if v.shape is None or None in v.shape:
            self._type_now(i)
        return v.shape

    def _type_now(self, i: int):
        """The type of input i where ONNX's shape inference could not tell (`type_now`)."""
        v = self.value(i)
        t = self.imp.type_now(self.proto.input[i])
        if t is None:
            self.refuse(f"an input of unknown shape ({self.proto.input[i]})", "shape")
        v.dtype, v.shape = t.dtype, t.shape

    def rank(self, i: int) -> int:
        return len(self.shape(i))

    def axis(self, a: int, rank: int) -> int:
        if not -rank <= a < rank:
            self.refuse(f"the axis {a} of a rank-{rank} tensor")
        return a % rank

    def out(self, j: int = 0) -> Value:
        return self.imp.inferred(self.results[j])

    def out_dtype(self, j: int = 0) -> str:
        v = self.out(j)
        if v.dtype is None:
            self.refuse(f"an output of {_type_name(self.imp, v.onnx_type)} values", "dtype")
        return v.dtype

    def used(self, j: int) -> bool:
        """Whether output j exists and something reads it."""
        if j >= len(self.results) or not self.results[j]:
            return False
        name = self.results[j]
        return name in self.imp.graph_outputs or bool(self.imp.consumers.get(name))

    def require_float(self, *inputs):
        for i in inputs or (0,):
            if self.has(i) and self.dtype(i) not in FLOAT:
                self.refuse(f"{self.dtype(i)} inputs (it computes on floats)", "dtype")

    # -- writing --
    def let(self, expr: str, hint: str = "") -> str:
        """Bind an intermediate value; its name."""
        return self.imp.bind(hint or self.label, expr)

    def binding(self, hint: str = "", j: int = 0) -> str:
        """The name output j will be bound to, chosen now (a layer names its parameters after it)."""
        if j not in self.names:
            own = self.imp.output_names.get(self.results[j])      # a graph output's name, kept for it
            if own is not None and not hint and own not in self.imp.bound:
                self.names[j] = own
            else:
                self.names[j] = self.imp.names(hint or self.results[j] or self.label, "v")
        return self.names[j]

    def weight(self, name: str, array):
        array = np.asarray(array)
        self.imp.weights[name] = np.array(array, np.float64 if array.dtype == np.float64 else np.float32, order="C")

    def absorb(self, ops, j: int = 0):
        """The node reading output j, when it is one of `ops`, the only reader, and output j
        is not a graph output: it becomes part of this node's result (a bias, an activation)."""
        name = self.results[j] if j < len(self.results) else ""
        readers = self.imp.consumers.get(name, [])
        if not name or name in self.imp.graph_outputs or len(readers) != 1 or readers[0].op_type not in ops:
            return None
        reader = Node(self.imp, readers[0])
        if reader.proto.domain not in ("", "ai.onnx") or any(
                i and i != name and i not in self.imp.values for i in reader.proto.input):
            return None         # its other inputs are not known yet
        return reader

    def take(self, reader: "Node", j: int = 0):
        """Absorb `reader` (from `absorb`): its output is now this node's output j."""
        self.imp.absorbed.add(id(reader.proto))
        self.results[j] = reader.results[0]

    def emit(self, rules):
        """Fold the node or run its rule; a node the rule refuses is imported as its op's ONNX
        function body instead, where the op has one (`Expand` restarts the import)."""
        proto = self.proto
        try:
            if proto.domain not in ("", "ai.onnx"):
                self.refuse(f"operators of the domain '{proto.domain}'", "op")
            r = rules.get(self.op)
            if r is None or not self.version:
                self.refuse("this op: dlc has no rule for it", "op")
            unknown = [name for name in self.attrs if name not in r.attrs]
            if unknown:
                self.refuse(f"the attribute '{unknown[0]}' (dlc's rule for {self.op} does not read it)")
            try:
                inputs = [i for i in proto.input if i]
                if inputs and all(self.imp.values[i].const is not None for i in inputs) and self.fold():
                    return
                self.finish(r.emit(self))
            except (TypeError, ValueError, IndexError, KeyError, ArithmeticError) as e:
                # values a rule does not handle (symbolic dims in an input it reads as
                # numbers, ...): the node is refused where it is, never an internal error
                if os.environ.get("DLC_DEBUG"):
                    raise
                self.refuse(f"this node's inputs ({type(e).__name__}: {e})", "input")
        except Unsupported as e:
            if self.imp.has_function(proto):
                raise Expand(self.imp.index[id(proto)], e) from None
            raise

    def fold(self) -> bool:
        """Compute a node whose inputs are all known (ONNX's reference evaluator; the
        symbolic shape arithmetic for shapes with symbolic dims)."""
        consts = [self.imp.values[i].const if i else None for i in self.proto.input]
        if any(_has_dims(c) for c in consts):
            outs = fold_symbolic(self, consts)
        else:
            outs = self.imp.evaluate(self.proto, consts)
        if outs is None:
            return False
        weight = any(self.imp.values[i].weight for i in self.proto.input if i)
        for name, a in outs.items():
            v = self.imp.inferred(name)
            a = np.asarray(a)
            v.const, v.shape, v.weight = a, tuple(a.shape), weight and v.dtype in FLOAT
            if a.dtype == object:       # a shape with symbolic dims
                v.dtype = "i64"
            elif v.dtype is None:
                v.dtype = DTYPES.get(self.imp.onnx.helper.np_dtype_to_tensor_dtype(a.dtype))
            self.imp.values[name] = v
        return True

    def finish(self, result):
        """Bind the rule's result to the node's outputs."""
        if isinstance(result, Multi):
            names = [self.binding(j=j) for j in range(len(self.results))]
            self.imp.assign(names, result)
            for j, name in enumerate(names):
                self._set(j, name)
            return
        results = result if isinstance(result, list) else [result]
        for j, r in enumerate(results):
            if r is None:
                if self.used(j):
                    self.refuse(f"its output {j} ({self.results[j]})")
                continue
            if isinstance(r, Value):
                self.imp.values[self.results[j]] = r
            elif isinstance(r, np.ndarray):
                v = self.imp.inferred(self.results[j])
                v.const, v.shape = r, tuple(r.shape)
                self.imp.values[self.results[j]] = v
            else:
                name = self.binding(j=j)
                self.imp.assign([name], r)
                self._set(j, name)
                v = self.imp.values[self.results[j]]
                v.fill, v.transposed = getattr(r, "fill", None), getattr(r, "transposed", None)
                if getattr(r, "shape", None) is not None and (v.shape is None or None in v.shape):
                    v.shape = tuple(r.shape)
        for j in range(len(results), len(self.results)):
            if self.used(j):
                self.refuse(f"its output {j} ({self.results[j]})")

    def _set(self, j: int, name: str):
        v = self.imp.inferred(self.results[j])
        if v.shape is not None and 0 in v.shape:
            self.refuse(f"an empty result (shape {list(v.shape)})", "shape")
        v.expr = name
        self.imp.values[self.results[j]] = v


def _attribute(onnx, a):
    value = onnx.helper.get_attribute_value(a)
    if isinstance(value, bytes):
        return value.decode()
    if isinstance(value, list) and value and isinstance(value[0], bytes):
        return [v.decode() for v in value]
    if a.type == onnx.AttributeProto.TENSOR:
        return onnx.numpy_helper.to_array(value)
    return value


def _type_name(imp, elem_type: int) -> str:
    try:
        return imp.onnx.TensorProto.DataType.Name(elem_type).lower()
    except ValueError:
        return f"element type {elem_type}"


def flt(v) -> str:
    """A float attribute as a .dl literal."""
    return literal(np.float32(v), "f32")


def axes_text(axes) -> str:
    axes = list(axes)
    return str(axes[0]) if len(axes) == 1 else shape_tuple(axes)


def kw(**settings) -> str:
    """Keyword arguments that differ from their defaults, as `, name = value` text."""
    return "".join(f", {k} = {v}" for k, v in settings.items() if v is not None)


# ---- folding shapes with symbolic dims -------------------------------------------------------------
def fold_symbolic(n: Node, consts: list) -> dict | None:
    """The shape arithmetic of exported models (Shape -> Gather -> Concat -> Reshape) on
    shapes holding Dims: the outputs by name, or None for another op (its rule decides)."""
    out = _symbolic(n, consts)
    return None if out is None else {n.proto.output[0]: out}


def _symbolic(n: Node, consts: list):
    x = consts[0]
    op = n.op
    data = consts if op in ("Concat", "Add", "Sub", "Mul", "Div") else consts[:1]
    if not all(c is None or _is_shape(c) for c in data) or any(_has_dims(c) for c in consts[len(data):]):
        return None     # not shape arithmetic (a weight sliced to a symbolic length): the op's rule
    if op in ("Identity", "Cast", "CastLike", "Unsqueeze", "Squeeze", "Reshape", "Flatten"):
        if op in ("Cast", "CastLike") and n.out_dtype() not in INT:
            return None     # a dim as a number (a mean's divisor): the cast of its tensor
        shape = n.out().shape
        if shape is None or None in shape:
            shape = {"Unsqueeze": lambda: np.expand_dims(x, tuple(n.setting("axes", 1))).shape,
                     "Squeeze": lambda: np.squeeze(x, tuple(n.setting("axes", 1, [])) or None).shape}.get(
                         op, lambda: x.shape)()
        return x.reshape(shape)
    if op == "Gather":
        return np.take(x, consts[1].astype(np.int64), axis=n.attr("axis", 0))
    if op == "Concat":
        return np.concatenate([c for c in consts if c is not None], axis=n.attr("axis", 0))
    if op == "Slice":
        starts, ends = n.setting("starts", 1), n.setting("ends", 2)
        axes = n.setting("axes", 3, list(range(len(starts))))
        steps = n.setting("steps", 4, [1] * len(starts))
        index = [slice(None)] * x.ndim
        for a, s, e, st in zip(axes, starts, ends, steps):
            index[a] = slice(s, e, st)
        return x[tuple(index)]
    if op in ("Add", "Sub", "Mul", "Div"):
        a, b = (np.vectorize(lambda v: v if isinstance(v, Dim) else int(v), otypes=[object])(c)
                for c in np.broadcast_arrays(*consts[:2]))
        f = {"Add": lambda p, q: p + q, "Sub": lambda p, q: p - q, "Mul": lambda p, q: p * q,
             "Div": lambda p, q: _exact_div(n, p, q)}[op]
        return np.array([f(p, q) for p, q in zip(a.ravel(), b.ravel())], dtype=object).reshape(a.shape)
    if op == "ReduceProd":
        return np.array(prod(x.ravel()), dtype=object).reshape((1,) * x.ndim if n.attr("keepdims", 1) else ())
    return None


def _is_shape(c: np.ndarray) -> bool:
    """Integers, possibly Dims: what the symbolic shape arithmetic computes on."""
    return c.dtype == object or np.issubdtype(c.dtype, np.integer)


def _has_dims(c) -> bool:
    return c is not None and c.dtype == object


def _exact_div(n: Node, p, q):
    out = exact_div(p, q) if isinstance(p, Dim) or not isinstance(q, Dim) else None
    if out is None:
        n.refuse(f"the division of the dim {p} by {q}", "input")
    return out


# ---- elementwise ops: templates ------------------------------------------------------------------
# op: (.dl template over the inputs {0}, {1}, ... and the attributes, the attributes' defaults,
# the input dtypes it accepts). Integer inputs of float-only templates take the INT_TEMPLATES.
ELEMENTWISE = {
    "Add": ("{0} + {1}", {}, NUMBER),
    "Sub": ("{0} - {1}", {}, NUMBER),
    "Mul": ("{0} * {1}", {}, NUMBER),
    "Div": ("{0} / {1}", {}, FLOAT),
    "Pow": ("{0} ^ {1}", {}, FLOAT),
    "Equal": ("{0} == {1}", {}, ANY),
    "Less": ("{0} < {1}", {}, NUMBER),
    "LessOrEqual": ("{0} <= {1}", {}, NUMBER),
    "Greater": ("{0} > {1}", {}, NUMBER),
    "GreaterOrEqual": ("{0} >= {1}", {}, NUMBER),
    "And": ("{0} and {1}", {}, ("bool",)),
    "Or": ("{0} or {1}", {}, ("bool",)),
    "Xor": ("{0} != {1}", {}, ("bool",)),
    "Not": ("not {0}", {}, ("bool",)),
    "Where": ("select({0}, {1}, {2})", {}, ANY),
    "Abs": ("abs({0})", {}, FLOAT),
    "Neg": ("-{0}", {}, FLOAT),
    "Sign": ("sign({0})", {}, FLOAT),
    "Exp": ("exp({0})", {}, FLOAT),
    "Log": ("log({0})", {}, FLOAT),
    "Sqrt": ("sqrt({0})", {}, FLOAT),
    "Reciprocal": ("1.0 / {0}", {}, FLOAT),
    "Floor": ("{0} - {0} % 1.0", {}, FLOAT),
    "Ceil": ("{0} + (-{0}) % 1.0", {}, FLOAT),
    "Sin": ("sin({0})", {}, FLOAT),
    "Cos": ("cos({0})", {}, FLOAT),
    "Tan": ("sin({0}) / cos({0})", {}, FLOAT),
    "Sinh": ("0.5 * (exp({0}) - exp(-{0}))", {}, FLOAT),
    "Cosh": ("0.5 * (exp({0}) + exp(-{0}))", {}, FLOAT),
    "Asinh": ("sign({0}) * log(abs({0}) + sqrt({0} ^ 2 + 1))", {}, FLOAT),
    "Acosh": ("log({0} + sqrt({0} ^ 2 - 1))", {}, FLOAT),
    "Atanh": ("0.5 * log1p(2 * {0} / (1 - {0}))", {}, FLOAT),
    "Erf": ("erf({0})", {}, FLOAT),
    "Tanh": ("tanh({0})", {}, FLOAT),
    "Sigmoid": ("sigmoid({0})", {}, FLOAT),
    "Relu": ("relu({0})", {}, FLOAT),
    "LeakyRelu": ("leaky_relu({0}, {alpha})", {"alpha": 0.01}, FLOAT),
    "Elu": ("elu({0}, {alpha})", {"alpha": 1.0}, FLOAT),
    "Selu": ("{gamma} * elu({0}, {alpha})", {"alpha": 1.67326319217681884765625,
                                              "gamma": 1.05070102214813232421875}, FLOAT),
    "Celu": ("maximum({0}, 0.0) + minimum({alpha} * expm1({0} / {alpha}), 0.0)", {"alpha": 1.0}, FLOAT),
    "ThresholdedRelu": ("select({0} > {alpha}, {0}, 0.0)", {"alpha": 1.0}, FLOAT),
    "HardSigmoid": ("minimum(maximum({alpha} * {0} + {beta}, 0.0), 1.0)", {"alpha": 0.2, "beta": 0.5}, FLOAT),
    "HardSwish": ("{0} * hard_sigmoid({0})", {}, FLOAT),
    "Softplus": ("softplus({0})", {}, FLOAT),
    "Softsign": ("{0} / (1 + abs({0}))", {}, FLOAT),
    "Mish": ("{0} * tanh(softplus({0}))", {}, FLOAT),
    "Swish": ("swish({0}, {alpha})", {"alpha": 1.0}, FLOAT),
    "PRelu": ("select({0} > 0, {0}, {1} * {0})", {}, FLOAT),
    "Shrink": ("select({0} < -{lambd}, {0} + {bias}, select({0} > {lambd}, {0} - {bias}, 0.0))",
               {"lambd": 0.5, "bias": 0.0}, FLOAT),
    "IsNaN": ("{0} != {0}", {}, FLOAT),
}

# integer versions of the float templates (their builtins compute in f32)
INT_TEMPLATES = {
    "Abs": "select({0} < 0, 0 - {0}, {0})",
    "Neg": "0 - {0}",
    "Relu": "select({0} > 0, {0}, 0)",
    "Sign": "cast({0} > 0, \"{out}\") - cast({0} < 0, \"{out}\")",
    "Pow": "cast(float({0}) ^ float({1}), \"{out}\")",
}


def _elementwise(n: Node):
    template, defaults, dtypes = ELEMENTWISE[n.op]
    inputs = [i for i in range(len(n.proto.input)) if n.has(i)]
    if n.op == "Where":
        data = inputs[1:]
    elif n.op in ("PRelu", "Pow"):     # a float base takes any exponent
        data = inputs[:1]
    else:
        data = inputs
    kinds = {n.dtype(i) for i in data}
    if not kinds <= set(dtypes):
        ints = INT_TEMPLATES.get(n.op)
        if ints is None or not kinds <= set(INT):
            n.refuse(f"{', '.join(sorted(kinds))} inputs", "dtype")
        template = ints
    values = {k: flt(n.attr(k, v)) for k, v in defaults.items()}
    if "{out}" in template:
        values["out"] = n.out_dtype()
    return template.format(*[n.x(i) for i in range(len(n.proto.input))], **values)


for _op, (_t, _defaults, _dtypes) in ELEMENTWISE.items():
    RULES[_op] = Rule(_elementwise, attrs=tuple(_defaults))


@rule("Div")
def _div(n: Node):
    if {n.dtype(0), n.dtype(1)} <= set(INT):      # ONNX truncates toward zero; // floors
        q = n.let(f"{n.x(0)} // {n.x(1)}", n.label + "_floor")
        return f"select({n.x(0)} % {n.x(1)} != 0 and ({n.x(0)} < 0) != ({n.x(1)} < 0), {q} + 1, {q})"
    return _elementwise(n)


@rule("Mod", attrs=("fmod",))
def _mod(n: Node):
    a, b = n.x(0), n.x(1)
    if n.attr("fmod", 0) == 0:      # the sign of b, as Python's %
        return f"{a} % {b}"
    r = n.let(f"{a} % {b}", n.label + "_floor")        # the sign of b; fmod takes the sign of a
    return f"select({r} != 0 and ({a} < 0) != ({b} < 0), {r} - {b}, {r})"


@rule("Round")
def _round(n: Node):
    n.require_float()
    x = n.x(0)
    r = n.let(f"{x} + 0.5 - ({x} + 0.5) % 1.0", n.label + "_up")       # floor(x + 0.5)
    return f"select({r} - {x} == 0.5 and {r} % 2.0 == 1.0, {r} - 1.0, {r})"     # ties to even


@rule("IsInf", attrs=("detect_negative", "detect_positive"))
def _isinf(n: Node):
    n.require_float()
    x, big = n.x(0), LARGEST[n.dtype(0)]
    tests = ([f"{x} > {big}"] if n.attr("detect_positive", 1) else []) + \
            ([f"{x} < -{big}"] if n.attr("detect_negative", 1) else [])
    return " or ".join(tests) if tests else f"{x} != {x} and {x} == {x}"


@rule("Gelu", attrs=("approximate",))
def _gelu(n: Node):
    n.require_float()
    return f"{'gelu' if n.attr('approximate', 'none') == 'tanh' else 'gelu_exact'}({n.x(0)})"


@rule("Identity")
def _identity(n: Node):
    return n.value(0)


@rule("Dropout", static=(1, 2), attrs=("ratio", "seed", "is_test"))
def _dropout(n: Node):
    """The identity, with a mask of ones, in inference and at ratio 0; dropping at random in
    training mode is refused (its numbers would not be ONNX's)."""
    ratio = float(n.setting("ratio", 1, 0.5))
    if n.has(2) and bool(n.static(2, "training_mode")) and ratio != 0:
        n.refuse(f"training_mode = true with ratio {ratio:g} (random)")
    mask = None
    if n.used(1):
        mask = f"full(shape({n.x(0)}), 1, \"{n.out_dtype(1)}\")"
    return [n.value(0), mask]


@rule("Max", "Min", "Sum", "Mean")
def _variadic(n: Node):
    xs = [n.x(i) for i in range(len(n.proto.input)) if n.has(i)]
    if any(n.dtype(i) not in NUMBER for i in range(len(xs))):
        n.refuse("bool inputs", "dtype")
    if n.op in ("Sum", "Mean"):
        total = " + ".join(xs)
        if n.op == "Sum":
            return total
        n.require_float(*range(len(xs)))
        return f"({total}) / {len(xs)}" if len(xs) > 1 else xs[0]
    f = "maximum" if n.op == "Max" else "minimum"
    out = xs[0]
    for x in xs[1:]:
        out = f"{f}({out}, {x})"
    return out if len(xs) > 1 else n.value(0)


@rule("Clip", attrs=("min", "max"))
def _clip(n: Node):
    out = n.x(0)
    low = flt(n.attr("min")) if "min" in n.attrs else (n.x(1) if n.has(1) else None)
    high = flt(n.attr("max")) if "max" in n.attrs else (n.x(2) if n.has(2) else None)
    if low is not None:
        out = f"maximum({out}, {low})"
    if high is not None:
        out = f"minimum({out}, {high})"
    return out if out != n.x(0) else n.value(0)


@rule("Cast", attrs=("to", "saturate", "round_mode"))
def _cast(n: Node):
    to = DTYPES.get(n.attr("to"))
    if to is None:
        n.refuse(f"a cast to {_type_name(n.imp, n.attr('to'))}", "dtype")
    n.dtype(0)
    return f"cast({n.x(0)}, \"{to}\")"


@rule("CastLike", attrs=("saturate", "round_mode"))
def _cast_like(n: Node):
    n.dtype(0)
    return f"cast({n.x(0)}, \"{n.dtype(1)}\")"


# ---- shapes -----------------------------------------------------------------------------------------
def _dims(dims) -> str:
    return ", ".join(str(d) for d in dims)


def reshaped(x: str, dims) -> Expr:
    """x reshaped to `dims` (no -1: the shape is known)."""
    return Expr(f"reshape({x}, {_dims(dims) if dims else '()'})", shape=tuple(dims))


@rule("Reshape", static=(1,), attrs=("allowzero", "shape"))
def _reshape(n: Node):
    target = n.setting("shape", 1)
    shape = n.shape(0)
    dims = []
    for k, d in enumerate(target):
        if d == 0 and not n.attr("allowzero", 0):
            dims.append(shape[k])
        elif d == 0:
            n.refuse("a reshape to an empty shape (allowzero)", "shape")
        else:
            dims.append(d)
    if -1 in dims:      # the rest of the elements
        rest = exact_div(prod(shape, start=1), prod((d for d in dims if d != -1), start=1))
        if rest is None:
            n.refuse(f"a reshape of {list(shape)} to {dims}", "shape")
        dims[dims.index(-1)] = rest
    if tuple(dims) == shape:
        return n.value(0)
    return reshaped(n.x(0), dims)


@rule("Flatten", attrs=("axis",))
def _flatten(n: Node):
    shape = n.shape(0)
    a = n.attr("axis", 1)
    a = a + len(shape) if a < 0 else a
    return reshaped(n.x(0), [prod(shape[:a], start=1), prod(shape[a:], start=1)])


@rule("Squeeze", static=(1,), attrs=("axes",))
def _squeeze(n: Node):
    shape = n.shape(0)
    axes = n.setting("axes", 1)
    axes = [k for k, d in enumerate(shape) if d == 1] if axes is None else [n.axis(a, len(shape)) for a in axes]
    out = [d for k, d in enumerate(shape) if k not in axes]
    return Expr(f"squeeze({n.x(0)}, {axes[0]})", shape=out) if len(axes) == 1 else reshaped(n.x(0), out)


@rule("Unsqueeze", static=(1,), attrs=("axes",))
def _unsqueeze(n: Node):
    shape = list(n.shape(0))
    axes = n.setting("axes", 1)
    rank = len(shape) + len(axes)
    axes = sorted(n.axis(a, rank) for a in axes)
    for a in axes:
        shape.insert(a, 1)
    return Expr(f"expand_dims({n.x(0)}, {axes[0]})", shape=shape) if len(axes) == 1 else reshaped(n.x(0), shape)


@rule("Transpose", attrs=("perm",))
def _transpose(n: Node):
    rank = n.rank(0)
    return transposed(n, 0, n.attr("perm", list(range(rank))[::-1]))


def transposed(n: Node, i: int, perm) -> Expr | Value:
    """Input i with its axes permuted; a transpose of a transpose is one transpose, or none."""
    source, first = n.value(i).transposed or (n.proto.input[i], tuple(range(len(perm))))
    perm = tuple(first[p] for p in perm)
    if perm == tuple(range(len(perm))):
        return n.imp.values[source]
    shape = n.imp.values[source].shape
    known = None if shape is None or None in shape else [shape[p] for p in perm]
    return Expr(f"transpose({n.imp.operand(source)}, {_dims(perm)})", transposed=(source, perm), shape=known)


@rule("Concat", attrs=("axis",))
def _concat(n: Node):
    parts = [i for i in range(len(n.proto.input)) if n.has(i) and not (n.const(i) is not None and n.const(i).size == 0)]
    xs = [n.x(i) for i in parts]        # empty parts add nothing
    if len(xs) == 1:
        return n.value(parts[0])
    shapes = [n.value(i).shape for i in parts]
    known = None
    if all(s is not None and None not in s for s in shapes):
        axis = n.axis(n.attr("axis"), len(shapes[0]))
        known = list(shapes[0])
        known[axis] = sum((s[axis] for s in shapes[1:]), known[axis])
    return Expr(f"concat({', '.join(xs)}, axis = {n.attr('axis')})", shape=known)


@rule("Split", static=(1,), attrs=("axis", "split", "num_outputs"))
def _split(n: Node):
    shape = n.shape(0)
    axis = n.axis(n.attr("axis", 0), len(shape))
    parts = len(n.results)
    sizes = n.setting("split", 1)
    size = shape[axis]
    if sizes is None:
        if isinstance(size, int) and size % parts:      # num_outputs: the last part is smaller
            piece = -(-size // parts)
            sizes = [piece] * (parts - 1) + [size - piece * (parts - 1)]
        else:
            return Multi(f"split({n.x(0)}, {parts}, axis = {axis})")
    if len(set(sizes)) == 1:
        return Multi(f"split({n.x(0)}, {parts}, axis = {axis})")
    out, start = [], 0
    for s in sizes:
        if s == 0:      # an empty part: known now, and read only by what ignores it (a Concat)
            out.append(np.zeros(tuple(0 if k == axis else d for k, d in enumerate(shape)), NP_DTYPES[n.dtype(0)]))
        else:
            out.append(Expr(_slice_text(n.x(0), axis, start, start + s),
                            shape=[s if k == axis else d for k, d in enumerate(shape)]))
        start += s
    return out


def _from_end(bound, size):
    """A slice bound that is a dim as an int where it differs from the axis' size by a
    number (T - 1 on an axis of size T is -1); a bound at or past the size is the end."""
    if isinstance(bound, int):
        return bound
    offset = bound - size
    return bound if not isinstance(offset, int) else offset if offset < 0 else 2 ** 63 - 1


def _slice_text(x: str, axis: int, start, stop, step=1) -> str:
    bounds = f"{start if start else ''}:{'' if stop is None else stop}" + (f":{step}" if step != 1 else "")
    return f"{x}[{', '.join([':'] * axis + [bounds])}]"


@rule("Slice", static=(1, 2, 3, 4), attrs=("starts", "ends", "axes"))
def _slice(n: Node):
    """Indexing (x[a:b:s, ...]) with ONNX's clamped bounds; a negative step takes the
    positions it names with gather. A bound may be a dim (P[0:T] of a longer P)."""
    shape = n.shape(0)
    starts, ends = n.setting("starts", 1), n.setting("ends", 2)
    axes = n.setting("axes", 3, list(range(len(starts))))
    steps = n.setting("steps", 4, [1] * len(starts))
    subscripts = [":"] * len(shape)
    backwards = []      # (axis, positions)
    big = 2 ** 31       # a bound beyond any size: the end
    for a, s, e, st in zip(axes, starts, ends, steps):
        a = n.axis(a, len(shape))
        d = shape[a]
        s, e = _from_end(s, d), _from_end(e, d)
        if st == 0:
            n.refuse("a slice with step 0")
        if all(isinstance(v, int) for v in (d, s, e)):
            positions = range(*slice(s, e, st).indices(d))
            if not positions:
                n.refuse("an empty slice", "shape")
            if st < 0:
                backwards.append((a, list(positions)))
            else:
                s, e = positions.start, positions.stop
                subscripts[a] = f"{s if s else ''}:{e if e != d else ''}" + (f":{st}" if st != 1 else "")
        elif st < 0:
            n.refuse("a backwards slice of a symbolic dim or to a symbolic bound", "shape")
        else:       # a symbolic dim or bound: int bounds beyond the dim mean its end
            if isinstance(s, int) and isinstance(e, int) and (
                    s >= big or e <= -big or (s >= 0 and 0 <= e <= s) or (s < 0 and e < 0 and e <= s)):
                n.refuse("an empty slice", "shape")
            start = "" if isinstance(s, int) and (s == 0 or s <= -big) else str(s)
            stop = "" if isinstance(e, int) and e >= big else str(e)
            subscripts[a] = f"{start}:{stop}" + (f":{st}" if st != 1 else "")
    while subscripts and subscripts[-1] == ":":
        subscripts.pop()
    out = f"{n.x(0)}[{', '.join(subscripts)}]" if subscripts else n.x(0)
    for a, positions in backwards:
        index = n.imp.constant(np.array(positions, np.int32), n.label + "_positions")
        out = _take(n, out if out == n.x(0) else n.let(out, n.label + "_part"), len(shape), a, index, 1)
    return out if out != n.x(0) else n.value(0)


@rule("Gather", attrs=("axis",))
def _gather(n: Node):
    shape = n.shape(0)
    axis = n.axis(n.attr("axis", 0), len(shape))
    size = shape[axis]
    idx = n.const(1)
    if idx is not None and not _has_dims(idx) and isinstance(size, int):
        idx = np.where(idx < 0, idx + size, idx)
        if idx.ndim == 0:       # one position: an index drops the axis
            return f"{n.x(0)}[{', '.join([':'] * axis + [str(int(idx))])}]"
        index = n.imp.constant(idx.astype(np.int32), n.label + "_index")
        return _take(n, n.x(0), len(shape), axis, index, idx.ndim)
    index = n.x(1)
    if n.dtype(1) not in INT:
        n.refuse(f"{n.dtype(1)} indices", "dtype")
    index = n.let(f"select({index} < 0, {index} + {size}, {index})", n.label + "_index")
    return _take(n, n.x(0), len(shape), axis, index, n.rank(1))


def _take(n: Node, x: str, rank: int, axis: int, index: str, index_rank: int) -> str:
    """The entries of x at `index` (a rank-`index_rank` integer tensor) along `axis`: gather
    works on axis 0, so the axis goes first and the index's axes come back to its place."""
    if axis == 0:
        return f"gather({x}, {index})"
    front = [axis] + [k for k in range(rank) if k != axis]
    moved = n.let(f"transpose({x}, {_dims(front)})", n.label + "_moved")
    got = n.let(f"gather({moved}, {index})", n.label + "_rows")
    k = index_rank
    back = list(range(k, k + axis)) + list(range(k)) + list(range(k + axis, rank - 1 + k))
    return f"transpose({got}, {_dims(back)})"


@rule("GatherElements", attrs=("axis",))
def _gather_elements(n: Node):
    """out[..., i, ...] = x[..., index[..., i, ...], ...] along the axis: a one-hot choice
    among the axis' entries."""
    shape, idx_shape = n.shape(0), n.shape(1)
    rank = len(shape)
    axis = n.axis(n.attr("axis", 0), rank)
    if any(a != b for k, (a, b) in enumerate(zip(shape, idx_shape)) if k != axis):
        n.refuse("indices whose shape differs from the data's off the axis", "shape")
    size = shape[axis]
    x, index = n.x(0), n.x(1)
    if axis != rank - 1:
        x = n.let(f"swapaxes({x}, {axis}, -1)", n.label + "_moved")
        index = n.let(f"swapaxes({index}, {axis}, -1)", n.label + "_moved_index")
    index = n.let(f"select({index} < 0, {index} + {size}, {index})", n.label + "_index")
    hot = n.let(f"one_hot({index}, {size}, \"bool\")", n.label + "_hot")
    zero = "false" if n.dtype(0) == "bool" else "0"
    out = f"sum(select({hot}, expand_dims({x}, -2), {zero}), -1)"
    if n.dtype(0) == "bool":
        out = f"max(select({hot}, expand_dims(cast({x}, \"i32\"), -2), 0), -1) > 0"
    return out if axis == rank - 1 else f"swapaxes({n.let(out, n.label + '_picked')}, {axis}, -1)"


@rule("ScatterElements", "Scatter", attrs=("axis", "reduction"))
def _scatter_elements(n: Node):
    """updates[..., i, ...] written at data[..., indices[..., i, ...], ...] along the axis:
    a one-hot match of each update with the axis' entries, combined by the reduction."""
    shape, idx_shape = n.shape(0), n.shape(1)
    rank = len(shape)
    axis = n.axis(n.attr("axis", 0), rank)
    if any(a != b for k, (a, b) in enumerate(zip(shape, idx_shape)) if k != axis):
        n.refuse("indices whose shape differs from the data's off the axis", "shape")
    data, index, updates = n.x(0), n.x(1), n.x(2)
    if axis != rank - 1:
        data, index, updates = (n.let(f"swapaxes({v}, {axis}, -1)", f"{n.label}_{what}")
                                for v, what in ((data, "data"), (index, "index"), (updates, "updates")))
    index = n.let(f"select({index} < 0, {index} + {shape[axis]}, {index})", n.label + "_index")
    hot = n.let(f"one_hot({index}, {shape[axis]}, \"bool\")", n.label + "_hot")
    rows = list(shape[:axis]) + list(shape[axis + 1:]) + [idx_shape[axis], shape[axis]]
    out = _scattered(n, data, hot, f"expand_dims({updates}, -1)", len(rows) - 2, rows)
    return out if axis == rank - 1 else f"swapaxes({n.let(out, n.label + '_moved')}, {axis}, -1)"


@rule("ScatterND", attrs=("reduction",))
def _scatter_nd(n: Node):
    """updates written at the data's positions indices[..., :k] (its first k axes flattened
    to one): a one-hot match of each update with those positions, combined by the reduction."""
    shape, idx_shape = n.shape(0), n.shape(1)
    k = idx_shape[-1]
    if not isinstance(k, int):
        n.refuse("index tuples of a symbolic length", "shape")
    places, rest = prod(shape[:k], start=1), list(shape[k:])
    count = prod(idx_shape[:-1], start=1)
    sizes = n.imp.constant(np.array(shape[:k], np.int64), n.label + "_sizes")
    index = n.let(f"select({n.x(1)} < 0, {n.x(1)} + {sizes}, {n.x(1)})", n.label + "_index")
    strides = [prod(shape[j + 1:k], start=1) for j in range(k)]
    flat = " + ".join(f"{index}[..., {j}] * {s}" if s != 1 else f"{index}[..., {j}]" for j, s in enumerate(strides))
    position = n.let(reshaped(f"({flat})" if k > 1 else flat, [count]), n.label + "_position")
    hot = n.let(reshaped(f"one_hot({position}, {places}, \"bool\")", [count, places] + [1] * len(rest)),
                n.label + "_hot")
    updates = reshaped(n.x(2), [count, 1] + rest)
    data = n.let(reshaped(n.x(0), [places] + rest), n.label + "_rows")
    out = _scattered(n, data, hot, updates, 0, [count, places] + rest)
    return reshaped(n.let(out, n.label + "_written"), shape)


def _scattered(n: Node, data: str, hot: str, updates: str, axis: int, shape) -> str:
    """data combined with the updates where `hot` (bool) matches them, the matches along
    `axis` (of `shape`, the match's broadcast shape), by the node's reduction."""
    reduction = n.attr("reduction", "none")
    dtype = n.dtype(0)
    if dtype not in NUMBER:
        n.refuse(f"{dtype} data", "dtype")
    big = LARGEST[dtype] if dtype in FLOAT else str(2 ** (31 if dtype == "i32" else 63) - 1)
    written = n.let(f"sum({hot}, {axis}) > 0", n.label + "_written")
    if reduction in ("none", "add"):
        total = n.let(f"sum(select({hot}, {updates}, 0), {axis})", n.label + "_sum")
        return f"{data} + {total}" if reduction == "add" else f"select({written}, {total}, {data})"
    if reduction in ("max", "min"):
        fill = f"-{big}" if reduction == "max" else big
        most = n.let(f"{reduction}(select({hot}, {updates}, {fill}), {axis})", n.label + f"_{reduction}")
        return f"select({written}, {'maximum' if reduction == 'max' else 'minimum'}({data}, {most}), {data})"
    if reduction == "mul":
        factors = n.let(f"select({hot}, {updates}, 1)", n.label + "_factors")
        return f"{data} * {n.let(_scan_along(n, shape, axis, '*', steps=False, x=factors), n.label + '_product')}"
    n.refuse(f"the reduction '{reduction}'")


@rule("Expand", static=(1,))
def _expand(n: Node):
    shape = n.shape(0)
    target = [d for d in n.static(1, "shape").tolist()]
    rank = max(len(shape), len(target))
    a = [1] * (rank - len(shape)) + list(shape)
    b = [1] * (rank - len(target)) + target
    out = [y if x == 1 else x for x, y in zip(a, b)]
    if tuple(out) == tuple(shape):
        return n.value(0)
    return Expr(f"broadcast_to({n.x(0)}, {_dims(out)})", shape=out)


@rule("Tile", static=(1,))
def _tile(n: Node):
    repeats = n.static(1, "repeats").tolist()
    out = n.x(0)
    for axis, r in enumerate(repeats):
        if r != 1:
            expr = f"concat(({out},) * {r}, axis = {axis})"
            out = expr if axis == max(k for k, q in enumerate(repeats) if q != 1) else n.let(expr, n.label + "_tiled")
    return out if out != n.x(0) else n.value(0)


@rule("Shape", attrs=("start", "end"), shape_only=True)
def _shape(n: Node):
    shape = n.shape(0)
    dims = list(shape[slice(n.attr("start", 0), n.attr("end"))])
    if all(isinstance(d, int) for d in dims):
        return np.array(dims, np.int64)
    return np.array(dims, dtype=object)


@rule("Size", shape_only=True)
def _size(n: Node):
    total = prod(n.shape(0), start=1)
    return np.array(total, np.int64 if isinstance(total, int) else object)


@rule("ConstantOfShape", static=(0,), attrs=("value",))
def _constant_of_shape(n: Node):
    value = n.attr("value", np.zeros(1, np.float32))
    dims = n.static(0, "shape").tolist()
    if any(isinstance(d, Dim) for d in dims):
        dtype = DTYPES.get(n.imp.onnx.helper.np_dtype_to_tensor_dtype(value.dtype))
        fill = value.reshape(-1)[0]
        return Expr(f"full({shape_tuple(dims)}, {literal(fill, dtype)}, \"{dtype}\")", fill=fill)
    return np.full(dims, value.reshape(-1)[0], value.dtype)


@rule("Constant", attrs=("value", "value_float", "value_floats", "value_int", "value_ints"))
def _constant(n: Node):
    for name, dtype in (("value_float", np.float32), ("value_floats", np.float32), ("value_int", np.int64),
                        ("value_ints", np.int64)):
        if name in n.attrs:
            return np.array(n.attrs[name], dtype)
    if "value" not in n.attrs:
        n.refuse("a sparse or string constant", "dtype")
    return n.attrs["value"]


@rule("Range", static=(0, 1, 2))
def _range(n: Node):
    """Known bounds: the numbers; a symbolic limit (arange over T): `arange` of the count."""
    start, limit, delta = (n.static(i).item() for i in range(3))
    if not any(isinstance(v, Dim) for v in (start, limit, delta)):
        return np.arange(start, limit, delta).astype(n.static(0).dtype)
    steady = isinstance(start, int) and isinstance(delta, int) and delta > 0
    count = exact_div(limit - start, delta) if steady else None
    if not isinstance(count, Dim):
        n.refuse(f"a range from {start} to {limit} by {delta}", "input")
    dtype = n.out_dtype()
    out = "arange(" + str(count) + ")" if dtype == "i32" else f"cast(arange({count}), \"{dtype}\")"
    out += f" * {delta}" if delta != 1 else ""
    return Expr(out + (f" + {start}" if start else ""), shape=(count,))


@rule("EyeLike", attrs=("dtype", "k"), shape_only=True)
def _eye_like(n: Node):
    rows, cols = n.shape(0)
    dtype = n.imp.onnx.helper.tensor_dtype_to_np_dtype(n.attr("dtype", n.value(0).onnx_type))
    if not isinstance(rows, int) or not isinstance(cols, int):
        n.refuse("a symbolic shape", "shape")
    return np.eye(rows, cols, n.attr("k", 0), dtype=dtype)


@rule("Pad", static=(1, 2, 3), attrs=("mode", "pads", "value"))
def _pad(n: Node):
    if n.attr("mode", "constant") != "constant":
        n.refuse(f"the padding mode '{n.attr('mode')}'")
    shape = n.shape(0)
    pads = n.setting("pads", 1)
    axes = [n.axis(a, len(shape)) for a in n.setting("axes", 3, list(range(len(shape))))]
    before, after = [0] * len(shape), [0] * len(shape)
    for k, a in enumerate(axes):
        before[a], after[a] = pads[k], pads[k + len(axes)]
    if min(before + after) < 0:
        n.refuse("negative pads (cropping)")
    value = n.attr("value", n.static(2).item() if n.has(2) else 0)
    if not any(before + after):
        return n.value(0)
    fill = literal(value, n.dtype(0))
    return f"pad({n.x(0)}, {shape_tuple(before)}, {shape_tuple(after)}" + (
        f", {fill})" if value != 0 else ")")


@rule("DepthToSpace", "SpaceToDepth", attrs=("blocksize", "mode"))
def _depth_space(n: Node):
    b = n.attr("blocksize")
    nb, c, h, w = n.shape(0)
    x = n.x(0)
    if n.op == "SpaceToDepth":
        t = n.let(f"reshape({x}, {nb}, {c}, {h // b}, {b}, {w // b}, {b})", n.label + "_blocks")
        perm = "0, 3, 5, 1, 2, 4" if n.attr("mode", "DCR") == "DCR" else "0, 1, 3, 5, 2, 4"
        t = n.let(f"transpose({t}, {perm})", n.label + "_moved")
        return f"reshape({t}, {nb}, {c * b * b}, {h // b}, {w // b})"
    if n.attr("mode", "DCR") == "DCR":
        t = n.let(f"reshape({x}, {nb}, {b}, {b}, {c // (b * b)}, {h}, {w})", n.label + "_blocks")
        t = n.let(f"transpose({t}, 0, 3, 4, 1, 5, 2)", n.label + "_moved")
    else:
        t = n.let(f"reshape({x}, {nb}, {c // (b * b)}, {b}, {b}, {h}, {w})", n.label + "_blocks")
        t = n.let(f"transpose({t}, 0, 1, 4, 2, 5, 3)", n.label + "_moved")
    return f"reshape({t}, {nb}, {c // (b * b)}, {h * b}, {w * b})"


@rule("Trilu", static=(1,), attrs=("upper",))
def _trilu(n: Node):
    shape = n.shape(0)
    rows, cols = shape[-2:]
    k = int(n.static(1, "k")) if n.has(1) else 0
    offset = f" + {k}" if k > 0 else (f" - {-k}" if k < 0 else "")
    op = "<=" if n.attr("upper", 1) else ">="
    mask = n.let(f"reshape(arange({rows}), {rows}, 1){offset} {op} reshape(arange({cols}), 1, {cols})",
                 n.label + "_mask")
    return f"select({mask}, {n.x(0)}, {'false' if n.dtype(0) == 'bool' else 0})"


@rule("OneHot", static=(1,), attrs=("axis",))
def _one_hot(n: Node):
    depth = int(n.static(1, "depth"))
    rank = n.rank(0)
    axis = n.axis(n.attr("axis", -1), rank + 1)
    idx = n.x(0) if n.dtype(0) in INT else n.let(f"int({n.x(0)})", n.label + "_ids")
    idx = n.let(f"select({idx} < 0, {idx} + {depth}, {idx})", n.label + "_ids")
    hot = n.let(f"one_hot({idx}, {depth}, \"bool\")", n.label + "_hot")
    if axis != rank:
        perm = list(range(axis)) + [rank] + list(range(axis, rank))
        hot = n.let(f"transpose({hot}, {_dims(perm)})", n.label + "_moved")
    values = n.x(2)
    return f"select({hot}, {values}[1], {values}[0])"


@rule("CumSum", "CumProd", static=(1,), attrs=("exclusive", "reverse"))
def _cumulative(n: Node):
    """A scan along the axis whose carry is the running sum (product), yielded at every step."""
    shape = n.shape(0)
    if n.dtype(0) not in NUMBER:
        n.refuse(f"{n.dtype(0)} inputs", "dtype")
    axis = n.axis(int(n.static(1, "axis")), len(shape))
    return _scan_along(n, shape, axis, "+" if n.op == "CumSum" else "*", steps=True,
                       exclusive=n.attr("exclusive", 0), reverse=n.attr("reverse", 0))


def _scan_along(n: Node, shape, axis: int, op: str, steps: bool, exclusive=False, reverse=False, x=None) -> str:
    """A scan over input 0's `axis` that folds its slices with `op` (+ or *): the running
    results stacked along the axis (`steps`), or the final one."""
    size = shape[axis]
    if not isinstance(size, int):
        n.refuse("a running sum or product along a symbolic axis", "shape")
    dtype = n.dtype(0)
    start = literal(0 if op == "+" else 1, dtype)
    rest = [d for k, d in enumerate(shape) if k != axis]
    piece = f"{x or n.x(0)}[{', '.join([':'] * axis + ['t'])}]"
    options = [f"axis = {axis}"] if steps and axis != 1 else []
    options += ["reverse = true"] if reverse else []
    head = f"scan t in {size}{' (' + ', '.join(options) + ')' if options else ''} carry s = " \
           f"full({shape_tuple(rest)}, {start}, \"{dtype}\") {{"
    if not steps:
        return f"{head}\n    s = s {op} {piece}\n}}"
    if exclusive:
        return f"{head}\n    before = s\n    s = s {op} {piece}\n    yield before\n}}"
    return f"{head}\n    s = s {op} {piece}\n    yield s\n}}"


@rule("TopK", static=(1,), attrs=("axis", "largest", "sorted"))
def _top_k(n: Node):
    """The k largest (smallest) entries along the axis, by k rounds of argmax that each put
    the entry found out of the running; ties go to the lower index, as in ONNX."""
    shape = n.shape(0)
    rank = len(shape)
    axis = n.axis(n.attr("axis", -1), rank)
    k = int(n.static(1, "K").reshape(-1)[0])
    if k > SMALL * 4:
        n.refuse(f"K = {k} (dlc unrolls TopK, up to {SMALL * 4})")
    dtype = n.dtype(0)
    if dtype not in NUMBER:
        n.refuse(f"{dtype} inputs", "dtype")
    x = n.x(0) if axis == rank - 1 else n.let(f"swapaxes({n.x(0)}, {axis}, -1)", n.label + "_moved")
    if not n.attr("largest", 1):
        x = n.let(f"-{x}" if dtype in FLOAT else f"0 - {x}", n.label + "_negated")
    out = "-" + LARGEST[dtype] if dtype in FLOAT else str(-2 ** (31 if dtype == "i32" else 63) + 1)
    values, indices = [], []
    for i in range(k):
        indices.append(n.let(f"argmax({x}, -1)", f"{n.label}_index{i}"))
        values.append(n.let(f"max({x}, -1)", f"{n.label}_value{i}"))
        if i < k - 1:
            x = n.let(f"select(one_hot({indices[-1]}, {shape[axis]}, \"bool\"), {out}, {x})", f"{n.label}_rest{i}")
    stacked_values = f"stack({', '.join(values)}, axis = -1)"
    if not n.attr("largest", 1):
        stacked_values = f"-{n.let(stacked_values, n.label + '_largest')}" if dtype in FLOAT else \
            f"0 - {n.let(stacked_values, n.label + '_largest')}"
    stacked_indices = f"cast(stack({', '.join(indices)}, axis = -1), \"i64\")"
    if axis == rank - 1:
        return [stacked_values, stacked_indices]
    return [f"swapaxes({n.let(v, n.label + '_found')}, {axis}, -1)" for v in (stacked_values, stacked_indices)]


@rule("Einsum", attrs=("equation",))
def _einsum(n: Node):
    """Each operand's axes put in one order of all the equation's letters (a repeated letter
    first taken on its diagonal), the operands multiplied with broadcasting, and the letters
    not in the output summed away."""
    xs = [i for i in range(len(n.proto.input)) if n.has(i)]
    if any(n.dtype(i) not in NUMBER for i in xs):
        n.refuse("bool operands", "dtype")
    equation = n.attr("equation").replace(" ", "")
    inputs, _, output = equation.partition("->")
    terms = inputs.split(",")
    spare = iter(sorted(set("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz") - set(equation)))
    ellipsis = ""
    operands, sizes = [], {}
    for i, term in zip(xs, terms):
        shape = n.shape(i)
        if "..." in term:       # the same letters for every operand's ellipsis, aligned on the right
            width = len(shape) - (len(term) - 3)
            while len(ellipsis) < width:
                ellipsis = next(spare) + ellipsis
            term = term.replace("...", ellipsis[len(ellipsis) - width:])
        letters, x = list(term), n.x(i)
        for pos, letter in enumerate(letters):
            sizes.setdefault(letter, shape[pos])
        while len(set(letters)) < len(letters):     # a repeated letter: the diagonal of its two axes
            p = letters.index(next(c for c in letters if letters.count(c) > 1))
            q = letters.index(letters[p], p + 1)
            size = sizes[letters[p]]
            eye = reshaped(f"select(reshape(arange({size}), {size}, 1) == reshape(arange({size}), 1, {size}), 1, 0)",
                           [size if a in (p, q) else 1 for a in range(len(letters))])
            x = n.let(f"sum({x} * {eye}, {q})", n.label + "_diagonal")
            del letters[q]
        operands.append((x, letters))
    if "->" not in equation:        # implicit output: the letters seen once, in order
        seen = "".join(letters for _, letters in operands for letters in letters)
        output = "..." if ellipsis else ""
        output += "".join(sorted(c for c in set(seen) if seen.count(c) == 1 and c not in ellipsis))
    output = output.replace("...", ellipsis)
    order = list(output) + sorted({c for _, letters in operands for c in letters} - set(output))
    parts = []
    for x, letters in operands:
        perm = sorted(range(len(letters)), key=lambda a: order.index(letters[a]))
        if perm != list(range(len(letters))):
            x = n.let(f"transpose({x}, {_dims(perm)})", n.label + "_ordered")
        placed = [letters[a] for a in perm]
        dims = [sizes[c] if c in placed else 1 for c in order]
        parts.append(reshaped(x, dims) if len(dims) != len(placed) else x)
    out = " * ".join(parts)
    summed = list(range(len(output), len(order)))
    if summed:
        out = f"sum({n.let(out, n.label + '_products') if len(parts) > 1 else out}, {axes_text(summed)})"
    return out if out != n.x(xs[0]) else n.value(xs[0])


# ---- reductions -------------------------------------------------------------------------------------
REDUCTIONS = {
    "ReduceSum": "sum({x}{axes})",
    "ReduceMean": "mean({x}{axes})",
    "ReduceMax": "max({x}{axes})",
    "ReduceMin": "min({x}{axes})",
    "ReduceL1": "sum(abs({x}){axes})",
    "ReduceL2": "sqrt(sum({x} ^ 2{axes}))",
    "ReduceSumSquare": "sum({x} ^ 2{axes})",
    "ReduceLogSum": "log(sum({x}{axes}))",
    "ReduceLogSumExp": "max({x}{axes}) + log(sum(exp({x} - max({x}{all_kept})){axes}))",
}
# those that read their input's values as integers too
INT_REDUCTIONS = ("ReduceSum", "ReduceMax", "ReduceMin", "ReduceSumSquare")


@rule("ReduceProd", static=(1,), attrs=("axes", "keepdims", "noop_with_empty_axes"))
def _reduce_prod(n: Node):
    """The product over each axis in turn: a scan that multiplies its slices."""
    shape = list(n.shape(0))
    if n.dtype(0) not in NUMBER:
        n.refuse(f"{n.dtype(0)} inputs", "dtype")
    axes = n.setting("axes", 1, [])
    if not axes and n.attr("noop_with_empty_axes", 0):
        return n.value(0)
    axes = sorted({n.axis(a, len(shape)) for a in axes or range(len(shape))}, reverse=True)
    out = None
    for a in axes:      # the last axis first, so the others keep their places
        out = n.let(_scan_along(n, shape, a, "*", steps=False, x=out), n.label + "_product")
        del shape[a]
    kept = [1 if k in axes else d for k, d in enumerate(n.shape(0))]
    return reshaped(out, kept) if n.attr("keepdims", 1) else Value(n.dtype(0), tuple(shape), expr=out)


@rule(*REDUCTIONS, static=(1,), attrs=("axes", "keepdims", "noop_with_empty_axes"))
def _reduce(n: Node):
    rank = n.rank(0)
    dtype = n.dtype(0)
    if dtype not in FLOAT and not (dtype in INT and n.op in INT_REDUCTIONS):
        n.refuse(f"{dtype} inputs", "dtype")
    axes = n.setting("axes", 1, [])
    if not axes:
        if n.attr("noop_with_empty_axes", 0):
            return n.value(0)
        axes = list(range(rank))
    axes = sorted({n.axis(a, rank) for a in axes})
    keep = ", keepdims = true" if n.attr("keepdims", 1) else ""
    text = REDUCTIONS[n.op].format(x=n.x(0), axes=f", {axes_text(axes)}{keep}",
                                   all_kept=f", {axes_text(axes)}, keepdims = true")
    if dtype in INT and n.op == "ReduceMin":        # min negates, which computes in f32
        text = f"cast({text}, \"{dtype}\")"
    return text


@rule("ArgMax", "ArgMin", attrs=("axis", "keepdims", "select_last_index"))
def _argmax(n: Node):
    shape = n.shape(0)
    rank = len(shape)
    axis = n.axis(n.attr("axis", 0), rank)
    x = n.x(0)
    keep = ", keepdims = true" if n.attr("keepdims", 1) else ""
    if n.attr("select_last_index", 0):      # the largest position holding the extremum
        best = n.let(f"{'max' if n.op == 'ArgMax' else 'min'}({x}, {axis}, keepdims = true)", n.label + "_best")
        places = reshaped(f"arange({shape[axis]})", [d if k == axis else 1 for k, d in enumerate(shape)])
        return f"cast(max(select({x} == {best}, {places}, -1), {axis}{keep}), \"i64\")"
    if n.op == "ArgMin":
        x = f"-{x}" if n.dtype(0) in FLOAT else f"0 - {x}"
    out = f"cast(argmax({x}, {axis}), \"i64\")"
    return f"expand_dims({n.let(out, n.label + '_index')}, {axis})" if n.attr("keepdims", 1) else out


@rule("Softmax", "LogSoftmax", "Hardmax", attrs=("axis",))
def _softmax(n: Node):
    n.require_float()
    shape = n.shape(0)
    rank = len(shape)
    x = n.x(0)
    if n.version < 13:      # the input seen as a matrix: axes before `axis` are rows
        axis = n.axis(n.attr("axis", 1), rank)
        if axis != rank - 1:
            flat = n.let(reshaped(x, [prod(shape[:axis], start=1), prod(shape[axis:], start=1)]), n.label + "_rows")
            done = n.let(_softmax_text(n, flat, 1, 2, prod(shape[axis:], start=1)), n.label + "_rows")
            return reshaped(done, shape)
    axis = n.axis(n.attr("axis", -1), rank)
    return _softmax_text(n, x, axis, rank, shape[axis])


def _softmax_text(n: Node, x: str, axis: int, rank: int, size) -> str:
    if n.op == "Softmax":
        return f"softmax({x}, {axis})"
    if n.op == "LogSoftmax":
        return f"log_softmax({x}, {axis})"
    last = f"swapaxes({x}, {axis}, -1)" if axis != rank - 1 else x
    hot = f"one_hot(argmax({last}, -1), {size}, \"{n.dtype(0)}\")"
    return hot if last == x else f"swapaxes({n.let(hot, n.label + '_hot')}, {axis}, -1)"


# ---- normalization ----------------------------------------------------------------------------------
def _per_channel(n: Node, i: int, rank: int, axis: int = 1) -> str:
    """Input i (one value per channel) shaped to broadcast along `axis` of a rank-`rank` tensor."""
    size = n.shape(i)[0]
    return reshaped(n.x(i), [size] + [1] * (rank - 1 - axis))


@rule("BatchNormalization", attrs=("epsilon", "momentum", "spatial", "training_mode", "is_test", "consumed_inputs"))
def _batchnorm(n: Node):
    """batchnorm for constant statistics; the formula otherwise, and in training mode (the
    batch's statistics, and the running ones updated as outputs)."""
    n.require_float()
    if n.attr("spatial", 1) != 1:
        n.refuse("spatial = 0")
    rank = n.rank(0)
    eps = n.attr("epsilon", 1e-5)
    if n.attr("training_mode", 0) or any(n.used(j) for j in range(1, len(n.results))):
        if n.version < 14:
            n.refuse("the statistics outputs of BatchNormalization before opset 14")
        axes = axes_text([0] + list(range(2, rank)))
        x = n.x(0)
        mu = n.let(f"mean({x}, {axes})", n.label + "_mean")
        var = n.let(f"mean(({x} - {reshaped(mu, [-1] + [1] * (rank - 2))}) ^ 2, {axes})", n.label + "_var")
        scale, bias = _per_channel(n, 1, rank), _per_channel(n, 2, rank)
        m = flt(n.attr("momentum", 0.9))
        return [f"({x} - {reshaped(mu, [-1] + [1] * (rank - 2))}) / sqrt({reshaped(var, [-1] + [1] * (rank - 2))}"
                f" + {flt(eps)}) * {scale} + {bias}",
                f"{n.x(3)} * {m} + {mu} * (1 - {m})", f"{n.x(4)} * {m} + {var} * (1 - {m})"]
    consts = [n.const(i) for i in range(1, 5)]
    if rank >= 2 and all(c is not None for c in consts):
        name = n.binding(_weights_hint(n, 1))
        for part, c in zip(("gamma", "beta", "running_mean", "running_var"), consts):
            n.weight(f"{name}.{part}", c)
        return f"batchnorm({n.x(0)}{kw(eps=flt(eps) if not np.isclose(eps, 1e-5) else None)})"
    scale, bias, mean, var = (_per_channel(n, i, rank) for i in range(1, 5))
    return f"({n.x(0)} - {mean}) / sqrt({var} + {flt(eps)}) * {scale} + {bias}"


@rule("LayerNormalization", attrs=("axis", "epsilon", "stash_type"))
def _layernorm(n: Node):
    n.require_float()
    if any(n.used(j) for j in (1, 2)):
        n.refuse("its mean and inverse standard deviation outputs")
    shape = n.shape(0)
    rank = len(shape)
    axis = n.axis(n.attr("axis", -1), rank)
    eps = n.attr("epsilon", 1e-5)
    scale, bias = n.const(1), n.const(2)
    width = shape[-1]
    if axis == rank - 1 and scale is not None and scale.shape == (width,) and (
            not n.has(2) or (bias is not None and bias.shape == (width,))):
        name = n.binding(_weights_hint(n, 1))
        n.weight(f"{name}.gamma", scale)
        n.weight(f"{name}.beta", bias if bias is not None else np.zeros(width, scale.dtype))
        return f"layernorm({n.x(0)}{kw(eps=flt(eps) if not np.isclose(eps, 1e-5) else None)})"
    axes = axes_text(range(axis, rank))
    x = n.x(0)
    mu = n.let(f"mean({x}, {axes}, keepdims = true)", n.label + "_mean")
    var = n.let(f"mean(({x} - {mu}) ^ 2, {axes}, keepdims = true)", n.label + "_var")
    out = f"({x} - {mu}) / sqrt({var} + {flt(eps)}) * {n.x(1)}"
    return out + (f" + {n.x(2)}" if n.has(2) else "")


@rule("RMSNormalization", attrs=("axis", "epsilon", "stash_type"))
def _rms_norm(n: Node):
    n.require_float()
    rank = n.rank(0)
    axis = n.axis(n.attr("axis", -1), rank)
    x = n.x(0)
    ms = n.let(f"mean({x} ^ 2, {axes_text(range(axis, rank))}, keepdims = true)", n.label + "_square")
    return f"{x} / sqrt({ms} + {flt(n.attr('epsilon', 1e-5))}) * {n.x(1)}"


@rule("InstanceNormalization", attrs=("epsilon",))
def _instance_norm(n: Node):
    n.require_float()
    rank = n.rank(0)
    axes = axes_text(range(2, rank))
    x = n.x(0)
    mu = n.let(f"mean({x}, {axes}, keepdims = true)", n.label + "_mean")
    var = n.let(f"mean(({x} - {mu}) ^ 2, {axes}, keepdims = true)", n.label + "_var")
    return (f"({x} - {mu}) / sqrt({var} + {flt(n.attr('epsilon', 1e-5))}) * {_per_channel(n, 1, rank)}"
            f" + {_per_channel(n, 2, rank)}")


@rule("GroupNormalization", attrs=("epsilon", "num_groups", "stash_type"))
def _group_norm(n: Node):
    n.require_float()
    shape = n.shape(0)
    rank = len(shape)
    groups = n.attr("num_groups")
    x = n.x(0)
    g = n.let(reshaped(x, [shape[0], groups, -1]), n.label + "_groups")
    mu = n.let(f"mean({g}, 2, keepdims = true)", n.label + "_mean")
    var = n.let(f"mean(({g} - {mu}) ^ 2, 2, keepdims = true)", n.label + "_var")
    normal = n.let(f"({g} - {mu}) / sqrt({var} + {flt(n.attr('epsilon', 1e-5))})", n.label + "_normal")
    if n.shape(1)[0] == groups and groups != shape[1]:      # opset 18: a scale and bias per group
        normal = n.let(f"{normal} * {reshaped(n.x(1), [groups, 1])} + {reshaped(n.x(2), [groups, 1])}",
                       n.label + "_scaled")
        return reshaped(normal, shape)
    back = n.let(reshaped(normal, shape), n.label + "_normal")
    return f"{back} * {_per_channel(n, 1, rank)} + {_per_channel(n, 2, rank)}"


@rule("MeanVarianceNormalization", attrs=("axes",))
def _mvn(n: Node):
    n.require_float()
    rank = n.rank(0)
    axes = axes_text(sorted(n.axis(a, rank) for a in n.attr("axes", [0, 2, 3])))
    x = n.x(0)
    mu = n.let(f"mean({x}, {axes}, keepdims = true)", n.label + "_mean")
    var = n.let(f"mean({x} ^ 2, {axes}, keepdims = true) - {mu} ^ 2", n.label + "_var")
    return f"({x} - {mu}) / (sqrt({var}) + 1e-09)"


@rule("LpNormalization", attrs=("axis", "p"))
def _lp_norm(n: Node):
    n.require_float()
    axis = n.axis(n.attr("axis", -1), n.rank(0))
    x = n.x(0)
    p = n.attr("p", 2)
    if p not in (1, 2):
        n.refuse(f"p = {p}")
    norm = n.let(f"sum(abs({x}), {axis}, keepdims = true)" if p == 1 else
                 f"sqrt(sum({x} ^ 2, {axis}, keepdims = true))", n.label + "_norm")
    return f"{x} / select({norm} == 0, 1.0, {norm})"      # 0 where the norm is 0


@rule("LRN", attrs=("alpha", "beta", "bias", "size"))
def _lrn(n: Node):
    """x / (bias + alpha / size * (sum of squares over `size` neighbouring channels)) ^ beta."""
    n.require_float()
    shape = n.shape(0)
    size = n.attr("size")
    channels = shape[1]
    lo, hi = (size - 1) // 2, size - 1 - (size - 1) // 2
    x = n.x(0)
    before, after = [0] * len(shape), [0] * len(shape)
    before[1], after[1] = lo, hi
    sq = n.let(f"pad({x} ^ 2, {shape_tuple(before)}, {shape_tuple(after)})", n.label + "_squares")
    window = " + ".join(_slice_text(sq, 1, k, k + channels) for k in range(size))
    total = n.let(window, n.label + "_sums")
    return (f"{x} / ({flt(n.attr('bias', 1.0))} + {flt(n.attr('alpha', 1e-4) / size)} * {total})"
            f" ^ {flt(n.attr('beta', 0.75))}")


# ---- layers: dense, conv2d, pools ------------------------------------------------------------------
ACTIVATIONS = {"Relu": "relu", "Tanh": "tanh", "Sigmoid": "sigmoid"}


def _weights_hint(n: Node, i: int) -> str:
    """A layer's binding named after its weights' module ('fc1.weight' -> fc1), else after
    its node's module ('/fc1/Gemm' -> fc1), else its output."""
    if n.has(i) and n.value(i).weight and not n.proto.input[i].startswith("onnx::"):
        hint = layer_hint(n.proto.input[i])
        if hint and hint != n.proto.input[i]:
            return hint
    return _module(n) or n.results[0]


def _module(n: Node) -> str:
    """The module of an exporter's node name: '/ff/ff.0/Gemm' -> ff.0 (PyTorch's scopes end
    with the module's full name, TensorFlow's with its own)."""
    parts = [p for p in n.proto.name.split("/") if p]
    if len(parts) > 1 and parts[-1].split("_")[0] == n.op:
        return parts[-2]
    return "_".join(parts)


def _activation(n: Node) -> str:
    """Absorb a following Relu / Tanh / Sigmoid: the name of the .dl activation, or ''."""
    reader = n.absorb(ACTIVATIONS)
    if reader is None:
        return ""
    n.take(reader)
    return ACTIVATIONS[reader.op]


def _bias_add(n: Node, width: int, shapes) -> np.ndarray | None:
    """Absorb a following Add of a constant bias (of one of `shapes`, for `width` outputs)."""
    reader = n.absorb(("Add",))
    if reader is None:
        return None
    other = 1 if reader.proto.input[0] == n.results[0] else 0
    b = reader.const(other)
    if b is None or not reader.value(other).weight or tuple(b.shape) not in shapes:
        return None
    n.take(reader)
    return b.reshape(width)


def _dense(n: Node, x: str, w: np.ndarray, b: np.ndarray | None, hint: str) -> str:
    act = _activation(n)
    name = n.binding(hint)
    n.weight(f"{name}.W", w)
    if b is not None:
        n.weight(f"{name}.b", b)
    return f"dense({x}, {w.shape[1]}{', ' + act if act else ''}{kw(bias='false' if b is None else None)})"


@rule("Gemm", attrs=("alpha", "beta", "transA", "transB", "broadcast"))
def _gemm(n: Node):
    n.require_float(0, 1)
    alpha, beta = n.attr("alpha", 1.0), n.attr("beta", 1.0)
    w, c = n.const(1), n.const(2)
    if n.value(1).weight and w is not None and not n.attr("transA", 0) and (not n.has(2) or c is not None):
        w = w.T if n.attr("transB", 0) else w
        units = w.shape[1]
        if c is None or c.size in (1, units) and c.ndim <= 2 and (c.ndim < 2 or c.shape[0] == 1):
            b = None if c is None else np.broadcast_to(c.reshape(-1), (units,)) * np.float32(beta)
            if b is None:
                b = _bias_add(n, units, [(units,), (1, units)])
            return _dense(n, n.x(0), w * np.float32(alpha), b, _weights_hint(n, 1))
    a = f"transpose({n.x(0)})" if n.attr("transA", 0) else n.x(0)
    b = f"transpose({n.x(1)})" if n.attr("transB", 0) else n.x(1)
    out = f"{a} @ {b}" if alpha == 1 else f"{flt(alpha)} * ({a} @ {b})"
    if n.has(2):
        out += f" + {n.x(2)}" if beta == 1 else f" + {flt(beta)} * {n.x(2)}"
    return out


@rule("MatMul")
def _matmul(n: Node):
    w = n.const(1)
    if w is not None and n.value(1).weight and w.ndim == 2 and n.dtype(0) in FLOAT:
        return _dense(n, n.x(0), w, _bias_add(n, w.shape[1], [(w.shape[1],), (1, w.shape[1])]), _weights_hint(n, 1))
    if n.dtype(0) not in FLOAT:
        return f"cast({n.x(0)} @ {n.x(1)}, \"{n.out_dtype()}\")"
    return f"{n.x(0)} @ {n.x(1)}"


def _window(n: Node, spatial: tuple, kernel):
    """(strides, pads before, pads after) of a convolution or pooling node, from its pads or
    auto_pad (SAME_UPPER puts the odd one after, SAME_LOWER before)."""
    k = len(kernel)
    strides = list(n.attr("strides", [1] * k))
    auto = n.attr("auto_pad", "NOTSET")
    if auto in ("NOTSET", ""):
        pads = list(n.attr("pads", [0] * 2 * k))
        return strides, pads[:k], pads[k:]
    if auto == "VALID":
        return strides, [0] * k, [0] * k
    before, after = [], []
    for size, kk, s in zip(spatial, kernel, strides):
        if not isinstance(size, int):
            n.refuse(f"auto_pad = {auto} on a symbolic size", "shape")
        total = max((-(-size // s) - 1) * s + kk - size, 0)
        small, big = total // 2, total - total // 2
        before.append(small if auto == "SAME_UPPER" else big)
        after.append(big if auto == "SAME_UPPER" else small)
    return strides, before, after


def _pair(values) -> str:
    values = list(values)
    return str(values[0]) if len(set(values)) == 1 else f"({values[0]}, {values[1]})"


def _padded(n: Node, x: str, before, after, value: str | None = None) -> str:
    """x with pads around its spatial axes (a binding), or x when there are none."""
    if not any(before) and not any(after):
        return x
    lo = [0, 0] + list(before)
    hi = [0, 0] + list(after)
    return n.let(f"pad({x}, {shape_tuple(lo)}, {shape_tuple(hi)}" + (f", {value})" if value else ")"),
                 n.label + "_padded")


@rule("Conv", attrs=("auto_pad", "dilations", "group", "kernel_shape", "pads", "strides"))
def _conv(n: Node):
    """conv2d / conv1d for constant weights (with a following bias Add and Relu), the
    convolution builtin otherwise (and for groups and dilations)."""
    n.require_float(0, 1)
    shape, w_shape = n.shape(0), n.shape(1)
    rank = len(shape)
    if rank not in (3, 4):
        n.refuse(f"a {rank - 2}-D convolution (dlc has 1-D and 2-D ones)", "shape")
    kernel = list(w_shape[2:])
    dilations = list(n.attr("dilations", [1] * len(kernel)))
    group = n.attr("group", 1)
    strides, before, after = _window(n, shape[2:], [(k - 1) * d + 1 for k, d in zip(kernel, dilations)])
    x = n.x(0)
    if before != after:
        x = _padded(n, x, before, after)
        before = [0] * len(kernel)
    w, b = n.const(1), n.const(2)
    filters = w_shape[0]
    if w is not None and n.value(1).weight and (not n.has(2) or b is not None) and group == 1 and set(dilations) == {1}:
        if b is None:
            b = _bias_add(n, filters, [(filters,) + (1,) * (rank - 2), (1, filters) + (1,) * (rank - 2)])
        act = _activation(n)
        name = n.binding(_weights_hint(n, 1))
        n.weight(f"{name}.W", w)
        if b is not None:
            n.weight(f"{name}.b", b.reshape(filters))
        return (f"conv{rank - 2}d({x}, {filters}, {_pair(kernel)}"
                f"{kw(stride=_pair(strides) if set(strides) != {1} else None)}"
                f"{kw(padding=_pair(before) if any(before) else None)}{', act = ' + act if act else ''}"
                f"{kw(bias='false' if b is None else None)})")
    out = _convolution(n, x, n.x(1), shape, w_shape, strides, before, dilations, group)
    if n.has(2):
        out = f"{n.let(out, n.label + '_conv')} + {reshaped(n.x(2), [filters] + [1] * (rank - 2))}"
    return out


def _convolution(n: Node, x: str, w: str, shape, w_shape, strides, pads, dilations, group) -> str:
    """The convolution builtin for any group count and dilation (a kernel spread with zeros);
    a 1-D convolution as a 2-D one of height 1."""
    if len(shape) == 3:
        x = n.let(reshaped(x, [shape[0], shape[1], 1, shape[2]]), n.label + "_2d")
        w = n.let(reshaped(w, [w_shape[0], w_shape[1], 1, w_shape[2]]), n.label + "_kernel")
        strides, pads, dilations = [1] + strides, [0] + pads, [1] + dilations
    if set(dilations) != {1}:
        w = n.let(f"pad({w}, (0, 0, 0, 0), (0, 0, 0, 0), 0, {shape_tuple([0, 0] + [d - 1 for d in dilations])})",
                  n.label + "_dilated")
    inputs, outputs = shape[1] // group, w_shape[0] // group
    parts = [f"convolution({x}{_slice_text('', 1, g * inputs, (g + 1) * inputs) if group > 1 else ''}, "
             f"{w}{_slice_text('', 0, g * outputs, (g + 1) * outputs) if group > 1 else ''}, {_pair(strides)}, "
             f"{_pair(pads)})" for g in range(group)]
    out = parts[0] if group == 1 else f"concat({', '.join(parts)}, axis = 1)"
    return f"{n.let(out, n.label + '_2d')}[:, :, 0]" if len(shape) == 3 else out


@rule("ConvTranspose", static=(1,), attrs=("auto_pad", "dilations", "group", "kernel_shape", "output_padding",
                                           "output_shape", "pads", "strides"))
def _conv_transpose(n: Node):
    """The gradient of a convolution as a convolution: the input spread by the strides and
    padded, convolved with the kernel flipped and its channel axes swapped (at import)."""
    n.require_float(0, 1)
    shape = n.shape(0)
    rank = len(shape)
    if rank not in (3, 4):
        n.refuse(f"a {rank - 2}-D transposed convolution (dlc has 1-D and 2-D ones)", "shape")
    w = n.static(1, "W")
    group = n.attr("group", 1)
    kernel = list(w.shape[2:])
    k = len(kernel)
    dilations = list(n.attr("dilations", [1] * k))
    strides = list(n.attr("strides", [1] * k))
    extra_out = list(n.attr("output_padding", [0] * k))
    extent = [(kk - 1) * d + 1 for kk, d in zip(kernel, dilations)]
    if not all(isinstance(d, int) for d in shape[2:]):
        n.refuse("a transposed convolution of a symbolic size", "shape")
    natural = [s * (size - 1) + e + o for s, size, e, o in zip(strides, shape[2:], extent, extra_out)]     # pads 0
    if "pads" in n.attrs or n.attr("auto_pad", "NOTSET") not in ("SAME_UPPER", "SAME_LOWER"):
        pads = list(n.attr("pads", [0] * 2 * k))
        want = n.attr("output_shape", [a - p - q for a, p, q in zip(natural, pads[:k], pads[k:])])
    else:       # SAME: the output is the input times the strides (or output_shape)
        want = n.attr("output_shape", [size * s for size, s in zip(shape[2:], strides)])
        total = [a - o for a, o in zip(natural, want)]
        upper = n.attr("auto_pad") == "SAME_UPPER"
        pads = [t // 2 if upper else t - t // 2 for t in total] + [t - t // 2 if upper else t // 2 for t in total]
    # the spread input, padded by extent - 1 - pad before and what makes the output's size after
    spread = [s * (size - 1) + 1 for s, size in zip(strides, shape[2:])]
    lo = [e - 1 - p for e, p in zip(extent, pads[:k])]
    hi = [wa - sp - a + e - 1 for wa, sp, a, e in zip(want, spread, lo, extent)]
    x = n.x(0)
    if set(strides) != {1}:
        x = n.let(f"pad({x}, {shape_tuple([0] * rank)}, {shape_tuple([0] * rank)}, 0, "
                  f"{shape_tuple([0, 0] + [s - 1 for s in strides])})", n.label + "_spread")
    x = _padded(n, x, [max(v, 0) for v in lo], [max(v, 0) for v in hi])
    if min(lo + hi) < 0:        # pads larger than the window crop instead
        sizes = [sp + max(a, 0) + max(b, 0) for sp, a, b in zip(spread, lo, hi)]
        bounds = [f"{-a if a < 0 else ''}:{size + b if b < 0 else ''}" for a, b, size in zip(lo, hi, sizes)]
        x = n.let(f"{x}[:, :, {', '.join(bounds)}]", n.label + "_cropped")
    inputs, outputs = w.shape[0] // group, w.shape[1]
    flipped = np.flip(w, tuple(range(2, w.ndim)))
    kernel_w = np.concatenate([flipped[g * inputs:(g + 1) * inputs].swapaxes(0, 1) for g in range(group)])
    name = n.binding(_weights_hint(n, 1))
    weights = n.imp.constant(kernel_w, f"{name}_W", weight=True)
    padded = tuple(sp + a + b for sp, a, b in zip(spread, lo, hi))
    out = _convolution(n, x, weights, (shape[0], shape[1]) + padded, (outputs * group, inputs) + tuple(kernel),
                       [1] * k, [0] * k, dilations, group)
    if n.has(2):
        out = f"{n.let(out, n.label + '_conv')} + {reshaped(n.x(2), [outputs * group] + [1] * (rank - 2))}"
    return out


@rule("MaxPool", "AveragePool", "LpPool", attrs=("auto_pad", "ceil_mode", "count_include_pad", "dilations",
                                                 "kernel_shape", "p", "pads", "storage_order", "strides"))
def _pool(n: Node):
    """max_pool / avg_pool; padding that is not the same on both sides, ceil_mode's windows at
    the end and count_include_pad = 0 are explicit pads and counts. Dilated and 3-D windows
    are the extremum or sum of the window's shifted strided slices."""
    n.require_float()
    if n.used(1):
        n.refuse("the indices output of MaxPool")
    shape = n.shape(0)
    kernel = list(n.attr("kernel_shape"))
    dilations = list(n.attr("dilations", [1] * len(kernel)))
    extent = [(k - 1) * d + 1 for k, d in zip(kernel, dilations)]
    strides, before, after = _window(n, shape[2:], extent)
    extra = [0] * len(kernel)
    if n.attr("ceil_mode", 0):      # more windows at the end: pad for them (they never count)
        for k, (size, e, s) in enumerate(zip(shape[2:], extent, strides)):
            if not isinstance(size, int):
                n.refuse("ceil_mode on a symbolic size", "shape")
            outs = -(-(size + before[k] + after[k] - e) // s) + 1
            if (outs - 1) * s >= size + before[k]:      # a last window only in the padding is dropped
                outs -= 1
            extra[k] = max((outs - 1) * s + e - (size + before[k] + after[k]), 0)
    hi = [a + e for a, e in zip(after, extra)]
    if set(dilations) != {1} or len(kernel) > 2:
        return _pool_slices(n, shape, kernel, dilations, strides, before, after, extra)
    x = n.x(0)
    if len(shape) == 3:     # as a 2-D window of height 1
        x = n.let(reshaped(x, [shape[0], shape[1], 1, shape[2]]), n.label + "_2d")
        kernel, strides = [1] + kernel, [1] + strides
        before, after, hi, extra = ([0] + v for v in (before, after, hi, extra))
    window = _pair(kernel) + (f", {_pair(strides)}" if strides != kernel else "")      # the kernel's by default
    if n.op == "MaxPool":
        if before == hi:
            out = f"max_pool({x}, {window}{', padding = ' + _pair(before) if any(before) else ''})"
        else:
            out = f"max_pool({_padded(n, x, before, hi, '-' + LARGEST[n.dtype(0)])}, {window})"
    elif n.op == "LpPool":      # (the sum of |x|^p over the window)^(1/p); padding adds nothing
        p = n.attr("p", 2)
        powers = n.let(f"abs({x}) ^ {p}", n.label + "_powers")
        out = f"(avg_pool({_padded(n, powers, before, hi)}, {window}) * {prod(kernel)}) ^ {flt(1 / p)}"
    elif before == hi and (n.attr("count_include_pad", 0) or not any(before)):
        out = f"avg_pool({x}, {window}{', padding = ' + _pair(before) if any(before) else ''})"
    else:       # the mean over the window's counted elements: sum / count, both as avg_pool of padded tensors
        total = f"avg_pool({_padded(n, x, before, hi)}, {window})"
        out = f"{total} / avg_pool({_counted(n, x, before, after, extra)}, {window})"
    if len(shape) == 3:
        return f"{n.let(out, n.label + '_2d')}[:, :, 0]"
    return out


def _counted(n: Node, x: str, before, after, extra) -> str:
    """Ones where a window's element counts: x's own, and the pads with count_include_pad."""
    ones = f"full(shape({x}), 1.0, \"{n.dtype(0)}\")"
    if n.attr("count_include_pad", 0):
        return _padded(n, _padded(n, ones, before, after, "1.0"), [0] * len(extra), extra)
    return _padded(n, ones, before, [a + e for a, e in zip(after, extra)])


def _pool_slices(n: Node, shape, kernel, dilations, strides, before, after, extra) -> str:
    """A pooling of any rank and dilation: each window position is a strided slice of the
    padded input, and the window's result their maximum, sum or mean."""
    hi = [a + e for a, e in zip(after, extra)]
    x = n.x(0)
    if n.op == "LpPool":
        x = n.let(f"abs({x}) ^ {n.attr('p', 2)}", n.label + "_powers")
    padded = _padded(n, x, before, hi, "-" + LARGEST[n.dtype(0)] if n.op == "MaxPool" else None)
    outs = []
    for size, k, d, s, b, h in zip(shape[2:], kernel, dilations, strides, before, hi):
        if not isinstance(size, int):
            n.refuse("a dilated or 3-D window on a symbolic size", "shape")
        outs.append((size + b + h - (k - 1) * d - 1) // s + 1)

    def windows(t: str) -> str:
        terms = []
        for offset in np.ndindex(*kernel):
            bounds = [f"{a * d}:{a * d + (o - 1) * s + 1}" + (f":{s}" if s != 1 else "")
                      for a, d, o, s in zip(offset, dilations, outs, strides)]
            terms.append(f"{t}[:, :, {', '.join(bounds)}]")
        return f"stack({', '.join(terms)}, axis = 0)"

    if n.op == "MaxPool":
        return f"max({windows(padded)}, 0)"
    total = f"sum({windows(padded)}, 0)"
    if n.op == "LpPool":
        return f"{total} ^ {flt(1 / n.attr('p', 2))}"
    count = n.let(f"sum({windows(_counted(n, n.x(0), before, after, extra))}, 0)", n.label + "_count")
    return f"{total} / {count}"


@rule("GlobalAveragePool", "GlobalMaxPool")
def _global_pool(n: Node):
    n.require_float()
    axes = axes_text(range(2, n.rank(0)))
    return f"{'mean' if n.op == 'GlobalAveragePool' else 'max'}({n.x(0)}, {axes}, keepdims = true)"


def _zeros(n: Node, i: int) -> bool:
    v = n.value(i)
    return v.fill == 0 or (v.const is not None and v.const.dtype != object and not v.const.any())


@rule("Resize", "Upsample", static=(1, 2, 3), attrs=(
    "antialias", "axes", "coordinate_transformation_mode", "cubic_coeff_a", "exclude_outside", "extrapolation_value",
    "keep_aspect_ratio_policy", "mode", "nearest_mode", "scales"))
def _resize(n: Node):
    """A resize is linear and works axis by axis: each axis' matrix (which input entries make
    each output entry, with what weight) is measured at import by running ONNX's reference
    op on unit inputs, whatever the mode and coordinate transformation. A matrix that picks
    one entry per row (nearest) is a gather, another a matrix product; what the op gives a
    zero input (tf_crop_and_resize's extrapolation value) is added."""
    n.require_float()
    shape = n.shape(0)
    if not all(isinstance(d, int) for d in shape):
        n.refuse("a resize of a symbolic size", "shape")
    settings = [n.static(i) if n.has(i) else None for i in range(1, len(n.proto.input))]
    dtype = NP_DTYPES[n.dtype(0)]

    def response(x):
        out = n.imp.evaluate(n.proto, [x] + settings)
        if out is None:
            n.refuse("this resize (ONNX's reference evaluator does not run it)")
        return out[n.proto.output[0]].astype(np.float64)

    offset = response(np.zeros(shape, dtype))
    total = response(np.ones(shape, dtype)) - offset
    where = np.unravel_index(np.argmax(total), total.shape)        # an output entry that every axis reaches
    out = n.x(0)
    for a, size in enumerate(shape):
        columns = []
        for j in range(size):
            unit = np.zeros(shape, dtype)
            unit[(slice(None),) * a + (j,)] = 1
            r = response(unit) - offset
            columns.append(r[tuple(slice(None) if k == a else p for k, p in enumerate(where))])
        matrix = np.stack(columns, axis=1)      # [out, in]
        if matrix.shape[0] == size and np.allclose(matrix, np.eye(size)):
            continue
        hint = f"{n.label}_axis{a}"
        if np.all((matrix == 0) | (matrix == 1)) and np.all(matrix.sum(1) == 1):       # nearest: a gather
            index = n.imp.constant(matrix.argmax(1).astype(np.int32), hint)
            out = n.let(_take(n, out, len(shape), a, index, 1), hint)
        else:
            weights = n.imp.constant(matrix.T.astype(dtype), hint)
            last = len(shape) - 1
            out = n.let(f"{out} @ {weights}" if a == last else
                        f"swapaxes(swapaxes({out}, {a}, -1) @ {weights}, {a}, -1)", hint)
    if np.any(offset):
        out = f"{out} + {n.imp.constant(offset.astype(dtype), n.label + '_outside')}"
    return out if out != n.x(0) else n.value(0)


@rule("Scan", attrs=("body", "num_scan_inputs", "scan_input_axes", "scan_input_directions", "scan_output_axes",
                     "scan_output_directions"))
def _scan(n: Node):
    """ONNX's Scan as dlc's scan: the states are the carries, each scan input a sequence
    sliced at step t along its axis, the body's nodes the scan's body, the scan outputs its
    yields (the final states, when they are read, are yielded too and taken at the last step)."""
    if n.version < 9:
        n.refuse("the Scan of opset 8 (its sequence_lens input)")
    body = n.attr("body")
    m = n.attr("num_scan_inputs")
    k = len(n.proto.input) - m
    outs = len(body.output) - k
    in_axes = [n.axis(a, n.rank(k + i)) for i, a in enumerate(n.attr("scan_input_axes", [0] * m))]
    directions = set(n.attr("scan_input_directions", [0] * m)) | set(n.attr("scan_output_directions", [0] * outs))
    out_axes = set(n.attr("scan_output_axes", [0] * outs))
    if len(directions) > 1 or len(out_axes) > 1:
        n.refuse("scan inputs or outputs in different directions, or outputs stacked along different axes")
    lengths = {n.shape(k + i)[a] for i, a in enumerate(in_axes)}
    length = lengths.pop() if len(lengths) == 1 else None
    if not isinstance(length, int) and not (isinstance(length, Dim) and str(length).isidentifier()):
        n.refuse("scan inputs of different or computed lengths", "shape")
    imp = n.imp
    carries = [imp.names(v.name, "c") for v in body.input[:k]]
    for j, (name, v) in enumerate(zip(carries, body.input[:k])):
        imp.values[v.name] = Value(n.dtype(j), n.shape(j), expr=name)
    sequences = [n.x(k + i) if n.x(k + i) in imp.bound or n.x(k + i) in imp.inputs.values()
                 else n.let(n.x(k + i), n.proto.input[k + i]) for i in range(m)]       # a sequence is a name
    imp.enter()
    for i, (v, a) in enumerate(zip(body.input[k:], in_axes)):
        shape = n.shape(k + i)
        slice_name = imp.bind(v.name, f"{sequences[i]}[{', '.join([':'] * a + ['t'])}]")
        imp.values[v.name] = Value(n.dtype(k + i), shape[:a] + shape[a + 1:], expr=slice_name)
    for t in body.initializer:
        imp.values[t.name] = Value(DTYPES.get(t.data_type), tuple(t.dims), const=imp.onnx.numpy_helper.to_array(t),
                                   weight=t.data_type in (1, 11), onnx_type=t.data_type)
    imp.infer_body(body)
    imp.emit_nodes(body.node)
    finals = [imp.operand(o.name) for o in body.output[:k]]
    steps = [imp.operand(o.name) for o in body.output[k:]]
    wanted = [j for j in range(k) if n.used(j)] if outs else []      # final states read beside the yields
    lines = imp.leave() + [f"{c} = {f}" for c, f in zip(carries, finals) if c != f]
    if outs:
        lines.append(f"yield {', '.join(steps + [carries[j] for j in wanted])}")
    reverse = directions == {1}
    axis = out_axes.pop() if out_axes else 1
    options = ([f"axis = {axis}"] if outs and axis != 1 else []) + (["reverse = true"] if reverse else [])
    text = (f"scan t in {length}{' (' + ', '.join(options) + ')' if options else ''} carry "
            f"{', '.join(f'{c} = {n.x(j)}' for j, c in enumerate(carries))} {{\n    " + "\n    ".join(
                line.replace("\n", "\n    ") for line in lines) + "\n}")
    if not outs:
        return Multi(text) if k > 1 else text
    names = [n.binding(j=k + i) for i in range(outs)] + [imp.names(f"{carries[j]}_steps") for j in wanted]
    imp.assign(names, text)
    results = [None] * k + [Value(n.out_dtype(k + i), None, expr=names[i]) for i in range(outs)]
    for j, stacked in zip(wanted, names[outs:]):
        last = ", ".join([":"] * axis + ["0" if reverse else "-1"])
        results[j] = f"{stacked}[{last}]"
    return results


# ---- recurrent layers ---------------------------------------------------------------------------------
# ONNX's gate blocks, in the order of dlc's layers (lstm: i, f, g, o; gru: r, z, n)
GATES = {"LSTM": [0, 2, 3, 1], "GRU": [1, 0, 2], "RNN": [0]}
LAYERS = {"LSTM": "lstm", "GRU": "gru", "RNN": "rnn"}
RNN_ACTIVATIONS = {"Tanh": "tanh", "Relu": "relu", "Sigmoid": "sigmoid"}


@rule("LSTM", "GRU", "RNN", static=(1, 2, 3, 4, 7), attrs=(
    "activation_alpha", "activation_beta", "activations", "clip", "direction", "hidden_size", "input_forget",
    "layout", "linear_before_reset"))
def _recurrent(n: Node):
    """ONNX's recurrent ops as dlc's layers: X is time-major (layout 0) or batch-first; W, R
    and B hold each direction's gate blocks, which become the layer's Wx, Wh, bx, bh."""
    n.require_float(0)
    op = n.op
    default = {"LSTM": ["Sigmoid", "Tanh", "Tanh"], "GRU": ["Sigmoid", "Tanh"], "RNN": ["Tanh"]}[op]
    directions = 2 if n.attr("direction", "forward") == "bidirectional" else 1
    acts = n.attr("activations", default * directions)
    if "clip" in n.attrs:
        n.refuse("clip")
    if n.attr("input_forget", 0):
        n.refuse("input_forget = 1")
    if op != "RNN" and acts != default * directions or op == "RNN" and (
            len(set(acts)) != 1 or acts[0] not in RNN_ACTIVATIONS):
        n.refuse(f"the activations {acts}")
    if n.has(4):
        lens = n.static(4, "sequence_lens")
        steps = n.shape(0)[1 if n.attr("layout", 0) else 0]
        if not (lens == steps).all():
            n.refuse("sequences of different lengths (sequence_lens)", "input")
    if op == "LSTM" and n.has(7) and np.any(n.static(7, "P")):
        n.refuse("peephole weights (P)")
    w, r = n.static(1, "W"), n.static(2, "R")
    units = n.attr("hidden_size", r.shape[-1])
    bias = n.static(3, "B") if n.has(3) else np.zeros((directions, 2 * w.shape[1]), w.dtype)
    batch_first = n.attr("layout", 0) == 1
    if batch_first:
        x = n.x(0)
    else:
        x = transposed(n, 0, (1, 0, 2))
        x = x.expr if isinstance(x, Value) else n.let(x, n.label + "_batch_first")
    states = [i for i in ((5, 6) if op == "LSTM" else (5,)) if n.has(i)]
    if states and len(states) != (2 if op == "LSTM" else 1):
        n.refuse("an initial hidden state without the initial cell state, or the reverse", "input")
    hint = _module(n) or n.results[0] or op.lower()
    runs = []
    for d in range(directions):
        reverse = n.attr("direction", "forward") == "reverse" or d == 1
        name = n.imp.names(hint if directions == 1 else f"{hint}_{'bwd' if d else 'fwd'}", "h")
        order = np.concatenate([np.arange(units) + g * units for g in GATES[op]])
        n.weight(f"{name}.Wx", w[d][order].T)
        n.weight(f"{name}.Wh", r[d][order].T)
        n.weight(f"{name}.bx", bias[d][:len(order)][order])
        n.weight(f"{name}.bh", bias[d][len(order):][order])
        state = ""
        if states and not all(_zeros(n, i) for i in states):       # zeros are the layers' own start
            picked = [f"{n.x(i)}[:, {d}]" if batch_first else f"{n.x(i)}[{d}]" for i in states]
            state = f", state = ({', '.join(picked)}{',' if len(picked) == 1 else ''})"
        act = f", act = {RNN_ACTIVATIONS[acts[d]]}" if op == "RNN" and acts[d] != "Tanh" else ""
        if op == "GRU" and not n.attr("linear_before_reset", 0):
            act = ", reset_after = false"
        call = f"{LAYERS[op]}({x}, {units}{act}{', reverse = true' if reverse else ''}{state}"
        if n.used(1) or n.used(2):
            finals = [n.imp.names(f"{name}_{s}") for s in ("h", "c")[:2 if op == "LSTM" else 1]]
            n.imp.assign([name] + finals, f"{call}, return_state = true)")
        else:
            n.imp.assign([name], f"{call})")
            finals = []
        runs.append((name, finals))
    # Y: [T, D, B, U] (layout 0) or [B, T, D, U]; Y_h and Y_c: [D, B, U] or [B, D, U]
    ys = f"stack({', '.join(name for name, _ in runs)}, axis = {2 if batch_first else 1})"
    outputs = [None] * len(n.results)
    squeeze = n.absorb(("Squeeze",)) if directions == 1 and n.used(0) else None
    if squeeze is not None and list(squeeze.setting("axes", 1, [])) in ([1], [-3]) and not batch_first:
        n.take(squeeze)         # Y without its direction axis: [T, B, U], the layer's steps transposed
        back = n.absorb(("Transpose",))
        if back is not None and list(back.attr("perm", [])) == [1, 0, 2]:
            n.take(back)        # and batch-first again: the layer's own result
            outputs[0] = Value(n.out_dtype(), None, expr=runs[0][0])
        else:
            outputs[0] = Expr(f"transpose({runs[0][0]}, 1, 0, 2)")
    elif n.used(0):
        outputs[0] = ys if batch_first else f"transpose({n.let(ys, n.label + '_steps')}, 2, 1, 0, 3)"
    for j in (1, 2)[:len(n.results) - 1]:
        if n.used(j):
            outputs[j] = f"stack({', '.join(f[j - 1] for _, f in runs)}, axis = {1 if batch_first else 0})"
    return outputs
