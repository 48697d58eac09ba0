"""The machine's measured float32 peak: an FMA throughput microbenchmark, 1 and 2 threads.

    python benchmarks/peak.py            # measure, print, and update the cached result

A loop of independent vector FMAs (`llvm.fma` on the GEMM's vectors: 16 floats where the
host has AVX-512, 8 with AVX2, 4 on AArch64's NEON), JIT-compiled with dlc's own llvmlite layer, keeps ACCUMULATORS
chains in flight so that FMA latency is hidden and the FMA ports are the bound. One FMA
is 2 FLOPs per lane. Two threads are two Python threads calling the same native function
(ctypes releases the GIL). Each thread count is timed in rounds of REPEATS calls and a
round's best is kept: a peak is what the machine can do, and other processes only ever take
from it. So each round runs under machine.OtherLoad, and only a round in which other
processes used less than QUIET cores counts as the peak; on a busy machine the rounds go on
for up to WINDOW_S seconds a thread count. Without a quiet round the least busy one is
given, said to be uncertain with the cores others used, and never cached: a peak measured
beside a neighbour (146 GFLOP/s on 2 threads where the machine does 231) made every
"% of peak" of a run too high by half.

`train_step.py` and `gemm.py` read the result (their % of peak) from peak.json in dlc's cache
directory (DLC_CACHE_DIR, default ~/.cache/dlc), measuring it first when missing, and print
`describe`'s line, which says when the peak is uncertain.
"""

from __future__ import annotations

import ctypes
import json
import threading
import time

from machine import OtherLoad

ACCUMULATORS = 12  # independent chains: > FMA latency (4) × ports (2), within 16 (AVX2) / 32 registers
ITERATIONS = 20_000_000  # loop trips per call: ~30 ms on one core (AVX-512)
REPEATS = 5
QUIET = 0.25  # the most cores other processes may use during a round that measures the peak
WINDOW_S = 30.0  # how long each thread count's rounds may wait for a quiet one
ROUND_S = 0.2  # the shortest round: /proc/stat counts the machine's busy time in 10 ms ticks,
# so a shorter round's load reads as quiet or busy by chance


def _compile_fma_loop():
    """(native fn(i64 iterations) -> float, FLOPs per iteration)."""
    from llvmlite import ir
    from dlc.compiler.native.codegen import jit
    from dlc.compiler.native.codegen.gemm import blocking
    from dlc.compiler.native.codegen.intrinsics import declare, splat

    lanes = blocking.default_config().vw  # 16 with AVX-512, 8 with AVX2, 4 with NEON
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
    for n in new[1:]:  # the result depends on every chain: none is dead code
        total = b.fadd(total, n)
    b.ret(b.extract_element(total, ir.IntType(32)(0)))

    lib = jit.compile_module(module)
    native = lib.function("fma_loop", ctypes.c_float, ctypes.c_int64)
    native.lib = lib  # keep the compiled code alive with the function
    return native, ACCUMULATORS * lanes * 2, lanes


def measure(threads=(1, 2), iterations: int = ITERATIONS, repeats: int = REPEATS, window_s: float = WINDOW_S) -> dict:
    """{'lanes': vector width, 'gflops': {threads: best GFLOP/s of all threads together},
    'others': {threads: cores other processes used during the round kept}}: for each thread
    count, rounds of `repeats` calls (and at least ROUND_S) until one is quiet (others <
    QUIET) or `window_s` has passed; the quiet round, else the least busy."""
    fn, flops_per_iter, lanes = _compile_fma_loop()
    fn(1000)  # page in the code
    gflops, others = {}, {}
    for n in threads:
        start = time.perf_counter()
        while True:
            with OtherLoad() as load:
                round_start, rates = time.perf_counter(), []
                while len(rates) < repeats or time.perf_counter() - round_start < ROUND_S:
                    rates.append(_timed(fn, n, iterations))
                best = max(rates) * flops_per_iter
            if n not in others or load.cores < others[n]:
                gflops[n], others[n] = best, load.cores
            if not load.cores >= QUIET or time.perf_counter() - start >= window_s:  # quiet, or nan: cannot tell
                break
    return {"lanes": lanes, "gflops": gflops, "others": others}


def _timed(fn, threads: int, iterations: int) -> float:
    """Giga-iterations a second of `threads` threads each calling fn(iterations) at once."""
    workers = [threading.Thread(target=fn, args=(iterations,)) for _ in range(threads)]
    t0 = time.perf_counter()
    for w in workers:
        w.start()
    for w in workers:
        w.join()
    return threads * iterations / (time.perf_counter() - t0) / 1e9


def quiet(result: dict) -> bool:
    """Whether every thread count's peak was measured with other processes under QUIET cores
    (nan, a machine whose load cannot be read, is not quiet)."""
    return all(cores < QUIET for cores in result["others"].values())


def describe(result: dict) -> str:
    """The peak in one line, and, when it was not measured on a quiet machine, that it is
    uncertain (too low: every % of it too high) and by how busy the machine was."""
    line = "FMA peak (benchmarks/peak.py): " + ", ".join(
        f"{g:.0f} GFLOP/s on {n} thread{'s' * (n > 1)}" for n, g in result["gflops"].items()
    )
    busy = {n: cores for n, cores in result["others"].items() if not cores < QUIET}
    if busy:
        line += (
            " -- UNCERTAIN, not cached: no quiet round in "
            + ", ".join(f"{n} thread{'s' * (n > 1)} (others used {cores:.2f} cores)" for n, cores in busy.items())
            + "; the peak may be too low and each % of it too high"
        )
    return line


def uncertain_note(result: dict) -> str | None:
    """The note a table of "% peak" prints under it when its peak is uncertain, else None."""
    if quiet(result):
        return None
    return f"note: % peak divides by an uncertain peak, measured beside other processes: {describe(result)}"


def _cache_path():
    from dlc.runtime.engines.cache import cache_dir

    return cache_dir() / "peak.json"


def _host() -> str:
    from dlc.compiler.native.codegen import jit

    return jit.host_cpu()[0]


def save(result: dict) -> bool:
    """Cache a quiet measurement (and say so); a busy one is not written."""
    if not quiet(result):
        return False
    path = _cache_path()
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(
        json.dumps(
            {
                "host": _host(),
                "lanes": result["lanes"],
                **{key: {str(k): v for k, v in result[key].items()} for key in ("gflops", "others")},
            }
        )
    )
    return True


def cached_or_measure() -> dict:
    """The cached peak of this host (peak.json), else a fresh measurement (~1 s on a quiet
    machine, up to WINDOW_S a thread count on a busy one), saved if it was quiet. An entry
    without the load it was measured at (written before that was checked) is measured again."""
    try:
        data = json.loads(_cache_path().read_text())
        if data["host"] == _host():
            return {
                "lanes": data["lanes"],
                **{key: {int(k): v for k, v in data[key].items()} for key in ("gflops", "others")},
            }
    except (OSError, ValueError, KeyError):
        pass
    result = measure()
    save(result)
    return result


def main() -> int:
    result = measure()
    saved = save(result)
    print(
        f"FMA peak, float32, {result['lanes']}-float vectors ({_host()}), best of {REPEATS} in the first round "
        f"in which other processes used under {QUIET} cores (rounds for up to {WINDOW_S:.0f} s):"
    )
    for n, g in result["gflops"].items():
        print(f"  {n} thread{'s' if n > 1 else ' '}  {g:8.1f} GFLOP/s   others {result['others'][n]:.2f} cores")
    if saved:
        print(f"(saved to {_cache_path()})")
    else:
        print(describe(result))
        print(f"(not saved to {_cache_path()}: run it again on a quiet machine)")
    return 0 if saved else 1


if __name__ == "__main__":
    raise SystemExit(main())
