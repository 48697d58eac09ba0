"""Native compile time and memory against depth: MLPs of N dense layers of width 64.

Each depth is compiled in a fresh process with an empty compile cache (DLC_CACHE_DIR a
new temporary directory; the shared GEMM library is compiled first and not counted), and
the train step's compile is timed phase by phase:

    passes   compiler/passes/optimize.py optimize (the train-step graph built by autodiff before)
    lower    compiler/native/lower.py lower
    codegen  compiler/native/codegen/driver.py build_module (llvmlite IR builder)
    llvm     runtime/engines/cache.py compile_cached: IR text, parse, O3, machine code, load
    memory   compiler/native/memory.py intervals + plan at batch 32

Peak RSS is the child process's maximum resident set (ru_maxrss).

    python benchmarks/compile_scaling.py                       # 10 30 100 300 layers
    python benchmarks/compile_scaling.py --layers 10 100 1000
    python benchmarks/compile_scaling.py --profile 300         # cProfile of the Python phases
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time

WIDTH = 64


def mlp_source(layers: int) -> str:
    body = "\n".join(f"    h{i} = dense(h{i - 1}, {WIDTH}, relu)" for i in range(1, layers))
    return (
        f"model deep {{\n    input x: f32[B, {WIDTH}]\n    target y: i32[B]\n    h0 = x\n{body}\n"
        f"    logits = dense(h{layers - 1}, 10)\n    loss sparse_cross_entropy(logits, y)\n}}\n"
    )


def measure(layers: int, profile: bool = False) -> dict:
    """Phase times (seconds) of one cold native compile of the train step."""
    import resource

    from dlc.compiler.passes.autodiff import train_step
    from dlc.compiler.native.codegen.driver import build_module
    from dlc.compiler.frontend.loader import load_text
    from dlc.compiler.ir.dims import numel
    from dlc.compiler.native.lower import lower
    from dlc.compiler.native.update import lower_update
    from dlc.compiler.frontend.settings import Call
    from dlc.runtime.optim.optimizers import make_optimizer
    from dlc.compiler.native.memory import intervals, plan
    from dlc.compiler.passes.optimize import optimize
    from dlc.runtime.engines import cache

    cache.gemm_symbols()
    times: dict = {}

    def timed(name, fn, *args, **kw):
        t = time.perf_counter()
        out = fn(*args, **kw)
        times[name] = times.get(name, 0.0) + time.perf_counter() - t
        return out

    prof = None
    if profile:
        import cProfile

        prof = cProfile.Profile()
        prof.enable()
    model = timed("build", lambda: load_text(mlp_source(layers)).build(None, training=True))
    step = timed("build", train_step, model.graph)
    program = timed("lower", lower, timed("passes", optimize, step))
    # the Adam update of every parameter, as the native engine builds it (runtime/engines/native.py)
    trained = sum(int(numel(p.type.shape)) for p in model.params)
    update = timed("lower", lower_update, make_optimizer(Call("adam", [], {"lr": 1e-3})).graph(trained))
    module = timed("codegen", build_module, program, "dlc_step", update=update).module
    live = timed("memory", intervals, program)
    timed("memory", plan, program, {s: 32 for s in program.symbols}, live)
    if prof is not None:
        prof.disable()
        import pstats

        pstats.Stats(prof, stream=sys.stderr).sort_stats("tottime").print_stats(40)
    timed("llvm", cache.compile_cached, module)
    times["kernels"] = len(program.kernels)
    times["functions"] = sum(1 for g in module.functions if g.name.startswith("kernel") and "." not in g.name)
    times["rss_mb"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    return times


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--layers", type=int, nargs="+", default=[10, 30, 100, 300])
    ap.add_argument("--profile", type=int, metavar="LAYERS", help="cProfile the Python phases at this depth")
    ap.add_argument("--one", type=int, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.one is not None:
        print(json.dumps(measure(args.one, profile=bool(args.profile))))
        return
    depths = [args.profile] if args.profile else args.layers
    phases = ("build", "passes", "lower", "codegen", "memory", "llvm")
    print(
        f"{'layers':>6} {'kernels':>7} {'compiled':>8} "
        + " ".join(f"{p:>8}" for p in phases)
        + f" {'total s':>8} {'peak MB':>8}"
    )
    for n in depths:
        with tempfile.TemporaryDirectory() as d:
            env = dict(os.environ, DLC_CACHE_DIR=d)
            cmd = [sys.executable, __file__, "--one", str(n)] + (["--profile", str(n)] if args.profile else [])
            out = subprocess.run(cmd, env=env, check=True, capture_output=not args.profile, text=True)
            if args.profile:
                continue
            r = json.loads(out.stdout.strip().splitlines()[-1])
        total = sum(r[p] for p in phases)
        print(
            f"{n:>6} {r['kernels']:>7} {r['functions']:>8} "
            + " ".join(f"{r[p]:>8.2f}" for p in phases)
            + f" {total:>8.2f} {r['rss_mb']:>8.0f}",
            flush=True,
        )


if __name__ == "__main__":
    main()
