"""The rule API of ONNX import: the rule of each op type (`RULES`, which the modules of
compiler/onnx/rules/ fill) writes the .dl code of a node, which it reads through `Node`.

The importer (compiler/onnx/importer.py) calls `Node(...).emit`, which folds a node whose
inputs are all known (folding.py for shapes with symbolic dims), or else runs its rule. A
rule reads the node through `Node` (attributes, inputs as .dl operands, static inputs,
shapes) and returns the .dl expression of its result: a string for the first output, a
list for several, an array for a value known now, or a `Value` to alias one. A rule that
cannot import a node raises `Unsupported` (`Node.refuse`).
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Callable

import numpy as np

from dlc.compiler.errors import DlcError
from dlc.compiler.onnx.rule_api.folding import fold_symbolic, has_dims, too_large_to_fold
from dlc.compiler.onnx.rule_api.values import FLOAT, Value, dtype_of, too_large, type_name


class Unsupported(DlcError):
    """A node (or model) dlc cannot express; `kind` says what stands in the way: "op" (no
    rule), "dtype", "attribute", "shape" (an empty or unknown shape), "input" (a value that
    must be known when importing, but is computed at run time), "opset", or "native" (the
    native engine does not compile an operation of the program yet)."""

    def __init__(self, message: str, kind: str):
        super().__init__(message)
        self.kind = kind


class Expand(Exception):
    """The rule of node `index` refused it (`refusal`), but ONNX defines its op as a
    function: import the function's body instead."""

    def __init__(self, index: int, refusal: Unsupported):
        self.index, self.refusal = index, refusal


@dataclass
class Rule:
    emit: Callable
    static: tuple = ()  # inputs that must be known when importing
    attrs: tuple = ()  # the attributes the rule reads; any other is refused
    shape_only: bool = False  # its result depends on the inputs' shapes, not their values


# ONNX op type -> its rule. The modules of compiler/onnx/rules/ fill it: the registry is
# complete once that package is imported (import it from there).
RULES: dict[str, Rule] = {}


def rule(*ops, static=(), attrs=(), shape_only=False):
    """Decorator: the rule of the ONNX op types `ops`."""

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
        self.results = list(proto.output)  # the values the result binds (the last absorbed node's)
        self.names: dict = {}  # output index -> the binding name chosen beforehand
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
            self.refuse(
                f"its input {i} ({what or self.proto.input[i]}) computed at run time: dlc needs it when "
                "importing (a constant, an initializer, or computed from shapes)",
                "input",
            )
        return a

    def dtype(self, i: int) -> str:
        v = self.value(i)
        if v.dtype is None and not v.onnx_type:  # shape inference did not tell: dlc does
            self._type_now(i)
        if v.dtype is None:
            self.refuse(f"{type_name(v.onnx_type)} values", "dtype")
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
            self.refuse(f"an output of {type_name(v.onnx_type)} values", "dtype")
        return v.dtype

    def used(self, j: int) -> bool:
        """Whether output j exists and something reads it."""
        if j >= len(self.results) or not self.results[j]:
            return False
        return self.results[j] in self.imp.read

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
            own = self.imp.output_names.get(self.results[j])  # a graph output's name, kept for it
            if own is not None and not hint and own not in self.imp.bound:
                self.names[j] = own
            else:
                self.names[j] = self.imp.names(hint or self.results[j] or self.label, "v")
        return self.names[j]

    def weight(self, name: str, array):
        array = np.asarray(array)
        self.imp.weights[name] = np.array(array, np.float64 if array.dtype == np.float64 else np.float32, order="C")

    def absorb(self, ops, j: int = 0, after: str = "", pending=()):
        """The node reading output j (or the value `after`), when it is one of `ops`, the only
        reader, and that value is not a graph output: it becomes part of this node's result
        (a bias, an activation). Its other inputs must be known, or among `pending` (values
        of the pattern being absorbed)."""
        name = after or (self.results[j] if j < len(self.results) else "")
        readers = self.imp.consumers.get(name, [])
        if not name or name in self.imp.graph_outputs or len(readers) != 1 or readers[0].op_type not in ops:
            return None
        reader = Node(self.imp, readers[0])
        if reader.proto.domain not in ("", "ai.onnx") or any(
            i and i != name and i not in self.imp.values and i not in pending for i in reader.proto.input
        ):
            return None  # its other inputs are not known yet
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
            except (TypeError, ValueError, IndexError, KeyError, ArithmeticError):
                # values a rule does not handle (symbolic dims in an input it reads as
                # numbers, ...): the node is refused where it is, never an internal error
                if os.environ.get("DLC_DEBUG"):
                    raise
                self.refuse(
                    "this node's inputs: its rule does not handle their values (DLC_DEBUG=1 shows where it stops)",
                    "input",
                )
        except Unsupported as e:
            if self.imp.has_function(proto):
                raise Expand(self.imp.index[id(proto)], e) from None
            raise

    def fold(self) -> bool:
        """Compute a node whose inputs are all known (ONNX's reference evaluator; the
        symbolic shape arithmetic for shapes with symbolic dims)."""
        consts = [self.imp.values[i].const if i else None for i in self.proto.input]
        if any(has_dims(c) for c in consts):
            outs = fold_symbolic(self, consts)
        elif too_large_to_fold(self, consts):
            return False  # its rule keeps it a run-time value, or refuses it
        else:
            outs = self.imp.evaluate(self.proto, consts)
        if outs is None:
            return False
        weight = any(self.imp.values[i].weight for i in self.proto.input if i)
        for name, a in outs.items():
            v = self.imp.inferred(name)
            a = np.asarray(a)
            v.const, v.shape, v.weight = a, tuple(a.shape), weight and v.dtype in FLOAT
            if a.dtype == object:  # a shape with symbolic dims
                v.dtype = "i64"
            elif v.dtype is None:
                v.dtype = dtype_of(a)
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
        if too_large(v.shape):
            self.refuse(f"a result of shape {list(v.shape)}, too large for any machine's memory", "shape")
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
