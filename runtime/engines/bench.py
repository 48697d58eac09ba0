"""`dlc bench`: the native train step's time, and the time and GFLOP/s of every kernel."""
from __future__ import annotations

import time

import numpy as np

from dlc.compiler.native import render
from dlc.compiler.ir.dims import concrete, numel, symbols
from dlc.compiler.frontend.loader import Program
from dlc.compiler.native.kernels import GemmKernel, ScanKernel, SmallGemmKernel
from dlc.runtime.training.settings import Call
from dlc.runtime.training.gradcheck import init_params, sample_inputs
from dlc.runtime.engines.native import NativeEngine
from dlc.runtime.training.optim import make_optimizer


def bench(program: Program, model_name: str | None, batch: int, dims: dict, steps: int, top: int) -> str:
    train, evaluation = program.build(model_name, training=True), program.build(model_name, training=False)
    names = [p.name for p in train.params if p.trainable]
    opt = make_optimizer(Call("adam", [], {"lr": 1e-3}))
    t0 = time.perf_counter()
    engine = NativeEngine(train, evaluation, opt, names, profile=True)
    compile_s = time.perf_counter() - t0
    params = {k: v.astype(np.float32) for k, v in init_params(train).items()}
    state = opt.init({n: params[n] for n in names})
    sizes = {s: 32 for i in train.inputs for s in symbols(i.type.shape)} | {"B": batch} | dims
    feeds = {k: v.astype(np.float32) if v.dtype == np.float64 else v
             for k, v in sample_inputs(train, sizes).items()}
    exe = engine.train_exe
    for step in range(1, 3):                                     # warm up
        engine.train_step(params, state, feeds, 1e-3, step, np.array([0, step], np.int32))
    exe.cycles()
    times = []
    for step in range(3, steps + 3):
        t = time.perf_counter()
        engine.train_step(params, state, feeds, 1e-3, step, np.array([0, step], np.int32))
        times.append(time.perf_counter() - t)
    cycles = exe.cycles() / steps
    top_level = sum(c for c, (_, depth) in zip(cycles, exe.profile) if depth == 0)
    per_second = top_level / (sum(times) / steps) if top_level else 1.0
    rows, trips = [], [1]     # trips: how often a kernel runs per step (the lengths of enclosing scans)
    for (k, depth), c in zip(exe.profile, cycles):
        seconds = c / per_second
        del trips[depth + 1:]
        flops = _gemm_flops(k, sizes)
        if flops is not None:
            flops *= trips[depth]
        if isinstance(k, ScanKernel):
            trips.append(trips[depth] * concrete(k.length, sizes))
        rows.append((seconds, depth, type(k).__name__.replace("Kernel", "").lower(), render.source(k), flops))
    median = float(np.median(times))
    lines = [f"native train step of {train.name}: median {median * 1e3:.3f} ms over {steps} steps "
             f"(sizes: {', '.join(f'{k}={v}' for k, v in sizes.items())}); compile {compile_s:.2f} s",
             _memory(exe),
             f"{'kernel':<24}{'source':<22}{'ms/step':>10}{'share':>8}{'GFLOP/s':>10}"]
    ranked = sorted(range(len(rows)), key=lambda i: -rows[i][0])[:top]
    for i in sorted(ranked):
        seconds, depth, kind, where, flops = rows[i]
        gflops = f"{flops / seconds / 1e9:.1f}" if flops and seconds > 0 else ""
        lines.append(f"{'  ' * depth + f'{i} {kind}':<24}{where:<22}{seconds * 1e3:>10.3f}"
                     f"{100 * seconds / median:>7.1f}%{gflops:>10}")
    lines.append(f"(the {len(ranked)} slowest of {len(rows)} kernels; a scan's time includes its body's, indented)")
    return "\n".join(lines)


def _memory(exe) -> str:
    """The temporaries' total size and the arena they share (compiler/native/memory.py)."""
    plan = list(exe.plans.values())[-1]
    mb = lambda n: f"{n / 1e6:.1f} MB" if n >= 1e5 else f"{n / 1e3:.1f} kB"
    return f"memory: temporaries {mb(plan.temp_bytes)} in a {mb(plan.arena)} arena"


def _gemm_flops(k, sizes):
    if not isinstance(k, (GemmKernel, SmallGemmKernel)):
        return None
    return 2 * numel([concrete(d, sizes) for d in (k.m, k.n, k.k, k.batch)])
