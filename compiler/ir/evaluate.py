"""A graph evaluated by its primitives' numpy references (their `impl`).

`Eval` is what an impl may ask for while it computes, as `Infer` is for a type rule. The
reference interpreter runs whole graphs with one (runtime/engines/interpreter.py); constant
folding (compiler/passes/optimize.py) and the static builtins (compiler/frontend/builtins.py)
compute single nodes with the default one, in float64, and ONNX export a constant `iota`.
"""

from __future__ import annotations

import numpy as np

from dlc.compiler.errors import DlcError
from dlc.compiler.ir.dims import Dim, concrete
from dlc.compiler.ir.graph import DTYPES, FLOAT_DTYPES, Graph
from dlc.compiler.ir.primitives import PRIMITIVES


def round_bf16(x: np.ndarray) -> np.ndarray:
    """x rounded to bfloat16, to nearest even, and back to float32, as the native kernels
    round their bf16 operands (compiler/native/codegen/intrinsics.py `bf16_bits`): a NaN stays a NaN."""
    x = np.asarray(x, np.float32)
    bits = x.view(np.uint32)
    rounded = bits + np.uint32(0x7FFF) + ((bits >> np.uint32(16)) & np.uint32(1))
    bits = np.where(np.isnan(x), bits | np.uint32(0x400000), rounded) & np.uint32(0xFFFF0000)
    return bits.astype(np.uint32).view(np.float32)


class Eval:
    """The values an impl may read: the graph's inputs (`feeds`), its parameters, a body's
    arguments and the sizes of the symbolic dims; every float computed in `float_dtype`
    (None: in the dtype the graph gives it). `steps`: the indices of the enclosing scan
    steps. `replicas`: the replica mean of a data-parallel run
    (runtime/engines/distributed.py), None in one process. `bf16`: under precision "bf16",
    which matmuls and convolutions multiply operands rounded to bfloat16 (`operands`): a
    function of (graph, node), the native backend's rule (compiler/native/bf16.py
    `in_bf16`); None in float32."""

    def __init__(
        self,
        feeds: dict | None = None,
        params: dict | None = None,
        sizes: dict | None = None,
        float_dtype: str | None = "f64",
        replicas=None,
        bf16=None,
    ):
        self.feeds, self.params, self.sizes, self.float_dtype = feeds or {}, params or {}, sizes or {}, float_dtype
        self.replicas = replicas
        self.bf16 = bf16
        self.at: tuple = ()  # (graph, node) computed now: whose operands `operands` rounds
        self.args: list = []
        self.steps: tuple = ()

    def np_dtype(self, dtype: str):
        return DTYPES[self.float_dtype if self.float_dtype and dtype in FLOAT_DTYPES else dtype]

    def operands(self, xs: list) -> list:
        """The operands of a matmul or a convolution as it multiplies them: rounded to
        bfloat16 where `bf16` says this product runs in bf16 (the products and their sums
        stay in the values' dtype)."""
        if self.bf16 is None or not self.bf16(*self.at):
            return xs
        return [round_bf16(x).astype(np.asarray(x).dtype) for x in xs]

    def size(self, d) -> int:
        return concrete(d, self.sizes)

    def feed(self, name):
        return self.feeds[name]

    def param(self, name):
        return self.params[name]

    def arg(self, index):
        return self.args[index]

    def error(self, message: str) -> DlcError:
        return DlcError(message)

    def run(self, graph: Graph, args: list) -> list:
        """The outputs of a body graph for these arguments (a scan's step)."""
        saved, self.args = self.args, args
        try:
            values = self.values(graph)
        finally:
            self.args = saved
        return [values[t.key()] for t in graph.outputs.values()]

    def values(self, graph: Graph) -> dict:
        """The graph's outputs by (node, output): every other value is dropped after its last
        reader (GPT-2's initializers held each draw beside its scaled parameter: 340 MB more)."""
        values: dict = {}
        for n, impl, inputs, attrs, sized, dtypes, dead in plan(graph):
            self.at = (graph, n)
            if sized:
                attrs = {**attrs, **{k: self._resolve(attrs[k]) for k in sized}}
            try:
                outs = self.impl_of(graph, n, impl)(self, [values[k] for k in inputs], **attrs)
            except DlcError as e:  # a check of the values (an index out of range): at the node's line
                if e.span is not None:
                    raise
                raise DlcError.at_user_line(e.message, graph.nx.nodes[n]["span"]) from None
            for j, (out, dtype) in enumerate(zip(outs, dtypes)):
                values[(n, j)] = np.asarray(out, self.np_dtype(dtype))
            self.computed(graph, n, inputs, values)
            for k in dead:
                del values[k]
        return values

    def impl_of(self, graph: Graph, n: int, impl):
        """The numpy code that computes node n: its primitive's `impl`, unless a subclass
        computes the node otherwise (runtime/engines/int8.py: a product in integers)."""
        return impl

    def computed(self, graph: Graph, n: int, inputs: list, values: dict):
        """Called once node n's values are in `values`, with the keys of its inputs; a
        subclass watches the evaluation here (runtime/engines/numerics.py)."""

    def _resolve(self, v):
        if isinstance(v, Dim):
            return self.size(v)
        if isinstance(v, tuple):
            return tuple(self._resolve(x) for x in v)
        return v


def plan(graph: Graph) -> list:
    """The graph in execution order, computed once per graph (graphs do not change
    after they are built; the node and edge counts and the outputs guard against it): each
    node with the attributes that hold symbolic dims (`sized`, resolved at each run) and the
    values that are not outputs and that no later node reads (`dead`, dropped after it)."""
    key = (graph.nx.number_of_nodes(), graph.nx.number_of_edges(), tuple(t.key() for t in graph.outputs.values()))
    cached = graph.__dict__.get("_plan")
    if cached is None or cached[0] != key:
        order = graph.order()
        reads = [[t.key() for t in graph.inputs(n)] for n in order]
        last = {}
        for step, keys in enumerate(reads):
            last.update((k, step) for k in keys)
        for t in graph.outputs.values():
            last.pop(t.key(), None)
        dead = [[] for _ in order]
        for k, step in last.items():
            dead[step].append(k)
        steps = []
        for n, inputs, gone in zip(order, reads, dead):
            data = graph.nx.nodes[n]
            attrs = data["attrs"]
            sized = tuple(k for k, v in attrs.items() if _sized(v))
            steps.append((n, PRIMITIVES[data["op"]].impl, inputs, attrs, sized, [t.dtype for t in data["types"]], gone))
        cached = graph.__dict__["_plan"] = (key, steps)
    return cached[1]


def _sized(v) -> bool:
    """Whether an attribute holds a symbolic dim, which `Eval._resolve` turns into a size."""
    return isinstance(v, Dim) or isinstance(v, tuple) and any(map(_sized, v))
