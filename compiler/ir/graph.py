"""The graph IR: a networkx MultiDiGraph of primitive ops.

Every node has an `op`, static `attrs`, a list of output `types` (TensorType) and the
source `span` it came from. An edge u -> v with key i and attribute `out=j` says that
output j of u is argument i of v; edges are the only record of dataflow.
`Tensor` is a handle on one output of one node; arithmetic on it emits nodes.
"""

from __future__ import annotations

import gc
import heapq
import json
import time
from collections.abc import MutableMapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from enum import Enum
from typing import Callable

import networkx as nx
import numpy as np

from dlc.compiler.ir.dims import shape_str, numel
from dlc.compiler.errors import DlcError, Span

# the most nodes one model build may make, in all its graphs (docs/language.md, section 7):
# a 10,000-layer MLP makes 230,000 (forward and initializers)
MAX_NODES = 250_000

# each dtype of the language: its numpy type, and its ONNX element type (TensorProto.DataType)
_DTYPES = {
    "f32": (np.float32, 1),
    "f64": (np.float64, 11),
    "i32": (np.int32, 6),
    "i64": (np.int64, 7),
    "bool": (np.bool_, 9),
}
DTYPES = {name: numpy for name, (numpy, _) in _DTYPES.items()}
ONNX_ELEM_TYPES = {name: elem_type for name, (_, elem_type) in _DTYPES.items()}
FLOAT_DTYPES = ("f32", "f64")
ITEMSIZE = {dtype: np.dtype(t).itemsize for dtype, t in DTYPES.items()}  # bytes an element


@dataclass(frozen=True)
class TensorType:
    dtype: str
    shape: tuple

    @property
    def rank(self) -> int:
        return len(self.shape)

    @property
    def is_float(self) -> bool:
        return self.dtype in FLOAT_DTYPES

    def __str__(self) -> str:
        return f"{self.dtype}{shape_str(self.shape)}"


class Pattern(Enum):
    """A primitive's fusion pattern (as TVM's OpPatternKind): what its kernel is, for
    fusion (compiler/native/fusion.py) and for the lowering of a primitive without a rule
    of its own (compiler/native/rules/)."""

    SOURCE = "source"  # an input, parameter, constant, draw: no operand
    ELEMENTWISE = "elementwise"  # each result element from the same element of each operand
    BROADCAST = "broadcast"  # an operand repeated along new axes
    INJECTIVE = "injective"  # each result element one element of the operand: views, slices, gathers
    REDUCTION = "reduction"  # sums or maxima along axes
    CONTRACTION = "contraction"  # matrix products
    WINDOW = "window"  # convolutions and pools: sums over windows
    OPAQUE = "opaque"  # a kernel of its own that nothing fuses into
    CONTROL = "control"  # a loop over a body graph (scan)


@dataclass
class Primitive:
    """One primitive op, the one record of everything the compiler knows about it.

    `pattern` is its fusion pattern (Pattern). `dtypes` are the dtypes of the values its
    operands may hold (a condition or an index aside), which its type rule accepts.
    `builtin` or `operator` is how .dl writes it and `onnx` the ONNX op that computes it:
    the builtins, the evaluator's operators and ONNX export and import read their names
    here. The native backend keeps its lowering and scalar rules in tables of its own,
    keyed by the primitive's name (compiler/native/rules/, compiler/native/codegen/scalar.py), so
    that building the records never loads LLVM."""

    name: str
    pattern: Pattern
    infer: Callable  # (ctx: Infer, types, **attrs) -> list[TensorType]
    impl: Callable  # (ctx: evaluate.Eval, arrays, **attrs) -> list[np.ndarray]
    vjp: Callable | None = None  # (node: NodeView, cotangents) -> list[Tensor | None]
    flops: Callable | None = None  # (in_types, out_types, **attrs) -> dim polynomial
    dtypes: tuple = tuple(DTYPES)
    given: bool = False  # its value comes from outside the graph: an input, a parameter, an argument
    view: bool = False  # its result is its operand's elements, rearranged or not at all (no arithmetic)
    cheap: bool = False  # cheaper to recompute than to keep in memory (views, constants)
    recompute: bool = False  # one of it on values in memory costs less to redo in each reader than to store
    commutative: bool = False  # its two operands may be swapped
    libm: str | None = None  # the C math library's function that computes it (float; "f" suffix for f32)
    arity: int | None = None  # an elementwise op's number of operands
    builtin: str | None = None  # the .dl builtin that emits it, an argument per operand: exp, sigmoid, select
    operator: str | None = None  # the .dl operator that emits it: +, ==, not
    onnx: str | None = None  # the ONNX op that computes it from the same operands, without attributes
    nonempty_axes: Callable | None = None  # (**attrs) -> the axes of its operand that must not be empty
    # what fusion (compiler/native/fusion.py) knows of its native kernel:
    memory_operands: tuple | None = ()  # the operands the kernel reads from memory: positions, None: all
    memory_reason: str = "memory"  # why: "gemm" (GEMM calls read them), "window" (read through windows)
    recomputed_operand: int | None = None  # the operand computed afresh wherever an element is needed
    pieces: str | None = None  # its result written in pieces: "disjoint" (concat) or "overlapping" (pad)
    argument: bool = False  # a scan body's argument: the value its scan passes in, in that value's form
    holds_value: bool = False  # its value is an attribute (a constant): free as a scalar, else in memory
    part: Callable | None = None  # (output shape, **attrs) -> (first, last) per axis: the part of its operand it is
    # (node: NodeView, slicing) -> its result sliced, computed from slices of its operands, or None:
    # computed whole (compiler/passes/narrow.py; an elementwise op's is the pass's own)
    narrow: Callable | None = None
    # what gradient checks (runtime/training/gradcheck.py) know of integer inputs:
    index_count: Callable | None = None  # (operand types) -> the values its integer operand may take
    indices: bool = False  # its values are the indices along an axis (`axis`): iota
    equality: bool = False  # it tests its operands for equality (==, !=)


PRIMITIVES: dict[str, Primitive] = {}


def primitive(name: str, pattern: Pattern, infer, vjp=None, flops=None, **properties):
    """Decorator: register the primitive whose numpy reference it decorates."""

    def register(impl):
        PRIMITIVES[name] = Primitive(name, pattern, infer, impl, vjp, flops, **properties)
        return impl

    return register


class Infer:
    """What a type rule may ask of the graph: fail with a located error."""

    def __init__(self, graph: "Graph", op: str):
        self.graph, self.op = graph, op

    @property
    def dtypes(self) -> tuple:
        """The dtypes the primitive's operands may hold (its record)."""
        return PRIMITIVES[self.op].dtypes

    def fail(self, message: str):
        raise DlcError(f"{self.op}: {message}", self.graph.span)


def nested_graphs(graph: "Graph") -> list:
    """The graph and every graph in its nodes' attributes (the bodies of its scans, and
    theirs), outermost first."""
    out = [graph]
    for n in sorted(graph.nx.nodes):
        for v in graph.attrs(n).values():
            if isinstance(v, Graph):
                out += nested_graphs(v)
    return out


@contextmanager
def collector_paused():
    """Around building a graph (a model, its gradient, the passes; a decorator): that makes
    a few small objects per node that all live until it is done, and the cyclic garbage
    collector, passing over them again and again as they grow in number, finds little
    among them: it took 40% of the time of building a large model, 60% of differentiating
    it and 20% of the passes."""
    enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if enabled:
            gc.enable()


class NodeBudget:
    """The nodes the graphs of one model build may still make, shared by them all; and, for
    a build that must answer soon (the language server's), the seconds it may take."""

    CLOCK_EVERY = 1024  # nodes between two looks at the clock

    def __init__(self, seconds: float | None = None):
        self.total = self.left = MAX_NODES
        self.seconds = seconds
        self.deadline = None if seconds is None else time.monotonic() + seconds

    def spend(self, span: Span | None):
        if self.left <= 0:
            raise DlcError(
                f"the model needs more than {MAX_NODES:,} graph nodes, the most a model may have "
                "(a repeat with too many steps?)",
                span,
            )
        self.left -= 1
        if self.deadline is not None and self.left % self.CLOCK_EVERY == 0 and time.monotonic() > self.deadline:
            raise DlcError.at_user_line(
                f"stopped building the model after {self.seconds:g} s, the time budget of "
                f"this build ({MAX_NODES - self.left:,} graph nodes made; a repeat with many "
                "steps?); `dlc check` builds it whole",
                span,
            )


class Tensor:
    """One output of one node."""

    __slots__ = ("graph", "node", "out")

    def __init__(self, graph: "Graph", node: int, out: int = 0):
        self.graph, self.node, self.out = graph, node, out

    @property
    def type(self) -> TensorType:
        return self.graph.nx.nodes[self.node]["types"][self.out]

    @property
    def shape(self) -> tuple:
        return self.type.shape

    @property
    def dtype(self) -> str:
        return self.type.dtype

    @property
    def rank(self) -> int:
        return len(self.type.shape)

    @property
    def span(self) -> Span | None:
        return self.graph.nx.nodes[self.node]["span"]

    @property
    def made_at(self) -> Span | None:
        """Where the user's program made this tensor, for notes: its node's span, or for a
        node of the standard library, the user's call that led there."""
        span = self.span
        return span if span is None or span.caller is None else span.caller

    def key(self):
        return (self.node, self.out)

    def __repr__(self):
        return f"%{self.node}" + (f".{self.out}" if self.out else "") + f":{self.type}"

    # arithmetic (+, -, *, /, unary -, @) is installed by ops.py, where its rules live


class Outputs(MutableMapping):
    """A graph's named results (name -> Tensor), a dict that also knows which names read
    each value: a pass asks at every rewrite, and a scan of all the outputs each time made
    the passes quadratic in their number (two per layer)."""

    def __init__(self, named=()):
        self._named: dict = {}
        self._readers: dict = {}  # (node, out) -> the names that read it
        self.update(named)

    def readers(self, key: tuple) -> list:
        """The names of the outputs that read value `key` (node, out)."""
        return self._readers.get(key, [])

    def __getitem__(self, name: str) -> Tensor:
        return self._named[name]

    def __setitem__(self, name: str, t: Tensor):
        if name in self._named:
            self._unlink(name)
        self._named[name] = t  # a name given again keeps its place, as in a dict
        self._readers.setdefault(t.key(), []).append(name)

    def __delitem__(self, name: str):
        self._unlink(name)
        del self._named[name]

    def _unlink(self, name: str):
        key = self._named[name].key()
        self._readers[key].remove(name)
        if not self._readers[key]:
            del self._readers[key]

    def __iter__(self):
        return iter(self._named)

    def __len__(self) -> int:
        return len(self._named)

    def __repr__(self) -> str:
        return repr(self._named)


@dataclass
class NodeView:
    """What a VJP rule sees of a node: its attrs, operands and outputs."""

    graph: "Graph"
    node: int
    attrs: dict
    inputs: list
    outputs: list
    span: Span | None = field(default=None)


class Graph:
    def __init__(self, name: str = "main", parent: "Graph | None" = None, budget: NodeBudget | None = None):
        self.name = name
        self.budget = budget  # a model build's graphs share one; derived graphs have none
        # the nodes (op, attrs, types, span) and the edges (key: operand index, out: output read);
        # the queries below read its own dicts (`_node`, `_pred`, `_succ`), which its views wrap
        # at a call per lookup: the passes, autodiff and lowering ask them hundreds of thousands of times
        self.nx = nx.MultiDiGraph()
        self.parent = parent
        self.span: Span | None = None
        # the standard library's calls the nodes being emitted lie inside, innermost first (Span.calls)
        self.calls: tuple = ()
        self.outputs = Outputs()
        self.args: list[Tensor] = []  # ordered arguments of a body graph
        self._next = 0

    @property
    def outputs(self) -> Outputs:
        return self._outputs

    @outputs.setter
    def outputs(self, named):
        self._outputs = Outputs(named)

    # construction -------------------------------------------------------------------
    def at(self, span: Span | None, call: bool = False) -> "_At":
        """`with graph.at(span):` emits nodes with this source span; with `call`, the span is a
        call whose body the nodes emitted meanwhile lie inside (Graph.calls)."""
        return _At(self, span, call)

    def add(self, op: str, inputs: list[Tensor] = (), **attrs) -> list[Tensor]:
        prim = PRIMITIVES[op]
        for t in inputs:
            assert t.graph is self, f"{op}: operand from another graph"
        try:
            types = prim.infer(Infer(self, op), [t.type for t in inputs], **attrs)
        except DlcError as e:
            if not e.notes:
                e.notes = [
                    (f"operand {i + 1} is {t.type}, from here", t.made_at)
                    for i, t in enumerate(inputs)
                    if t.made_at is not None and t.made_at != e.span
                ]
            raise
        for t in types:
            if any(isinstance(d, int) and d <= 0 for d in t.shape):
                raise DlcError(f"{op}: dimension sizes must be positive, got {t}", self.span)
        if self.budget is not None:
            self.budget.spend(self.span)
        n = self._next
        self._next += 1
        self.nx.add_node(n, op=op, attrs=attrs, types=list(types), span=self.span)
        for i, t in enumerate(inputs):
            self.nx.add_edge(t.node, n, key=i, out=t.out)
        return [Tensor(self, n, j) for j in range(len(types))]

    def add1(self, op: str, inputs: list[Tensor] = (), **attrs) -> Tensor:
        return self.add(op, inputs, **attrs)[0]

    # queries ------------------------------------------------------------------------------
    def flops(self):
        """Floating-point operations of one run of the graph, as a polynomial in its dims."""
        return sum((self.node_flops(n) for n in self.nx.nodes), 0)

    def node_flops(self, n: int):
        """Floating-point operations of node n, by its primitive's rule (0 for one that counts none)."""
        prim = PRIMITIVES[self.op(n)]
        if prim.flops is None:
            return 0
        return prim.flops([t.type for t in self.inputs(n)], self.types(n), **self.attrs(n))

    def op(self, n: int) -> str:
        return self.nx._node[n]["op"]

    def attrs(self, n: int) -> dict:
        return self.nx._node[n]["attrs"]

    def types(self, n: int) -> list:
        return self.nx._node[n]["types"]

    def inputs(self, n: int) -> list[Tensor]:
        edges = sorted((k, u, data["out"]) for u, keys in self.nx._pred[n].items() for k, data in keys.items())
        return [Tensor(self, u, out) for _, u, out in edges]

    def outputs_of(self, n: int) -> list[Tensor]:
        return [Tensor(self, n, j) for j in range(len(self.types(n)))]

    def view(self, n: int) -> NodeView:
        return NodeView(self, n, self.attrs(n), self.inputs(n), self.outputs_of(n), self.nx.nodes[n]["span"])

    def order(self) -> list[int]:
        """Nodes in a topological order that keeps creation order where it can: the smallest
        ready node first (networkx's lexicographical sort, without its overhead per edge)."""
        waiting = {n: sum(map(len, pred.values())) for n, pred in self.nx._pred.items()}  # edges not yet met
        ready = [n for n, k in waiting.items() if not k]
        heapq.heapify(ready)
        out = []
        while ready:
            n = heapq.heappop(ready)
            out.append(n)
            for v, keys in self.nx._succ[n].items():
                waiting[v] -= len(keys)
                if not waiting[v]:
                    heapq.heappush(ready, v)
        return out

    def set_args(self, args: list):
        """A body's arguments in order; each `arg` node's index follows its place."""
        for i, a in enumerate(args):
            self.attrs(a.node)["index"] = i
        self.args = list(args)

    def uses(self, t: Tensor) -> int:
        """Readers of t, a graph output counting as one."""
        readers = sum(1 for _, _, out in self.nx.out_edges(t.node, data="out") if out == t.out)
        return readers + len(self.outputs.readers(t.key()))

    def redirect(self, n: int, targets: list):
        """Every reader of output j of node n (an edge or a graph output) reads targets[j]."""
        for _, v, k, out in list(self.nx.out_edges(n, keys=True, data="out")):
            self.nx.remove_edge(n, v, key=k)
            self.nx.add_edge(targets[out].node, v, key=k, out=targets[out].out)
        for j, target in enumerate(targets):
            for name in list(self.outputs.readers((n, j))):
                self.outputs[name] = target

    def nodes_with(self, op: str) -> list[int]:
        return [n for n in sorted(self.nx.nodes) if self.op(n) == op]

    def params(self) -> list[int]:
        return self.nodes_with("param")


class _At:
    """The context of Graph.at: a class, not a generator, as every expression enters one."""

    __slots__ = ("graph", "span", "call", "saved")

    def __init__(self, graph: Graph, span: Span | None, call: bool):
        self.graph, self.span, self.call = graph, span, call

    def __enter__(self):
        self.saved = self.graph.span, self.graph.calls
        if self.span is not None:
            self.graph.span = self.span.called_from(self.saved[0], self.graph.calls)
            if (
                self.call
            ):  # a call in the library is a way back to the user's call; one in the user's files is that call
                self.graph.calls = (self.span,) + self.graph.calls if self.span.in_stdlib() else ()

    def __exit__(self, *exc):
        self.graph.span, self.graph.calls = self.saved


# ---- rendering (dlc graph) -------------------------------------------------------------
def attr_text(v) -> str:
    """An attribute's value as `dlc graph` prints it: `1`, `(3, 3)`, `[0.5,2]`, `array[64]`."""
    if isinstance(v, Graph):
        return f"<body {v.name}>"
    if isinstance(v, np.ndarray):
        if v.ndim == 0:
            return f"{v.item():g}" if isinstance(v.item(), float) else str(v.item())
        return f"array{list(v.shape)}" if v.size > 4 else np.array2string(v, separator=",")
    if isinstance(v, tuple):
        return "(" + ", ".join(attr_text(x) for x in v) + ("," if len(v) == 1 else "") + ")"
    if isinstance(v, float):
        return f"{v:g}"
    return str(v)


def attrs_text(attrs: dict) -> str:
    """`shape=(B, 1), ta=False`: a node's attributes but its body graph."""
    return ", ".join(f"{k}={attr_text(v)}" for k, v in attrs.items() if not isinstance(v, Graph))


def _ref(t: Tensor) -> str:
    return f"%{t.node}" + (f".{t.out}" if t.out else "")


def _where(span: Span) -> str:
    return f"{span.place()}:{span.col}"


def to_text(graph: Graph, indent: str = "", spans: bool = True) -> str:
    """The graph as text, a node a line; `spans`: each with the place in the source that made it."""
    lines = []
    for n in graph.order():
        d = graph.nx.nodes[n]
        types = ", ".join(str(t) for t in d["types"])
        args = ", ".join(_ref(t) for t in graph.inputs(n))
        attrs = attrs_text(d["attrs"])
        loc = f"  @{_where(d['span'])}" if d["span"] and spans else ""
        call = d["op"] + (f"({args})" if args else "") + (f" {{{attrs}}}" if attrs else "")
        lines.append(f"{indent}%{n} = {call} : {types}{loc}")
        for k, v in d["attrs"].items():
            if isinstance(v, Graph):
                lines.append(f"{indent}  {k} {v.name}(" + ", ".join(_ref(a) + f":{a.type}" for a in v.args) + ") {")
                lines.append(to_text(v, indent + "    ", spans))
                lines.append(f"{indent}  }}")
    for name, t in graph.outputs.items():
        lines.append(f"{indent}output {name} = {_ref(t)} : {t.type}")
    return "\n".join(lines)


GRADIENTS = "∇"  # the layer of the gradient nodes, above one per layer: ∇.stage1.0.conv1


def layer_of(graph: Graph, n: int) -> str:
    """The layer node n belongs to, a dotted path ("" for none): in the forward graph the
    name prefix of the parameters of the call that made it, or its model statement's binding
    (set by the evaluator); in the train-step graph, the gradient of a node belongs to
    ∇.LAYER, LAYER being that node's."""
    d = graph.nx.nodes[n]
    if "grad_of" not in d:
        return d.get("layer", "")
    forward = graph.nx.nodes[d["grad_of"]] if d["grad_of"] in graph.nx else {}
    return ".".join(p for p in (GRADIENTS, forward.get("layer", "")) if p)


def layer_label(layer: str) -> str:
    """stage1.0, ∇ stage1.0, ∇ (gradients)."""
    if layer == GRADIENTS:
        return f"{GRADIENTS} (gradients)"
    return layer.replace(GRADIENTS + ".", GRADIENTS + " ", 1)


def layer_parent(layer: str) -> str:
    """The layer that holds this one: stage1.0 for stage1.0.conv1, "" for stage1."""
    return layer.rpartition(".")[0]


def node_title(graph: Graph, n: int) -> str:
    """`%12 conv2d`, with the name of an input or parameter: `%3 param stage1.0.conv1.W`."""
    d = graph.nx.nodes[n]
    name = d["attrs"].get("name") if PRIMITIVES[d["op"]].given else None
    return f"%{n} {d['op']}" + (f" {name}" if isinstance(name, str) else "")


def layer_tree(graph: Graph) -> dict:
    """Every layer that holds nodes -> (the layers in it, its own nodes), with the layers
    above them; "" is the whole graph. In graph order."""
    tree: dict = {"": ([], [])}

    def add(layer: str):
        if layer not in tree:
            tree[layer] = ([], [])
            add(layer_parent(layer))
            tree[layer_parent(layer)][0].append(layer)

    for n in graph.order():
        layer = layer_of(graph, n)
        add(layer)
        tree[layer][1].append(n)
    return tree


def _quoted(text: str) -> str:
    return '"' + text.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n") + '"'


def to_dot(graph: Graph) -> str:
    """Graphviz: each node with its op (and the name of an input or parameter), in a
    cluster per layer, nested as the layers are."""
    lines = [f'digraph "{graph.name}" {{', "  node [shape=box, fontname=monospace];"]
    tree = layer_tree(graph)

    def cluster(layer: str, indent: str):
        layers, nodes = tree[layer]
        for n in nodes:
            label = node_title(graph, n) + "\n" + ", ".join(str(t) for t in graph.types(n))
            lines.append(f"{indent}n{n} [label={_quoted(label)}];")
        for child in layers:
            lines.append(f"{indent}subgraph {_quoted('cluster_' + child)} {{")
            lines.append(f"{indent}  label={_quoted(layer_label(child))};")
            cluster(child, indent + "  ")
            lines.append(f"{indent}}}")

    cluster("", "  ")
    for u, v, k, out in graph.nx.edges(keys=True, data="out"):
        lines.append(f'  n{u} -> n{v} [label="{out}:{k}"];')
    for name, t in graph.outputs.items():
        lines.append(f'  "out:{name}" [shape=ellipse];')
        lines.append(f'  n{t.node} -> "out:{name}";')
    lines.append("}")
    return "\n".join(lines)


def to_json(graph: Graph) -> str:
    return json.dumps(_json(graph), indent=1)


def _json(graph: Graph) -> dict:
    nodes = []
    for n in graph.order():
        d = graph.nx.nodes[n]
        nodes.append(
            {
                "id": n,
                "op": d["op"],
                "pattern": PRIMITIVES[d["op"]].pattern.value,
                "inputs": [[t.node, t.out] for t in graph.inputs(n)],
                "attrs": {k: (_json(v) if isinstance(v, Graph) else attr_text(v)) for k, v in d["attrs"].items()},
                "types": [str(t) for t in d["types"]],
                "span": str(d["span"]) if d["span"] else None,
            }
        )
    return {
        "name": graph.name,
        "args": [[t.node, t.out] for t in graph.args],
        "nodes": nodes,
        "outputs": {k: [t.node, t.out] for k, t in graph.outputs.items()},
    }


__all__ = [
    "Graph",
    "Tensor",
    "TensorType",
    "Primitive",
    "PRIMITIVES",
    "primitive",
    "Infer",
    "NodeView",
    "DTYPES",
    "numel",
]
