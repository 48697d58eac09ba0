"""The primitive ops of the graph IR.

Each primitive is one record (graph.Primitive): its fusion pattern kind, its type rule
(`infer`), its numpy reference semantics (`impl`, run by runtime/engines/interpreter.py), its VJP
rule, its FLOPs and its properties, side by side. Layers, losses and composite functions
are written in the .dl standard library on top of these; ops.py holds the broadcasting
helpers the rules use. `scan` has a module of its own (scan.py); its VJP, which
differentiates its body, is added by compiler/passes/scan_vjp.py. The native backend registers its lowering and scalar rules by name
(compiler/native/), and a test checks that every record has them.
"""

from __future__ import annotations

import math

import numpy as np

from dlc.compiler.ir import ops
from dlc.compiler.ir import scan  # noqa: F401  (registers scan)
from dlc.compiler.ir.dims import numel, shape_str
from dlc.compiler.ir.graph import DTYPES, FLOAT_DTYPES, Pattern, TensorType, primitive
from dlc.compiler.ir.graph import PRIMITIVES  # noqa: F401  (complete once this module has run: import it from here)

NUMERIC = ("f32", "f64", "i32", "i64")


def _elementwise_flops(ins, outs, **_):
    return numel(outs[0].shape)


# ---- sources -------------------------------------------------------------------------
def _given_type(ctx, types, type, **_):
    return [type]


@primitive("input", Pattern.SOURCE, _given_type, given=True)
def _input(ctx, xs, name, **_):
    return [ctx.feed(name)]


@primitive("param", Pattern.SOURCE, _given_type, given=True)
def _param(ctx, xs, name, **_):
    return [ctx.param(name)]


@primitive("arg", Pattern.SOURCE, _given_type, given=True, cheap=True, argument=True)
def _arg(ctx, xs, index, **_):
    return [ctx.arg(index)]


def _constant_type(ctx, types, value, dtype):
    return [TensorType(dtype, tuple(np.shape(value)))]


@primitive("constant", Pattern.SOURCE, _constant_type, cheap=True, holds_value=True)
def _constant(ctx, xs, value, dtype):
    return [np.asarray(value, ctx.np_dtype(dtype))]


def _dim_size_type(ctx, types, dim):
    return [TensorType("i32", ())]


@primitive("dim_size", Pattern.SOURCE, _dim_size_type, cheap=True)
def _dim_size(ctx, xs, dim):
    """The runtime value of a symbolic dim (mean over B needs 1/B)."""
    return [np.asarray(dim, np.int32)]


def _iota_type(ctx, types, shape, axis, dtype):
    return [TensorType(dtype, tuple(shape))]


@primitive("iota", Pattern.SOURCE, _iota_type, cheap=True, indices=True)
def _iota(ctx, xs, shape, axis, dtype):
    r = np.arange(shape[axis], dtype=ctx.np_dtype(dtype))
    r = r.reshape([-1 if i == axis else 1 for i in range(len(shape))])
    return [np.broadcast_to(r, shape).copy()]


def _random_type(ctx, types, shape, dist, stream, dtype="f32"):
    if types[0].dtype != "i32" or types[0].shape != (2,):
        ctx.fail("the key must be i32[2] (seed, step)")
    return [TensorType(dtype, tuple(shape))]


def counter_bits(key, stream: int, n: int, start: int = 0) -> np.ndarray:
    """Counter-based random bits: element i of stream s under key (seed, step) is a
    pure function of (seed, step, s, i), so any order of evaluation, any backend and
    any restart give the same numbers. Elements start .. start + n - 1."""
    seed, step = (int(k) & 0xFFFFFFFF for k in np.asarray(key).ravel())
    with np.errstate(over="ignore"):
        k = _mix(np.uint32(seed) ^ _mix(np.uint32((stream * 0x9E3779B9) & 0xFFFFFFFF) + _mix(np.uint32(step))))
        x = np.arange(start, start + n, dtype=np.uint32)
        x ^= k
        x = _mix(x)
        x += k
        return _mix(x)


def _mix(x):
    """lowbias32: a 32-bit integer hash with good avalanche; a uint32 array is mixed in place."""
    x = np.asarray(x, np.uint32)
    with np.errstate(over="ignore"):
        x ^= x >> np.uint32(16)
        x *= np.uint32(0x7FEB352D)
        x ^= x >> np.uint32(15)
        x *= np.uint32(0x846CA68B)
        x ^= x >> np.uint32(16)
    return x


def _orthogonal(ctx, xs, shape, stream):
    """Saxe et al.: Q of the QR of a normal matrix, signs fixed by R's diagonal."""
    rows = shape[0]
    cols = int(numel(shape)) // rows
    z = _random(ctx, xs, (max(rows, cols), min(rows, cols)), "normal", stream)[0].astype(np.float64)
    q, r = np.linalg.qr(z)
    q = q * np.sign(np.diag(r))
    if rows < cols:
        q = q.T
    return q.reshape(shape)


@primitive("random", Pattern.SOURCE, _random_type, memory_operands=(0,))  # the key
def _random(ctx, xs, shape, dist, stream, dtype="f32"):
    """Inside a scan the stream also depends on the step, so every step draws anew."""
    for t in ctx.steps:
        stream = int(_mix(np.uint32((stream * 0x01000193 + t + 1) & 0xFFFFFFFF)))
    dt = ctx.np_dtype(dtype)
    if dist == "orthogonal":
        return [_orthogonal(ctx, xs, shape, stream).astype(dt)]
    n = int(numel(shape))
    out = np.empty(n, dt)
    for start in range(0, n, DRAW_CHUNK):
        out[start : start + DRAW_CHUNK] = _draws(xs[0], stream, dist, start, min(DRAW_CHUNK, n - start))
    return [out.reshape(shape)]


DRAW_CHUNK = 1 << 16  # draws computed at a time: their float64 temporaries stay in the cache


def _draws(key, stream: int, dist: str, start: int, n: int) -> np.ndarray:
    """Elements start .. start + n - 1 of a uniform or normal draw, in float64."""
    u = _unit(counter_bits(key, stream, n, start))
    if dist == "uniform":
        return u
    # normal: Box-Muller on two independent streams, sqrt(-2 log u) cos(2 pi u2), in place
    u2 = _unit(counter_bits(key, stream + 0x5BD1E995, n, start))
    np.log(u, out=u)
    u *= -2.0
    np.sqrt(u, out=u)
    u2 *= 2.0 * np.pi
    np.cos(u2, out=u2)
    u *= u2
    return u


def _unit(bits: np.ndarray) -> np.ndarray:
    """Uniform in (0, 1) from the top 24 of 32 random bits (which it overwrites), in float64."""
    bits >>= np.uint32(8)
    u = bits.astype(np.float64)
    u += 0.5
    u *= 2.0**-24
    return u


# ---- elementwise ------------------------------------------------------------------------
def _same_shapes(ctx, types, **_):
    first = types[0]
    for t in types[1:]:
        if t.rank != first.rank:
            ctx.fail(f"shapes {first} and {t} differ in rank")
        if first.shape != t.shape:
            ctx.fail(f"shapes {first} and {t} differ")
    return first


def _unary_type(ctx, types, **_):
    if types[0].dtype not in ctx.dtypes:
        ctx.fail(f"needs a float tensor, got {types[0]}")
    return [types[0]]


def _unary(name, fn, vjp, **properties):
    """A float function of one operand."""
    primitive(
        name, Pattern.ELEMENTWISE, _unary_type, vjp, _elementwise_flops, dtypes=FLOAT_DTYPES, arity=1, **properties
    )(lambda ctx, xs, _fn=fn: [_fn(xs[0]).astype(xs[0].dtype, copy=False)])


_erf = np.vectorize(math.erf, otypes=[np.float64])

_unary("neg", np.negative, lambda n, g: [-g[0]], operator="-", onnx="Neg", recompute=True)
_unary("exp", np.exp, lambda n, g: [g[0] * n.outputs[0]], builtin="exp", onnx="Exp")
_unary("expm1", np.expm1, lambda n, g: [g[0] * (n.outputs[0] + 1.0)], libm="expm1", builtin="expm1")
_unary("log", np.log, lambda n, g: [g[0] / n.inputs[0]], libm="log", builtin="log", onnx="Log")
_unary("log1p", np.log1p, lambda n, g: [g[0] / (n.inputs[0] + 1.0)], libm="log1p", builtin="log1p")
_unary("tanh", np.tanh, lambda n, g: [g[0] * (1.0 - n.outputs[0] * n.outputs[0])], builtin="tanh", onnx="Tanh")
_unary(
    "logistic",
    lambda x: np.where(x >= 0, 1 / (1 + np.exp(-np.abs(x))), np.exp(-np.abs(x)) / (1 + np.exp(-np.abs(x)))),
    lambda n, g: [g[0] * n.outputs[0] * (1.0 - n.outputs[0])],
    builtin="sigmoid",
    onnx="Sigmoid",
)
_unary("sqrt", np.sqrt, lambda n, g: [g[0] * 0.5 / n.outputs[0]], builtin="sqrt", onnx="Sqrt")
_unary("abs", np.abs, lambda n, g: [g[0] * ops.unary("sign", n.inputs[0])], builtin="abs", onnx="Abs")
_unary("sign", np.sign, lambda n, g: [None], builtin="sign", onnx="Sign")
_unary("sin", np.sin, lambda n, g: [g[0] * ops.unary("cos", n.inputs[0])], libm="sin", builtin="sin", onnx="Sin")
_unary("cos", np.cos, lambda n, g: [-(g[0] * ops.unary("sin", n.inputs[0]))], libm="cos", builtin="cos", onnx="Cos")
_unary(
    "erf",
    lambda x: _erf(x),
    lambda n, g: [g[0] * (2.0 / math.sqrt(math.pi)) * ops.unary("exp", -(n.inputs[0] * n.inputs[0]))],
    libm="erf",
    builtin="erf",
    onnx="Erf",
)


def _binary_type(ctx, types, **_):
    t = _same_shapes(ctx, types)
    if types[0].dtype != types[1].dtype:
        ctx.fail(f"dtypes differ: {types[0]} and {types[1]}")
    return [t]


def _arith_type(ctx, types, **_):
    t = _binary_type(ctx, types)[0]
    if t.dtype not in ctx.dtypes:
        ctx.fail("arithmetic on bool tensors; cast them first")
    return [t]


def _pow_vjp(n, g):
    x, y = n.inputs
    out = n.outputs[0]
    dx = g[0] * y * ops.binary("pow", x, y - 1.0)
    dy = g[0] * out * ops.unary("log", ops.select(ops.compare("gt", x, 0.0), x, ops.full_like(x, 1.0)))
    return [dx, dy]


def _minmax_vjp(cmp):
    """The larger (smaller) operand takes the gradient; ties split it, as in PyTorch."""

    def vjp(n, g):
        x, y = n.inputs
        wins, tie = ops.compare(cmp, x, y), ops.compare("eq", x, y)
        zero, half = ops.zeros_like(g[0]), g[0] * 0.5
        return [
            ops.select(wins, g[0], ops.select(tie, half, zero)),
            ops.select(wins, zero, ops.select(tie, half, g[0])),
        ]

    return vjp


def _binary(name, fn, vjp, infer=_arith_type, dtypes=NUMERIC, **properties):
    primitive(name, Pattern.ELEMENTWISE, infer, vjp, _elementwise_flops, dtypes=dtypes, arity=2, **properties)(
        lambda ctx, xs, _fn=fn: [np.asarray(_fn(*xs))]
    )


def _int_div(a, b):
    if np.issubdtype(a.dtype, np.integer):
        return np.floor_divide(a, b)
    return np.divide(a, b)


_binary("add", np.add, lambda n, g: [g[0], g[0]], commutative=True, operator="+", onnx="Add", recompute=True)
_binary("sub", np.subtract, lambda n, g: [g[0], -g[0]], operator="-", onnx="Sub", recompute=True)
_binary(
    "mul",
    np.multiply,
    lambda n, g: [g[0] * n.inputs[1], g[0] * n.inputs[0]],
    commutative=True,
    operator="*",
    onnx="Mul",
    recompute=True,
)
_binary(
    "div",
    _int_div,
    lambda n, g: [g[0] / n.inputs[1], -(g[0] * n.outputs[0] / n.inputs[1])],
    operator="/",
    onnx="Div",
    recompute=True,
)
# x % y = x - y * floor(x / y), so d/dy = -floor(x / y) = -(x - out) / y
_binary("mod", np.mod, lambda n, g: [g[0], -(g[0] * (n.inputs[0] - n.outputs[0]) / n.inputs[1])], operator="%")
_binary("pow", np.power, _pow_vjp, libm="pow", operator="^", onnx="Pow")
_binary("maximum", np.maximum, _minmax_vjp("gt"), builtin="maximum", onnx="Max")
_binary("minimum", np.minimum, _minmax_vjp("lt"), builtin="minimum", onnx="Min")


def _fma_type(ctx, types, **_):
    if len(types) != 3:
        ctx.fail(f"needs three operands, got {len(types)}")
    t = _same_shapes(ctx, types)
    if len({x.dtype for x in types}) > 1 or t.dtype not in ctx.dtypes:
        ctx.fail(f"needs three float tensors of one dtype, got {', '.join(map(str, types))}")
    return [t]


@primitive(
    "fma",
    Pattern.ELEMENTWISE,
    _fma_type,
    lambda n, g: [g[0] * n.inputs[1], g[0] * n.inputs[0], g[0]],
    lambda ins, outs, **_: 2 * numel(outs[0].shape),
    dtypes=FLOAT_DTYPES,
    arity=3,
)
def _fma(ctx, xs):
    """a * b + c rounded once (torch's fused kernels: lerp, addcmul, add with alpha). The
    float32 product is exact in float64, so the sum rounds twice only in ties, vanishingly
    rare; float64 operands round their product first."""
    a, b, c = xs
    return [(np.multiply(a, b, dtype=np.float64) + c).astype(c.dtype)]


def _compare_type(ctx, types, **_):
    t = _binary_type(ctx, types)[0]
    return [TensorType("bool", t.shape)]


def _comparison(name, fn, operator, onnx=None, commutative=False):
    _binary(
        name,
        fn,
        lambda n, g: [None, None],
        _compare_type,
        tuple(DTYPES),
        commutative=commutative,
        operator=operator,
        onnx=onnx,
        equality=operator in ("==", "!="),
    )


_comparison("lt", np.less, "<", "Less")
_comparison("le", np.less_equal, "<=", "LessOrEqual")
_comparison("gt", np.greater, ">", "Greater")
_comparison("ge", np.greater_equal, ">=", "GreaterOrEqual")
_comparison("eq", np.equal, "==", "Equal", commutative=True)
_comparison("ne", np.not_equal, "!=", commutative=True)


def _logical_type(ctx, types, **_):
    for t in types:
        if t.dtype not in ctx.dtypes:
            ctx.fail(f"needs bool tensors, got {t}")
    return [_same_shapes(ctx, types)]


_binary(
    "logical_and",
    np.logical_and,
    lambda n, g: [None, None],
    _logical_type,
    ("bool",),
    commutative=True,
    operator="and",
    onnx="And",
)
_binary(
    "logical_or",
    np.logical_or,
    lambda n, g: [None, None],
    _logical_type,
    ("bool",),
    commutative=True,
    operator="or",
    onnx="Or",
)
primitive(
    "logical_not",
    Pattern.ELEMENTWISE,
    _logical_type,
    lambda n, g: [None],
    dtypes=("bool",),
    arity=1,
    operator="not",
    onnx="Not",
)(lambda ctx, xs: [np.logical_not(xs[0])])


def _select_type(ctx, types, **_):
    c, a, b = types
    if c.dtype != "bool":
        ctx.fail(f"the condition must be bool, got {c}")
    _same_shapes(ctx, types)
    if a.dtype != b.dtype:
        ctx.fail(f"branches differ in dtype: {a} and {b}")
    return [a]


def _select_vjp(n, g):
    c = n.inputs[0]
    zero = ops.zeros_like(g[0])
    return [None, ops.select(c, g[0], zero), ops.select(c, zero, g[0])]


@primitive(
    "select",
    Pattern.ELEMENTWISE,
    _select_type,
    _select_vjp,
    _elementwise_flops,
    arity=3,
    builtin="select",
    onnx="Where",
)
def _select(ctx, xs):
    return [np.where(xs[0], xs[1], xs[2])]


def _cast_type(ctx, types, dtype):
    return [TensorType(dtype, types[0].shape)]


def _cast_vjp(n, g):
    src = n.inputs[0]
    return [ops.cast(g[0], src.dtype) if src.type.is_float else None]


@primitive("cast", Pattern.ELEMENTWISE, _cast_type, _cast_vjp, arity=1, recompute=True)
def _cast(ctx, xs, dtype):
    return [xs[0].astype(ctx.np_dtype(dtype))]


def _identity_type(ctx, types):
    return [types[0]]


@primitive("stop_gradient", Pattern.ELEMENTWISE, _identity_type, lambda n, g: [None], view=True, cheap=True, arity=1)
def _stop_gradient(ctx, xs):
    return [xs[0]]


# ---- shape ops ----------------------------------------------------------------------------
def _broadcast_type(ctx, types, shape):
    x = types[0]
    if x.rank > len(shape):
        ctx.fail(f"cannot broadcast {x} to rank {len(shape)}")
    for a, b in zip(x.shape[::-1], shape[::-1]):
        if a != 1 and a != b:
            ctx.fail(f"cannot broadcast {x} to {list(shape)}")
    return [TensorType(x.dtype, tuple(shape))]


def _broadcast_vjp(n, g):
    x = n.inputs[0]
    lead = len(n.attrs["shape"]) - x.rank
    axes = tuple(range(lead)) + tuple(
        lead + i for i, d in enumerate(x.shape) if d == 1 and n.attrs["shape"][lead + i] != 1
    )
    return [ops.reshape(ops.reduce("reduce_sum", g[0], axes), x.shape)]


def _broadcast_narrow(n, slicing):
    """The operand sliced along its axes that are not repeated, broadcast to the slice."""
    x, shape = n.inputs[0], n.attrs["shape"]
    lead = len(shape) - x.rank
    axes = [None] * lead + [i if x.shape[i] == shape[lead + i] else None for i in range(x.rank)]
    return ops.broadcast_to(ops.slice_axes(x, slicing, axes), sliced_shape(slicing))


@primitive(
    "broadcast", Pattern.BROADCAST, _broadcast_type, _broadcast_vjp, view=True, cheap=True, narrow=_broadcast_narrow
)
def _broadcast(ctx, xs, shape):
    return [np.broadcast_to(xs[0], shape).copy()]


def _reshape_type(ctx, types, shape):
    x = types[0]
    if numel(x.shape) != numel(shape):
        ctx.fail(f"cannot reshape {x} to {list(shape)}: sizes differ")
    return [TensorType(x.dtype, tuple(shape))]


def _reshape_narrow(n, slicing):
    """Where the slicing takes only whole axes past the axes the reshape keeps as they are (a
    head split [B, T, D] -> [B, T, H, d] keeps B and T), or the reshape unfolds the rows of a
    product folded from those axes (a dense layer on [B, T, D], ops.matmul: [B·T, D] @ W ->
    [B, T, E]): the product of the slice of its folded rows."""
    x, shape = n.inputs[0], n.attrs["shape"]
    folded = _folded_product(x, shape)
    if folded is not None:
        rows, w, tb = folded
        lead = len(shape) - 1
        a = ops.slice_axes(rows, slicing, range(lead))
        b = ops.slice_axes(w, slicing, [None] * lead + [0 if tb else 1])
        product = ops.matmul_raw(ops.reshape(a, (numel(a.shape[:-1]), a.shape[-1])), b, False, tb)
        return ops.reshape(product, sliced_shape(slicing))
    kept = 0
    while kept < min(x.rank, len(shape)) and x.shape[kept] == shape[kept]:
        kept += 1
    if not all(whole_axis(slicing, k, shape[k]) for k in range(kept, len(shape))):
        return None
    return ops.reshape(ops.slice_axes(x, slicing, range(kept)), sliced_shape(slicing)[:kept] + tuple(shape[kept:]))


def _folded_product(x, shape) -> tuple | None:
    """(the rows, the weights, whether they are transposed) when x, reshaped to `shape`, is a
    product that reshape alone reads, of rows folded from the leading axes of `shape`."""
    g = x.graph
    if g.op(x.node) != "matmul" or g.uses(x) != 1 or g.attrs(x.node)["ta"] or x.rank != 2:
        return None
    flat, w = g.inputs(x.node)
    rows = g.inputs(flat.node)[0] if g.op(flat.node) == "reshape" else None
    if rows is None or rows.rank < 2 or rows.shape[:-1] != tuple(shape[:-1]):
        return None
    return rows, w, g.attrs(x.node)["tb"]


@primitive(
    "reshape",
    Pattern.INJECTIVE,
    _reshape_type,
    lambda n, g: [ops.reshape(g[0], n.inputs[0].shape)],
    view=True,
    cheap=True,
    memory_operands=(0,),
    narrow=_reshape_narrow,
)  # re-indexes contiguous data
def _reshape(ctx, xs, shape):
    return [xs[0].reshape(shape)]


def _transpose_type(ctx, types, perm):
    x = types[0]
    if sorted(perm) != list(range(x.rank)):
        ctx.fail(f"{list(perm)} is not a permutation of the axes of {x}")
    return [TensorType(x.dtype, tuple(x.shape[p] for p in perm))]


def _transpose_vjp(n, g):
    inverse = tuple(int(i) for i in np.argsort(n.attrs["perm"]))
    return [ops.transpose(g[0], inverse)]


def _transpose_narrow(n, slicing):
    perm = n.attrs["perm"]
    return ops.transpose(ops.slice_axes(n.inputs[0], slicing, perm), perm)


@primitive(
    "transpose", Pattern.INJECTIVE, _transpose_type, _transpose_vjp, view=True, cheap=True, narrow=_transpose_narrow
)
def _transpose(ctx, xs, perm):
    return [np.ascontiguousarray(np.transpose(xs[0], perm))]


def slice_length(start, stop, step):
    """Elements in start:stop:step (None when a symbolic length does not divide)."""
    return (stop - start + step - 1) // step if step > 1 else stop - start


def sliced_shape(slicing: tuple) -> tuple:
    """The shape of what a slicing (its starts, stops and steps) takes."""
    return tuple(slice_length(lo, hi, step) for lo, hi, step in zip(*slicing))


def whole_axis(slicing: tuple, axis: int, size) -> bool:
    """Whether the slicing takes all `size` elements of the axis."""
    starts, stops, steps = slicing
    return starts[axis] == 0 and stops[axis] == size and steps[axis] == 1


def _slice_part(shape, starts, steps, **_) -> tuple:
    """(first, last) index of its operand along each axis (the fusion's disjoint slices)."""
    return tuple((lo, lo + (d - 1) * st) for lo, st, d in zip(starts, steps, shape))


def _slice_type(ctx, types, starts, stops, steps):
    x = types[0]
    if not (len(starts) == len(stops) == len(steps) == x.rank):
        ctx.fail(f"needs a start, stop and step for each of the {x.rank} axes")
    shape = []
    for d, a, b, s in zip(x.shape, starts, stops, steps):
        n = slice_length(a, b, s)
        if n is None:
            ctx.fail(f"the slice {a}:{b}:{s} of a dim of size {d} must have a known length")
        shape.append(n)
    return [TensorType(x.dtype, tuple(shape))]


def _slice_vjp(n, g):
    x = n.inputs[0]
    lo, hi, interior = [], [], []
    for d, a, s, out in zip(x.shape, n.attrs["starts"], n.attrs["steps"], g[0].shape):
        last = a + (out - 1) * s
        lo.append(a)
        hi.append(d - last - 1)
        interior.append(s - 1)
    return [ops.pad(g[0], tuple(lo), tuple(hi), tuple(interior))]


@primitive("slice", Pattern.INJECTIVE, _slice_type, _slice_vjp, view=True, cheap=True, part=_slice_part)
def _slice(ctx, xs, starts, stops, steps):
    for axis, (b, d) in enumerate(zip(stops, xs[0].shape)):
        if b > d:
            raise ctx.error(f"slice: axis {axis} has {d} elements, the slice needs {b}")
    return [xs[0][tuple(slice(a, b, s) for a, b, s in zip(starts, stops, steps))].copy()]


def _pad_type(ctx, types, lo, hi, interior):
    x = types[0]
    shape = tuple(a + d + (d - 1) * i + b for d, a, b, i in zip(x.shape, lo, hi, interior))
    return [TensorType(x.dtype, shape)]


def _pad_vjp(n, g):
    x = n.inputs[0]
    stops = tuple(a + d + (d - 1) * i for d, a, i in zip(x.shape, n.attrs["lo"], n.attrs["interior"]))
    return [ops.slice_(g[0], n.attrs["lo"], stops, tuple(i + 1 for i in n.attrs["interior"]))]


@primitive("pad", Pattern.INJECTIVE, _pad_type, _pad_vjp, pieces="overlapping")  # zeros, then the interior
def _pad(ctx, xs, lo, hi, interior):
    x = xs[0]
    shape = [a + d + (d - 1) * i + b for d, a, b, i in zip(x.shape, lo, hi, interior)]
    out = np.zeros(shape, x.dtype)
    out[tuple(slice(a, a + d + (d - 1) * i, i + 1) for d, a, i in zip(x.shape, lo, interior))] = x
    return [out]


def _concat_type(ctx, types, axis):
    first = types[0]
    total = 0
    for t in types:
        if t.rank != first.rank:
            ctx.fail(f"cannot join {first} and {t}: ranks differ")
        if t.dtype != first.dtype:
            ctx.fail(f"cannot join {first} and {t}: dtypes differ")
        for i, (a, b) in enumerate(zip(first.shape, t.shape)):
            if i != axis and a != b:
                ctx.fail(f"cannot join {first} and {t} along axis {axis}: axis {i} differs")
        total = total + t.shape[axis]
    shape = list(first.shape)
    shape[axis] = total
    return [TensorType(first.dtype, tuple(shape))]


def _concat_vjp(n, g):
    axis, start, grads = n.attrs["axis"], 0, []
    for x in n.inputs:
        starts = [0] * x.rank
        starts[axis] = start
        stops = list(x.shape)
        stops[axis] = start + x.shape[axis]
        grads.append(ops.slice_(g[0], tuple(starts), tuple(stops), (1,) * x.rank))
        start = start + x.shape[axis]
    return grads


@primitive("concat", Pattern.INJECTIVE, _concat_type, _concat_vjp, pieces="disjoint")
def _concat(ctx, xs, axis):
    return [np.concatenate(xs, axis=axis)]


def _gather_type(ctx, types):
    table, idx = types
    if idx.dtype not in ("i32", "i64"):
        ctx.fail(f"indices must be integers, got {idx}")
    if table.rank == 0:
        ctx.fail(f"the table must have rank >= 1, got {table}")
    return [TensorType(table.dtype, idx.shape + table.shape[1:])]


def _gather_vjp(n, g):
    table, idx = n.inputs
    return [ops.graph_of(g[0]).add1("scatter_add", [idx, g[0]], shape=table.shape), None]


@primitive(
    "gather",
    Pattern.INJECTIVE,
    _gather_type,
    _gather_vjp,
    memory_operands=(0,),  # the table
    index_count=lambda types: types[0].shape[0],
)  # the table's rows
def _gather(ctx, xs):
    table, idx = xs
    if idx.size and (idx.min() < 0 or idx.max() >= table.shape[0]):
        raise ctx.error(f"gather: index out of range [0, {table.shape[0]})")
    return [table[idx]]


def _scatter_add_type(ctx, types, shape):
    idx, upd = types
    return [TensorType(upd.dtype, tuple(shape))]


def _scatter_add_vjp(n, g):
    return [None, ops.graph_of(g[0]).add1("gather", [g[0], n.inputs[0]])]


@primitive("scatter_add", Pattern.OPAQUE, _scatter_add_type, _scatter_add_vjp, memory_operands=(1,))  # the updates
def _scatter_add(ctx, xs, shape):
    idx, upd = xs
    out = np.zeros(shape, upd.dtype)
    np.add.at(out, idx, upd)
    return [out]


# ---- across replicas ---------------------------------------------------------------------------
def _replica_mean_vjp(n, g):
    """Each rank's loss is weighted by its share w_r and the gradients are summed; the
    adjoint of v_r is then sum_s w_s g_s: the replica mean of the adjoints (docs/distributed.md)."""
    return [ops.graph_of(g[0]).add1("replica_mean", [g[0]])]


@primitive("replica_mean", Pattern.OPAQUE, _unary_type, _replica_mean_vjp, _elementwise_flops, dtypes=FLOAT_DTYPES)
def _replica_mean(ctx, xs):
    """The mean of x over the ranks of a data-parallel run, each weighted by its share of
    the global batch (`ctx.replicas`, runtime/engines/distributed.py); x itself in one process."""
    if ctx.replicas is None:
        return [xs[0]]
    return [ctx.replicas(np.array(xs[0], copy=True))]


# ---- reductions -----------------------------------------------------------------------------
def _reduce_type(ctx, types, axes):
    x = types[0]
    for a in axes:
        if not 0 <= a < x.rank:
            ctx.fail(f"axis {a} is out of range for {x}")
    return [TensorType(x.dtype, tuple(d for i, d in enumerate(x.shape) if i not in axes))]


def _expand_back(n, g):
    """g broadcast back over the reduced axes of the node's input."""
    x = n.inputs[0]
    kept = tuple(1 if i in n.attrs["axes"] else d for i, d in enumerate(x.shape))
    return ops.broadcast_to(ops.reshape(g, kept), x.shape)


def _reduce_max_vjp(n, g):
    x = n.inputs[0]
    hit = ops.cast(ops.compare("eq", x, _expand_back(n, n.outputs[0])), x.dtype)
    count = _expand_back(n, ops.reduce("reduce_sum", hit, n.attrs["axes"]))
    return [_expand_back(n, g[0]) * hit / count]


def _reduce_narrow(n, slicing):
    """The kept axes sliced, the reduced ones whole."""
    x, reduced = n.inputs[0], n.attrs["axes"]
    kept = [i for i in range(x.rank) if i not in reduced]
    return ops.reduce(n.graph.op(n.node), ops.slice_axes(x, slicing, kept), reduced)


primitive(
    "reduce_sum",
    Pattern.REDUCTION,
    _reduce_type,
    lambda n, g: [_expand_back(n, g[0])],
    lambda ins, outs, **_: numel(ins[0].shape),
    narrow=_reduce_narrow,
)(lambda ctx, xs, axes: [np.asarray(np.sum(xs[0], axis=axes))])
primitive(
    "reduce_max",
    Pattern.REDUCTION,
    _reduce_type,
    _reduce_max_vjp,
    lambda ins, outs, **_: numel(ins[0].shape),
    nonempty_axes=lambda axes: axes,
    narrow=_reduce_narrow,
)(lambda ctx, xs, axes: [np.asarray(np.max(xs[0], axis=axes))])


def _argmax_type(ctx, types, axis):
    x = types[0]
    return [TensorType("i32", tuple(d for i, d in enumerate(x.shape) if i != axis))]


@primitive("argmax", Pattern.REDUCTION, _argmax_type, lambda n, g: [None], nonempty_axes=lambda axis: (axis,))
def _argmax(ctx, xs, axis):
    return [np.asarray(np.argmax(xs[0], axis=axis), np.int32)]


# ---- contraction ------------------------------------------------------------------------------
def matmul_dims(a: TensorType, b: TensorType, ta: bool, tb: bool):
    m, k = (a.shape[-1], a.shape[-2]) if ta else (a.shape[-2], a.shape[-1])
    k2, n = (b.shape[-1], b.shape[-2]) if tb else (b.shape[-2], b.shape[-1])
    return m, k, k2, n


def _matmul_type(ctx, types, ta=False, tb=False):
    a, b = types
    if a.rank < 2 or b.rank != a.rank:
        ctx.fail(f"needs operands of equal rank >= 2, got {a} and {b}")
    if a.dtype != b.dtype or a.dtype not in ctx.dtypes:
        ctx.fail(f"needs float operands of one dtype, got {a} and {b}")
    if a.shape[:-2] != b.shape[:-2]:
        ctx.fail(f"batch dims differ: {a} and {b}")
    m, k, k2, n = matmul_dims(a, b, ta, tb)
    if k != k2:
        ctx.fail(f"inner dims differ: {a} @ {b} ({k} vs {k2})")
    return [TensorType(a.dtype, a.shape[:-2] + (m, n))]


def _matmul_vjp(n, g):
    a, b = n.inputs
    ta, tb = n.attrs["ta"], n.attrs["tb"]
    mm = ops.matmul_raw
    da = mm(b, g[0], tb, True) if ta else mm(g[0], b, False, not tb)
    db = mm(g[0], a, True, ta) if tb else mm(a, g[0], not ta, False)
    return [da, db]


def _matmul_flops(ins, outs, ta=False, tb=False):
    m, k, _, n = matmul_dims(ins[0], ins[1], ta, tb)
    return 2 * numel(outs[0].shape) * k


def _matmul_narrow(n, slicing):
    """Rows of C from rows of op(A), columns from columns of op(B), a batch from the operands'
    batch; the contracted axis whole."""
    (a, b), ta, tb = n.inputs, n.attrs["ta"], n.attrs["tb"]
    batch = list(range(a.rank - 2))
    a = ops.slice_axes(a, slicing, batch + [a.rank - 1 if ta else a.rank - 2, None])
    b = ops.slice_axes(b, slicing, batch + [None, b.rank - 2 if tb else b.rank - 1])
    return ops.matmul_raw(a, b, ta, tb)


@primitive(
    "matmul",
    Pattern.CONTRACTION,
    _matmul_type,
    _matmul_vjp,
    _matmul_flops,
    dtypes=FLOAT_DTYPES,
    memory_operands=None,
    memory_reason="gemm",
    narrow=_matmul_narrow,
)
def _matmul(ctx, xs, ta=False, tb=False):
    a, b = ctx.operands(xs)
    if ta:
        a = np.swapaxes(a, -1, -2)
    if tb:
        b = np.swapaxes(b, -1, -2)
    return [np.matmul(a, b)]


# ---- fused attention ------------------------------------------------------------------------------
# softmax(q kᵀ · scale, masked) @ v without the [Tq, Tk] scores ever being a value
# (docs/native.md, "Attention"): q [..., Tq, d], k [..., Tk, d], v [..., Tk, dv] and an
# optional mask of the scores' shape [..., Tq, Tk] (a broadcast view of a smaller one
# costs nothing): bool (false: the score becomes MASKED) or float (added to the score).
# With `bounded`, a last operand of the batch dims' shape (i32) says how many keys each
# matrix has: keys from there on are not read (a cache's positions not yet written, as
# stdlib's cached_attention bounds them); a matrix of no keys gives o = 0 and lse = -inf.
# `attention` gives o [..., Tq, dv] and the log-sum-exp of each row of scores, which its
# gradient `attention_grad` reads to recompute the probabilities (and a program may read:
# attention over parts of the keys, combined, as stdlib's cached_attention).
MASKED = -1e9  # a masked score, as masked_scores in stdlib/attention.dl


def mask_and_keys(xs, first: int, bounded: bool) -> tuple:
    """(mask, key counts) of attention's (first = 3) or attention_grad's (first = 6) operands
    `xs` (types, tensors or arrays), each None where it is not given."""
    extra = list(xs[first:])
    keys = extra.pop() if bounded else None
    return (extra[0] if extra else None), keys


def _attention_operands(ctx, types, rest: int, bounded: bool):
    q, k, v = types[:3]
    mask, keys = mask_and_keys(types, 3 + rest, bounded)
    if q.rank < 2 or k.rank != q.rank or v.rank != q.rank:
        ctx.fail(f"needs q, k, v of one rank >= 2, got {q}, {k} and {v}")
    if len({q.dtype, k.dtype, v.dtype}) != 1 or q.dtype not in ctx.dtypes:
        ctx.fail(f"needs float q, k, v of one dtype, got {q}, {k} and {v}")
    if q.shape[:-2] != k.shape[:-2] or k.shape[:-2] != v.shape[:-2]:
        ctx.fail(f"batch dims differ: {q}, {k} and {v}")
    if q.shape[-1] != k.shape[-1] or k.shape[-2] != v.shape[-2]:
        ctx.fail(f"q {q} and k {k} need one feature size, k and v {v} one length")
    scores = q.shape[:-1] + (k.shape[-2],)
    if mask is not None and (mask.shape != scores or mask.dtype not in ("bool", q.dtype)):
        ctx.fail(f"the mask {mask} must be bool or {q.dtype} of the scores' shape {shape_str(scores)}")
    if bounded and (keys is None or keys.shape != q.shape[:-2] or keys.dtype != "i32"):
        ctx.fail(f"the key counts {keys} must be i32 of the batch dims' shape {shape_str(q.shape[:-2])}")
    return q, k, v


def _attention_type(ctx, types, scale, bounded=False):
    q, k, v = _attention_operands(ctx, types, 0, bounded)
    return [TensorType(q.dtype, q.shape[:-1] + v.shape[-1:]), TensorType(q.dtype, q.shape[:-1])]


def _attention_vjp(n, g):
    q, k, v = n.inputs[:3]
    o, lse = n.outputs
    grads = [None, None, None]
    if g[0] is not None:
        grads = ops.graph_of(g[0]).add("attention_grad", [q, k, v, o, lse, g[0]] + n.inputs[3:], **n.attrs)
    if g[1] is not None:  # d lse / d scores = the probabilities, composed: the scores a value (lse is read rarely)
        scale = n.attrs["scale"]
        mask, keys = mask_and_keys(n.inputs, 3, n.attrs.get("bounded", False))
        s = ops.mul(ops.matmul_raw(q, k, False, True), scale)
        if mask is not None:
            s = ops.select(mask, s, MASKED) if mask.dtype == "bool" else ops.add(s, mask)
        p = ops.unary("exp", ops.sub(s, ops.reshape(lse, lse.shape + (1,))))
        if keys is not None:  # the keys past the count are not read (a row of none: lse = -inf, p = 0)
            count = ops.reshape(keys, keys.shape + (1, 1))
            p = ops.select(ops.compare("lt", _key_index(k), count), p, 0.0)
        ds = ops.mul(p, ops.mul(ops.reshape(g[1], lse.shape + (1,)), scale))
        if mask is not None and mask.dtype == "bool":
            ds = ops.select(mask, ds, 0.0)
        extra = [ops.matmul_raw(ds, k), ops.matmul_raw(ds, q, True, False), None]
        grads = [e if d is None else d if e is None else ops.add(d, e) for d, e in zip(grads, extra)]
    return list(grads) + [None] * (len(n.inputs) - 3)  # the mask and the key counts have no gradient


def _key_index(k):
    """The index of each key of k [..., Tk, d], as a row [1, Tk] of the scores."""
    return k.graph.add1("iota", shape=(1, k.shape[-2]), axis=1, dtype="i32")


def _attention_flops(ins, outs, **_):
    """Two products: q kᵀ and p v."""
    q, k, v = ins[:3]
    return 2 * numel(q.shape[:-1]) * k.shape[-2] * (q.shape[-1] + v.shape[-1])


def _attention_grad_flops(ins, outs, **_):
    """Five products: q kᵀ again, pᵀ do, do vᵀ, ds k and dsᵀ q."""
    q, k, v = ins[:3]
    return 2 * numel(q.shape[:-1]) * k.shape[-2] * (3 * q.shape[-1] + 2 * v.shape[-1])


def _scores(q, k, mask, scale):
    s = np.matmul(q, np.swapaxes(k, -1, -2)) * np.asarray(scale, q.dtype)
    if mask is None:
        return s
    return np.where(mask, s, np.asarray(MASKED, q.dtype)) if mask.dtype == np.bool_ else s + mask


def _read_keys(k, keys):
    """Which keys of k [..., Tk, d] each matrix reads, [..., 1, Tk]: all without key counts."""
    if keys is None:
        return np.ones(k.shape[:-2] + (1, k.shape[-2]), bool)
    return np.arange(k.shape[-2]) < np.asarray(keys)[..., None, None]


def _attention_narrow(n, slicing):
    """Rows of o from the queries' rows (and the mask's), a batch from the operands' batch;
    every key and value is read. Only when its log-sum-exp, the other result, is not read."""
    q, k, v, *rest = n.inputs
    batch, last = list(range(q.rank - 2)), q.rank - 1
    if n.graph.uses(n.outputs[1]) or not whole_axis(slicing, last, n.outputs[0].shape[last]):
        return None
    mask, keys = mask_and_keys(rest, 0, n.attrs.get("bounded", False))
    operands = [ops.slice_axes(q, slicing, batch + [q.rank - 2, None])]
    operands += [ops.slice_axes(t, slicing, batch) for t in (k, v)]
    operands += [] if mask is None else [ops.slice_axes(mask, slicing, batch + [mask.rank - 2, None])]
    operands += [] if keys is None else [ops.slice_axes(keys, slicing, batch)]
    return n.graph.add("attention", operands, **n.attrs)[0]


@primitive(
    "attention",
    Pattern.OPAQUE,
    _attention_type,
    _attention_vjp,
    _attention_flops,
    dtypes=FLOAT_DTYPES,
    memory_operands=(0, 1, 2),
    memory_reason="gemm",
    recomputed_operand=3,
    narrow=_attention_narrow,
)
def _attention(ctx, xs, scale, bounded=False):
    q, k, v = xs[:3]
    mask, keys = mask_and_keys(xs, 3, bounded)
    read = _read_keys(k, keys)
    s = np.where(read, _scores(q, k, mask, scale), np.asarray(-np.inf, q.dtype))
    top = np.max(s, axis=-1, keepdims=True)
    e = np.where(read, np.exp(s - np.where(np.isfinite(top), top, 0)), 0)  # a row of no keys: all -inf
    total = np.sum(e, axis=-1, keepdims=True)
    with np.errstate(divide="ignore"):  # a row of no keys: o = 0, lse = -inf
        return [np.matmul(e / np.where(total > 0, total, 1), v), (top + np.log(total))[..., 0]]


def _attention_grad_type(ctx, types, scale, bounded=False):
    q, k, v = _attention_operands(ctx, types, 3, bounded)
    o, lse, do = types[3:6]
    if o.shape != q.shape[:-1] + v.shape[-1:] or do.shape != o.shape or lse.shape != q.shape[:-1]:
        ctx.fail(f"needs attention's outputs and the output's cotangent, got {o}, {lse} and {do}")
    return [q, k, v]


@primitive(
    "attention_grad",
    Pattern.OPAQUE,
    _attention_grad_type,
    None,
    _attention_grad_flops,
    dtypes=FLOAT_DTYPES,
    memory_operands=(0, 1, 2, 3, 4, 5),
    memory_reason="gemm",
    recomputed_operand=6,
)
def _attention_grad(ctx, xs, scale, bounded=False):
    """The probabilities p recomputed from the scores and the saved log-sum-exp; a masked
    (bool) score is a constant, so its gradient is zero; a key past the count is not read."""
    q, k, v, o, lse, do = xs[:6]
    mask, keys = mask_and_keys(xs, 6, bounded)
    with np.errstate(invalid="ignore", over="ignore"):  # a row of no keys: lse = -inf
        p = np.where(_read_keys(k, keys), np.exp(_scores(q, k, mask, scale) - lse[..., None]), 0)
    dp = np.matmul(do, np.swapaxes(v, -1, -2))
    ds = p * (dp - np.sum(do * o, axis=-1, keepdims=True)) * np.asarray(scale, q.dtype)
    if mask is not None and mask.dtype == np.bool_:
        ds = np.where(mask, ds, 0)
    return [np.matmul(ds, k), np.matmul(np.swapaxes(ds, -1, -2), q), np.matmul(np.swapaxes(p, -1, -2), do)]


# ---- windows: convolution and pooling (NCHW, weights OIHW) -------------------------------------
# A convolution's attrs: stride, padding (before each axis, the same after), dilation (the
# spacing of the kernel's taps) and groups (the channels split into that many independent
# convolutions; weights [O, C / groups, kh, kw]; groups = C is depthwise).
def window_out(size, k, stride, pad, dilation=1):
    out = size + 2 * pad - (k - 1) * dilation - 1
    out = out // stride if stride != 1 else out
    return None if out is None else out + 1


def _window_shape(ctx, x: TensorType, kernel, stride, padding, dilation=(1, 1)):
    if x.rank != 4:
        ctx.fail(f"needs a [N, C, H, W] input, got {x}")
    hw = []
    for size, k, s, p, d in zip(x.shape[2:], kernel, stride, padding, dilation):
        o = window_out(size, k, s, p, d)
        if o is None:
            ctx.fail(f"the spatial size {size} must be known for stride {s}")
        if isinstance(o, int) and o < 1:
            ctx.fail(f"the window {k} (padding {p}{f', dilation {d}' if d != 1 else ''}) does not fit in the input {x}")
        hw.append(o)
    return tuple(hw)


def _check_groups(ctx, channels, filters, groups):
    for what, n in (("input channels", channels), ("filters", filters)):
        if groups != 1 and (not isinstance(n, int) or n % groups != 0):
            ctx.fail(f"the {what} ({n}) must be a multiple of groups ({groups})")


def _conv_type(ctx, types, stride, padding, dilation, groups):
    x, w = types
    if w.rank != 4 or x.rank != 4:
        ctx.fail(f"needs a [N, C, H, W] input and [O, C, kh, kw] weights, got {x} and {w}")
    if x.shape[1] != w.shape[1] * groups:
        ctx.fail(
            f"the input {x} has {x.shape[1]} channels, the weights {w} expect {w.shape[1] * groups}"
            + (f" ({w.shape[1]} in each of {groups} groups)" if groups != 1 else "")
        )
    _check_groups(ctx, x.shape[1], w.shape[0], groups)
    hw = _window_shape(ctx, x, w.shape[2:], stride, padding, dilation)
    return [TensorType(x.dtype, (x.shape[0], w.shape[0]) + hw)]


def _windows(x, kh, kw, stride, padding, dilation=(1, 1)):
    """[N, C, Ho, Wo, kh, kw] view of the padded input."""
    (ph, pw), (dh, dw) = padding, dilation
    x = np.pad(x, ((0, 0), (0, 0), (ph, ph), (pw, pw)))
    v = np.lib.stride_tricks.sliding_window_view(x, ((kh - 1) * dh + 1, (kw - 1) * dw + 1), axis=(2, 3))
    return v[:, :, :: stride[0], :: stride[1], ::dh, ::dw]


def _grouped(a, axis, groups):
    """a with its axis split into [groups, axis / groups]."""
    return a.reshape(a.shape[:axis] + (groups, a.shape[axis] // groups) + a.shape[axis + 1 :])


def _columns(x, kernel, stride, padding, dilation, groups):
    """The windows of x as the columns of a product (im2col): [groups, C/groups · kh · kw, N, Ho,
    Wo], rows in the weights' (channel, row tap, column tap) order. Filled a tap at a time from
    slices of the padded input, whose rows stay contiguous: copying a strided window view (as
    `_windows` gives) into this order takes many times longer than the product."""
    (kh, kw), (sh, sw), (ph, pw), (dh, dw) = kernel, stride, padding, dilation
    n, c, h, w = x.shape
    ho, wo = window_out(h, kh, sh, ph, dh), window_out(w, kw, sw, pw, dw)
    x = np.pad(x, ((0, 0), (0, 0), (ph, ph), (pw, pw)))
    columns = np.empty((groups, c // groups, kh, kw, n, ho, wo), x.dtype)
    for i in range(kh):
        for j in range(kw):
            tap = x[:, :, i * dh : i * dh + sh * (ho - 1) + 1 : sh, j * dw : j * dw + sw * (wo - 1) + 1 : sw]
            columns[:, :, i, j] = _grouped(tap, 1, groups).transpose(1, 2, 0, 3, 4)
    return columns.reshape(groups, -1, n, ho, wo)


def _by_group(a, axis, groups):
    """The [groups, a.shape[axis] / groups, rest] matrices of a: weights by their filters (axis 0),
    or values [N, C, H, W] by their channels (axis 1), the batch and pixels after them."""
    a = _grouped(a, axis, groups)
    if axis == 1:
        a = a.transpose(1, 2, 0, 3, 4)
    return a.reshape(groups, a.shape[1], -1)


def _from_groups(y, batch_hw):
    """[N, C, H, W] from the products' [groups, C/groups, N · H · W]."""
    return np.ascontiguousarray(y.reshape((-1,) + tuple(batch_hw)).transpose(1, 0, 2, 3))


def _add_windows(shape, input_hw, kernel, stride, padding, contribution, dtype, dilation=(1, 1)):
    """The adjoint of taking windows: add contribution(i, j) (one value per output
    position) at offset (i, j) of every window, then crop the padding."""
    (kh, kw), (sh, sw), (ph, pw), (dh, dw) = kernel, stride, padding, dilation
    n, c, ho, wo = shape
    # as large as the windows reach (a transposed convolution's output may crop more after than before)
    rows = max(input_hw[0] + 2 * ph, (ho - 1) * sh + (kh - 1) * dh + 1)
    cols = max(input_hw[1] + 2 * pw, (wo - 1) * sw + (kw - 1) * dw + 1)
    full = np.zeros((n, c, rows, cols), dtype)
    for i in range(kh):
        for j in range(kw):
            full[:, :, i * dh : i * dh + sh * ho : sh, j * dw : j * dw + sw * wo : sw] += contribution(i, j)
    return full[:, :, ph : ph + input_hw[0], pw : pw + input_hw[1]]


def _conv_attrs(n) -> dict:
    return {k: n.attrs[k] for k in ("stride", "padding", "dilation", "groups")}


def _conv_vjp(n, g):
    x, w = n.inputs
    graph = ops.graph_of(g[0])
    dx = graph.add1("conv2d_input_grad", [g[0], w], input_hw=tuple(x.shape[2:]), **_conv_attrs(n))
    dw = graph.add1("conv2d_weight_grad", [x, g[0]], kernel=tuple(w.shape[2:]), **_conv_attrs(n))
    return [dx, dw]


def _conv_flops(ins, outs, **_):
    w = ins[1].shape
    return 2 * numel(outs[0].shape) * w[1] * w[2] * w[3]


@primitive("conv2d", Pattern.WINDOW, _conv_type, _conv_vjp, _conv_flops, memory_operands=None, memory_reason="window")
def _conv2d(ctx, xs, stride, padding, dilation, groups):
    x, w = ctx.operands(xs)
    columns = _columns(x, w.shape[2:], stride, padding, dilation, groups)
    y = _by_group(w, 0, groups) @ columns.reshape(groups, columns.shape[1], -1)
    return [_from_groups(y, columns.shape[2:]).astype(x.dtype)]


def _conv_input_grad_type(ctx, types, stride, padding, dilation, groups, input_hw):
    g, w = types
    if g.rank != 4 or w.rank != 4 or g.shape[1] != w.shape[0]:
        ctx.fail(f"needs [N, O, Ho, Wo] values and [O, C, kh, kw] weights, got {g} and {w}")
    _check_groups(ctx, w.shape[1] * groups, w.shape[0], groups)
    x = TensorType(g.dtype, (g.shape[0], w.shape[1] * groups) + tuple(input_hw))
    hw = _window_shape(ctx, x, w.shape[2:], stride, padding, dilation)
    if hw != tuple(g.shape[2:]):
        ctx.fail(f"the output {x} convolved back gives {list(hw)} positions, not the {list(g.shape[2:])} of {g}")
    return [x]


def _conv_input_grad_vjp(n, g):
    """dx = conv2d_input_grad(dy, w) is bilinear: <c, dx> = <conv2d(c, w), dy>."""
    dy, w = n.inputs
    graph = ops.graph_of(g[0])
    return [
        graph.add1("conv2d", [g[0], w], **_conv_attrs(n)),
        graph.add1("conv2d_weight_grad", [g[0], dy], kernel=tuple(w.shape[2:]), **_conv_attrs(n)),
    ]


@primitive(
    "conv2d_input_grad",
    Pattern.WINDOW,
    _conv_input_grad_type,
    _conv_input_grad_vjp,
    lambda ins, outs, **_: _conv_flops([outs[0], ins[1]], [ins[0]]),
    memory_operands=None,
    memory_reason="window",
)
def _conv2d_input_grad(ctx, xs, stride, padding, dilation, groups, input_hw):
    """Also the transposed convolution (conv_transpose) of xs[0] by the weights xs[1]."""
    g, w = ctx.operands(xs)
    shape = (g.shape[0], w.shape[1] * groups) + g.shape[2:]
    # the columns' gradient [groups, C/groups, kh, kw, N, Ho, Wo], added back into the windows
    columns = (_by_group(w, 0, groups).transpose(0, 2, 1) @ _by_group(g, 1, groups)).reshape(
        (groups, w.shape[1]) + w.shape[2:] + (g.shape[0],) + g.shape[2:]
    )

    def contribution(i, j):
        return columns[:, :, i, j].reshape(shape[1], shape[0], *shape[2:]).transpose(1, 0, 2, 3)

    return [_add_windows(shape, input_hw, w.shape[2:], stride, padding, contribution, g.dtype, dilation)]


def _conv_weight_grad_type(ctx, types, stride, padding, dilation, groups, kernel):
    x, g = types
    _check_groups(ctx, x.shape[1], g.shape[1], groups)
    return [TensorType(x.dtype, (g.shape[1], x.shape[1] // groups) + tuple(kernel))]


def _conv_weight_grad_vjp(n, g):
    """dw = conv2d_weight_grad(x, dy) is bilinear: <c, dw> = <conv2d(x, c), dy>."""
    x, dy = n.inputs
    graph = ops.graph_of(g[0])
    return [
        graph.add1("conv2d_input_grad", [dy, g[0]], input_hw=tuple(x.shape[2:]), **_conv_attrs(n)),
        graph.add1("conv2d", [x, g[0]], **_conv_attrs(n)),
    ]


@primitive(
    "conv2d_weight_grad",
    Pattern.WINDOW,
    _conv_weight_grad_type,
    _conv_weight_grad_vjp,
    lambda ins, outs, **_: _conv_flops([ins[0], outs[0]], [ins[1]]),
    memory_operands=None,
    memory_reason="window",
)
def _conv2d_weight_grad(ctx, xs, stride, padding, dilation, groups, kernel):
    x, g = ctx.operands(xs)
    columns = _columns(x, kernel, stride, padding, dilation, groups)
    dw = _by_group(g, 1, groups) @ columns.reshape(groups, columns.shape[1], -1).transpose(0, 2, 1)
    return [dw.reshape((g.shape[1], x.shape[1] // groups) + tuple(kernel)).astype(x.dtype)]


def _pool_type(ctx, types, kernel, stride, padding):
    x = types[0]
    hw = _window_shape(ctx, x, kernel, stride, padding)
    return [TensorType(x.dtype, x.shape[:2] + hw)]


def _pool_flops(ins, outs, kernel, **_):
    return numel(outs[0].shape) * kernel[0] * kernel[1]


def _maxpool_vjp(n, g):
    graph = ops.graph_of(g[0])
    return [graph.add1("maxpool2d_grad", [n.inputs[0], g[0]], **n.attrs)]


@primitive(
    "maxpool2d", Pattern.WINDOW, _pool_type, _maxpool_vjp, _pool_flops, memory_operands=None, memory_reason="window"
)
def _maxpool2d(ctx, xs, kernel, stride, padding):
    x = xs[0]
    if any(padding):
        x = np.pad(x, ((0, 0), (0, 0), (padding[0],) * 2, (padding[1],) * 2), constant_values=-np.inf)
    v = _windows(x, kernel[0], kernel[1], stride, (0, 0))
    return [v.max(axis=(4, 5))]


def _pool_grad_type(ctx, types, **_):
    return [types[0]]


def _first_maxima(x, kernel, stride, padding) -> tuple:
    """Where the first maximum of each window of x lies: index arrays into x padded by
    `padding` (batch, channel, row, column), each of the pooled shape."""
    (kh, kw), (sh, sw), (ph, pw) = kernel, stride, padding
    xp = np.pad(x, ((0, 0), (0, 0), (ph, ph), (pw, pw)), constant_values=-np.inf)
    v = _windows(xp, kh, kw, stride, (0, 0))
    n, c, ho, wo = v.shape[:4]
    di, dj = np.divmod(v.reshape(n, c, ho, wo, kh * kw).argmax(-1), kw)
    rows = di + (np.arange(ho) * sh)[:, None]
    cols = dj + (np.arange(wo) * sw)[None, :]
    ni, ci = np.meshgrid(np.arange(n), np.arange(c), indexing="ij")
    return ni[:, :, None, None], ci[:, :, None, None], rows, cols


def _maxpool_grad_vjp(n, g):
    """Linear in dy, its adjoint reads the cotangent at each window's first maximum; x
    only chooses where, a choice with no derivative."""
    x = n.inputs[0]
    return [None, ops.graph_of(g[0]).add1("maxpool2d_gather", [x, g[0]], **n.attrs)]


@primitive(
    "maxpool2d_grad",
    Pattern.WINDOW,
    _pool_grad_type,
    _maxpool_grad_vjp,
    _pool_flops,
    memory_operands=None,
    memory_reason="window",
)
def _maxpool2d_grad(ctx, xs, kernel, stride, padding):
    """Each output's gradient goes to the first maximum of its window."""
    x, g = xs
    ph, pw = padding
    out = np.zeros((x.shape[0], x.shape[1], x.shape[2] + 2 * ph, x.shape[3] + 2 * pw), g.dtype)
    np.add.at(out, _first_maxima(x, kernel, stride, padding), g)
    return [out[:, :, ph : ph + x.shape[2], pw : pw + x.shape[3]]]


def _maxpool_gather_type(ctx, types, kernel, stride, padding):
    x, y = types
    if x.shape != y.shape:
        ctx.fail(f"the values {y} must have the shape of the pooled input {x}")
    return _pool_type(ctx, types[:1], kernel, stride, padding)


def _maxpool_gather_vjp(n, g):
    return [None, ops.graph_of(g[0]).add1("maxpool2d_grad", [n.inputs[0], g[0]], **n.attrs)]


@primitive(
    "maxpool2d_gather",
    Pattern.WINDOW,
    _maxpool_gather_type,
    _maxpool_gather_vjp,
    _pool_flops,
    memory_operands=None,
    memory_reason="window",
)
def _maxpool2d_gather(ctx, xs, kernel, stride, padding):
    """y at the first maximum of each window of x: the transpose of maxpool2d_grad, which
    its second derivative needs."""
    x, y = xs
    ph, pw = padding
    return [np.pad(y, ((0, 0), (0, 0), (ph, ph), (pw, pw)))[_first_maxima(x, kernel, stride, padding)]]


def _avgpool_vjp(n, g):
    graph = ops.graph_of(g[0])
    return [graph.add1("avgpool2d_grad", [g[0]], input_hw=tuple(n.inputs[0].shape[2:]), **n.attrs)]


@primitive(
    "avgpool2d", Pattern.WINDOW, _pool_type, _avgpool_vjp, _pool_flops, memory_operands=None, memory_reason="window"
)
def _avgpool2d(ctx, xs, kernel, stride, padding):
    """Average over the window, padding counted as zeros (PyTorch's count_include_pad)."""
    v = _windows(xs[0], kernel[0], kernel[1], stride, padding)
    return [v.mean(axis=(4, 5)).astype(xs[0].dtype)]


def _avgpool_grad_type(ctx, types, kernel, stride, padding, input_hw):
    g = types[0]
    return [TensorType(g.dtype, g.shape[:2] + tuple(input_hw))]


def _avgpool_grad_vjp(n, g):
    attrs = {k: n.attrs[k] for k in ("kernel", "stride", "padding")}
    return [ops.graph_of(g[0]).add1("avgpool2d", [g[0]], **attrs)]


@primitive(
    "avgpool2d_grad",
    Pattern.WINDOW,
    _avgpool_grad_type,
    _avgpool_grad_vjp,  # accumulates its operand's expression
    lambda ins, outs, kernel, **_: numel(ins[0].shape) * kernel[0] * kernel[1],
)
def _avgpool2d_grad(ctx, xs, kernel, stride, padding, input_hw):
    g = xs[0]
    share = g / (kernel[0] * kernel[1])
    return [_add_windows(g.shape, input_hw, kernel, stride, padding, lambda i, j: share, g.dtype)]
