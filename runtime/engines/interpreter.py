"""The numpy reference interpreter: runs any graph node by node with each primitive's
`impl` (compiler/ir/evaluate.py), once the inputs give the sizes of its symbolic dims. It is
the oracle the native backend is tested against, so it stays simple."""

from __future__ import annotations

import numpy as np

from dlc.compiler.ir.dims import Dim, concrete
from dlc.compiler.errors import DlcError
from dlc.compiler.ir.evaluate import Eval
from dlc.compiler.ir.graph import DTYPES, Graph, nested_graphs
from dlc.compiler.ir.primitives import PRIMITIVES


def bind_sizes(graph: Graph, feeds: dict) -> dict:
    """Sizes of the symbolic dims, read off the fed arrays; a mismatch is a clear error."""
    sizes: dict = {}
    pending = []
    for name, typ, span, symbols in _input_specs(graph):
        if name not in feeds:
            raise DlcError(f"no value given for input '{name}' ({typ})", span)
        shape = np.shape(feeds[name])
        if len(shape) != typ.rank:
            raise DlcError(f"input '{name}' expects {typ}, got an array of shape {shape}", span)
        for d, sym, actual in zip(typ.shape, symbols, shape):
            if sym is None:
                pending.append((name, typ, d, actual, span))
            elif sizes.setdefault(sym, actual) != actual:
                raise DlcError(f"input '{name}' expects {typ} with {sym} = {sizes[sym]}, got shape {shape}", span)
    for name, typ, d, actual, span in pending:
        try:
            want = concrete(d, sizes)
        except KeyError:
            continue
        if want != actual:
            raise DlcError(f"input '{name}' expects {typ}, got an array whose dim is {actual} where {d} = {want}", span)
    check_sizes(graph, sizes)
    return sizes


def _input_specs(graph: Graph) -> list:
    """(name, type, span, the symbol each dim is or None) of the graph's inputs, computed once
    per graph (guarded as `plan` is): a prediction of one example must not walk the graph."""
    key = (graph.nx.number_of_nodes(), graph.nx.number_of_edges())
    cached = graph.__dict__.get("_input_specs")
    if cached is None or cached[0] != key:
        specs = []
        for n in graph.nodes_with("input"):
            typ = graph.types(n)[0]
            symbols = [
                next(iter(d.symbols()))
                if isinstance(d, Dim) and len(d.symbols()) == 1 and d == Dim.sym(next(iter(d.symbols())))
                else None
                for d in typ.shape
            ]
            specs.append((graph.attrs(n)["name"], typ, graph.nx.nodes[n]["span"], symbols))
        cached = graph.__dict__["_input_specs"] = (key, specs)
    return cached[1]


def check_sizes(graph: Graph, sizes: dict):
    """Every dim of every value must be >= 0 (>= 1 along a max or argmax axis) for the
    sizes the inputs give: a sequence shorter than a convolution's window is an error
    here, at the operation that needs it, on either engine."""
    bound = {s: v for s, v in sizes.items() if not s.startswith("$")}
    for dim, least, op, span in size_constraints(graph):
        if dim.symbols() <= bound.keys() and concrete(dim, bound) < least:
            given = ", ".join(f"{s} = {bound[s]}" for s in sorted(dim.symbols()))
            word, need = size_need(dim, least)
            gives = f" gives {concrete(dim, bound)}" if word == "small" else ""
            raise DlcError.at_user_line(
                f"the inputs are too {word} for this {op}: it needs {need}, but {given}{gives}", span
            )


def size_need(dim, least: int) -> tuple:
    """(what the inputs are when `dim >= least` fails: "small" or "large", the need in words):
    a dim that larger sizes make smaller is a bound on them, 64 - T >= 0 is "T <= 64"."""
    constant = dim.terms.get((), 0)
    if all(c < 0 for m, c in dim.terms.items() if m):
        return "large", f"{-(dim - constant)} <= {constant - least}"
    return "small", f"{dim} >= {least}"


def size_constraints(graph: Graph) -> list:
    """(dim, least, op, span) for the symbolic dims of a graph and its scan bodies,
    computed once per graph."""
    cached = graph.__dict__.get("_size_constraints")
    if cached is None:
        cached, seen = [], set()
        for g in nested_graphs(graph):
            for n in g.order():
                op, span = g.op(n), g.nx.nodes[n]["span"]
                dims = [(d, 0) for t in g.types(n) for d in t.shape]
                nonempty = PRIMITIVES[op].nonempty_axes
                if nonempty is not None:  # a maximum of nothing has no value
                    dims += [(g.inputs(n)[0].shape[a], 1) for a in nonempty(**g.attrs(n))]
                if op == "slice":  # a stop the sizes give must lie within the operand (P[0:T] of a P[64])
                    dims += [
                        (d - stop, 0)
                        for d, stop in zip(g.inputs(n)[0].shape, g.attrs(n)["stops"])
                        if isinstance(stop, Dim)
                    ]
                for d, least in dims:
                    if isinstance(d, Dim) and d.symbols() and (d, least) not in seen:
                        seen.add((d, least))
                        cached.append((d, least, op, span))
        graph.__dict__["_size_constraints"] = cached
    return cached


def run(
    graph: Graph,
    feeds: dict,
    params: dict,
    float_dtype: str | None = "f32",
    sizes: dict | None = None,
    replicas=None,
    evaluator=Eval,
    bf16=None,
) -> dict:
    """Evaluate a graph; returns its named outputs as numpy arrays. Every float value is
    computed in `float_dtype`, or, with None, in the dtype the graph gives it. `replicas`
    computes replica_mean, `bf16` which matmuls and convolutions round their operands (Eval);
    `evaluator` makes the Eval from those (a subclass may watch the nodes:
    runtime/engines/numerics.py)."""
    all_sizes = bind_sizes(graph, feeds)
    all_sizes.update(sizes or {})
    feeds = _cast_all(graph, "input", feeds, float_dtype)
    params = _cast_all(graph, "param", params, float_dtype)
    ctx = evaluator(feeds, params, all_sizes, float_dtype, replicas, bf16)
    with np.errstate(all="ignore"):  # inf and nan are values here; callers decide what they mean
        values = ctx.values(graph)
    return {name: values[t.key()] for name, t in graph.outputs.items()}


def _cast_all(graph: Graph, op: str, arrays: dict, float_dtype: str) -> dict:
    out = dict(arrays)
    for n in graph.nodes_with(op):
        name, typ = graph.attrs(n)["name"], graph.types(n)[0]
        if name not in arrays:
            raise DlcError(f"no value given for {op} '{name}' ({typ})", graph.nx.nodes[n]["span"])
        arr = np.asarray(arrays[name])
        if typ.is_float:
            arr = arr.astype(DTYPES[float_dtype or typ.dtype], copy=False)
        elif not np.issubdtype(arr.dtype, np.integer) and typ.dtype != "bool":
            raise DlcError(f"{op} '{name}' expects {typ}, got {arr.dtype} values", graph.nx.nodes[n]["span"])
        else:
            arr = arr.astype(DTYPES[typ.dtype], copy=False)
        out[name] = arr
    return out
