"""The machine's measured float32 peak: an FMA throughput microbenchmark, 1 and 2 threads.

    python benchmarks/peak.py            # measure, print, and update the cached result

A loop of independent vector FMAs (`llvm.fma` on 16-float vectors where the host has
AVX-512, else 8-float), JIT-compiled with dlc's own llvmlite layer, keeps ACCUMULATORS
chains in flight so that FMA latency is hidden and the FMA ports are the bound. One FMA
is 2 FLOPs per lane. Two threads are two Python threads calling the same native function
(ctypes releases the GIL). Each thread count is timed REPEATS times and the best is kept:
a peak is what the machine can do, and other processes only ever take from it.

`train_step.py` reads the result (FLOP utilization column) from peak.json in dlc's cache
directory (DLC_CACHE_DIR, default ~/.cache/dlc), measuring it first when missing.
"""
from __future__ import annotations

import ctypes
import json
import threading
import time

ACCUMULATORS = 12        # independent chains: > FMA latency (4) × ports (2), within 16 (AVX2) / 32 registers
ITERATIONS = 20_000_000  # loop trips per call: ~30 ms on one core (AVX-512)
REPEATS = 5


def _compile_fma_loop():
    """(native fn(i64 iterations) -> float, FLOPs per iteration)."""
    from llvmlite import ir
    from dlc.compiler.native import jit
    from dlc.compiler.native.intrinsics import declare, splat

    lanes = 16 if jit.host_has("avx512f") else 8
    f32, i64 = ir.FloatType(), ir.IntType(64)
    vty = ir.VectorType(f32, lanes)
    module = ir.Module("peak")
    fma = declare(module, f"llvm.fma.v{lanes}f32", vty, [vty] * 3)
    fn = ir.Function(module, ir.FunctionType(f32, [i64]), "fma_loop")
    entry, loop, done = (fn.append_basic_block(n) for n in ("entry", "loop", "done"))
    b = ir.IRBuilder(entry)
    a, c = splat(b, f32(0.999999), vty), splat(b, f32(1e-7), vty)
    b.branch(loop)

    b.position_at_end(loop)
    i = b.phi(i64)
    accs = [b.phi(vty) for _ in range(ACCUMULATORS)]
    new = [b.call(fma, [acc, a, c]) for acc in accs]
    i_next = b.add(i, i64(1))
    b.cbranch(b.icmp_signed("<", i_next, fn.args[0]), loop, done)
    i.add_incoming(i64(0), entry)
    i.add_incoming(i_next, loop)
    for k, (acc, n) in enumerate(zip(accs, new)):
        acc.add_incoming(ir.Constant(vty, [float(k)] * lanes), entry)
        acc.add_incoming(n, loop)

    b.position_at_end(done)
    total = new[0]
    for n in new[1:]:                 # the result depends on every chain: none is dead code
        total = b.fadd(total, n)
    b.ret(b.extract_element(total, ir.IntType(32)(0)))

    lib = jit.compile_module(module)
    native = lib.function("fma_loop", ctypes.c_float, ctypes.c_int64)
    native.lib = lib                  # keep the compiled code alive with the function
    return native, ACCUMULATORS * lanes * 2, lanes


def measure(threads=(1, 2), iterations: int = ITERATIONS, repeats: int = REPEATS) -> dict:
    """{'lanes': vector width, 'gflops': {threads: best GFLOP/s of all threads together}}."""
    fn, flops_per_iter, lanes = _compile_fma_loop()
    fn(1000)                          # page in the code
    best = {}
    for n in threads:
        for _ in range(repeats):
            workers = [threading.Thread(target=fn, args=(iterations,)) for _ in range(n)]
            t0 = time.perf_counter()
            for w in workers:
                w.start()
            for w in workers:
                w.join()
            gflops = n * iterations * flops_per_iter / (time.perf_counter() - t0) / 1e9
            best[n] = max(best.get(n, 0.0), gflops)
    return {"lanes": lanes, "gflops": best}


def _cache_path():
    from dlc.runtime.engines.cache import cache_dir
    return cache_dir() / "peak.json"


def _host() -> str:
    from dlc.compiler.native import jit
    return jit.host_cpu()[0]


def save(result: dict) -> None:
    path = _cache_path()
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps({"host": _host(), "lanes": result["lanes"],
                                "gflops": {str(k): v for k, v in result["gflops"].items()}}))


def cached_or_measure() -> dict:
    """The cached peak of this host (peak.json), else a fresh measurement (~1 s), saved."""
    try:
        data = json.loads(_cache_path().read_text())
        if data["host"] == _host():
            return {"lanes": data["lanes"], "gflops": {int(k): v for k, v in data["gflops"].items()}}
    except (OSError, ValueError, KeyError):
        pass
    result = measure()
    save(result)
    return result


def main() -> int:
    result = measure()
    save(result)
    print(f"FMA peak, float32, {result['lanes']}-float vectors ({_host()}), best of {REPEATS}:")
    for n, g in result["gflops"].items():
        print(f"  {n} thread{'s' if n > 1 else ' '}  {g:8.1f} GFLOP/s")
    print(f"(saved to {_cache_path()})")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
