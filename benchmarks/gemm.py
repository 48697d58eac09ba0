"""dlc's generated SGEMM vs numpy's BLAS (np.matmul), GFLOP/s side by side.

    python benchmarks/gemm.py                 # 1 and 2 threads (one subprocess each)
    python benchmarks/gemm.py --threads 2     # one thread count, in this process
    python benchmarks/gemm.py --vw 8          # force the AVX2 kernel (default: host's best)

The BLAS thread count is fixed when numpy is imported, so each thread count runs in its
own process with OPENBLAS_NUM_THREADS set first. Timings alternate between dlc and numpy
in rounds; the table shows the median per-call time of each. Shapes are M×K×N for
C[M,N] = op(A)[M,K] @ op(B)[K,N]; "Aᵀ·G" and "G·Bᵀ" are the backward forms of a dense layer
X[M,K] @ W[K,N] (dW = Xᵀ·G, dX = G·Wᵀ), computed without materializing the transposes.
"""
from __future__ import annotations

import argparse
import os
import subprocess
import sys


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--threads", type=int, default=None, help="thread count (default: 1 and 2)")
    ap.add_argument("--vw", type=int, choices=(8, 16), default=None,
                    help="vector width of the kernel: 8 (AVX2) or 16 (AVX-512); default: host's best")
    ap.add_argument("--seconds", type=float, default=0.15, help="time per round per library")
    ap.add_argument("--rounds", type=int, default=7)
    ap.add_argument("--quick", action="store_true", help="square sizes only")
    args = ap.parse_args(argv)
    if args.threads is None:
        for t in (1, 2):
            cmd = [sys.executable, os.path.abspath(__file__), "--threads", str(t),
                   "--seconds", str(args.seconds), "--rounds", str(args.rounds)]
            if args.vw:
                cmd += ["--vw", str(args.vw)]
            if args.quick:
                cmd.append("--quick")
            subprocess.run(cmd, check=True)
        return
    os.environ["OPENBLAS_NUM_THREADS"] = str(args.threads)
    os.environ.setdefault("OMP_NUM_THREADS", str(args.threads))
    run(args)


def run(args):
    import time

    import numpy as np

    from dlc.compiler.codegen import gemm

    cfg = gemm.default_config(args.vw)
    t0 = time.perf_counter()
    one = gemm.GemmLibrary([(False, False, False)], config=cfg)
    compile_one = one.compiled.compile_seconds
    build_one = time.perf_counter() - t0
    lib = gemm.GemmLibrary([(False, False, False), (True, False, False), (False, True, False)],
                           config=cfg)
    nt = args.threads
    print(f"\n== {nt} thread(s); kernel {cfg.mr}x{cfg.nr} on {cfg.vw}-float vectors; "
          f"compile of one GEMM (IR -> machine code): {compile_one * 1e3:.0f} ms "
          f"({build_one * 1e3:.0f} ms with IR generation); three variants in one module: "
          f"{lib.compiled.compile_seconds * 1e3:.0f} ms")

    rng = np.random.default_rng(0)
    cases = [(f"{n}x{n}x{n}", n, n, n, False, False) for n in (256, 512, 1024)]
    if not args.quick:
        for (m, k, n) in ((128, 784, 512), (128, 512, 256)):
            cases += [(f"{m}x{k}x{n}", m, k, n, False, False),
                      (f"  Aᵀ·G {k}x{m}x{n}", k, m, n, True, False),
                      (f"  G·Bᵀ {m}x{n}x{k}", m, n, k, False, True)]
    print(f"{'shape (MxKxN)':<22}{'dlc GFLOP/s':>12}{'numpy GFLOP/s':>15}{'ratio':>8}")
    ratios = []
    for label, M, K, N, ta, tb in cases:
        a = rng.standard_normal((K, M) if ta else (M, K), dtype=np.float32)
        b = rng.standard_normal((N, K) if tb else (K, N), dtype=np.float32)
        c1 = np.empty((M, N), np.float32)
        c2 = np.empty((M, N), np.float32)
        av, bv = (a.T if ta else a), (b.T if tb else b)
        dlc_run = lib.bind(a, b, c1, trans_a=ta, trans_b=tb, nthreads=nt)

        def np_run(av=av, bv=bv, c2=c2):
            np.matmul(av, bv, out=c2)
        dlc_run()
        np_run()
        if not np.allclose(c1, c2, rtol=1e-3, atol=1e-3 * np.sqrt(K)):
            raise SystemExit(f"{label}: dlc and numpy disagree")
        flop = 2.0 * M * N * K
        # calls per timed batch: enough for ~args.seconds
        t = time.perf_counter()
        for _ in range(3):
            dlc_run()
        per = (time.perf_counter() - t) / 3
        reps = max(1, int(args.seconds / max(per, 1e-7)))
        times = {"dlc": [], "np": []}
        for _ in range(args.rounds):
            for name, fn in (("dlc", dlc_run), ("np", np_run)):
                fn()
                t = time.perf_counter()
                for _ in range(reps):
                    fn()
                times[name].append((time.perf_counter() - t) / reps)
        g_dlc = flop / np.median(times["dlc"]) / 1e9
        g_np = flop / np.median(times["np"]) / 1e9
        ratios.append(g_dlc / g_np)
        print(f"{label:<22}{g_dlc:>12.1f}{g_np:>15.1f}{g_dlc / g_np:>8.2f}")
    print(f"geometric mean ratio: {float(np.exp(np.mean(np.log(ratios)))):.2f}")


if __name__ == "__main__":
    main()
