"""Finite-difference checks in float64: of the gradient graph against differences of the
loss, and of the Hessian-vector product graph against differences of the gradient."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from dlc.compiler.passes.autodiff import hvp_graph, train_step
from dlc.compiler.ir.dims import concrete, symbols
from dlc.compiler.ir.graph import Graph, Pattern
from dlc.compiler.ir.primitives import PRIMITIVES
from dlc.compiler.frontend.model import Model
from dlc.compiler.native.lower import NotLowerable
from dlc.runtime.engines import interpreter
from dlc.runtime.engines.native import Executable
from dlc.runtime.data import vectors


@dataclass
class ParamCheck:
    name: str
    checked: int  # entries compared
    max_abs: float
    rel: float  # max |analytic - numeric| / max(|analytic|, |numeric|) over the entries
    ok: bool


def index_bound(graph: Graph, node: int) -> int | None:
    """The number of valid values of an integer input: the rows of the table it
    gathers from, or the classes of the one_hot it feeds (compared with an iota)."""
    bounds = []
    for n in _reached_by_values(graph, node):
        prim = PRIMITIVES[graph.op(n)]
        if prim.index_count is not None:
            bounds.append(prim.index_count([x.type for x in graph.inputs(n)]))
        elif prim.equality:
            for x in graph.inputs(n):
                iota = _under_broadcast(graph, x)
                if PRIMITIVES[graph.op(iota.node)].indices:
                    bounds.append(iota.shape[graph.attrs(iota.node)["axis"]])
        elif prim.pattern is Pattern.CONTROL:
            body = graph.attrs(n)["body"]
            for a in body.args:
                b = index_bound(body, a.node)
                if b:
                    bounds.append(b)
    concrete = [b for b in bounds if isinstance(b, int)]
    return min(concrete) if concrete else None


def _reached_by_values(graph: Graph, node: int) -> set:
    """The nodes that the values of `node` reach: its descendants, but for those reached only
    through an argmax, whose output holds positions, not the values it compared (a token's
    logits' argmax one-hot encoded bounds no token id)."""
    seen, todo = set(), [node]
    while todo:
        for n in graph.nx.successors(todo.pop()):
            if n not in seen:
                seen.add(n)
                if graph.op(n) != "argmax":
                    todo.append(n)
    return seen


def _under_broadcast(graph: Graph, t):
    """t, or the operand of the broadcast that makes t."""
    return graph.inputs(t.node)[0] if PRIMITIVES[graph.op(t.node)].pattern is Pattern.BROADCAST else t


def ignored_values(graph: Graph, node: int) -> set:
    """The constants an integer input is compared with (`labels != ignore` in a loss): values
    the model tells apart itself, which the data may hold outside index_bound's range."""
    values = set()
    for n in graph.nx.successors(node):
        if PRIMITIVES[graph.op(n)].equality:
            for x in graph.inputs(n):
                src = _under_broadcast(graph, x).node
                if PRIMITIVES[graph.op(src)].holds_value and np.ndim(graph.attrs(src)["value"]) == 0:
                    values.add(int(graph.attrs(src)["value"]))
    return values


def sample_inputs(model: Model, sizes: dict, seed: int = 0) -> dict:
    """Random inputs for every model input, with symbolic dims set from `sizes`."""
    rng = np.random.default_rng(seed)
    feeds = {"rng": np.array([seed, 1], np.int32)}
    for inp in model.inputs:
        shape = tuple(concrete(d, sizes) for d in inp.type.shape)
        if inp.type.is_float:
            feeds[inp.name] = rng.standard_normal(shape)
        elif inp.type.dtype == "bool":
            feeds[inp.name] = rng.random(shape) < 0.5
        else:
            node = next(n for n in model.graph.nodes_with("input") if model.graph.attrs(n)["name"] == inp.name)
            bound = index_bound(model.graph, node) or 2
            feeds[inp.name] = rng.integers(0, bound, shape).astype(np.int32)
    return feeds


def default_sizes(model: Model, size: int = 3) -> dict:
    """`size` for every symbolic dim of the inputs, grown where the model needs more (a
    sequence at least as long as a convolution's window)."""
    sizes = {s: size for s in sorted(set().union(*(symbols(i.type.shape) for i in model.inputs)))}
    for _ in range(256):
        short = [
            d
            for d, least, _, _ in interpreter.size_constraints(model.graph)
            if d.symbols() <= sizes.keys() and concrete(d, sizes) < least
        ]
        if not short:
            break
        for s in short[0].symbols():
            sizes[s] += 1
    return sizes


def init_params(model: Model, seed: int = 0, float_dtype: str = "f64") -> dict:
    """The initial parameters from the seed, and the files the initializers name (word vectors,
    relative to the model file's folder)."""
    feeds = {"rng": np.array([seed, 0], np.int32), **vectors.init_feeds(model.init, Path(model.span.file).parent)}
    return interpreter.run(model.init, feeds, {}, float_dtype=float_dtype)


def gradcheck(
    model: Model,
    feeds: dict,
    params: dict,
    eps: float = 1e-6,
    per_param: int = 12,
    tolerance: float = 1e-6,
    seed: int = 0,
) -> list[ParamCheck]:
    """Compare the gradient graph with central differences of the loss, in float64.

    A small step keeps the differences off the kinks of ReLU and max pooling; its
    round-off is about 1e-16 * |loss| / eps, so differences below 1e-9 * max(1, |loss|)
    are noise: a parameter passes when its relative error is below `tolerance` or its
    largest absolute error is under that floor."""
    step = train_step(model.graph)
    analytic = interpreter.run(step, feeds, params, float_dtype="f64")
    forward = model.graph
    rng = np.random.default_rng(seed)
    results = []
    work = {
        k: np.array(v, np.float64, order="C") if np.issubdtype(np.asarray(v).dtype, np.floating) else v
        for k, v in params.items()
    }

    def loss():
        return float(interpreter.run(forward, feeds, work, float_dtype="f64")["loss"])

    noise = 1e-9 * max(1.0, abs(float(analytic["loss"])))
    for p in model.params:
        if not p.trainable:
            continue
        grad = analytic[f"grad:{p.name}"].reshape(-1)
        flat = work[p.name].reshape(-1)
        picks = np.arange(flat.size) if flat.size <= per_param else rng.choice(flat.size, per_param, replace=False)
        a, num = [], []
        for i in picks:
            orig = flat[i]
            flat[i] = orig + eps
            up = loss()
            flat[i] = orig - eps
            down = loss()
            flat[i] = orig
            num.append((up - down) / (2 * eps))
            a.append(grad[i])
        results.append(ParamCheck(p.name, len(picks), *_compared(np.array(a), np.array(num), tolerance, noise)))
    return results


def _compared(analytic: np.ndarray, numeric: np.ndarray, tolerance: float, noise: float) -> tuple:
    """(max_abs, rel, ok) of ParamCheck: it passes when its relative error is below the
    tolerance or its largest absolute error under the noise of the differences."""
    max_abs = float(np.abs(analytic - numeric).max(initial=0.0))
    scale = max(np.abs(analytic).max(initial=0.0), np.abs(numeric).max(initial=0.0))
    rel = max_abs / scale if scale > noise else 0.0
    return max_abs, rel, rel < tolerance or max_abs < noise


HVP_ENGINES = {"reference": "float64", "native": "float32"}


@dataclass
class HvpCheck(ParamCheck):
    engine: str  # of HVP_ENGINES; `checked`: every entry


def hvp_check(
    model: Model,
    feeds: dict,
    params: dict,
    eps: float = 1e-5,
    tolerance: float = 1e-6,
    native_tolerance: float = 1e-4,
    seed: int = 0,
) -> list[HvpCheck]:
    """Compare the Hessian-vector product graph (autodiff.hvp_graph), run by the reference
    interpreter in float64 and compiled by the native engine (float32), with central
    differences of the gradient along v, (grad(p + eps v) - grad(p - eps v)) / 2 eps, in
    float64. v is random with norm 1 over all the trainable parameters: the step moves the
    parameters by eps in all, so it rarely crosses a kink of ReLU or max pooling. A compile
    error of the native engine (an op it cannot compile) is raised, located at the op.

    A parameter passes on an engine when its relative error is below that engine's
    tolerance or its largest absolute error is under the engine's noise: the round-off of
    the differences, 1e-9 * max(1, largest gradient entry), for the reference; for the
    native engine, float32's, `native_tolerance` * the largest entry of H v."""
    trained = [p for p in model.params if p.trainable]
    rng = np.random.default_rng(seed)
    v = {p.name: rng.standard_normal(params[p.name].shape) for p in trained}
    norm = np.sqrt(sum(float(np.sum(d * d)) for d in v.values())) or 1.0
    directions = {f"v:{name}": d / norm for name, d in v.items()}
    step = train_step(model.graph)

    def gradient(sign: float) -> dict:
        moved = {
            k: np.asarray(a, np.float64) + sign * eps * directions[f"v:{k}"] if f"v:{k}" in directions else a
            for k, a in params.items()
        }
        return interpreter.run(step, feeds, moved, float_dtype="f64")

    up, down = gradient(1.0), gradient(-1.0)
    numeric = {p.name: (up[f"grad:{p.name}"] - down[f"grad:{p.name}"]) / (2 * eps) for p in trained}
    graph = hvp_graph(model.graph)
    try:
        exe = Executable(graph)
    except NotLowerable as e:  # at the user's line, not inside the standard library
        raise NotLowerable.at_user_line(e.message, e.span) from None
    arrays, sizes = exe.run({**feeds, **directions}, exe.given(params))
    analytic = {
        "reference": interpreter.run(graph, {**feeds, **directions}, params, float_dtype="f64"),
        "native": {f"hvp:{p.name}": exe.output(f"hvp:{p.name}", arrays, sizes) for p in trained},
    }
    noise = {
        "reference": 1e-9 * max(1.0, _largest(up, "grad:")),
        "native": native_tolerance * _largest(analytic["reference"], "hvp:"),
    }
    tolerances = {"reference": tolerance, "native": native_tolerance}
    results = []
    for p in trained:
        for engine in HVP_ENGINES:
            hvp = np.asarray(analytic[engine][f"hvp:{p.name}"], np.float64)
            compared = _compared(hvp, numeric[p.name], tolerances[engine], noise[engine])
            results.append(HvpCheck(p.name, hvp.size, *compared, engine))
    return results


def _largest(outputs: dict, prefix: str) -> float:
    """The largest magnitude of an entry of the outputs whose names start with `prefix`."""
    return max((float(np.abs(a).max(initial=0.0)) for k, a in outputs.items() if k.startswith(prefix)), default=0.0)
