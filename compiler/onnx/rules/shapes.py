"""ONNX ops that rearrange a tensor: Reshape, Flatten, Squeeze, Unsqueeze, Transpose, Concat,
Split, Expand, Tile, Pad, DepthToSpace and SpaceToDepth; and the .dl text of reshapes,
transposes and slices the other families write too."""

from __future__ import annotations

from math import prod

import numpy as np

from dlc.compiler.ir.dims import exact_div
from dlc.compiler.ir.graph import DTYPES
from dlc.compiler.onnx.rule_api.node import Expr, Multi, Node, rule
from dlc.compiler.onnx.rule_api.values import literal, shape_tuple
from dlc.compiler.onnx.rule_api.writing import dims_args, reshaped, slice_text, transposed


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
    if -1 in dims:  # the rest of the elements
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


@rule("Concat", attrs=("axis",))
def _concat(n: Node):
    parts = [i for i in range(len(n.proto.input)) if n.has(i) and not (n.const(i) is not None and n.const(i).size == 0)]
    xs = [n.x(i) for i in parts]  # empty parts add nothing
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
        if isinstance(size, int) and size % parts:  # num_outputs: the last part is smaller
            piece = -(-size // parts)
            sizes = [piece] * (parts - 1) + [size - piece * (parts - 1)]
        else:
            return Multi(f"split({n.x(0)}, {parts}, axis = {axis})")
    if len(set(sizes)) == 1:
        return Multi(f"split({n.x(0)}, {parts}, axis = {axis})")
    out, start = [], 0
    for s in sizes:
        if s == 0:  # an empty part: known now, and read only by what ignores it (a Concat)
            out.append(np.zeros(tuple(0 if k == axis else d for k, d in enumerate(shape)), DTYPES[n.dtype(0)]))
        else:
            out.append(
                Expr(
                    slice_text(n.x(0), axis, start, start + s),
                    shape=[s if k == axis else d for k, d in enumerate(shape)],
                )
            )
        start += s
    return out


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
    return Expr(f"broadcast_to({n.x(0)}, {dims_args(out)})", shape=out)


@rule("Tile", static=(1,))
def _tile(n: Node):
    repeats = n.static(1, "repeats").tolist()
    out = n.x(0)
    for axis, r in enumerate(repeats):
        if r != 1:
            expr = f"concat(({out},) * {r}, axis = {axis})"
            out = expr if axis == max(k for k, q in enumerate(repeats) if q != 1) else n.let(expr, n.label + "_tiled")
    return out if out != n.x(0) else n.value(0)


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
    return f"pad({n.x(0)}, {shape_tuple(before)}, {shape_tuple(after)}" + (f", {fill})" if value != 0 else ")")


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
