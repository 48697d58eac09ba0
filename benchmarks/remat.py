"""Rematerialized recurrences: the character LSTM (examples/char_lstm.dl) trained at a long
sequence, its scan plain and with `remat = k` (the train block's setting: every k-th carry
kept, the steps between recomputed in the backward pass).

Each configuration runs in a fresh process of its own, alternating (plain, remat, plain,
remat, ...) so that a busy neighbour weighs on both alike: it compiles and takes a first
step, then times steps for about --seconds. Reported: the median step time, the memory
the native engine accounts for training (NativeEngine.train_memory; "activations" is the
arena and the buffers outside it), its peak RSS growth, the peak `dlc summary --memory`
predicts, and `others`, the cores other processes used while timing (0 = quiet).

    python benchmarks/remat.py                       # T = 512, B = 32, k = 16, 2 rounds
    python benchmarks/remat.py --seq 256 --k 8 16 --rounds 1
"""

from __future__ import annotations

import argparse
import json
import re
import statistics
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).parent))
from machine import OtherLoad  # noqa: E402
from scaling import MIB, peak_rss, reset_peak_rss, rss_now  # noqa: E402

EXAMPLE = Path(__file__).resolve().parent.parent / "examples" / "char_lstm.dl"
MARK = "REPORT "


def source(k: int | None) -> str:
    """char_lstm.dl, with `remat = k` in its train block when k is given."""
    text = EXAMPLE.read_text()
    return text if k is None else re.sub(r"(\ntrain \w+ \{\n)", rf"\1    remat = {k}\n", text)


def child(k: int | None, batch: int, seq: int, seconds: float):
    """One configuration, in a process of its own: compile, one step, then timed steps."""
    from dlc.compiler.frontend.loader import load_text
    from dlc.compiler.ir.dims import subs
    from dlc.runtime.engines import budget
    from dlc.runtime.engines.native import NativeEngine
    from dlc.runtime.optim.optimizers import make_optimizer
    from dlc.compiler.frontend.settings import Call

    program = load_text(source(k), "char_lstm.dl")
    train, evaluation = program.build(None, training=True), program.build(None, training=False)
    trainable = [p.name for p in train.params if p.trainable]
    sizes = {"B": batch, "T": seq}
    parts = budget.training_memory(train, trainable, 2, sizes)
    predicted = sum(subs(sum((p[name] for p in parts.values()), 0), sizes) for name in budget.PARTS)
    optimizer = make_optimizer(Call("adam", [], {"lr": 2e-3}))
    rng = np.random.default_rng(0)
    params = {p.name: (rng.standard_normal(p.type.shape) * 0.05).astype(np.float32) for p in train.params}
    state = optimizer.init(params)
    feeds = {
        "x": rng.integers(0, 96, (batch, seq)).astype(np.int32),
        "y": rng.integers(0, 96, (batch, seq)).astype(np.int32),
    }
    reset_peak_rss()
    before = rss_now()
    engine = NativeEngine(train, evaluation, optimizer, trainable)
    step = lambda i: engine.train_step(params, state, feeds, 2e-3, i, np.array([0, i], np.int32))
    loss = step(1)["loss"]
    times, t_end = [], time.perf_counter() + seconds
    with OtherLoad() as load:
        while time.perf_counter() < t_end or len(times) < 3:
            t0 = time.perf_counter()
            step(len(times) + 2)
            times.append(time.perf_counter() - t0)
    memory = {part: n / MIB for part, n in engine.train_memory().items()}
    print(
        MARK
        + json.dumps(
            {
                "k": k,
                "loss": float(loss),
                "median_ms": 1e3 * statistics.median(times),
                "steps": len(times),
                "memory_mib": memory,
                "rss_mib": (peak_rss() - before) / MIB,
                "predicted_mib": predicted / MIB,
                "others": load.cores,
            }
        ),
        flush=True,
    )


def run(k: int | None, args) -> dict:
    out = subprocess.run(
        [
            sys.executable,
            __file__,
            "--child",
            json.dumps(k),
            "--batch",
            str(args.batch),
            "--seq",
            str(args.seq),
            "--seconds",
            str(args.seconds),
        ],
        capture_output=True,
        text=True,
    )
    for line in out.stdout.splitlines():
        if line.startswith(MARK):
            return json.loads(line[len(MARK) :])
    raise SystemExit(f"the run with k = {k} failed:\n{out.stderr}")


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--seq", type=int, default=512)
    ap.add_argument("--batch", type=int, default=32)
    ap.add_argument("--k", type=int, nargs="+", default=[16])
    ap.add_argument("--rounds", type=int, default=2)
    ap.add_argument("--seconds", type=float, default=20.0)
    ap.add_argument("--child", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child is not None:
        return child(json.loads(args.child), args.batch, args.seq, args.seconds)
    print(f"char_lstm, B = {args.batch}, T = {args.seq}: plain and remat = k, alternating")
    print(
        f"{'remat':>6} {'step ms':>9} {'activations MiB':>16} {'training MiB':>13} {'predicted MiB':>14} "
        f"{'RSS MiB':>8} {'loss':>8} {'others':>7}"
    )
    for _ in range(args.rounds):
        for k in [None] + args.k:
            r = run(k, args)
            print(
                f"{'-' if k is None else k:>6} {r['median_ms']:9.1f} {r['memory_mib']['activations']:16.1f} "
                f"{sum(r['memory_mib'].values()):13.1f} {r['predicted_mib']:14.1f} {r['rss_mib']:8.1f} "
                f"{r['loss']:8.5f} {r['others']:7.2f}",
                flush=True,
            )


if __name__ == "__main__":
    main()
