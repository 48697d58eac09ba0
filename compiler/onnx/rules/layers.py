"""The ONNX ops of layers: Gemm and MatMul become dense, Conv conv2d or conv1d, where their
weights are constants (absorbing a following bias Add and activation); ConvTranspose; the
pools; Resize."""
from __future__ import annotations

from math import prod

import numpy as np

from dlc.compiler.ir.graph import DTYPES
from dlc.compiler.onnx.node import Node, rule
from dlc.compiler.onnx.values import FLOAT, LARGEST, shape_tuple
from dlc.compiler.onnx.writing import ACTIVATIONS, axes_text, flt, kw, reshaped, slice_text, take, weights_hint


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
            return _dense(n, n.x(0), w * np.float32(alpha), b, weights_hint(n, 1))
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
        return _dense(n, n.x(0), w, _bias_add(n, w.shape[1], [(w.shape[1],), (1, w.shape[1])]), weights_hint(n, 1))
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
        name = n.binding(weights_hint(n, 1))
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
    parts = [f"convolution({x}{slice_text('', 1, g * inputs, (g + 1) * inputs) if group > 1 else ''}, "
             f"{w}{slice_text('', 0, g * outputs, (g + 1) * outputs) if group > 1 else ''}, {_pair(strides)}, "
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
    name = n.binding(weights_hint(n, 1))
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
    dtype = DTYPES[n.dtype(0)]

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
            out = n.let(take(n, out, len(shape), a, index, 1), hint)
        else:
            weights = n.imp.constant(matrix.T.astype(dtype), hint)
            last = len(shape) - 1
            out = n.let(f"{out} @ {weights}" if a == last else
                        f"swapaxes(swapaxes({out}, {a}, -1) @ {weights}, {a}, -1)", hint)
    if np.any(offset):
        out = f"{out} + {n.imp.constant(offset.astype(dtype), n.label + '_outside')}"
    return out if out != n.x(0) else n.value(0)
