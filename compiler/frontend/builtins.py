"""Functions built into the language, below the .dl standard library.

Each takes the evaluator first. Math functions work on static numbers too
(`sqrt(2 / fan_in)` is computed at compile time); everything else emits primitives.
"""

from __future__ import annotations

import math

import numpy as np

from dlc.compiler.ir import ops
from dlc.compiler.ir.dims import Dim, exact_div, numel
from dlc.compiler.errors import DlcError
from dlc.compiler.ir.evaluate import Eval
from dlc.compiler.ir.graph import DTYPES, Tensor, TensorType
from dlc.compiler.ir.primitives import PRIMITIVES
from dlc.compiler.frontend.syntax import INT_MAX
from dlc.compiler.frontend.values import Builtin, describe, static_binary

BUILTINS: dict = {}


def builtin(name=None):
    def register(fn):
        key = name or fn.__name__.rstrip("_")
        BUILTINS[key] = Builtin(key, fn)
        return fn

    return register


def _fail(ev, message):
    raise DlcError(message, ev.graph.span)


def _tensor(ev, x, what="argument") -> Tensor:
    return ev.tensor(x, ev.graph.span, what)


def _int(ev, v, what) -> int:
    if isinstance(v, bool) or not isinstance(v, int):
        _fail(ev, f"{what} must be an integer, got {describe(v)}")
    return v


def _pair(ev, v, what, least=0) -> tuple:
    """(v, v) for an integer, v for a pair; every entry at least `least`."""
    if isinstance(v, tuple):
        if len(v) != 2:
            _fail(ev, f"{what} must be an integer or a pair, got a tuple of {len(v)}")
        out = tuple(_int(ev, x, what) for x in v)
    else:
        if isinstance(v, bool) or not isinstance(v, int):
            _fail(ev, f"{what} must be an integer or a pair of integers, got {describe(v)}")
        out = (v, v)
    if min(out) < least:
        _fail(ev, f"{what} must be at least {least}, got {v}")
    return out


def _shape(ev, dims, infer=False) -> tuple:
    """A shape from varargs or one tuple; with `infer`, one -1 may stand for the rest."""
    if len(dims) == 1 and isinstance(dims[0], tuple):
        dims = dims[0]
    for d in dims:
        if isinstance(d, bool) or not isinstance(d, (int, Dim)):
            _fail(ev, f"a shape is made of integers and dims, got {describe(d)}")
        if isinstance(d, int) and d <= 0 and not (infer and d == -1):
            _fail(ev, f"dimension sizes must be positive, got {d}")
    return tuple(dims)


# ---- elementwise math: static on numbers, primitives on tensors -----------------------------
def _unary(prim):
    """The builtin of a primitive of one operand: on a number, the primitive's own numpy
    reference computes it now, in float64 (the tensor op's numerics, overflow and all)."""

    def fn(ev, x):
        if isinstance(x, (int, float)) and not isinstance(x, bool):
            with np.errstate(all="ignore"):
                v = float(prim.impl(Eval(), [np.asarray(x, np.float64)])[0])
            if not math.isfinite(v):
                _fail(ev, f"{prim.builtin}({x}) is undefined")
            return v
        return ops.unary(prim.name, _tensor(ev, x))

    BUILTINS[prim.builtin] = Builtin(prim.builtin, fn)


for _prim in PRIMITIVES.values():
    if _prim.builtin is not None and _prim.arity == 1:
        _unary(_prim)


def _extremum(ev, name, a, b):
    """maximum / minimum: computed now for two numbers, elementwise (a primitive) otherwise."""
    for v in (a, b):
        if isinstance(v, bool) or not isinstance(v, (Tensor, int, float, Dim)):
            _fail(ev, f"{name} needs numbers or tensors, got {describe(v)}")
    if isinstance(a, (int, float)) and isinstance(b, (int, float)):
        return (max if name == "maximum" else min)(a, b)
    a, b = (_tensor(ev, v) if isinstance(v, Dim) else v for v in (a, b))
    return ops.binary(name, a, b)


@builtin()
def maximum(ev, a, b):
    return _extremum(ev, "maximum", a, b)


@builtin()
def minimum(ev, a, b):
    return _extremum(ev, "minimum", a, b)


@builtin()
def select(ev, cond, a, b):
    """Elementwise choice: a where cond is true, else b."""
    return ops.select(_tensor(ev, cond, "the condition"), a, b)


BUILTINS["where"] = Builtin("where", select)


@builtin()
def stop_gradient(ev, x):
    x = _tensor(ev, x)
    return x.graph.add1("stop_gradient", [x])


@builtin()
def fused_attention(ev, q, k, v, mask=None, scale=None, lse=False, keys=None):
    """softmax(q kᵀ · scale, masked) @ v as one fused primitive (docs/language.md); the
    mask (bool or additive) broadcasts to the scores [..., Tq, Tk]; scale 1/sqrt(d) unless given.
    With lse = true, (that, the log-sum-exp of each row of scaled, masked scores [..., Tq]).
    `keys` (integers broadcast to the batch dims [...]): how many keys each matrix has, the
    keys from there on not read."""
    q, k, v = (_tensor(ev, x, what) for x, what in ((q, "q"), (k, "k"), (v, "v")))
    if q.rank < 2:
        _fail(ev, f"fused_attention needs q of rank >= 2, got {q.type}")
    if scale is None:
        if not isinstance(q.shape[-1], int):
            _fail(ev, f"fused_attention needs the feature size of q {q.type} known, or a scale")
        scale = 1.0 / math.sqrt(q.shape[-1])
    if isinstance(scale, bool) or not isinstance(scale, (int, float)):
        _fail(ev, f"the scale must be a number, got {describe(scale)}")
    operands = [q, k, v]
    if mask is not None:
        mask = _tensor(ev, mask, "the mask")
        scores = q.shape[:-1] + k.shape[-2:-1]
        if len(mask.shape) > len(scores) or ops.broadcast_shapes(ev.graph, mask.shape, scores) != scores:
            _fail(
                ev,
                f"the mask {mask.type} does not broadcast to the attention scores "
                f"{TensorType(q.dtype, scores)} without enlarging them",
            )
        operands.append(ops.broadcast_to(mask, scores))
    if not isinstance(lse, bool):
        _fail(ev, f"lse is true or false, got {describe(lse)}")
    bounded = {}
    if keys is not None:
        keys = _tensor(ev, keys, "the key counts")
        batch = q.shape[:-2]
        integers = not keys.type.is_float and keys.dtype != "bool"
        if not integers or len(keys.shape) > len(batch) or ops.broadcast_shapes(ev.graph, keys.shape, batch) != batch:
            _fail(ev, f"the key counts {keys.type} must be integers that broadcast to the batch dims of q {q.type}")
        operands.append(ops.broadcast_to(ops.cast(keys, "i32"), batch))
        bounded = {"bounded": True}
    outputs = ev.graph.add("attention", operands, scale=float(scale), **bounded)
    return tuple(outputs) if lse else outputs[0]


@builtin()
def replica_mean(ev, x):
    """The mean of x over the ranks whose batch statistics are synchronized
    (docs/distributed.md); x itself otherwise, so that nothing is added to the graph."""
    x = _tensor(ev, x)
    return x.graph.add1("replica_mean", [x]) if ev.replicas > 1 else x


@builtin()
def replicas(ev):
    """How many ranks replica_mean averages over: 1 unless statistics are synchronized."""
    return ev.replicas


@builtin("float")
def float_(ev, x):
    return float(x) if isinstance(x, (int, float)) else ops.cast(_tensor(ev, x), "f32")


@builtin("int")
def int_(ev, x):
    if not isinstance(x, (int, float)):
        return ops.cast(_tensor(ev, x), "i32")
    if not -INT_MAX <= x <= INT_MAX:
        _fail(ev, f"int({x:g}) does not fit in 64 bits")
    return int(x)


@builtin()
def cast(ev, x, dtype: str):
    if dtype not in DTYPES:
        _fail(ev, f"unknown dtype \"{dtype}\" ({', '.join(DTYPES)})")
    return ops.cast(_tensor(ev, x), dtype)


# ---- reductions ----------------------------------------------------------------------------------
def _reduced(ev, x, name) -> Tensor:
    if isinstance(x, (int, float)) and not isinstance(x, bool):
        _fail(
            ev,
            f"{name} reduces a tensor along axes; for two numbers use {'maximum' if name == 'max' else 'minimum'}"
            if name in ("max", "min")
            else f"{name} reduces a tensor, got {describe(x)}",
        )
    return _tensor(ev, x)


def _axis(ev, x: Tensor, axis, new=False) -> int:
    """An axis argument of a builtin, checked against x's rank (ops.axis_index; `new`: a
    place to insert an axis) and counted from 0."""
    if isinstance(axis, bool) or not isinstance(axis, int):
        _fail(ev, f"an axis must be an integer, got {describe(axis)}")
    return ops.axis_index(x, axis, new)


def _axes(ev, x: Tensor, axis):
    """The axes of a reduction: None (all of them), an axis or a tuple of axes."""
    if axis is None:
        return None
    return tuple(_axis(ev, x, a) for a in (axis if isinstance(axis, tuple) else (axis,)))


@builtin("sum")
def sum_(ev, x, axis=None, keepdims=False):
    if isinstance(x, tuple):
        return _fold(ev, x, ops.add)
    x = _reduced(ev, x, "sum")
    return ops.sum_(x, _axes(ev, x, axis), keepdims)


def _fold(ev, xs, f):
    if not xs:
        _fail(ev, "sum of an empty tuple")
    out = xs[0]
    for v in xs[1:]:
        if isinstance(out, Tensor) or isinstance(v, Tensor):
            out = f(out, v)
        else:
            out = static_binary("+", out, v, ev.graph.span)
    return out


@builtin()
def mean(ev, x, axis=None, keepdims=False):
    x = _reduced(ev, x, "mean")
    return ops.mean(x, _axes(ev, x, axis), keepdims)


@builtin("max")
def max_(ev, x, axis=None, keepdims=False):
    x = _reduced(ev, x, "max")
    return ops.max_(x, _axes(ev, x, axis), keepdims)


@builtin("min")
def min_(ev, x, axis=None, keepdims=False):
    x = _reduced(ev, x, "min")
    return -ops.max_(-x, _axes(ev, x, axis), keepdims)


@builtin()
def argmax(ev, x, axis=-1):
    x = _tensor(ev, x)
    return ops.argmax(x, _axis(ev, x, axis))


# ---- shapes ------------------------------------------------------------------------------------------
@builtin()
def shape(ev, x):
    return _tensor(ev, x).shape


@builtin()
def size(ev, x, axis):
    x = _tensor(ev, x)
    return x.shape[_axis(ev, x, axis)]


@builtin("len")
def len_(ev, x):
    if isinstance(x, tuple):
        return len(x)
    x = _tensor(ev, x)
    if x.rank == 0:
        _fail(ev, "len of a scalar")
    return x.shape[0]


@builtin()
def reshape(ev, x, *dims):
    x = _tensor(ev, x)
    return ops.reshape(x, _shape(ev, dims, infer=True))


@builtin()
def transpose(ev, x, *perm):
    x = _tensor(ev, x)
    if len(perm) == 1 and isinstance(perm[0], tuple):
        perm = perm[0]
    perm = perm or tuple(range(x.rank))[::-1]
    if any(isinstance(a, bool) or not isinstance(a, int) for a in perm) or sorted(perm) != list(range(x.rank)):
        _fail(ev, f"{list(perm)} is not a permutation of the {x.rank} axes of {x.type}")
    return ops.transpose(x, perm)


@builtin()
def swapaxes(ev, x, a, b):
    x = _tensor(ev, x)
    perm = list(range(x.rank))
    a, b = _axis(ev, x, a), _axis(ev, x, b)
    perm[a], perm[b] = perm[b], perm[a]
    return ops.transpose(x, perm)


@builtin()
def expand_dims(ev, x, axis):
    x = _tensor(ev, x)
    axis = _axis(ev, x, axis, new=True)
    return ops.reshape(x, x.shape[:axis] + (1,) + x.shape[axis:])


@builtin()
def squeeze(ev, x, axis):
    x = _tensor(ev, x)
    axis = _axis(ev, x, axis)
    if x.shape[axis] != 1:
        _fail(ev, f"cannot squeeze axis {axis} of {x.type}: its size is not 1")
    return ops.reshape(x, x.shape[:axis] + x.shape[axis + 1 :])


@builtin()
def concat(ev, *xs, axis=-1):
    if len(xs) == 1 and isinstance(xs[0], tuple):
        xs = xs[0]
    if not xs:
        _fail(ev, "concat of nothing")
    ts = [_tensor(ev, x) for x in xs]
    for t in ts[1:]:
        if t.rank != ts[0].rank:
            _fail(ev, f"cannot concat {ts[0].type} and {t.type}: ranks differ")
    return ops.concat(ts, _axis(ev, ts[0], axis))


@builtin()
def stack(ev, *xs, axis=0):
    if len(xs) == 1 and isinstance(xs[0], tuple):
        xs = xs[0]
    if not xs:
        _fail(ev, "stack of nothing")
    ts = [_tensor(ev, x) for x in xs]
    axis = _axis(ev, ts[0], axis, new=True)
    return ops.concat([ops.reshape(t, t.shape[:axis] + (1,) + t.shape[axis:]) for t in ts], axis)


@builtin()
def split(ev, x, parts, axis=-1):
    """Split into `parts` equal pieces along an axis; returns a tuple."""
    x = _tensor(ev, x)
    parts = _int(ev, parts, "the number of parts")
    axis = _axis(ev, x, axis)
    size = x.shape[axis]
    piece = exact_div(size, parts) if parts > 0 else None
    if piece is None:
        _fail(ev, f"cannot split {x.type} into {parts} equal parts along axis {axis}")
    out = []
    for k in range(parts):
        starts = [0] * x.rank
        stops = list(x.shape)
        starts[axis], stops[axis] = k * piece, (k + 1) * piece
        out.append(ops.slice_(x, starts, stops, [1] * x.rank))
    return tuple(out)


@builtin()
def pad(ev, x, before, after, value=0, interior=None):
    """x with before[i] and after[i] entries of `value` around axis i, and interior[i]
    between each two of its entries."""
    x = _tensor(ev, x)
    widths = []
    for v, what in ((before, "before"), (after, "after"), (interior or (0,) * x.rank, "interior")):
        if (
            not isinstance(v, tuple)
            or len(v) != x.rank
            or any(isinstance(d, bool) or not isinstance(d, int) or d < 0 for d in v)
        ):
            _fail(
                ev,
                f"pad: '{what}' must be a tuple of {x.rank} whole numbers (one per axis of {x.type}), "
                f"got {describe(v)}",
            )
        widths.append(v)
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        _fail(ev, f"pad: the value must be a number, got {describe(value)}")
    padded = ops.pad(x, *widths)
    if value == 0:
        return padded
    inside = ops.pad(ops.full(ev.graph, x.shape, True, "bool"), *widths)
    return ops.select(inside, padded, value)


@builtin()
def broadcast_to(ev, x, *dims):
    x = _tensor(ev, x)
    shape = ops.broadcast_shapes(ev.graph, x.shape, _shape(ev, dims))
    return ops.broadcast_to(x, shape)


@builtin()
def full(ev, shape, value, dtype="f32"):
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        _fail(ev, f"full needs a number to fill with, got {describe(value)}")
    if not isinstance(shape, tuple):
        shape = (shape,)
    return ops.full(ev.graph, _shape(ev, shape), value, dtype)


@builtin()
def arange(ev, n):
    """0, 1, ..., n-1 as i32[n]."""
    if isinstance(n, bool) or not isinstance(n, (int, Dim)):
        _fail(ev, f"arange needs a size, got {describe(n)}")
    return ev.graph.add1("iota", shape=_shape(ev, (n,)), axis=0, dtype="i32")


@builtin()
def one_hot(ev, indices, n, dtype="f32"):
    idx = _tensor(ev, indices)
    if idx.dtype not in ("i32", "i64"):
        _fail(ev, f"one_hot needs integer indices, got {idx.type}")
    n = _int(ev, n, "the number of classes")
    if n <= 0:
        _fail(ev, f"the number of classes must be positive, got {n}")
    return ops.one_hot(idx, n, dtype)


@builtin()
def gather(ev, table, indices):
    """Rows of `table` picked by integer `indices`: out[..., :] = table[indices[...], :]."""
    t, idx = _tensor(ev, table), _tensor(ev, indices)
    if idx.dtype not in ("i32", "i64"):
        _fail(ev, f"gather needs integer indices, got {idx.type}")
    return ev.graph.add1("gather", [t, idx])


# ---- random numbers (counter-based: reproducible from the seed) ------------------------------------------
def _random(ev, dims, dist):
    shape = _shape(ev, dims)
    return ev.graph.add1("random", [ev.rng_key()], shape=shape, dist=dist, stream=ev.next_stream())


@builtin()
def random_uniform(ev, *dims):
    """Uniform in (0, 1)."""
    return _random(ev, dims, "uniform")


@builtin()
def random_normal(ev, *dims):
    """Standard normal."""
    return _random(ev, dims, "normal")


@builtin()
def random_orthogonal(ev, *dims):
    """A (semi-)orthogonal matrix: rows or columns orthonormal (for the orthogonal initializer)."""
    shape = _shape(ev, dims)
    if len(shape) < 2:
        _fail(ev, f"an orthogonal matrix needs rank >= 2, got {list(shape)}")
    return ev.graph.add1("random", [ev.rng_key()], shape=shape, dist="orthogonal", stream=ev.next_stream())


# ---- values read when the parameters are initialized ---------------------------------------------------
WORD_VECTORS_INPUT = "word_vectors:"  # the init graph's input "word_vectors:PATH" (runtime/data/vectors.py)


@builtin()
def word_vectors(ev, path, shape):
    """The embedding table [words + 2, dim] of a word vector file (GloVe or word2vec text), an
    input of the init graph: the runtime reads the file when it initializes the parameters."""
    if not isinstance(path, str) or not path:
        _fail(ev, f"word_vectors needs a file name in quotes, got {describe(path)}")
    if ev.graph is not ev.init:
        _fail(
            ev,
            "word_vectors reads its file when the parameters are initialized: use it in an initializer, "
            f"as in embedding(ids, VOCAB, DIM, init = pretrained(\"{path}\"))",
        )
    shape = _shape(ev, shape if isinstance(shape, tuple) else (shape,))
    if len(shape) != 2 or not all(isinstance(d, int) for d in shape):
        _fail(ev, f"word vectors fill a [words, dim] table, not a parameter of shape {list(shape)}")
    return ev.graph.add1("input", type=TensorType("f32", shape), name=WORD_VECTORS_INPUT + path)


# ---- convolution and pooling (NCHW) ---------------------------------------------------------------------------
def _rank4(ev, x, what):
    x = _tensor(ev, x)
    if x.rank != 4:
        _fail(ev, f"{what} needs a [N, C, H, W] input, got {x.type}")
    return x


def _windowed(ev, op, inputs, **attrs):
    """A convolution or pooling node. When its input does not fit and looks channels-last
    ([N, H, W, C] with C of 1 to 4, and more rows than that), the error says so."""
    try:
        return ev.graph.add1(op, inputs, **attrs)
    except DlcError as e:
        x = inputs[0]
        n, a, b, c = x.shape
        if isinstance(c, int) and c <= 4 and not (isinstance(a, int) and a <= c):
            fix = (
                f"declare the input {TensorType(x.dtype, (n, c, a, b))}"
                if x.graph.op(x.node) == "input"
                else "transpose(x, 0, 3, 1, 2) is its NCHW form"
            )
            raise DlcError(
                f"{e.message}; conv2d and pooling read NCHW ([N, C, H, W]), and {x.type} looks "
                f"channels-last ([N, H, W, C]): {fix}",
                e.span,
                e.notes,
            ) from None
        raise


def _conv_attrs(ev, stride, padding, dilation, groups) -> dict:
    if isinstance(groups, bool) or not isinstance(groups, int) or groups < 1:
        _fail(ev, f"groups must be a positive integer, got {describe(groups)}")
    return dict(
        stride=_pair(ev, stride, "stride", 1),
        padding=_pair(ev, padding, "padding"),
        dilation=_pair(ev, dilation, "dilation", 1),
        groups=groups,
    )


@builtin()
def convolution(ev, x, w, stride=1, padding=0, dilation=1, groups=1):
    """2-D cross-correlation of x [N, C, H, W] with weights [O, C / groups, kh, kw]."""
    x, w = _rank4(ev, x, "convolution"), _tensor(ev, w)
    return _windowed(ev, "conv2d", list(ops.promote(x, w)), **_conv_attrs(ev, stride, padding, dilation, groups))


@builtin()
def conv_transpose(ev, x, w, stride=1, padding=0, output_padding=0, dilation=1, groups=1):
    """The transposed convolution of x [N, O, H, W] by weights [O, C / groups, kh, kw]: the
    gradient of `convolution` with respect to its input, whose size it gives back
    ((H - 1) * stride - 2 * padding + dilation * (k - 1) + 1 + output_padding)."""
    x, w = _rank4(ev, x, "conv_transpose"), _tensor(ev, w)
    attrs = _conv_attrs(ev, stride, padding, dilation, groups)
    extra = _pair(ev, output_padding, "output_padding")
    if w.rank != 4:
        _fail(ev, f"conv_transpose needs [O, C, kh, kw] weights, got {w.type}")
    if any(e >= s for e, s in zip(extra, attrs["stride"])):
        _fail(ev, f"output_padding {extra} must be smaller than the stride {attrs['stride']}")
    hw = tuple(
        (size - 1) * s - 2 * p + d * (k - 1) + 1 + e
        for size, s, p, d, k, e in zip(
            x.shape[2:], attrs["stride"], attrs["padding"], attrs["dilation"], w.shape[2:], extra
        )
    )
    return _windowed(ev, "conv2d_input_grad", list(ops.promote(x, w)), input_hw=hw, **attrs)


def _pool(ev, op, x, kernel, stride, padding):
    x = _rank4(ev, x, op)
    kernel = _pair(ev, kernel, "kernel", 1)
    stride = kernel if stride is None else _pair(ev, stride, "stride", 1)
    return _windowed(ev, op, [x], kernel=kernel, stride=stride, padding=_pair(ev, padding, "padding"))


@builtin()
def max_pool(ev, x, kernel=2, stride=None, padding=0):
    return _pool(ev, "maxpool2d", x, kernel, stride, padding)


@builtin()
def avg_pool(ev, x, kernel=2, stride=None, padding=0):
    return _pool(ev, "avgpool2d", x, kernel, stride, padding)


@builtin("numel")
def numel_(ev, x):
    return numel(_tensor(ev, x).shape)


# ---- static helpers for library code ----------------------------------------------------------------------------
@builtin("range")
def range_(ev, start, stop=None):
    """A tuple of integers: range(n) or range(a, b)."""
    if stop is None:
        start, stop = 0, start
    start, stop = _int(ev, start, "range start"), _int(ev, stop, "range end")
    ev.check_items("tuple", stop - start, ev.graph.span)
    return tuple(range(start, stop))


@builtin()
def pair(ev, v):
    """(v, v) for an integer, v itself for a pair."""
    return _pair(ev, v, "the value")


@builtin()
def as_tuple(ev, v):
    return v if isinstance(v, tuple) else (v,)


@builtin("str")
def str_(ev, v):
    """Text of a static value; a tensor's text is its type, as in f32[B, 10]."""
    return str(v.type) if isinstance(v, Tensor) else str(v)


@builtin()
def type_of(ev, v):
    """The kind of a value: "tensor", "int", "float", "bool", "str", "dim", "tuple", "fn" or "none"."""
    if isinstance(v, Tensor):
        return "tensor"
    for kind, cls in (("bool", bool), ("int", int), ("float", float), ("str", str), ("dim", Dim), ("tuple", tuple)):
        if isinstance(v, cls):
            return kind
    return "none" if v is None else "fn"


@builtin()
def error(ev, message, about=None):
    """Stop compiling with this message, reported at the user's call (for library checks);
    a tensor `about` gets a note where the user's program made it, and by which function."""
    notes = []
    if isinstance(about, Tensor) and about.made_at is not None:
        maker = ev.made_by(about)
        notes.append((f"{about.type} is made here" + (f", by {maker}" if maker else ""), about.made_at))
    raise DlcError(str(message), ev.graph.span, notes)


@builtin()
def is_none(ev, v):
    return v is None
