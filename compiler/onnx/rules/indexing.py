"""ONNX ops that pick or place entries: Slice, Gather, GatherElements, GatherND,
ScatterElements, ScatterND, OneHot and Trilu."""

from __future__ import annotations

from math import prod

import numpy as np

from dlc.compiler.onnx.rule_api.folding import has_dims
from dlc.compiler.onnx.rule_api.node import Node, rule
from dlc.compiler.onnx.rule_api.values import FLOAT, INT, LARGEST, NUMBER
from dlc.compiler.onnx.rule_api.writing import dims_args, matches, reshaped, scan_along, take


def _from_end(bound, size):
    """A slice bound that is a dim as an int where it differs from the axis' size by a
    number (T - 1 on an axis of size T is -1); a bound at or past the size is the end."""
    if isinstance(bound, int):
        return bound
    offset = bound - size
    return bound if not isinstance(offset, int) else offset if offset < 0 else 2**63 - 1


@rule("Slice", static=(1, 2, 3, 4), attrs=("starts", "ends", "axes"))
def _slice(n: Node):
    """Indexing (x[a:b:s, ...]) with ONNX's clamped bounds; a negative step takes the
    positions it names with gather. A bound may be a dim (P[0:T] of a longer P)."""
    shape = n.shape(0)
    starts, ends = n.setting("starts", 1), n.setting("ends", 2)
    axes = n.setting("axes", 3, list(range(len(starts))))
    steps = n.setting("steps", 4, [1] * len(starts))
    subscripts = [":"] * len(shape)
    backwards = []  # (axis, positions)
    big = 2**31  # a bound beyond any size: the end
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
        else:  # a symbolic dim or bound: int bounds beyond the dim mean its end
            if (
                isinstance(s, int)
                and isinstance(e, int)
                and (s >= big or e <= -big or (s >= 0 and 0 <= e <= s) or (s < 0 and e < 0 and e <= s))
            ):
                n.refuse("an empty slice", "shape")
            start = "" if isinstance(s, int) and (s == 0 or s <= -big) else str(s)
            stop = "" if isinstance(e, int) and e >= big else str(e)
            subscripts[a] = f"{start}:{stop}" + (f":{st}" if st != 1 else "")
    while subscripts and subscripts[-1] == ":":
        subscripts.pop()
    out = f"{n.x(0)}[{', '.join(subscripts)}]" if subscripts else n.x(0)
    for a, positions in backwards:
        index = n.imp.constant(np.array(positions, np.int32), n.label + "_positions")
        out = take(n, out if out == n.x(0) else n.let(out, n.label + "_part"), len(shape), a, index, 1)
    return out if out != n.x(0) else n.value(0)


@rule("Gather", attrs=("axis",))
def _gather(n: Node):
    shape = n.shape(0)
    axis = n.axis(n.attr("axis", 0), len(shape))
    size = shape[axis]
    idx = n.const(1)
    if idx is not None and not has_dims(idx):
        if isinstance(size, int):
            idx = np.where(idx < 0, idx + size, idx)
        if idx.ndim == 0:  # one position: an index drops the axis (.dl counts a negative one from the end)
            return f"{n.x(0)}[{', '.join([':'] * axis + [str(int(idx))])}]"
        if (idx >= 0).all():
            index = n.imp.constant(idx.astype(np.int32), n.label + "_index")
            return take(n, n.x(0), len(shape), axis, index, idx.ndim)
    index = n.x(1)
    if n.dtype(1) not in INT:
        n.refuse(f"{n.dtype(1)} indices", "dtype")
    index = n.let(f"select({index} < 0, {index} + {size}, {index})", n.label + "_index")
    return take(n, n.x(0), len(shape), axis, index, n.rank(1))


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
    hot = n.let(matches(index, size), n.label + "_hot")
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
        data, index, updates = (
            n.let(f"swapaxes({v}, {axis}, -1)", f"{n.label}_{what}")
            for v, what in ((data, "data"), (index, "index"), (updates, "updates"))
        )
    index = n.let(f"select({index} < 0, {index} + {shape[axis]}, {index})", n.label + "_index")
    hot = n.let(matches(index, shape[axis]), n.label + "_hot")
    rows = list(shape[:axis]) + list(shape[axis + 1 :]) + [idx_shape[axis], shape[axis]]
    out = _scattered(n, data, hot, f"expand_dims({updates}, -1)", len(rows) - 2, rows)
    return out if axis == rank - 1 else f"swapaxes({n.let(out, n.label + '_moved')}, {axis}, -1)"


def _positions(n: Node, index: str, sizes) -> str:
    """The row-major position, among the axes of `sizes`, of each tuple index[..., :k] (k the
    number of sizes; negative entries count from the end): the text of a tensor of the
    index's shape without its last axis."""
    static = all(isinstance(d, int) for d in sizes)
    ends = n.imp.constant(np.array(sizes, np.int64 if static else object), n.label + "_sizes")
    index = n.let(f"select({index} < 0, {index} + {ends}, {index})", n.label + "_index")
    strides = [prod(sizes[j + 1 :], start=1) for j in range(len(sizes))]
    terms = [f"{index}[..., {j}]" + (f" * {s}" if s != 1 else "") for j, s in enumerate(strides)]
    return f"({' + '.join(terms)})" if len(terms) > 1 else terms[0]


def _index_width(n: Node, idx_shape) -> int:
    k = idx_shape[-1]
    if not isinstance(k, int):
        n.refuse("index tuples of a symbolic length", "shape")
    return k


@rule("GatherND", attrs=("batch_dims",))
def _gather_nd(n: Node):
    """The data's entries (or slices) at the index tuples indices[..., :k]: the k axes after
    the batch axes flattened to one, together with the batch axes, and gathered at each
    tuple's position there (its batch's rows first)."""
    shape, idx_shape = n.shape(0), n.shape(1)
    b = n.attr("batch_dims", 0)
    k = _index_width(n, idx_shape)
    batch, picked, rest = list(shape[:b]), list(shape[b : b + k]), list(shape[b + k :])
    places = prod(picked, start=1)
    position = _positions(n, n.x(1), picked)
    if b:  # each tuple picks among its own batch's rows: offset by the batch's first row
        first = f"cast(arange({prod(batch)}), \"i64\")" + (f" * {places}" if places != 1 else "")
        first = n.let(reshaped(first, batch + [1] * (len(idx_shape) - 1 - b)), n.label + "_first")
        position = f"{position} + {first}"
    rows = n.x(0) if b + k == 1 else n.let(reshaped(n.x(0), [prod(batch, start=1) * places] + rest), n.label + "_rows")
    return f"gather({rows}, {n.let(position, n.label + '_position')})"


@rule("ScatterND", attrs=("reduction",))
def _scatter_nd(n: Node):
    """updates written at the data's positions indices[..., :k] (its first k axes flattened
    to one): a one-hot match of each update with those positions, combined by the reduction."""
    shape, idx_shape = n.shape(0), n.shape(1)
    k = _index_width(n, idx_shape)
    places, rest = prod(shape[:k], start=1), list(shape[k:])
    count = prod(idx_shape[:-1], start=1)
    position = n.let(reshaped(_positions(n, n.x(1), shape[:k]), [count]), n.label + "_position")
    hot = n.let(reshaped(matches(position, places), [count, places] + [1] * len(rest)), n.label + "_hot")
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
        return f"{data} * {n.let(scan_along(n, shape, axis, '*', steps=False, x=factors), n.label + '_product')}"
    n.refuse(f"the reduction '{reduction}'")


@rule("Trilu", static=(1,), attrs=("upper",))
def _trilu(n: Node):
    shape = n.shape(0)
    rows, cols = shape[-2:]
    k = int(n.static(1, "k")) if n.has(1) else 0
    offset = f" + {k}" if k > 0 else (f" - {-k}" if k < 0 else "")
    op = "<=" if n.attr("upper", 1) else ">="
    mask = n.let(
        f"reshape(arange({rows}), {rows}, 1){offset} {op} reshape(arange({cols}), 1, {cols})", n.label + "_mask"
    )
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
        hot = n.let(f"transpose({hot}, {dims_args(perm)})", n.label + "_moved")
    values = n.x(2)
    return f"select({hot}, {values}[1], {values}[0])"
