"""dlc's generated SGEMM vs numpy's BLAS (np.matmul), GFLOP/s side by side.

    python benchmarks/gemm.py                  # 1 and 2 threads (one subprocess each)
    python benchmarks/gemm.py --threads 2      # one thread count, in this process
    python benchmarks/gemm.py --wait-idle      # shared machine: time each shape when CPUs idle

The BLAS thread count is fixed when numpy is imported, so each thread count runs in its
own process with OPENBLAS_NUM_THREADS set first. dlc is timed with the AVX2 kernel
(6×16 on 8-float vectors) and, where the host has AVX-512, with the 8×32 kernel on
16-float vectors (the default there). Each library is timed in rounds, in turn: sleep 0.35 s
(so the other library's idle threads stop spinning: dlc's libgomp workers spin ~0.25 s,
OpenBLAS's ~0.1 s), warm up for 20 ms, then time single
calls for --seconds; the table shows the median over all rounds. Shapes are M×K×N for
C[M,N] = op(A)[M,K] @ op(B)[K,N]; "Aᵀ·G" and "G·Bᵀ" are the backward forms of a dense layer
X[M,K] @ W[K,N] (dW = Xᵀ·G, dX = G·Wᵀ), computed without materializing the transposes.
"""
from __future__ import annotations

import argparse
import os
import subprocess
import sys
import time


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--threads", type=int, default=None, help="thread count (default: 1 and 2)")
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--seconds", type=float, default=0.05, help="timed seconds per round")
    ap.add_argument("--quick", action="store_true", help="square sizes only")
    ap.add_argument("--wait-idle", action="store_true",
                    help="before each shape, wait (up to 10 min) until the CPUs are >= 90%% idle")
    args = ap.parse_args(argv)
    if args.threads is None:
        for t in (1, 2):
            cmd = [sys.executable, os.path.abspath(__file__), "--threads", str(t),
                   "--seconds", str(args.seconds), "--rounds", str(args.rounds)]
            cmd += ["--quick"] * args.quick + ["--wait-idle"] * args.wait_idle
            subprocess.run(cmd, check=True)
        return
    os.environ["OPENBLAS_NUM_THREADS"] = str(args.threads)
    run(args)


def _idle_fraction(dt=1.0):
    def read():
        v = [int(x) for x in open("/proc/stat").readline().split()[1:]]
        return v[3] + v[4], sum(v)
    i0, t0 = read()
    time.sleep(dt)
    i1, t1 = read()
    return (i1 - i0) / max(t1 - t0, 1)


def _wait_idle(limit=600.0):
    start = time.time()
    while time.time() - start < limit:
        if _idle_fraction() >= 0.9:
            return
    print("(machine still busy after 10 min; measuring anyway)")


def _time_calls(fns, seconds, rounds):
    """Per-call times of each function; rounds alternate between the functions so that
    a burst of load on a shared machine hits all of them alike."""
    times = [[] for _ in fns]
    for _ in range(rounds):
        for fn, ts in zip(fns, times):
            time.sleep(0.35)
            t0 = time.perf_counter()
            while time.perf_counter() - t0 < 0.02:
                fn()
            t0 = time.perf_counter()
            while time.perf_counter() - t0 < seconds:
                t = time.perf_counter()
                fn()
                ts.append(time.perf_counter() - t)
    return times


def run(args):
    import numpy as np

    from dlc.compiler.native import gemm
    from dlc.compiler.native import jit

    variants = [(False, False, False), (True, False, False), (False, True, False)]
    configs = {"avx2": gemm.AVX2}
    if jit.host_has("avx512f"):
        configs["avx512"] = gemm.AVX512
    nt = args.threads
    libs, notes = {}, []
    for key, cfg in configs.items():
        t0 = time.perf_counter()
        one = gemm.GemmLibrary([variants[0]], config=cfg)
        total = time.perf_counter() - t0
        libs[key] = gemm.GemmLibrary(variants, config=cfg)
        notes.append(f"compile, {key} {cfg.mr}x{cfg.nr} kernel: one GEMM "
                     f"{one.compiled.compile_seconds * 1e3:.0f} ms "
              f"IR -> machine code ({total * 1e3:.0f} ms with IR generation); three variants in "
              f"one module {libs[key].compiled.compile_seconds * 1e3:.0f} ms")
    wait = {k: os.environ.get(k) for k in ("GOMP_SPINCOUNT", "OMP_WAIT_POLICY") if os.environ.get(k)}
    print(f"\n== {nt} thread(s) ({jit.host_cpu()[0]}; {wait or 'libgomp defaults'})")
    print("\n".join(notes))

    rng = np.random.default_rng(0)
    cases = [(f"{n}x{n}x{n}", n, n, n, False, False) for n in (256, 512, 1024)]
    if not args.quick:
        for (m, k, n) in ((128, 784, 512), (128, 512, 256)):
            cases += [(f"{m}x{k}x{n}", m, k, n, False, False),
                      (f"  Aᵀ·G {k}x{m}x{n}", k, m, n, True, False),
                      (f"  G·Bᵀ {m}x{n}x{k}", m, n, k, False, True)]
    head = f"{'shape (MxKxN)':<22}{'numpy':>8}"
    for key in libs:
        head += f"{'dlc ' + key:>13}{'ratio':>7}"
    print(head + "   (GFLOP/s, median)")
    ratios = {key: [] for key in libs}
    for label, M, K, N, ta, tb in cases:
        a = rng.standard_normal((K, M) if ta else (M, K), dtype=np.float32)
        b = rng.standard_normal((N, K) if tb else (K, N), dtype=np.float32)
        av, bv = (a.T if ta else a), (b.T if tb else b)
        c_np = np.empty((M, N), np.float32)

        def np_run(av=av, bv=bv, c=c_np):
            np.matmul(av, bv, out=c)
        np_run()
        if args.wait_idle:
            _wait_idle()
        flop = 2.0 * M * N * K
        runs = [np_run]
        for key, lib in libs.items():
            c = np.empty((M, N), np.float32)
            runs.append(lib.bind(a, b, c, trans_a=ta, trans_b=tb, nthreads=nt))
            runs[-1]()
            if not np.allclose(c, c_np, rtol=1e-3, atol=1e-3 * np.sqrt(K)):
                raise SystemExit(f"{label}: dlc ({key}) and numpy disagree")
        gflops = [flop / np.median(ts) / 1e9 for ts in _time_calls(runs, args.seconds, args.rounds)]
        line = f"{label:<22}{gflops[0]:>8.1f}"
        for key, g in zip(libs, gflops[1:]):
            ratios[key].append(g / gflops[0])
            line += f"{g:>13.1f}{g / gflops[0]:>7.2f}"
        print(line, flush=True)
    summary = ", ".join(f"{key} {float(np.exp(np.mean(np.log(r)))):.2f}" for key, r in ratios.items())
    print(f"geometric mean of dlc/numpy: {summary}")


if __name__ == "__main__":
    main()
