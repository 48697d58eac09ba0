"""int8 on the reference engine (docs/quantization.md): the calibration that observes each
integer product's input, and the engine whose products are computed in integers by the
arithmetic of compiler/ir/int8.py, every other node as the float32 reference computes it."""

from __future__ import annotations

import functools
from typing import Iterable

import numpy as np

from dlc.compiler.errors import DlcError
from dlc.compiler.frontend.settings import as_call, choice, integer, number
from dlc.compiler.frontend.model import Model
from dlc.compiler.ir import int8
from dlc.compiler.ir.evaluate import Eval
from dlc.compiler.ir.graph import Graph
from dlc.compiler.ir.primitives import PRIMITIVES
from dlc.compiler.passes.int8 import Product, integer_products, products
from dlc.runtime.engines import interpreter
from dlc.runtime.engines.reference import ReferenceEngine

OBSERVERS = ("minmax", "percentile")


def quantize_options(spec, span=None) -> dict | None:
    """The train setting `quantize = int8(calibrate = 32, observer = minmax, percentile = 99.99)`
    as keyword arguments of `calibrate_arrays`."""
    if spec is None:
        return None
    call = as_call(spec, "quantize", "int8(calibrate = 32, observer = minmax, percentile = 99.99)", span)
    if call.name != "int8":
        raise DlcError(
            f"quantize takes int8(calibrate = 32, observer = minmax, percentile = 99.99), got {call.name}", call.span
        )
    args = call.bind({"calibrate": 32, "observer": "minmax", "percentile": 99.99})
    percentile = args.check("percentile", number, low=50)
    if percentile > 100 or percentile == 50:
        raise DlcError(
            f"int8: 'percentile' must be above 50 and at most 100, got {percentile:g}", args.span("percentile")
        )
    return {
        "count": args.check("calibrate", integer, low=1),
        "observer": args.check("observer", choice, options=OBSERVERS),
        "percentile": percentile,
    }


def calibrate(
    graph: Graph, params: dict, batches: Iterable[dict], observer: str = "minmax", percentile: float = 99.99
) -> dict:
    """The quantization (QuantizedProduct by product name) of the integer products of `graph`
    (the evaluation graph, or the prediction graph for batches without targets), observed
    over `batches` (feeds by input name) run in float32 in order."""
    if observer not in OBSERVERS:
        raise DlcError(f"the observer is {' or '.join(OBSERVERS)}, not '{observer}'")
    if not 50 < percentile <= 100:
        raise DlcError(f"the percentile is a number above 50 and at most 100, not {percentile:g}")
    chosen = integer_products(graph)
    seen: dict = {name: [] for name in chosen}
    watching = {p.node: p for p in chosen.values()}
    count = 0
    for count, feeds in enumerate(batches, 1):
        observe = functools.partial(_Observing, graph, watching, seen, observer, count)
        interpreter.run(graph, {**feeds, "rng": np.zeros(2, np.int32)}, params, evaluator=observe)
    if not count:
        raise DlcError("calibration needs at least one batch of data")
    out = {}
    for name, p in chosen.items():
        if observer == "minmax":
            lo, hi = min(lo for lo, _ in seen[name]), max(hi for _, hi in seen[name])
        else:
            lo, hi = np.percentile(np.concatenate(seen[name]).astype(np.float64), [100 - percentile, percentile])
        q = int8.QuantizedProduct.calibrated(params[name], p.channel_axis, lo, hi)
        if q.input_scale > int8.MOST_SCALE:
            raise DlcError.at_user_line(
                f"the input of this {p.op} ranges over [{lo:.4g}, {hi:.4g}] in calibration: "
                "too wide for int8 (its scale would exceed 2^40)",
                p.span,
            )
        out[name] = q
    return out


def calibrate_arrays(
    graph: Graph,
    params: dict,
    arrays: dict,
    count: int,
    batch: int,
    observer: str = "minmax",
    percentile: float = 99.99,
    data: str = "arrays",
) -> tuple[dict, dict]:
    """`calibrate` on the first `count` batches of `batch` examples of `arrays` (by input
    name), in order: (the quantization, its settings as a quantized checkpoint records them;
    `data` says in words what the arrays are)."""
    n = len(next(iter(arrays.values())))
    taken = min(n, count * batch)
    batches = ({k: v[start : start + batch] for k, v in arrays.items()} for start in range(0, taken, batch))
    quantization = calibrate(graph, params, batches, observer, percentile)
    return quantization, {
        "observer": observer,
        "percentile": percentile,
        "calibrate": -(-taken // batch),
        "batch": batch,
        "data": data,
    }


class _Observing(Eval):
    """The float32 evaluation of one calibration batch, recording each integer product's input:
    its (min, max), or with the percentile observer all its values."""

    def __init__(self, graph, watching: dict, seen: dict, observer: str, batch: int, *args):
        super().__init__(*args)
        self.graph, self.watching, self.seen, self.observer, self.batch = graph, watching, seen, observer, batch

    def computed(self, graph: Graph, n: int, inputs: list, values: dict):
        p = self.watching.get(n) if graph is self.graph else None
        if p is None:
            return
        x = values[inputs[0]]
        if not np.isfinite(x).all():
            raise DlcError.at_user_line(
                f"calibration batch {self.batch} gives non-finite values at the input of this "
                f"{p.op} (weights {p.weight})",
                p.span,
            )
        if x.size:
            self.seen[p.weight].append(
                (float(x.min()), float(x.max())) if self.observer == "minmax" else x.ravel().copy()
            )


def integer_product(p: Product, q: int8.QuantizedProduct, ctx: Eval, xs: list, **attrs) -> list:
    """A product node in int8: its input quantized, the int32 sums of the float primitive's own
    numpy code on integers, f32(acc) · M[o]."""
    x = int8.quantize(xs[0], q.input_scale, q.input_zero_point)
    w = q.weight.astype(np.int64).reshape(p.weight_shape)
    acc = int8.check_sum(PRIMITIVES[p.op].impl(ctx, [int8.centered(x, q.input_zero_point), w], **attrs)[0])
    m = q.multipliers()
    return [int8.dequantize(acc, m.reshape(-1, 1, 1) if p.op == "conv2d" else m)]


class _Int8Eval(Eval):
    """The reference evaluation with the integer products of `plans` ({id(graph): {node: impl}})."""

    def __init__(self, plans: dict, *args):
        super().__init__(*args)
        self.plans = plans

    def impl_of(self, graph: Graph, n: int, impl):
        return self.plans.get(id(graph), {}).get(n, impl)


class Int8Engine(ReferenceEngine):
    """The reference engine predicting and evaluating with `quantization`'s integer products
    (QuantizedProduct by name, checked against the model: runtime/interop/quantized.py)."""

    def __init__(self, train_model: Model, eval_model: Model, quantization: dict):
        super().__init__(train_model, eval_model)
        self.plans = {
            id(g): {
                p.node: functools.partial(integer_product, p, quantization[p.weight])
                for p in products(g, eval_model.graph)
                if p.integer and p.weight in quantization
            }
            for g in (self.eval_graph, self.predict_graph)
        }
        self.evaluator = functools.partial(_Int8Eval, self.plans)
