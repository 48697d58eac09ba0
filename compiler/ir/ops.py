"""Helpers that emit primitives with numpy-style broadcasting and dtype promotion.

The frontend's builtins and the VJP rules both build graphs through these, so a rule
reads like the math: `g * (1 - y * y)`.
"""

from __future__ import annotations

import numpy as np

from dlc.compiler.ir.dims import Dim, exact_div, numel, shape_str
from dlc.compiler.errors import DlcError
from dlc.compiler.ir.graph import Graph, Tensor

_RANK = {"bool": 0, "i32": 1, "i64": 2, "f32": 3, "f64": 4}


def graph_of(*xs) -> Graph:
    for x in xs:
        if isinstance(x, Tensor):
            return x.graph
    raise TypeError("no tensor among the operands")


def constant(graph: Graph, value, dtype: str) -> Tensor:
    return graph.add1("constant", value=np.asarray(value), dtype=dtype)


def full(graph: Graph, shape, value, dtype: str = "f32") -> Tensor:
    return broadcast_to(constant(graph, value, dtype), tuple(shape))


def full_like(x: Tensor, value) -> Tensor:
    return full(x.graph, x.shape, value, x.dtype)


def zeros_like(x: Tensor) -> Tensor:
    return full_like(x, 0)


def cast(x: Tensor, dtype: str) -> Tensor:
    return x if x.dtype == dtype else x.graph.add1("cast", [x], dtype=dtype)


def _lift(x, like: Tensor) -> Tensor:
    if isinstance(x, Tensor):
        return x
    if isinstance(x, bool):
        return constant(like.graph, x, "bool")
    if isinstance(x, float) and not like.type.is_float:
        return constant(like.graph, x, "f32")
    return constant(like.graph, x, like.dtype if like.dtype != "bool" else "i32")


def promote(*xs: Tensor) -> list[Tensor]:
    dtype = max((x.dtype for x in xs), key=_RANK.__getitem__)
    return [cast(x, dtype) for x in xs]


def broadcast_shapes(graph: Graph, *shapes) -> tuple:
    rank = max(len(s) for s in shapes)
    out = []
    for i in range(rank):
        dims = [s[len(s) - rank + i] for s in shapes if len(s) - rank + i >= 0]
        d = 1
        for x in dims:
            if x == 1:
                continue
            if d == 1:
                d = x
            elif d != x:
                raise DlcError(
                    "shapes " + " and ".join(shape_str(s) for s in shapes) + " do not broadcast "
                    f"(axis {i - rank}: {d} vs {x})",
                    graph.span,
                )
        out.append(d)
    return tuple(out)


def broadcast_to(x: Tensor, shape) -> Tensor:
    shape = tuple(shape)
    if x.shape == shape:
        return x
    return x.graph.add1("broadcast", [x], shape=shape)


def _operands(*xs) -> list[Tensor]:
    graph = graph_of(*xs)
    like = next(x for x in xs if isinstance(x, Tensor))
    ts = promote(*[_lift(x, like) for x in xs])
    try:
        shape = broadcast_shapes(graph, *[t.shape for t in ts])
    except DlcError as e:
        e.notes += [
            (f"operand {i + 1} is {t.type}, from here", t.made_at)
            for i, t in enumerate(ts)
            if t.made_at is not None and t.made_at != e.span and t.graph.op(t.node) != "constant"
        ]
        raise
    return [broadcast_to(t, shape) for t in ts]


def binary(name: str, a, b) -> Tensor:
    x, y = _operands(a, b)
    return x.graph.add1(name, [x, y])


def add(a, b):
    return binary("add", a, b)


def sub(a, b):
    return binary("sub", a, b)


def mul(a, b):
    return binary("mul", a, b)


def div(a, b):
    return binary("div", a, b)


def fma(a, b, c) -> Tensor:
    """a * b + c, rounded once."""
    x, y, z = _operands(a, b, c)
    return x.graph.add1("fma", [x, y, z])


def compare(name: str, a, b) -> Tensor:
    return binary(name, a, b)


def unary(name: str, x: Tensor) -> Tensor:
    if not x.type.is_float:
        x = cast(x, "f32")
    return x.graph.add1(name, [x])


def neg(x: Tensor) -> Tensor:
    return unary("neg", x)


def select(c: Tensor, a, b) -> Tensor:
    if c.dtype != "bool":
        c = compare("ne", c, 0)
    like = next((v for v in (a, b) if isinstance(v, Tensor)), None)
    x, y = promote(*[_lift(v, like) if like is not None else constant(c.graph, v, "f32") for v in (a, b)])
    shape = broadcast_shapes(c.graph, c.shape, x.shape, y.shape)
    return c.graph.add1("select", [broadcast_to(c, shape), broadcast_to(x, shape), broadcast_to(y, shape)])


def reshape(x: Tensor, shape) -> Tensor:
    shape = list(shape)
    if shape.count(-1) > 1:
        raise DlcError(f"reshape: at most one -1 in {shape}", x.graph.span)
    if -1 in shape:
        rest = exact_div(numel(x.shape), numel([d for d in shape if d != -1]))
        if rest is None:
            raise DlcError(f"reshape: cannot reshape {x.type} to {shape_str(shape)}", x.graph.span)
        shape[shape.index(-1)] = rest
    shape = tuple(shape)
    if shape == x.shape:
        return x
    return x.graph.add1("reshape", [x], shape=shape)


def transpose(x: Tensor, perm) -> Tensor:
    perm = tuple(perm)
    if perm == tuple(range(x.rank)):
        return x
    return x.graph.add1("transpose", [x], perm=perm)


def slice_(x: Tensor, starts, stops, steps) -> Tensor:
    if tuple(starts) == (0,) * x.rank and tuple(stops) == x.shape and tuple(steps) == (1,) * x.rank:
        return x
    return x.graph.add1("slice", [x], starts=tuple(starts), stops=tuple(stops), steps=tuple(steps))


def slice_axes(x: Tensor, slicing: tuple, axes) -> Tensor:
    """x sliced as `slicing` (starts, stops, steps of some value's axes) says, each axis of the
    slicing along x's axis in `axes` (None: x has no such axis); x's other axes whole."""
    starts, stops, steps = [0] * x.rank, list(x.shape), [1] * x.rank
    for (lo, hi, step), axis in zip(zip(*slicing), axes):
        if axis is not None:
            starts[axis], stops[axis], steps[axis] = lo, hi, step
    return slice_(x, starts, stops, steps)


def pad(x: Tensor, lo, hi, interior) -> Tensor:
    if not any(isinstance(v, Dim) or v for v in (*lo, *hi, *interior)):
        return x
    return x.graph.add1("pad", [x], lo=tuple(lo), hi=tuple(hi), interior=tuple(interior))


def axis_index(x: Tensor, axis: int, new: bool = False) -> int:
    """An axis of x counted from 0 (a negative one counts from the end); with `new`, the
    place of an axis to insert, 0..rank. Out of range is an error at the graph's place."""
    rank = x.rank + new
    if not -rank <= axis < rank:
        where = f" (a new axis goes at {-rank}..{rank - 1})" if new else ""
        raise DlcError(f"axis {axis} is out of range for {x.type}{where}", x.graph.span)
    return axis % rank


def reduce(name: str, x: Tensor, axes) -> Tensor:
    axes = tuple(sorted({axis_index(x, a) for a in axes}))
    if not axes:
        return x
    return x.graph.add1(name, [x], axes=axes)


def _axes(x: Tensor, axis) -> tuple:
    if axis is None:
        return tuple(range(x.rank))
    return tuple(axis) if isinstance(axis, (tuple, list)) else (axis,)


def _keep(x: Tensor, y: Tensor, axes, keepdims: bool) -> Tensor:
    if not keepdims:
        return y
    axes = {axis_index(x, a) for a in axes}
    return reshape(y, tuple(1 if i in axes else d for i, d in enumerate(x.shape)))


def sum_(x: Tensor, axis=None, keepdims=False) -> Tensor:
    if x.dtype == "bool":
        x = cast(x, "i32")
    axes = _axes(x, axis)
    return _keep(x, reduce("reduce_sum", x, axes), axes, keepdims)


def mean(x: Tensor, axis=None, keepdims=False) -> Tensor:
    if not x.type.is_float:
        x = cast(x, "f32")
    axes = _axes(x, axis)
    count = numel([x.shape[axis_index(x, a)] for a in axes])
    total = sum_(x, axes, keepdims)
    if isinstance(count, Dim):
        return total / cast(x.graph.add1("dim_size", [], dim=count), x.dtype)
    return total * (1.0 / count)


def max_(x: Tensor, axis=None, keepdims=False) -> Tensor:
    axes = _axes(x, axis)
    return _keep(x, reduce("reduce_max", x, axes), axes, keepdims)


def argmax(x: Tensor, axis=-1) -> Tensor:
    return x.graph.add1("argmax", [x], axis=axis_index(x, axis))


def matmul_raw(a: Tensor, b: Tensor, ta=False, tb=False) -> Tensor:
    return a.graph.add1("matmul", [a, b], ta=ta, tb=tb)


def matmul(a: Tensor, b: Tensor) -> Tensor:
    """`a @ b` with numpy semantics: vectors are promoted, [..., m, k] @ [k, n] folds the
    leading dims into m, and batch dims broadcast."""
    graph = graph_of(a, b)
    if not isinstance(a, Tensor) or not isinstance(b, Tensor):
        raise DlcError("@ needs two tensors", graph.span)
    a, b = promote(a, b)
    if not a.type.is_float:
        a, b = cast(a, "f32"), cast(b, "f32")
    if a.rank == 0 or b.rank == 0:
        raise DlcError(f"@ needs tensors of rank >= 1, got {a.type} @ {b.type}", graph.span)
    if a.rank == 1:  # a row, removed from the result (a scalar for vector @ vector)
        out = matmul(reshape(a, (1,) + a.shape), b)
        return reshape(out, out.shape[:-1] if b.rank == 1 else out.shape[:-2] + out.shape[-1:])
    if b.rank == 1:
        return reshape(matmul(a, reshape(b, b.shape + (1,))), a.shape[:-1])
    if b.rank == 2 and a.rank > 2:
        k = a.shape[-1]
        if k != b.shape[0]:
            raise DlcError(
                f"matmul: inner dims differ: {a.type} @ {b.type} ({k} vs {b.shape[0]})", graph.span, _origin(a, b)
            )
        flat = reshape(a, (numel(a.shape[:-1]), k))
        return reshape(matmul_raw(flat, b), a.shape[:-1] + (b.shape[1],))
    try:
        batch = broadcast_shapes(graph, a.shape[:-2], b.shape[:-2])
    except DlcError as e:
        raise DlcError(
            f"matmul: batch dims of {a.type} and {b.type} do not broadcast", graph.span, _origin(a, b)
        ) from e
    a = broadcast_to(a, batch + a.shape[-2:])
    b = broadcast_to(b, batch + b.shape[-2:])
    if a.shape[-1] != b.shape[-2]:
        raise DlcError(
            f"matmul: inner dims differ: {a.type} @ {b.type} ({a.shape[-1]} vs {b.shape[-2]})",
            graph.span,
            _origin(a, b),
        )
    return matmul_raw(a, b)


def _origin(*xs: Tensor) -> list:
    return [
        (f"operand {i + 1} is {x.type}, from here", x.made_at)
        for i, x in enumerate(xs)
        if x.made_at is not None and x.made_at != x.graph.span
    ]


def one_hot(idx: Tensor, n: int, dtype: str = "f32") -> Tensor:
    classes = idx.graph.add1("iota", shape=idx.shape + (n,), axis=idx.rank, dtype=idx.dtype)
    expanded = broadcast_to(reshape(idx, idx.shape + (1,)), idx.shape + (n,))
    return cast(compare("eq", expanded, classes), dtype)


def concat(xs: list[Tensor], axis: int) -> Tensor:
    xs = promote(*xs)
    return xs[0].graph.add1("concat", xs, axis=axis_index(xs[0], axis))


def _install_arithmetic():
    """Arithmetic on a Tensor emits nodes through these rules. They are set on the class
    here, not written in graph.py, so that the graph IR does not import its own helpers."""
    Tensor.__add__ = lambda a, b: add(a, b)
    Tensor.__radd__ = lambda a, b: add(b, a)
    Tensor.__sub__ = lambda a, b: sub(a, b)
    Tensor.__rsub__ = lambda a, b: sub(b, a)
    Tensor.__mul__ = lambda a, b: mul(a, b)
    Tensor.__rmul__ = lambda a, b: mul(b, a)
    Tensor.__truediv__ = lambda a, b: div(a, b)
    Tensor.__rtruediv__ = lambda a, b: div(b, a)
    Tensor.__neg__ = lambda a: neg(a)
    Tensor.__matmul__ = lambda a, b: matmul(a, b)


_install_arithmetic()
