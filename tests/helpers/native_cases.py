"""The native backend's cases and their runs on both engines: every primitive (PRIMS) and every
layer, activation, loss and scan of the standard library as .dl source, their feeds on several
shapes, and the comparison of the native engine's values with the reference interpreter's. The
op-by-op tests (tests/native/test_ops.py) run them all; the ONNX and convolution tests reuse them."""

from __future__ import annotations

import zlib
from dataclasses import dataclass, field
import numpy as np
from dlc.compiler.ir import ops
from dlc.compiler.passes.autodiff import train_step
from dlc.compiler.ir.dims import Dim, concrete
from dlc.compiler.ir.graph import Graph
from dlc.runtime.training import gradcheck as gc
from dlc.runtime.engines import interpreter
from dlc.runtime.engines.native import Executable


RTOL = 1e-4
FLOOR = 1e-5  # absolute tolerance, as a fraction of the array's largest magnitude

B, D, T = Dim.sym("B"), Dim.sym("D"), Dim.sym("T")


# ---- running a graph on both engines -------------------------------------------------------------------
def run_reference(graph: Graph, feeds: dict, params: dict) -> dict:
    return interpreter.run(graph, feeds, params, float_dtype="f32")


def run_native(exe: Executable, feeds: dict, params: dict) -> dict:
    """Every named output of the compiled graph, as arrays of their evaluated shapes."""
    fixed = {bid: params[name] for name, bid in exe.program.params.items()}
    arrays, sizes = exe.run(feeds, fixed)
    out = {}
    for name, bid in exe.program.outputs.items():
        shape = tuple(int(concrete(d, sizes)) for d in exe.graph.outputs[name].shape)
        n = int(np.prod(shape, dtype=np.int64))
        out[name] = arrays[bid][:n].reshape(shape).copy()
    return out


def assert_weight_copy_follows_weights(model, mode, copy_of, feeds: dict, params: dict, weight: str):
    """A prediction lowered with `pack_weights=mode` makes exactly one WeightTransformKernel
    whose `what` is `copy_of`, under a flag, and none without it; it predicts the bits of
    the program without it, again at the next call, and after `weight` changed in place,
    those of the new weight."""
    from dlc.compiler.native.kernels.gemm import WeightTransformKernel
    from dlc.runtime.engines.reference import predict_graph

    once, plain = (Executable(predict_graph(model), pack_weights=pack) for pack in (mode, None))
    copies = lambda exe: [k for k in exe.program.kernels if isinstance(k, WeightTransformKernel) and k.what == copy_of]
    assert [k.ready is not None for k in copies(once)] == [True] and once.program.weights_ready is not None
    assert [k.ready for k in copies(plain)] == [None]
    predict = lambda exe: next(iter(run_native(exe, feeds, params).values()))
    before = predict(once)
    assert np.array_equal(before, predict(plain)) and np.array_equal(predict(once), before)
    params[weight][...] = np.random.default_rng(7).standard_normal(params[weight].shape)
    after = predict(once)
    assert np.array_equal(after, predict(plain)) and not np.array_equal(after, before)


def assert_match(native, ref, what: str, rtol: float = RTOL, floor: float = FLOOR, scale: float | None = None):
    """float: |native - ref| <= rtol * |ref| + floor * scale elementwise (scale: max|ref| by
    default), non-finite values in the same places; integers and bools: equal."""
    native, ref = np.asarray(native), np.asarray(ref)
    assert native.shape == ref.shape, f"{what}: shape {native.shape}, the reference {ref.shape}"
    if not np.issubdtype(ref.dtype, np.floating):
        bad = native != ref.astype(native.dtype)
        assert not bad.any(), (
            f"{what}: {int(bad.sum())} of {ref.size} entries differ, e.g. at "
            f"{tuple(int(i) for i in np.argwhere(bad)[0])}: native {native[bad][:5]}, "
            f"reference {ref[bad][:5]}"
        )
        return
    n, r = native.astype(np.float64), ref.astype(np.float64)
    finite = np.isfinite(r)
    same_nonfinite = (np.isnan(n) & np.isnan(r)) | (n == r)
    assert np.all(finite | same_nonfinite), (
        f"{what}: non-finite values differ: native {n[~finite]}, reference {r[~finite]}"
    )
    assert np.all(np.isfinite(n[finite])), f"{what}: native has non-finite values where the reference is finite"
    n, r = n[finite], r[finite]
    if r.size == 0:
        return
    scale = np.abs(r).max() if scale is None else max(scale, np.abs(r).max())
    err = np.abs(n - r)
    bound = rtol * np.abs(r) + floor * scale
    bad = err > bound
    if bad.any():
        i = int(np.argmax(err - bound))
        raise AssertionError(
            f"{what}: {int(bad.sum())} of {r.size} entries differ beyond rtol {rtol:g}; worst: "
            f"native {n[i]!r}, reference {r[i]!r} (|ref| max {scale:.4g}, max abs error "
            f"{err.max():.3g})"
        )


def compare(graph: Graph, feed_sets: list, params: dict | None = None, label: str = "") -> dict:
    """Compile `graph` once and compare every output with the reference on every feed set.
    Returns the reference outputs of the last set.

    The absolute floor of a parameter's gradient is scaled by the largest gradient of the
    model: a gradient that is zero in exact arithmetic (a bias followed by a normalization,
    an attention key bias, which softmax cancels) is rounding noise in both engines."""
    params = {k: np.ascontiguousarray(v, np.float32) for k, v in (params or {}).items()}
    exe = Executable(graph)
    ref = {}
    for sizes, feeds in feed_sets:
        ref = run_reference(graph, feeds, params)
        nat = run_native(exe, feeds, params)
        assert nat.keys() == ref.keys()
        grad_scale = max(
            [float(np.abs(v).max(initial=0)) for k, v in ref.items() if k.startswith("grad:")], default=None
        )
        for name in ref:
            assert_match(
                nat[name],
                ref[name],
                f"{label} {name} at {sizes}",
                scale=grad_scale if name.startswith("grad:") else None,
            )
    return ref


def case_rng(name: str, salt: int = 0) -> np.random.Generator:
    return np.random.default_rng(zlib.crc32(name.encode()) + salt)


def with_random_size(name: str, sizes: list, ranges: dict) -> list:
    """`sizes` plus one drawn at random (reproducibly, per case) from `ranges`."""
    r = case_rng(name, 99)
    return list(sizes) + [{k: int(r.integers(lo, hi + 1)) for k, (lo, hi) in ranges.items()}]


# ---- primitive cases ------------------------------------------------------------------------------------------
normal = lambda r, s: r.standard_normal(s)
positive = lambda r, s: r.uniform(0.5, 2.5, s)


def away_from_zero(lo=0.3, hi=2.0):
    return lambda r, s: r.choice([-1.0, 1.0], size=s) * r.uniform(lo, hi, s)


def integers(lo, hi):
    return lambda r, s: r.integers(lo, hi, s)


def nonzero_integers(hi):
    return lambda r, s: r.choice([-1, 1], size=s) * r.integers(1, hi, s)


rounded = lambda r, s: np.round(r.standard_normal(s) * 2)  # small integers as floats: ties, zeros
coin = lambda r, s: r.random(s) < 0.5


def f32(*shape, sample=normal):
    return ("f32", shape, sample)


def i32(*shape, sample=integers(-20, 21)):
    return ("i32", shape, sample)


def boolean(*shape):
    return ("bool", shape, coin)


SIZES_BD = [{"B": 1, "D": 129}, {"B": 7, "D": 13}, {"B": 13, "D": 1}, {"B": 13, "D": 7}]
RANGES_BD = {"B": (2, 24), "D": (2, 200)}


@dataclass
class Prim:
    inputs: dict  # name -> (dtype, shape, sampler)
    build: object  # (graph, {name: Tensor}) -> Tensor or {name: Tensor}
    sizes: list = field(default_factory=lambda: SIZES_BD)
    ranges: dict = field(default_factory=lambda: RANGES_BD)
    grad: bool = True  # differentiate every float output w.r.t. every float input
    ops: tuple = ()  # primitives the graph must contain (the name's op by default)


def unary(op, sample=normal):
    return Prim({"x": f32(B, D, sample=sample)}, lambda g, t: g.add1(op, [t["x"]]))


def binary(op, sa=normal, sb=normal, dtype="f32", grad=True):
    spec = f32 if dtype == "f32" else i32
    return Prim(
        {"a": spec(B, D, sample=sa), "b": spec(B, D, sample=sb)},
        lambda g, t: g.add1(op, [t["a"], t["b"]]),
        grad=grad and dtype == "f32",
    )


def _tied_pair(g, t, op):
    """op(a, b) with b == a where `tie` (about half the entries): ties split the gradient."""
    b = g.add1("select", [t["tie"], t["a"], t["b"]])
    return g.add1(op, [t["a"], b])


def cast(dtype_in, dtype_out, sample):
    spec = {"f32": f32, "i32": i32, "bool": lambda *s, sample=None: boolean(*s)}[dtype_in]
    return Prim(
        {"x": spec(B, D, sample=sample)},
        lambda g, t: g.add1("cast", [t["x"]], dtype=dtype_out),
        grad=False,
        ops=("cast",),
    )


def attention(mask: dict, tk=None, dv=5):
    """q [B, 2, D, 4] against tk keys (D: self-attention); its gradient, attention_grad, too.
    Not one key: dq is then zero in exact arithmetic (a softmax of one score), rounding noise."""
    tk = tk or D

    def build(g, t):
        extra = [ops.broadcast_to(t["m"], (B, 2, D, tk))] if mask else []
        return g.add("attention", [t["q"], t["k"], t["v"]] + extra, scale=0.7)[0]

    return Prim(
        {"q": f32(B, 2, D, 4), "k": f32(B, 2, tk, 4), "v": f32(B, 2, tk, dv), **mask},
        build,
        sizes=[{"B": 1, "D": 129}, {"B": 7, "D": 13}, {"B": 3, "D": 64}, {"B": 5, "D": 2}],
        ranges={"B": (2, 24), "D": (2, 200)},
        ops=("attention", "attention_grad"),
    )


def reduce(op, axes, shape=(B, D), sample=normal):
    return Prim(
        {"x": f32(*shape, sample=sample)}, lambda g, t: g.add1(op, [t["x"]], axes=axes), grad=op != "argmax", ops=(op,)
    )


def matmul(ta, tb, batch=()):
    m, k, n = B, D, 13
    a = batch + ((k, m) if ta else (m, k))
    b = batch + ((n, k) if tb else (k, n))
    return Prim({"a": f32(*a), "b": f32(*b)}, lambda g, t: g.add1("matmul", [t["a"], t["b"]], ta=ta, tb=tb))


IMG = (B, 3, 13, 7)
SIZES_B = [{"B": 1}, {"B": 7}, {"B": 13}]
RANGES_B = {"B": (2, 24)}


def conv(kernel, stride, padding, img=IMG, out=5, dilation=(1, 1), groups=1):
    return Prim(
        {"x": f32(*img), "w": f32(out, img[1] // groups, *kernel)},
        lambda g, t: g.add1(
            "conv2d", [t["x"], t["w"]], stride=stride, padding=padding, dilation=dilation, groups=groups
        ),
        sizes=SIZES_B,
        ranges=RANGES_B,
        ops=("conv2d", "conv2d_input_grad", "conv2d_weight_grad"),
    )


def conv_transpose(x, w, stride, padding, input_hw, dilation=(1, 1), groups=1):
    """conv2d_input_grad as a forward op (the builtin conv_transpose)."""
    return Prim(
        {"x": f32(*x), "w": f32(*w)},
        lambda g, t: g.add1(
            "conv2d_input_grad",
            [t["x"], t["w"]],
            stride=stride,
            padding=padding,
            dilation=dilation,
            groups=groups,
            input_hw=input_hw,
        ),
        sizes=SIZES_B,
        ranges=RANGES_B,
        ops=("conv2d_input_grad", "conv2d", "conv2d_weight_grad"),
    )


def pool(kind, kernel, stride, padding, img=IMG, sample=normal):
    return Prim(
        {"x": f32(*img, sample=sample)},
        lambda g, t: g.add1(f"{kind}pool2d", [t["x"]], kernel=kernel, stride=stride, padding=padding),
        sizes=SIZES_B,
        ranges=RANGES_B,
        ops=(f"{kind}pool2d", f"{kind}pool2d_grad"),
    )


with_nans = lambda r, s: np.where(r.random(s) < 0.1, np.nan, r.standard_normal(s))


def random_uniform(g, t):
    u = g.add1("random", [t["key"]], shape=(B, D), dist="uniform", stream=3)
    return {"u": u, "y": g.add1("mul", [u, t["x"]])}


def key_sample(r, s):
    return np.array([r.integers(0, 1000), r.integers(0, 50)], np.int32)


def dim_size(g, t):
    b = g.add1("cast", [g.add1("dim_size", dim=B)], dtype="f32")
    d = g.add1("cast", [g.add1("dim_size", dim=D)], dtype="f32")
    scale = g.add1("div", [b, d])
    return g.add1("mul", [t["x"], g.add1("broadcast", [scale], shape=(B, D))])


def iota(g, t):
    i = g.add1("iota", shape=(B, D), axis=1, dtype="f32")
    j = g.add1("iota", shape=(B, D), axis=0, dtype="i32")
    return {"y": g.add1("mul", [t["x"], i]), "j": j}


def constant(g, t):
    c = ops.constant(g, np.linspace(-2, 3, 7).astype(np.float32), "f32")
    s = ops.constant(g, np.float32(1.5), "f32")
    return ops.add(ops.mul(t["x"], c), s)


def constants_of_every_dtype(g, t):
    """Constant arrays of f64, i32 and bool, read by code (broadcast over B, not folded):
    each must keep its own dtype in memory."""
    f = ops.constant(g, np.linspace(-2, 3, 7), "f64")
    i = ops.constant(g, np.arange(-3, 4), "i32")
    m = ops.constant(g, np.array([1, 0, 1, 1, 0, 0, 1], bool), "bool")
    y = ops.cast(ops.mul(ops.cast(t["x"], "f64"), f), "f32") + ops.cast(ops.add(ops.cast(t["x"], "i32"), i), "f32")
    return ops.select(m, y, 0.0)


def f64_chain(g, t):
    a, b = ops.cast(t["a"], "f64"), ops.cast(t["b"], "f64")
    y = g.add1("add", [g.add1("mul", [a, b]), g.add1("div", [a, g.add1("add", [b, b])])])
    return ops.cast(y, "f32")


def f64_unary(op):
    return Prim(
        {"x": f32(B, D, sample=positive)},
        lambda g, t: ops.cast(g.add1(op, [ops.cast(t["x"], "f64")]), "f32"),
        ops=("cast", op),
    )


def stop_gradient(g, t):
    return g.add1("mul", [g.add1("stop_gradient", [t["x"]]), t["x"]])


def logical(op):
    if op == "logical_not":
        return Prim({"a": boolean(B, D)}, lambda g, t: g.add1(op, [t["a"]]), grad=False)
    return Prim({"a": boolean(B, D), "b": boolean(B, D)}, lambda g, t: g.add1(op, [t["a"], t["b"]]), grad=False)


def gather_scatter(g, t):
    return g.add1("scatter_add", [t["idx"], t["upd"]], shape=(13, D))


PRIMS = {
    # elementwise, unary
    "neg": unary("neg"),
    "exp": unary("exp"),
    "exp-wide-range": Prim(
        {"x": f32(B, D, sample=lambda r, s: r.uniform(-80, 80, s))}, lambda g, t: g.add1("exp", [t["x"]]), ops=("exp",)
    ),
    "expm1": unary("expm1", lambda r, s: 3 * r.standard_normal(s)),
    "log": unary("log", positive),
    "log1p": unary("log1p", lambda r, s: r.uniform(-0.6, 2.0, s)),
    "tanh": unary("tanh", lambda r, s: 3 * r.standard_normal(s)),
    "logistic": unary("logistic", lambda r, s: 6 * r.standard_normal(s)),
    "sqrt": unary("sqrt", positive),
    "abs": unary("abs", away_from_zero()),
    "sign": Prim({"x": f32(B, D, sample=rounded)}, lambda g, t: g.add1("sign", [t["x"]]), grad=False),
    "sin": unary("sin", lambda r, s: 3 * r.standard_normal(s)),
    "cos": unary("cos", lambda r, s: 3 * r.standard_normal(s)),
    "erf": unary("erf", lambda r, s: 2 * r.standard_normal(s)),
    # the inline erff's whole range: its clamp at +-4, where erf is +-1 in float32, and beyond
    "erf-wide-range": unary("erf", lambda r, s: r.uniform(-6, 6, s)),
    # elementwise, binary
    "add": binary("add"),
    "sub": binary("sub"),
    "mul": binary("mul"),
    "div": binary("div", sb=away_from_zero(0.5, 2.0)),
    "mod": binary("mod", lambda r, s: 3 * r.standard_normal(s), away_from_zero(0.5, 2.0)),
    "mod-positive": Prim(
        {"a": f32(B, D, sample=positive), "b": f32(B, D, sample=lambda r, s: r.uniform(0.3, 0.7, s))},
        lambda g, t: g.add1("mod", [t["a"], t["b"]]),
        ops=("mod",),
    ),
    "pow": binary("pow", lambda r, s: r.uniform(0.5, 2.0, s), lambda r, s: r.uniform(-1.5, 2.5, s)),
    "maximum": binary("maximum"),
    "fma": Prim({"a": f32(B, D), "b": f32(B, D), "c": f32(B, D)}, lambda g, t: g.add1("fma", [t["a"], t["b"], t["c"]])),
    "minimum": binary("minimum"),
    "maximum-ties": Prim(
        {"a": f32(B, D), "b": f32(B, D), "tie": boolean(B, D)},
        lambda g, t: _tied_pair(g, t, "maximum"),
        ops=("maximum",),
    ),
    "minimum-ties": Prim(
        {"a": f32(B, D), "b": f32(B, D), "tie": boolean(B, D)},
        lambda g, t: _tied_pair(g, t, "minimum"),
        ops=("minimum",),
    ),
    "add-i32": binary("add", dtype="i32"),
    "sub-i32": binary("sub", dtype="i32"),
    "mul-i32": binary("mul", dtype="i32"),
    "div-i32": binary("div", sb=nonzero_integers(7), dtype="i32"),
    "mod-i32": binary("mod", sb=nonzero_integers(7), dtype="i32"),
    "maximum-i32": binary("maximum", dtype="i32"),
    "minimum-i32": binary("minimum", dtype="i32"),
    # comparisons and logic
    **{op: binary(op, rounded, rounded, grad=False) for op in ("lt", "le", "gt", "ge", "eq", "ne")},
    **{
        f"{op}-i32": binary(op, integers(-3, 4), integers(-3, 4), dtype="i32")
        for op in ("lt", "le", "gt", "ge", "eq", "ne")
    },
    "logical_and": logical("logical_and"),
    "logical_or": logical("logical_or"),
    "logical_not": logical("logical_not"),
    "select": Prim(
        {"c": boolean(B, D), "a": f32(B, D), "b": f32(B, D)}, lambda g, t: g.add1("select", [t["c"], t["a"], t["b"]])
    ),
    # casts
    "cast-f32-i32": cast("f32", "i32", lambda r, s: 5 * r.standard_normal(s)),
    "cast-i32-f32": cast("i32", "f32", integers(-1000, 1000)),
    "cast-bool-f32": cast("bool", "f32", None),
    "cast-f32-bool": cast("f32", "bool", rounded),
    "cast-i32-bool": cast("i32", "bool", integers(-2, 3)),
    "cast-bool-i32": cast("bool", "i32", None),
    "cast-f64-arith": Prim(
        {"a": f32(B, D), "b": f32(B, D, sample=away_from_zero(0.5, 2.0))}, f64_chain, ops=("cast", "mul", "div")
    ),
    "cast-f64-exp": f64_unary("exp"),
    "cast-f64-log": f64_unary("log"),
    "stop_gradient": Prim({"x": f32(B, D)}, stop_gradient),
    # sources
    "constant": Prim({"x": f32(B, 7)}, constant, sizes=SIZES_B, ranges=RANGES_B),
    "constant-dtypes": Prim(
        {"x": f32(B, 7, sample=lambda r, s: 5 * r.standard_normal(s))},
        constants_of_every_dtype,
        sizes=SIZES_B,
        ranges=RANGES_B,
        grad=False,
    ),
    "iota": Prim({"x": f32(B, D)}, iota),
    "dim_size": Prim({"x": f32(B, D)}, dim_size),
    "random-uniform": Prim({"x": f32(B, D), "key": ("i32", (2,), key_sample)}, random_uniform, ops=("random",)),
    # broadcast, shape ops
    "broadcast-row": Prim({"x": f32(D)}, lambda g, t: g.add1("broadcast", [t["x"]], shape=(B, D))),
    "broadcast-column": Prim({"x": f32(B, 1)}, lambda g, t: g.add1("broadcast", [t["x"]], shape=(B, D))),
    "broadcast-scalar": Prim({"x": f32()}, lambda g, t: g.add1("broadcast", [t["x"]], shape=(B, D))),
    "broadcast-lead": Prim({"x": f32(B, 1, D)}, lambda g, t: g.add1("broadcast", [t["x"]], shape=(3, B, 5, D))),
    "broadcast-through-ops": Prim(
        {"a": f32(B, 1), "b": f32(D)}, lambda g, t: ops.mul(t["a"], t["b"]), ops=("broadcast", "mul")
    ),
    "reshape-flat": Prim({"x": f32(B, D)}, lambda g, t: g.add1("reshape", [t["x"]], shape=(B * D,))),
    "reshape-split": Prim({"x": f32(B, 6, D)}, lambda g, t: g.add1("reshape", [t["x"]], shape=(B, 3, 2 * D))),
    "reshape-of-transpose": Prim(
        {"x": f32(B, D)},
        lambda g, t: g.add1("reshape", [g.add1("transpose", [g.add1("tanh", [t["x"]])], perm=(1, 0))], shape=(D * B,)),
        ops=("reshape", "transpose"),
    ),
    "transpose-10": Prim({"x": f32(B, D)}, lambda g, t: g.add1("transpose", [t["x"]], perm=(1, 0))),
    "transpose-201": Prim({"x": f32(B, 3, D)}, lambda g, t: g.add1("transpose", [t["x"]], perm=(2, 0, 1))),
    "slice-steps": Prim(
        {"x": f32(B, 13, D)},
        lambda g, t: g.add1("slice", [t["x"]], starts=(0, 1, 0), stops=(B, 13, D), steps=(1, 3, 1)),
    ),
    "slice-offsets": Prim(
        {"x": f32(B, 13, D)},
        lambda g, t: g.add1("slice", [t["x"]], starts=(0, 2, 1), stops=(B, 12, D), steps=(1, 2, 1)),
        sizes=[{"B": 1, "D": 129}, {"B": 7, "D": 13}, {"B": 13, "D": 2}],
        ranges=RANGES_BD,
    ),
    "slice-last-steps": Prim(
        {"x": f32(B, 129)},
        lambda g, t: g.add1("slice", [t["x"]], starts=(0, 3), stops=(B, 128), steps=(1, 5)),
        sizes=SIZES_B,
        ranges=RANGES_B,
    ),
    "pad": Prim({"x": f32(B, D)}, lambda g, t: g.add1("pad", [t["x"]], lo=(1, 0), hi=(0, 2), interior=(0, 0))),
    "pad-interior": Prim(
        {"x": f32(B, 5, D)}, lambda g, t: g.add1("pad", [t["x"]], lo=(0, 2, 1), hi=(1, 0, 3), interior=(0, 1, 2))
    ),
    "concat-last": Prim(
        {"a": f32(B, D), "b": f32(B, 3), "c": f32(B, D)},
        lambda g, t: g.add1("concat", [t["a"], t["b"], t["c"]], axis=1),
    ),
    "concat-first": Prim({"a": f32(B, D), "b": f32(2, D)}, lambda g, t: g.add1("concat", [t["a"], t["b"]], axis=0)),
    "gather": Prim(
        {"table": f32(13, D), "idx": i32(B, 3, sample=integers(0, 13))},
        lambda g, t: g.add1("gather", [t["table"], t["idx"]]),
        ops=("gather", "scatter_add"),
    ),
    "gather-129-rows": Prim(
        {"table": f32(129, 7), "idx": i32(B, sample=integers(0, 129))},
        lambda g, t: g.add1("gather", [t["table"], t["idx"]]),
        sizes=SIZES_B,
        ranges=RANGES_B,
        ops=("gather", "scatter_add"),
    ),
    "scatter_add": Prim(
        {"idx": i32(B, 2, sample=integers(0, 13)), "upd": f32(B, 2, D)}, gather_scatter, ops=("scatter_add", "gather")
    ),
    # one process: the identity, through the host call (tests/training/test_distributed.py: ranks)
    "replica_mean": Prim({"x": f32(B, D)}, lambda g, t: g.add1("replica_mean", [g.add1("exp", [t["x"]])])),
    # reductions
    "reduce_sum-last": reduce("reduce_sum", (1,)),
    "reduce_sum-first": reduce("reduce_sum", (0,)),
    "reduce_sum-all": reduce("reduce_sum", (0, 1)),
    "reduce_sum-02": reduce("reduce_sum", (0, 2), (B, 13, D)),
    "reduce_max-last": reduce("reduce_max", (1,)),
    "reduce_max-first": reduce("reduce_max", (0,)),
    "reduce_max-all": reduce("reduce_max", (0, 1)),
    "reduce_max-02": reduce("reduce_max", (0, 2), (B, 13, D)),
    "reduce_max-ties": reduce("reduce_max", (1,), sample=rounded),
    # reductions a team splits along their first kept axis (ReduceKernel.split_axis)
    "reduce_sum-team-bias-grad": reduce("reduce_sum", (0, 2, 3), shape=(B, 5, 7, 9)),
    "reduce_sum-team-rows": reduce("reduce_sum", (1, 2), shape=(B, 4, 37)),
    "reduce_max-team-middle": reduce("reduce_max", (0, 2), shape=(B, 3, 13), sample=rounded),
    # ... or along their last axis, the only kept one, in blocks of columns (the last one cut short)
    "reduce_sum-team-columns": reduce("reduce_sum", (0,), shape=(B, 150)),
    "reduce_max-team-columns": reduce("reduce_max", (0, 1), shape=(B, 3, 150), sample=rounded),
    "argmax-last": Prim({"x": f32(B, D)}, lambda g, t: g.add1("argmax", [t["x"]], axis=1), grad=False),
    "argmax-first": Prim({"x": f32(B, D)}, lambda g, t: g.add1("argmax", [t["x"]], axis=0), grad=False),
    "argmax-ties": Prim({"x": f32(B, D, sample=rounded)}, lambda g, t: g.add1("argmax", [t["x"]], axis=1), grad=False),
    # contraction
    **{
        f"matmul-{'t' if ta else 'n'}{'t' if tb else 'n'}": matmul(ta, tb)
        for ta in (False, True)
        for tb in (False, True)
    },
    "matmul-batched-nn": matmul(False, False, (3,)),
    "matmul-batched-tt": matmul(True, True, (3,)),
    "matmul-rank3-by-rank2": Prim(
        {"a": f32(B, 5, D), "b": f32(D, 13)}, lambda g, t: ops.matmul(t["a"], t["b"]), ops=("matmul",)
    ),
    # fused attention: several blocks of queries and keys (D up to 200 > 64), one row, masks
    "attention-self": attention({}),
    "attention-cross": attention({}, tk=70, dv=3),
    "attention-bool-mask": attention({"m": boolean(B, 1, 1, D)}),
    "attention-float-mask": attention(
        {"m": f32(B, 1, D, D, sample=lambda r, s: np.where(r.random(s) < 0.3, -1e9, 0.0))}
    ),
    # windows
    "conv2d-3x2": conv((3, 2), (1, 1), (0, 0)),
    "conv2d-3x3-pad": conv((3, 3), (1, 1), (1, 1)),
    "conv2d-stride2-pad": conv((3, 3), (2, 2), (1, 1)),
    "conv2d-stride21": conv((2, 3), (2, 1), (1, 0)),
    "conv2d-1x1": conv((1, 1), (1, 1), (0, 0)),
    **{
        f"{kind}pool2d-k{k[0]}{k[1]}-s{s[0]}{s[1]}-p{p[0]}{p[1]}": pool(kind, k, s, p)
        for kind in ("max", "avg")
        for k, s, p in [
            ((2, 2), (2, 2), (0, 0)),
            ((3, 3), (2, 2), (1, 1)),
            ((3, 2), (1, 2), (1, 0)),
            ((2, 2), (1, 1), (0, 0)),
        ]
    },
    # direct convolutions (compiler/native/choose/conv.py DIRECT_TAPS): rows of several vectors
    # and a block of channels and the rest, a stride along H, the most taps; then im2col:
    # more taps (the weight gradient a small_gemm, or a GEMM), a row of taps too long
    "conv2d-direct-wide-rows": conv((5, 5), (1, 1), (2, 2), img=(B, 2, 6, 67), out=9),
    "conv2d-direct-stride-h": conv((3, 4), (2, 1), (1, 0), img=(B, 3, 12, 17), out=3),
    "conv2d-direct-256-taps": conv((4, 4), (1, 1), (0, 0), img=(B, 16, 6, 6), out=3),
    "conv2d-im2col-261-taps": conv((3, 3), (1, 1), (1, 1), img=(B, 29, 5, 6), out=4),
    "conv2d-im2col-gemm-weight-grad": conv((3, 3), (1, 1), (0, 0), img=(B, 29, 5, 6), out=16),
    "conv2d-im2col-9-wide": conv((1, 9), (1, 1), (0, 4), img=(B, 1, 3, 11), out=2),
    "conv2d-dilated": conv((3, 2), (1, 1), (2, 1), img=(B, 3, 9, 8), dilation=(2, 3)),
    "conv2d-dilated-im2col": conv((3, 3), (2, 1), (1, 2), img=(B, 30, 9, 8), out=4, dilation=(2, 2)),
    "conv2d-depthwise": conv((3, 3), (1, 1), (1, 1), img=(B, 4, 7, 9), out=4, groups=4),
    "conv2d-depthwise-stride-dilated": conv((3, 3), (2, 2), (2, 2), img=(B, 3, 9, 8), out=6, dilation=(2, 2), groups=3),
    "conv_transpose-output-padding": conv_transpose((B, 4, 5, 4), (4, 3, 3, 2), (2, 1), (1, 0), (10, 5)),
    "conv_transpose-direct": conv_transpose((B, 4, 5, 4), (4, 3, 3, 3), (1, 1), (1, 1), (5, 4)),
    "conv_transpose-grouped-dilated": conv_transpose((B, 4, 4, 5), (4, 2, 3, 3), (2, 2), (1, 1), (10, 9), (2, 1), 2),
    "conv2d-grouped-gemm": conv((3, 3), (1, 2), (1, 0), img=(B, 16, 6, 7), out=6, groups=2),
    # max pooling's gradient over tiling windows: 2 wide by vectors (rows of 17 windows:
    # more than one vector), first maximum among ties (NaN: NATIVE_PRIMS); 3 wide one
    # window at a time
    "maxpool2d-k22-wide-rows": pool("max", (2, 2), (2, 2), (0, 0), img=(B, 3, 5, 35)),
    "maxpool2d-k22-ties": pool("max", (2, 2), (2, 2), (0, 0), sample=rounded),
    "maxpool2d-k32-s32": pool("max", (3, 2), (3, 2), (0, 0)),
    "maxpool2d-k13-s13": pool("max", (1, 3), (1, 3), (0, 0), sample=rounded),
    # overlapping windows, strided 1 or 2 along W: row chunks of vectors (ResNet's 3 x 3 at
    # stride 2; rows of 36 and 37 windows, several vectors), first maximum among ties; a
    # stride of 3 along W, one window at a time
    "maxpool2d-k33-s22-wide-rows": pool("max", (3, 3), (2, 2), (1, 1), img=(B, 2, 6, 71), sample=rounded),
    "maxpool2d-k33-s11-wide-rows": pool("max", (3, 3), (1, 1), (1, 1), img=(B, 2, 4, 37), sample=rounded),
    "maxpool2d-k33-s23": pool("max", (3, 3), (2, 3), (1, 1), sample=rounded),
    # the transpose of max pooling's gradient (in its second derivative): first maximum among ties
    "maxpool2d_gather": Prim(
        {"x": f32(*IMG, sample=rounded), "y": f32(*IMG)},
        lambda g, t: g.add1("maxpool2d_gather", [t["x"], t["y"]], kernel=(3, 2), stride=(2, 1), padding=(1, 1)),
        sizes=SIZES_B,
        ranges=RANGES_B,
        ops=("maxpool2d_gather", "maxpool2d_grad"),
    ),
}


COMPARISONS = ("lt", "le", "gt", "ge", "eq", "ne")


def typed(op, on, *samples, condition=False, **attrs):
    """op (forward) on operands of dtype `on`: f64 ones are f32 inputs cast up, and an f64
    result is cast back down; with `condition`, a bool condition comes first (select)."""
    names = "abc"[: len(samples)]
    fed = "f32" if on == "f64" else on
    inputs = {**({"c": boolean(B, D)} if condition else {}), **{n: (fed, (B, D), s) for n, s in zip(names, samples)}}

    def build(g, t):
        y = g.add1(op, ([t["c"]] if condition else []) + [ops.cast(t[n], on) for n in names], **attrs)
        return ops.cast(y, "f32") if y.dtype == "f64" else y

    return Prim(inputs, build, grad=False, ops=(op,))


def sample_of(name: str, operand: str = "x"):
    return PRIMS[name].inputs[operand][2]


PRIMS.update(
    {
        # every float function and arithmetic op on f64 too, with the samples of its f32 case
        **{
            f"{op}-f64": typed(op, "f64", sample_of(op))
            for op in ("abs", "cos", "erf", "expm1", "log1p", "logistic", "sign", "sin", "sqrt", "tanh")
        },
        **{
            f"{op}-f64": typed(op, "f64", sample_of(op, "a"), sample_of(op, "b"))
            for op in ("sub", "maximum", "minimum", "mod", "pow")
        },
        **{f"{op}-f64": typed(op, "f64", rounded, rounded) for op in COMPARISONS},
        **{f"{op}-bool": typed(op, "bool", coin, coin) for op in COMPARISONS},
        **{
            f"select-{d}": typed("select", d, s, s, condition=True)
            for d, s in (("f64", normal), ("i32", integers(-20, 21)), ("bool", coin))
        },
        **{
            f"stop_gradient-{d}": typed("stop_gradient", d, s)
            for d, s in (("f64", normal), ("i32", integers(-20, 21)), ("bool", coin))
        },
        "fma-f64": typed("fma", "f64", normal, normal, normal),
        "pow-i32": typed("pow", "i32", integers(-4, 5), integers(0, 7)),
        **{f"cast-f64-{d}": typed("cast", "f64", rounded, dtype=d) for d in ("bool", "i32")},
        **{
            f"{op}-{d}": typed(op, d, s, axes=(1,))
            for op in ("reduce_sum", "reduce_max")
            for d, s in (("f64", normal), ("i32", integers(-20, 21)))
        },
        **{f"argmax-{d}": typed("argmax", d, s, axis=1) for d, s in (("f64", rounded), ("i32", integers(-3, 4)))},
        # bools: true is the larger (i1 compared unsigned), false the least (a max starts there)
        "reduce_max-bool": typed("reduce_max", "bool", coin, axes=(1,)),
        "argmax-bool": typed("argmax", "bool", coin, axis=1),
    }
)

# cases of the native engine only: onnxruntime's MaxPool skips NaN where numpy's max
# propagates it (tests/onnx/test_export.py exports PRIMS)
NATIVE_PRIMS = PRIMS | {
    "maxpool2d-k22-nan": pool("max", (2, 2), (2, 2), (0, 0), sample=with_nans),
    "maxpool2d-k33-s22-nan": pool("max", (3, 3), (2, 2), (1, 1), img=(B, 2, 5, 40), sample=with_nans),
}


def primitive_feeds(name: str, graph: Graph) -> list:
    case = NATIVE_PRIMS[name]
    sets = []
    for k, sizes in enumerate(with_random_size(name, case.sizes, case.ranges)):
        r = case_rng(name, k)
        feeds = {}
        for n in graph.nodes_with("input"):
            iname, typ = graph.attrs(n)["name"], graph.types(n)[0]
            shape = tuple(int(concrete(d, sizes)) for d in typ.shape)
            sample = case.inputs[iname][2] if iname in case.inputs else normal  # ct_*: cotangents
            v = np.asarray(sample(r, shape))
            feeds[iname] = v.astype({"f32": np.float32, "i32": np.int32, "bool": np.bool_}[typ.dtype])
        sets.append((sizes, feeds))
    return sets


MODEL_INPUTS = """
    input x: f32[B, T, 13]
    input v: f32[B, 129]
    input img: f32[B, 3, 13, 7]
    input ids: i32[B, T]
    input t: f32[B, 129]
    input labels: i32[B]
"""


# Each case is one compile; the native compile costs roughly 0.05-0.1 s per kernel, so the
# cases are kept small: layers on the inputs directly where they have parameters of their
# own, activations and losses on a per-feature scale `s` instead of a dense layer.
LAYERS = {
    "dense": "output y = dense(v, 129, tanh)",
    "dense_3d_no_bias": "output y = dense(x, 7, bias = false)",
    "conv2d_same": "output y = conv2d(img, 4, 3, padding = \"same\", act = tanh)",
    "conv2d_stride_rect": "output y = conv2d(img, 5, (3, 2), stride = (2, 1), padding = 1)",
    "conv1d": "output y = conv1d(swapaxes(x, 1, 2), 4, 3, padding = 1, act = tanh)",
    "maxpool2d": "output y = maxpool2d(conv2d(img, 2, 1), 3, 2, 1)",
    "avgpool2d": "output y = avgpool2d(conv2d(img, 2, 1), 2, 1, 1)",
    "global_avg_pool": "output y = global_avg_pool(conv2d(img, 3, 1))",
    "conv2d_dilated_groups": "output y = conv2d(img, 6, 3, padding = \"same\", dilation = 2, groups = 3, act = tanh)",
    "conv2d_depthwise": "output y = conv2d(conv2d(img, 4, 1), 8, 3, stride = 2, padding = 1, groups = 4)",
    "conv1d_dilated": "output y = conv1d(swapaxes(x, 1, 2), 4, 3, padding = \"same\", dilation = 2)",
    "conv2d_transpose": "output y = conv2d_transpose(img, 4, 3, stride = 2, padding = 1, output_padding = 1)",
    "conv1d_transpose": "output y = conv1d_transpose(img[:, :, 0], 4, 4, stride = 2, padding = 1, groups = 1)",
    "pools_1d": "c = conv1d(img[:, :, 0], 3, 1)\n output y = maxpool1d(c, 3, 2, 1) + avgpool1d(c, 3, 2, 1)",
    "global_max_pool": "output y = global_max_pool(conv2d(img, 3, 1))",
    "upsample2d": "c = conv2d(img, 2, 1)\n output y = upsample2d(c, 2)\n output z = upsample2d(c, (2, 3), mode = \"bilinear\")",
    "embedding_padding_idx": "output y = embedding(ids, 13, 7, padding_idx = 0)",
    "flatten": "output y = dense(flatten(img), 7)",
    "dropout": "output y = dropout(dense(v, 129), 0.3)",
    "batchnorm_4d": "output y = batchnorm(img)",
    "batchnorm_2d": "output y = batchnorm(v)",
    "layernorm": "output y = layernorm(v)",
    "local_response_norm": "output y = local_response_norm(conv2d(img, 6, 1), 4, 0.1)",
    "embedding": "output y = embedding(ids, 13, 7)",
    "residual_block": "output y = residual_block(img, 4, 2)",
    "residual": "output y = residual(dense(x, 13), tanh)",
    "rnn_reverse_state": "hs, h = rnn(x, 4, reverse = true, return_state = true)\n output y = hs + expand_dims(h, 1)",
    "lstm_state": (
        "hs, h, c = lstm(x, 3, state = (dense(x[:, 0], 3), tanh(x[:, -1, :3])), return_state = true)\n"
        " output y = hs + expand_dims(h * c, 1)"
    ),
    "gru": "output y = gru(x, 7, reverse = true)",
    "bidirectional": "output y = bidirectional(x, rnn, 3)",
    "stacked": "output y = stacked(x, rnn, 3, 2, rate = 0.2)",
    "additive_attention": "c, w = additive_attention(x[:, 0], x, 5)\n output y = c\n output w = w",
    "multiplicative_attention": "c, w = multiplicative_attention(x[:, 0], x, \"general\")\n output y = c\n output w = w",
    "luong_attention": "c, w = luong_attention(dense(x, 13), x, \"dot\")\n output y = c\n output w = w",
    "self_attention": "output y = self_attention(dense(x, 4), 1)",
    # v through a layer: with T = 1 (one key) the gradient through the scores is zero, only rounding noise
    "scaled_dot_product": "q = dense(x, 4)\n output y = scaled_dot_product_attention(q, q, dense(x, 3), causal_mask(T))",
    "cached_attention": "q = dense(x, 4)\n output y = cached_attention(q, dense(x, 4), dense(x, 3), q, dense(x, 3), causal_mask(T))",
    "sinusoidal_encoding": "output y = dense(x, 4) * sinusoidal_encoding(T, 4)",
    "positional_embedding": "output y = positional_embedding(x, 16)",
    "feed_forward": "output y = feed_forward(x, 8)",
    # one pre-norm encoder layer with dropout, then the final layernorm
    "transformer_encoder": "output y = transformer_encoder(dense(x, 4), 1, 2, 8, rate = 0.1)",
    # one decoder layer: causal self-attention, cross-attention under a padding mask, FFN
    "transformer_decoder": (
        "output y = transformer_decoder(dense(x, 4), x, 1, 2, 8, rate = 0.0, mask = causal_mask(T),"
        " memory_mask = padding_mask(ids))"
    ),
}

# slower variants (`pytest -m slow`): the same functions along their other branches
SLOW_LAYERS = {
    "encoder_block_post": "output y = transformer_encoder_block(dense(x, 4), 2, 8, rate = 0.1, pre_norm = false)",
    "decoder_block_post": (
        "output y = transformer_decoder_block(dense(x, 6), dense(x, 5), 3, 8, rate = 0.0,"
        " mask = causal_mask(T), pre_norm = false)"
    ),
    "self_attention_padding": "output y = self_attention(dense(x, 4), 2, padding_mask(ids))",
    "residual_block_identity": "output y = residual_block(img, 3)",
    "stacked_lstm": "output y = stacked(x, lstm, 3, 2, rate = 0.2)",
    "bidirectional_gru_sum": "output y = bidirectional(x, gru, 3, merge = \"sum\")",
    "multiplicative_attention_dot": "c, w = multiplicative_attention(dense(x[:, 0], 13), x)\n output y = c",
    "batchnorm_after_conv": "output y = batchnorm(conv2d(img, 3, 1))",
    "dense_wide": "output y = dense(dense(v, 129, relu), 129, gelu)",
}

ACTIVATIONS = [
    "identity",
    "relu",
    "leaky_relu",
    "elu",
    "selu",
    "gelu",
    "gelu_exact",
    "swish",
    "silu",
    "softplus",
    "hard_sigmoid",
    "relu6",
    "step",
    "sign_step",
    "sigmoid",
    "tanh",
    "softmax",
    "log_softmax",
]


SCANS = {
    "two_carries": """
    hs, cs = scan t in T carry h = zeros[B, 13], c = ones[B, 13] {
        c = 0.5 * c + tanh(x[:, t] @ W + h)
        h = tanh(h @ U + c) * sigmoid(x[:, t])
        yield h, c
    }
    output hs
    output cs""",
    "reverse_axis0": """
    hs = scan t in T (reverse = true, axis = 0) carry h = zeros[B, 13] {
        h = tanh(x[:, t] @ W - 0.5 * h)
        yield h
    }
    output hs""",
    "reverse_final_carries": """
    h, c = scan t in T (reverse = true) carry h = zeros[B, 13], c = ones[B, 13] {
        c = c * sigmoid(x[:, t]) + h
        h = tanh(c @ W) + 0.1 * h
    }
    output h
    output c""",
    "nested": """
    hs = scan t in T carry h = zeros[B, 13] {
        xt = x[:, t]
        inner = scan s in 3 carry a = h {
            a = tanh(a @ W + xt * 0.5)
            yield a
        }
        h = h + mean(inner, 1)
        yield h
    }
    output hs""",
    "gather_integer_sequence": """
    hs = scan t in T carry h = zeros[B, 13] {
        h = tanh(h @ U + gather(W, ids[:, t]))
        yield h
    }
    output hs""",
    "dropout_in_body": """
    hs = scan t in T carry h = zeros[B, 13] {
        h = tanh(dropout(x[:, t], 0.3) @ W + h)
        yield h
    }
    output hs""",
}

SCAN_PARAMS = "param W: f32[13, 13] = normal_std(0.3)\n    param U: f32[13, 13] = normal_std(0.3)\n"


def step_graph(model) -> Graph:
    """The train-step graph of `model` with its outputs kept: each float output y adds
    sum(y * r_y) to the loss (r_y a fixed random input), then appears as a metric."""
    g = model.graph
    loss = g.outputs.get("loss")
    for k, y in list(g.outputs.items()):
        if k.startswith("output:") and y.type.is_float:
            r = g.add1("input", type=y.type, name=f"r_{k[7:]}")
            term = ops.reduce("reduce_sum", ops.mul(y, r), tuple(range(y.rank)))
            loss = term if loss is None else ops.add(loss, term)
    g.outputs = {("metric:" + k if k.startswith("output:") else k): t for k, t in g.outputs.items()}
    g.outputs["loss"] = loss
    return train_step(g)


def model_feeds(name: str, model, graph: Graph, sizes_list: list) -> list:
    sets = []
    for k, sizes in enumerate(sizes_list):
        feeds = gc.sample_inputs(model, sizes, seed=zlib.crc32(name.encode()) % 1000 + k)
        r = case_rng(name, k)
        for n in graph.nodes_with("input"):
            iname, typ = graph.attrs(n)["name"], graph.types(n)[0]
            if iname.startswith("r_"):
                feeds[iname] = r.standard_normal(tuple(int(concrete(d, sizes)) for d in typ.shape))
        feeds = {k2: v.astype(np.float32) if v.dtype == np.float64 else v for k2, v in feeds.items()}
        sets.append((sizes, feeds))
    return sets
