"""`dlc bench`: the native train step's time (a model without a loss: its prediction's), and the time
and GFLOP/s of every kernel."""

from __future__ import annotations

import time

import numpy as np

from dlc.compiler.native.program import render
from dlc.compiler.ir.dims import concrete, numel, symbols
from dlc.compiler.frontend.loader import Program
from dlc.compiler.frontend.settings import Call
from dlc.runtime.training.gradcheck import init_params, sample_inputs
from dlc.runtime.engines import budget
from dlc.runtime.engines.cores import threads
from dlc.runtime.engines.int8 import calibrate_arrays
from dlc.runtime.engines.native import NativeEngine
from dlc.runtime.engines.parameters import Parameters
from dlc.runtime.optim.optimizers import make_optimizer


BF16 = " (bf16 products)"
INT8 = " (int8 products)"


def bench(
    program: Program,
    model_name: str | None,
    batch: int,
    dims: dict,
    steps: int,
    top: int,
    precision: str = "f32",
    int8: bool = False,
) -> str:
    """The train step's profile; a model without a loss (an imported classifier) has no
    step to train, so its prediction's. `precision`: of the products, as the train block's
    ("bf16": bfloat16 operands). `int8`: the prediction's, its products quantized as `dlc
    quantize` would (docs/quantization.md), calibrated on the random batch it times."""
    evaluation = program.build(model_name, training=False)
    if int8 or "loss" not in evaluation.graph.outputs:
        return _predict_profile(evaluation, batch, dims, steps, top, precision, int8)
    train = program.build(model_name, training=True)
    names = [p.name for p in train.params if p.trainable]
    opt = make_optimizer(Call("adam", [], {"lr": 1e-3}))
    t0 = time.perf_counter()
    engine = NativeEngine(train, evaluation, opt, names, profile=True, precision=precision)
    compile_s = time.perf_counter() - t0
    params = {k: v.astype(np.float32) for k, v in init_params(train).items()}
    state = opt.init({n: params[n] for n in names})
    sizes = _sizes(train, batch, dims)
    feeds = _feeds(train, sizes)
    run = lambda step: engine.train_step(params, state, feeds, 1e-3, step, np.array([0, step], np.int32))
    return _profile(
        f"native train step of {train.name}{BF16 * (precision == 'bf16')}",
        engine.train_exe,
        run,
        sizes,
        steps,
        top,
        compile_s,
    )


def _predict_profile(model, batch: int, dims: dict, steps: int, top: int, precision: str, int8: bool) -> str:
    """The native prediction's profile: every output from random inputs (`int8`: its
    products quantized, calibrated on those inputs; the timing does not depend on the scales)."""
    weights = {k: v.astype(np.float32) for k, v in init_params(model).items()}
    sizes = _sizes(model, batch, dims)
    feeds = _feeds(model, sizes)
    quantization = calibrate_arrays(model.graph, weights, feeds, 1, batch)[0] if int8 else None
    t0 = time.perf_counter()
    engine = NativeEngine(model, model, profile=True, precision=precision, int8=quantization)
    exe = engine.predict_exe
    compile_s = time.perf_counter() - t0
    # a model's weights, packed once as DlcModel.predict's are (runtime/engines/parameters.py)
    params = Parameters.owning(weights)
    return _profile(
        f"native prediction of {model.name}{BF16 * (precision == 'bf16')}{INT8 * int8}",
        exe,
        lambda step: engine.predict(params, feeds),
        sizes,
        steps,
        top,
        compile_s,
    )


def _sizes(model, batch: int, dims: dict) -> dict:
    """`batch` for B and every input's leading symbolic dim (an imported model's N), 32 for
    the other dims, unless `dims` says."""
    leading = {s for i in model.inputs for s in symbols(i.type.shape[:1])}
    return {s: 32 for i in model.inputs for s in symbols(i.type.shape)} | dict.fromkeys(leading | {"B"}, batch) | dims


def _feeds(model, sizes: dict) -> dict:
    """Random inputs at these sizes, refused first when they cannot fit: they are made before
    the engine's check of the step's memory, sampled in 8 bytes a value, then narrowed."""
    budget.require(
        "dlc bench's random batch",
        lambda s: {"inputs": sum(12 * int(numel([concrete(d, s) for d in i.type.shape])) for i in model.inputs)},
        sizes,
        batch=budget.batch_symbol(model.graph),
        span=model.span,
    )
    return {k: v.astype(np.float32) if v.dtype == np.float64 else v for k, v in sample_inputs(model, sizes).items()}


def _profile(what: str, exe, run, sizes: dict, steps: int, top: int, compile_s: float) -> str:
    """`run(step)` twice to warm up, then `steps` times timed; every kernel of `exe` (a
    profiling build) by its cycles."""
    for step in range(1, 3):
        run(step)
    exe.cycles()
    times, teams = [], []
    for step in range(3, steps + 3):
        teams.append(threads())
        t = time.perf_counter()
        run(step)
        times.append(time.perf_counter() - t)
    cycles = exe.cycles() / steps
    median = float(np.median(times))
    rows, parents, trips = [], [], [1]  # trips: how often a kernel runs per step (its enclosing scans' lengths)
    for (k, depth), c in zip(exe.profile, cycles):
        del trips[depth + 1 :]
        flops = k.flops(sizes)
        rows.append(
            dict(
                cycles=c,
                depth=depth,
                kind=k.family,
                where=render.source(k),
                flops=None if flops is None else flops * trips[depth],
            )
        )
        parents.append(next((i for i in range(len(rows) - 2, -1, -1) if rows[i]["depth"] < depth), None))
        trips.append(trips[depth] * k.runs(sizes))
    step_cycles = sum(r["cycles"] for r in rows if r["depth"] == 0) or 1.0
    lines = [
        f"{what}: median {median * 1e3:.3f} ms over {steps} steps on {_teams(teams)} "
        f"(sizes: {', '.join(f'{k}={v}' for k, v in sizes.items())}); compile {compile_s:.2f} s",
        _memory(exe),
        f"{'kernel':<24}{'source':<22}{'ms/step':>10}{'share':>8}{'GFLOP/s':>10}",
    ]

    def show(i, shown):
        r = rows[i]
        share = r["cycles"] / step_cycles
        seconds = share * median
        gflops = f"{r['flops'] / seconds / 1e9:.1f}" if r["flops"] and seconds > 0 else ""
        name = "  " * r["depth"] + f"{i} {r['kind']}"
        lines.append(f"{name:<24}{r['where']:<22}{seconds * 1e3:>10.3f}{100 * share:>7.1f}%{gflops:>10}")
        shown.add(i)
        for j in _slowest([j for j, p in enumerate(parents) if p == i], rows, top):
            show(j, shown)

    shown: set = set()
    top_level = [i for i, r in enumerate(rows) if r["depth"] == 0]
    for i in _slowest(top_level, rows, top):
        show(i, shown)
    rest = [i for i in top_level if i not in shown]
    if rest:
        share = sum(rows[i]["cycles"] for i in rest) / step_cycles
        lines.append(f"{f'{len(rest)} others':<24}{'':<22}{share * median * 1e3:>10.3f}{100 * share:>7.1f}%")
    lines.append(
        f"(slowest first, {len(shown)} of {len(rows)} kernels; the shares are of the step's kernel time, "
        f"whose median is the step's; a scan's share includes its body's, indented under it)"
    )
    return "\n".join(lines)


def _teams(teams: list) -> str:
    """'2 threads', or '1-2 threads (the team shrank while others used a core)'."""
    lo, hi = min(teams), max(teams)
    if lo == hi:
        return f"{lo} thread{'s' if lo > 1 else ''}"
    return f"{lo}-{hi} threads (the team shrank while other processes competed for cores)"


def _slowest(indices: list, rows: list, top: int) -> list:
    return sorted(indices, key=lambda i: -rows[i]["cycles"])[:top]


def _memory(exe) -> str:
    """The temporaries' total size and the arena they share (compiler/native/memory.py)."""
    plan = list(exe.plans.values())[-1]
    mb = lambda n: f"{n / 1e6:.1f} MB" if n >= 1e5 else f"{n / 1e3:.1f} kB"
    return f"memory: temporaries {mb(plan.temp_bytes)} in a {mb(plan.arena)} arena"
