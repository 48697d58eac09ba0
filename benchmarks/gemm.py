"""dlc's generated SGEMM against numpy's BLAS (np.matmul) and torch.matmul, GFLOP/s side by side,
with dlc's share of the machine's FMA peak (benchmarks/peak.py).

    python benchmarks/gemm.py                  # 1 and 2 threads (one subprocess each)
    python benchmarks/gemm.py --threads 2      # one thread count, in this process
    python benchmarks/gemm.py --wait-idle      # shared machine: time each shape when others are idle
    python benchmarks/gemm.py --precision bf16 # bfloat16 products: dlc's bf16 paths vs torch's

The BLAS thread count is fixed when numpy is imported, so each thread count runs in its
own process with OPENBLAS_NUM_THREADS set first, and without OPENBLAS_CORETYPE and
OPENBLAS_L2_SIZE: some machines set them, which forces OpenBLAS onto a slower kernel than
the one it picks for the host. dlc is timed with the AVX2 kernel (6×16 on 8-float vectors)
and, where the host has AVX-512, with the 8×32 kernel on 16-float vectors (the default
there). The libraries are timed in rounds (benchmarks/rounds.py), in turn, the order rotated
each round: sleep 0.35 s (so the other library's idle threads stop spinning: dlc's pool
workers spin under a millisecond (DLC_SPIN), OpenBLAS's ~0.1 s), then single calls for about --seconds; the table
shows each library's median over rounds of its median call, and dlc/best the median over
rounds of each round's time ratio with its p25-p75.
Shapes are M×K×N for C[M,N] = op(A)[M,K] @ op(B)[K,N]; "Aᵀ·G" and "G·Bᵀ" are the backward
forms of a dense layer X[M,K] @ W[K,N] (dW = Xᵀ·G, dX = G·Wᵀ), computed without
materializing the transposes. `others` are the cores other processes used in each round.

With `--precision bf16` the peer is torch.matmul on bfloat16 tensors (oneDNN: the AMX
tiles where the host has them; its result is bfloat16), and dlc's columns are its float32
kernel and each bf16 path the host has (the conversion path, vdpbf16ps pairs, the AMX
tiles: compiler/native/codegen/gemm/blocking.py `bf16_config`), each checked against the product of the
operands rounded to bfloat16; dlc/best is the host's bf16 path over torch's.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import time
from dataclasses import replace

from machine import wait_idle
from peak import cached_or_measure, describe, uncertain_note
from rounds import ROUNDS, interleave, timed, wide_note


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--threads", type=int, default=None, help="thread count (default: 1 and 2)")
    ap.add_argument("--rounds", type=int, default=ROUNDS)
    ap.add_argument("--seconds", type=float, default=0.05, help="timed seconds of each library per round")
    ap.add_argument("--quick", action="store_true", help="square sizes only")
    ap.add_argument("--precision", choices=("f32", "bf16"), default="f32", help="of the products")
    ap.add_argument(
        "--wait-idle",
        action="store_true",
        help="before each shape, wait (up to 10 min) until the CPUs are >= 90%% idle",
    )
    args = ap.parse_args(argv)
    if args.threads is None:
        for t in (1, 2):
            cmd = [
                sys.executable,
                os.path.abspath(__file__),
                "--threads",
                str(t),
                "--seconds",
                str(args.seconds),
                "--rounds",
                str(args.rounds),
                "--precision",
                args.precision,
            ]
            cmd += ["--quick"] * args.quick + ["--wait-idle"] * args.wait_idle
            env = {k: v for k, v in os.environ.items() if k not in ("OPENBLAS_CORETYPE", "OPENBLAS_L2_SIZE")}
            subprocess.run(cmd, check=True, env=env)
        return
    os.environ["OPENBLAS_NUM_THREADS"] = str(args.threads)
    run(args)


def _compiled(lib) -> str:
    """How long a GemmLibrary's machine code took: compiled by LLVM, or loaded from the cache."""
    ms = f"{lib.compiled.seconds * 1e3:.0f} ms"
    return f"{ms} loaded from the cache" if lib.compiled.cached else f"{ms} IR -> machine code"


def run(args):
    import numpy as np

    from dlc.compiler.ir.evaluate import round_bf16
    from dlc.compiler.native.codegen.gemm import blocking
    from dlc.compiler.native.codegen import jit
    from gemm_library import GemmLibrary

    variants = [(False, False, False), (True, False, False), (False, True, False)]
    bf16 = args.precision == "bf16"
    configs = {"neon": blocking.NEON} if jit.target_arch() == "aarch64" else {"avx2": blocking.AVX2}
    if jit.host_has("avx512f"):
        configs["avx512"] = blocking.AVX512
    if bf16:
        configs = {"f32": blocking.default_config(), "round": replace(blocking.default_config(), operands="bf16-round")}
        if jit.host_has("avx512bf16"):
            configs["pairs"] = replace(blocking.AVX512, operands="bf16-pairs")
        if blocking.bf16_config().amx:
            configs["amx"] = blocking.AMX
    nt = args.threads
    libs, notes = {}, []
    for key, cfg in configs.items():
        t0 = time.perf_counter()
        one = GemmLibrary([variants[0]], config=cfg)
        total = time.perf_counter() - t0
        libs[key] = GemmLibrary(variants, config=cfg)
        notes.append(
            f"compile, {key} {cfg.mr}x{cfg.nr} kernel: one GEMM {_compiled(one)} "
            f"({total * 1e3:.0f} ms with IR generation); three variants in one module "
            f"{_compiled(libs[key])}"
        )
    spin = os.environ.get("DLC_SPIN")
    print(f"\n== {nt} thread(s) ({jit.host_cpu()[0]}; {f'DLC_SPIN={spin}' if spin else 'the pool spin default'})")
    print("\n".join(notes))

    try:
        import torch

        torch.set_num_threads(nt)
    except ImportError:
        torch = None
        print("(torch not installed: no torch.matmul column)")
    measured = cached_or_measure()
    peak = measured["gflops"][nt]
    default = next(
        k for k, cfg in configs.items() if cfg == (blocking.bf16_config() if bf16 else blocking.default_config())
    )
    print(f"{describe(measured)}; dlc's default kernel here: {default}")

    rng = np.random.default_rng(0)
    cases = [(f"{n}x{n}x{n}", n, n, n, False, False) for n in (256, 512, 1024)]
    if not args.quick:
        for m, k, n in ((128, 784, 512), (128, 512, 256)):
            cases += [
                (f"{m}x{k}x{n}", m, k, n, False, False),
                (f"  Aᵀ·G {k}x{m}x{n}", k, m, n, True, False),
                (f"  G·Bᵀ {m}x{n}x{k}", m, n, k, False, True),
            ]
        # few rows: a dense layer at batch 32, MobileNetV2's projection of one 56 x 56 image
        cases += [(f"{m}x{k}x{n}", m, k, n, False, False) for m, k, n in ((32, 784, 512), (24, 96, 3136))]
    peers = ["torch bf16"] if bf16 else ["numpy"] + ["torch"] * (torch is not None)
    if bf16 and torch is None:
        raise SystemExit("--precision bf16 compares with torch, which is not installed")
    columns = peers + [f"dlc {key}" for key in libs] + ["dlc/best", "dlc %pk", "best %pk"]
    print(
        f"{'shape (MxKxN)':<22}"
        + "".join(f"{c:>11}" for c in columns[:-3])
        + f"{columns[-3]:>22}"
        + "".join(f"{c:>11}" for c in columns[-2:])
        + "   others (GFLOP/s, medians over rounds)"
    )
    ratios = []
    for label, M, K, N, ta, tb in cases:
        a = rng.standard_normal((K, M) if ta else (M, K), dtype=np.float32)
        b = rng.standard_normal((N, K) if tb else (K, N), dtype=np.float32)
        av, bv = (a.T if ta else a), (b.T if tb else b)
        c_np = np.empty((M, N), np.float32)
        runs = [lambda av=av, bv=bv, c=c_np: np.matmul(av, bv, out=c)]
        if bf16:
            runs[0]()
            rounded = np.matmul(round_bf16(av).astype(np.float64), round_bf16(bv).astype(np.float64))
            ta_, tb_ = torch.from_numpy(av).bfloat16(), torch.from_numpy(bv).bfloat16()
            runs = [lambda ta_=ta_, tb_=tb_: torch.matmul(ta_, tb_)]
        elif torch is not None:
            ta_, tb_, tc = torch.from_numpy(av), torch.from_numpy(bv), torch.empty((M, N))
            runs.append(lambda ta_=ta_, tb_=tb_, tc=tc: torch.matmul(ta_, tb_, out=tc))
        for run_ in runs:
            run_()
        for key, lib in libs.items():
            c = np.empty((M, N), np.float32)
            runs.append(lib.bind(a, b, c, trans_a=ta, trans_b=tb, nthreads=nt))
            runs[-1]()
            want = rounded if lib.config.bf16 else c_np
            if not np.allclose(c, want, rtol=1e-3, atol=1e-3 * np.sqrt(K)):
                raise SystemExit(f"{label}: dlc ({key}) and numpy disagree")
        if args.wait_idle:
            wait_idle(600.0)
        flop = 2.0 * M * N * K
        keys = peers + list(libs)
        # three calls of each to warm up, then calls filling about --seconds of each a round
        timing = interleave(
            {k: timed(fn) for k, fn in zip(keys, runs)}, args.rounds, warmup=3, seconds_each=args.seconds, pause_s=0.35
        )
        gflops = {k: flop / timing.median_s(k) / 1e9 for k in keys}
        best = max(peers, key=lambda p: gflops[p])
        ratio = timing.ratio(default, best)  # time ratio dlc / best peer
        ratios.append(ratio.median)
        cells = [f"{gflops[k]:.1f}" for k in keys]
        print(
            f"{label:<22}"
            + "".join(f"{c:>11}" for c in cells)
            + f"{str(ratio):>22}"
            + f"{100 * gflops[default] / peak:>10.0f}%{100 * gflops[best] / peak:>10.0f}%   "
            + timing.others_text(),
            flush=True,
        )
        if note := wide_note(label.strip(), {f"dlc/{best}": ratio}):
            print(note, flush=True)
    print(f"geometric mean of time dlc ({default}) / best peer: {float(np.exp(np.mean(np.log(ratios)))):.2f}")
    if note := uncertain_note(measured):
        print(note)


if __name__ == "__main__":
    main()
