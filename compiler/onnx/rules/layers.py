"""The ONNX ops of layers: Gemm and MatMul become dense, Conv conv2d or conv1d and
ConvTranspose conv2d_transpose or conv1d_transpose, where their weights are constants
(absorbing a following bias Add and activation), else the convolution and conv_transpose
builtins (one call for any group count); the pools; Resize."""

from __future__ import annotations

from math import prod

import numpy as np

from dlc.compiler.ir.graph import DTYPES
from dlc.compiler.onnx.rule_api.node import Node, rule
from dlc.compiler.onnx.rule_api.values import FLOAT, LARGEST, shape_tuple
from dlc.compiler.onnx.rule_api.writing import ACTIVATIONS, axes_text, flt, kw, reshaped, take, weights_hint


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
    return n.let(
        f"pad({x}, {shape_tuple(lo)}, {shape_tuple(hi)}" + (f", {value})" if value else ")"), n.label + "_padded"
    )


# a 1-D window's settings as a 2-D one's of height 1: what each is along that height
HEIGHT_1 = {"stride": 1, "padding": 0, "output_padding": 0, "dilation": 1}


def _conv_settings(spatial: dict, group: int) -> str:
    """A layer's keyword arguments (stride, padding, ..., groups) that differ from their defaults."""
    return "".join(kw(**{k: _pair(v) if set(v) != {HEIGHT_1[k]} else None}) for k, v in spatial.items()) + kw(
        groups=group if group != 1 else None
    )


def _conv_layer(n: Node, layer: str, x: str, w: np.ndarray, filters: int, kernel, settings: str) -> str:
    """conv1d / conv2d / conv1d_transpose / conv2d_transpose with the node's constant weights,
    absorbing its bias (input 2, or a following Add) and a following activation."""
    rank = w.ndim
    b = n.const(2)
    if b is None:
        b = _bias_add(n, filters, [(filters,) + (1,) * (rank - 2), (1, filters) + (1,) * (rank - 2)])
    act = _activation(n)
    name = n.binding(weights_hint(n, 1))
    n.weight(f"{name}.W", w)
    if b is not None:
        n.weight(f"{name}.b", b.reshape(filters))
    return (
        f"{layer}({x}, {filters}, {_pair(kernel)}{settings}{', act = ' + act if act else ''}"
        f"{kw(bias='false' if b is None else None)})"
    )


def _constant_weights(n: Node) -> np.ndarray | None:
    """The weights (input 1) when they and the bias (input 2) are constants: a layer's."""
    w = n.const(1)
    if w is not None and n.value(1).weight and (not n.has(2) or n.const(2) is not None):
        return w
    return None


def _builtin_2d(n: Node, call: str, x: str, w: str, shape, w_shape, spatial: dict, group: int) -> str:
    """call(x, w, *spatial settings, group) — convolution or conv_transpose, with the bias
    (input 2) added — a 1-D one as a 2-D one of height 1."""
    if len(shape) == 3:
        x = n.let(reshaped(x, [shape[0], shape[1], 1, shape[2]]), n.label + "_2d")
        w = n.let(reshaped(w, [w_shape[0], w_shape[1], 1, w_shape[2]]), n.label + "_kernel")
        spatial = {k: [HEIGHT_1[k]] + list(v) for k, v in spatial.items()}
    out = f"{call}({x}, {w}, {', '.join(_pair(v) for v in spatial.values())}, {group})"
    if len(shape) == 3:
        out = f"{n.let(out, n.label + '_2d')}[:, :, 0]"
    if n.has(2):
        filters = w_shape[0] if call == "convolution" else w_shape[1] * group
        out = f"{n.let(out, n.label + '_conv')} + {reshaped(n.x(2), [filters] + [1] * (len(shape) - 2))}"
    return out


@rule("Conv", attrs=("auto_pad", "dilations", "group", "kernel_shape", "pads", "strides"))
def _conv(n: Node):
    """conv2d / conv1d for constant weights (with a following bias Add and Relu), the
    convolution builtin otherwise; groups and dilations as theirs."""
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
    spatial = {"stride": strides, "padding": before, "dilation": dilations}
    w = _constant_weights(n)
    if w is not None:
        return _conv_layer(n, f"conv{rank - 2}d", x, w, w_shape[0], kernel, _conv_settings(spatial, group))
    return _builtin_2d(n, "convolution", x, n.x(1), shape, w_shape, spatial, group)


@rule(
    "ConvTranspose",
    attrs=("auto_pad", "dilations", "group", "kernel_shape", "output_padding", "output_shape", "pads", "strides"),
)
def _conv_transpose(n: Node):
    """conv2d_transpose / conv1d_transpose for constant weights, the conv_transpose builtin
    otherwise; pads that differ before and after are a slice of the unpadded result."""
    n.require_float(0, 1)
    shape, w_shape = n.shape(0), n.shape(1)
    rank = len(shape)
    if rank not in (3, 4):
        n.refuse(f"a {rank - 2}-D transposed convolution (dlc has 1-D and 2-D ones)", "shape")
    if not all(isinstance(d, int) for d in shape[2:]):
        n.refuse("a transposed convolution of a symbolic size", "shape")
    group = n.attr("group", 1)
    kernel = list(w_shape[2:])
    k = len(kernel)
    dilations = list(n.attr("dilations", [1] * k))
    strides = list(n.attr("strides", [1] * k))
    extra_out = list(n.attr("output_padding", [0] * k))
    # how far the windows of the input's positions reach in the output, unpadded
    reach = [s * (size - 1) + (kk - 1) * d + 1 for s, size, kk, d in zip(strides, shape[2:], kernel, dilations)]
    if "pads" in n.attrs or n.attr("auto_pad", "NOTSET") not in ("SAME_UPPER", "SAME_LOWER"):
        pads = list(n.attr("pads", [0] * 2 * k))
        want = n.attr("output_shape", [r + o - p - q for r, o, p, q in zip(reach, extra_out, pads[:k], pads[k:])])
    else:  # SAME: the output is the input times the strides (or output_shape)
        want = n.attr("output_shape", [size * s for size, s in zip(shape[2:], strides)])
        total = [r + o - w for r, o, w in zip(reach, extra_out, want)]
        upper = n.attr("auto_pad") == "SAME_UPPER"
        pads = [t // 2 if upper else t - t // 2 for t in total] + [t - t // 2 if upper else t // 2 for t in total]
    # the output_padding: what the output adds after the windows' reach less the padding
    padding, extra = pads[:k], [w + 2 * p - r for w, p, r in zip(want, pads[:k], reach)]
    sliced = pads[:k] != pads[k:] or not all(0 <= e < s for e, s in zip(extra, strides))
    if sliced:  # the unpadded result (with what output_shape adds after it), sliced
        padding, extra = [0] * k, [max(b + w - r, 0) for b, w, r in zip(pads[:k], want, reach)]
        if any(e >= s for e, s in zip(extra, strides)):
            n.refuse(f"an output of {want} from windows that reach {reach} with pads {pads}", "shape")
    spatial = {"stride": strides, "padding": padding, "output_padding": extra, "dilation": dilations}
    w = _constant_weights(n)
    if w is not None:
        out = _conv_layer(
            n, f"conv{rank - 2}d_transpose", n.x(0), w, w_shape[1] * group, kernel, _conv_settings(spatial, group)
        )
    else:
        out = _builtin_2d(n, "conv_transpose", n.x(0), n.x(1), shape, w_shape, spatial, group)
    if not sliced:
        return out
    bounds = [f"{b}:{b + w}" for b, w in zip(pads[:k], want)]
    return f"{n.let(out, n.label + '_uncropped')}[:, :, {', '.join(bounds)}]"


@rule(
    "MaxPool",
    "AveragePool",
    "LpPool",
    attrs=(
        "auto_pad",
        "ceil_mode",
        "count_include_pad",
        "dilations",
        "kernel_shape",
        "p",
        "pads",
        "storage_order",
        "strides",
    ),
)
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
    if n.attr("ceil_mode", 0):  # more windows at the end: pad for them (they never count)
        for k, (size, e, s) in enumerate(zip(shape[2:], extent, strides)):
            if not isinstance(size, int):
                n.refuse("ceil_mode on a symbolic size", "shape")
            outs = -(-(size + before[k] + after[k] - e) // s) + 1
            if (outs - 1) * s >= size + before[k]:  # a last window only in the padding is dropped
                outs -= 1
            extra[k] = max((outs - 1) * s + e - (size + before[k] + after[k]), 0)
    hi = [a + e for a, e in zip(after, extra)]
    if set(dilations) != {1} or len(kernel) > 2:
        return _pool_slices(n, shape, kernel, dilations, strides, before, after, extra)
    x = n.x(0)
    if len(shape) == 3:  # as a 2-D window of height 1
        x = n.let(reshaped(x, [shape[0], shape[1], 1, shape[2]]), n.label + "_2d")
        kernel, strides = [1] + kernel, [1] + strides
        before, after, hi, extra = ([0] + v for v in (before, after, hi, extra))
    window = _pair(kernel) + (f", {_pair(strides)}" if strides != kernel else "")  # the kernel's by default
    if n.op == "MaxPool":
        if before == hi:
            out = f"max_pool({x}, {window}{', padding = ' + _pair(before) if any(before) else ''})"
        else:
            out = f"max_pool({_padded(n, x, before, hi, '-' + LARGEST[n.dtype(0)])}, {window})"
    elif n.op == "LpPool":  # (the sum of |x|^p over the window)^(1/p); padding adds nothing
        p = n.attr("p", 2)
        powers = n.let(f"abs({x}) ^ {p}", n.label + "_powers")
        out = f"(avg_pool({_padded(n, powers, before, hi)}, {window}) * {prod(kernel)}) ^ {flt(1 / p)}"
    elif before == hi and (n.attr("count_include_pad", 0) or not any(before)):
        out = f"avg_pool({x}, {window}{', padding = ' + _pair(before) if any(before) else ''})"
    else:  # the mean over the window's counted elements: sum / count, both as avg_pool of padded tensors
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
            bounds = [
                f"{a * d}:{a * d + (o - 1) * s + 1}" + (f":{s}" if s != 1 else "")
                for a, d, o, s in zip(offset, dilations, outs, strides)
            ]
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


def _upsample_matrix(size: int, scale: int, mode: str) -> np.ndarray:
    """[size * scale, size]: the axis matrix of the stdlib's upsample2d (layers.dl)."""
    if mode == "nearest":
        return np.repeat(np.eye(size), scale, axis=0)
    at = np.maximum((np.arange(size * scale) + 0.5) / scale - 0.5, 0)
    lo = at.astype(int)
    frac = (at - lo)[:, None]
    eye = np.eye(size)
    return eye[lo] * (1 - frac) + eye[np.minimum(lo + 1, size - 1)] * frac


def _as_upsample(n: Node, matrices: dict, shape) -> str | None:
    """upsample2d(x, scale, mode) when the resize is that: rows and columns only, by integer
    scales, with upsample2d's weights."""
    if len(shape) != 4 or set(matrices) - {2, 3}:
        return None
    for mode in ("nearest", "bilinear"):
        scales = []
        for a in (2, 3):
            m = matrices.get(a, np.eye(shape[a]))
            scale, rest = divmod(m.shape[0], shape[a])
            if rest or not np.allclose(m, _upsample_matrix(shape[a], scale, mode), atol=1e-6):
                break
            scales.append(scale)
        else:
            setting = kw(mode=None if mode == "nearest" else '"bilinear"')
            return f"upsample2d({n.x(0)}, {_pair(scales)}{setting})"
    return None


@rule(
    "Resize",
    "Upsample",
    static=(1, 2, 3),
    attrs=(
        "antialias",
        "axes",
        "coordinate_transformation_mode",
        "cubic_coeff_a",
        "exclude_outside",
        "extrapolation_value",
        "keep_aspect_ratio_policy",
        "mode",
        "nearest_mode",
        "scales",
    ),
)
def _resize(n: Node):
    """A resize is linear and works axis by axis: each axis' matrix (which input entries make
    each output entry, with what weight) is measured at import by running ONNX's reference
    op on unit inputs, whatever the mode and coordinate transformation (a symbolic axis,
    which it must leave as it is, measured at size 1). upsample2d's resizes are calls of it;
    of the others, a matrix that picks one entry per row (nearest) is a gather, another a
    matrix product; what the op gives a zero input (tf_crop_and_resize's extrapolation
    value) is added."""
    n.require_float()
    shape = n.shape(0)
    settings = [n.static(i) if n.has(i) else None for i in range(1, len(n.proto.input))]
    dtype = DTYPES[n.dtype(0)]
    measured = tuple(d if isinstance(d, int) else 1 for d in shape)

    def response(x):
        out = n.imp.evaluate(n.proto, [x] + settings)
        if out is None:
            n.refuse("this resize (ONNX's reference evaluator does not run it)")
        return out[n.proto.output[0]].astype(np.float64)

    offset = response(np.zeros(measured, dtype))
    total = response(np.ones(measured, dtype)) - offset
    where = np.unravel_index(np.argmax(total), total.shape)  # an output entry that every axis reaches
    matrices = {}
    for a, size in enumerate(measured):
        columns = []
        for j in range(size):
            unit = np.zeros(measured, dtype)
            unit[(slice(None),) * a + (j,)] = 1
            r = response(unit) - offset
            columns.append(r[tuple(slice(None) if k == a else p for k, p in enumerate(where))])
        matrix = np.stack(columns, axis=1)  # [out, in]
        if matrix.shape[0] == size and np.allclose(matrix, np.eye(size)):
            continue
        if not isinstance(shape[a], int):
            n.refuse(f"a resize of the symbolic size {shape[a]}", "shape")
        matrices[a] = matrix
    upsample = _as_upsample(n, matrices, shape) if not np.any(offset) else None
    if upsample is not None:
        return upsample
    out = n.x(0)
    for a, matrix in matrices.items():
        hint = f"{n.label}_axis{a}"
        if np.all((matrix == 0) | (matrix == 1)) and np.all(matrix.sum(1) == 1):  # nearest: a gather
            index = n.imp.constant(matrix.argmax(1).astype(np.int32), hint)
            out = n.let(take(n, out, len(shape), a, index, 1), hint)
        else:
            weights = n.imp.constant(matrix.T.astype(dtype), hint)
            last = len(shape) - 1
            out = n.let(
                f"{out} @ {weights}" if a == last else f"swapaxes(swapaxes({out}, {a}, -1) @ {weights}, {a}, -1)", hint
            )
    if np.any(offset):
        if not all(isinstance(d, int) for d in shape):
            n.refuse("a resize of a symbolic size with an extrapolation value", "shape")
        out = f"{out} + {n.imp.constant(offset.astype(dtype), n.label + '_outside')}"
    return out if out != n.x(0) else n.value(0)
