"""Data-parallel scaling: samples/s of a train step on 1 process and on 2 MPI ranks, one
native thread each (docs/distributed.md).

Three workloads of train_step.py (benchmarks/workloads/*.dl): the MLP, LeNet-5 and the
transformer, Adam, at their global batch (128, 64, 16; `--batch-scale 4` multiplies them).
The single process runs today's one-call step; the 2 ranks run the data-parallel step of
`dlc train` under mpirun (runtime/engines/distributed.py: each rank's half of the batch, an
allreduce of the gradients, the update). Each run is a fresh process (or mpirun), warms up,
then times `--steps` steps. `others` is the cores other processes used meanwhile (the
machine's busy time minus the ranks' own CPU time, benchmarks/machine.py's measure); a
figure taken while others used a core is not comparable. `2 x 1` is two independent
single processes run at once (their samples/s added): what 2 ranks could reach at most on
the machine as busy as it is, and `of 2 x 1` how much of it they do.

    python benchmarks/distributed.py                    # needs mpi4py and mpirun: pip install "dlc[mpi]"
    python benchmarks/distributed.py --only mlp --steps 200 --json /tmp/dist.json
    python benchmarks/distributed.py --model            # the scaling model at 8 and 64 ranks

`--model` needs no MPI: it times the two halves of one rank's step (1 thread, the least of
several timings): the compute C(b) of the batch per rank and the optimizer update U, and
prints the speed-up that docs/distributed.md's model predicts for K ranks at that batch per
rank, T(K) = C(b) + U + A(K), A(K) = 2 (K - 1) / K x 4P / W + 2 log2(K) x L, on 10 Gb
Ethernet and 100 Gb InfiniBand.
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path
from types import SimpleNamespace

import numpy as np

from train_step import DEFAULT_BATCH, load_workload, make_batch

HERE = Path(__file__).resolve().parent
WORKLOADS = ("mlp", "lenet", "transformer")
DEFAULT_STEPS = {"mlp": 100, "lenet": 100, "transformer": 30}
WARMUP = 5
MPIRUN = shutil.which("mpirun") or shutil.which("mpiexec")
NETWORKS = {"10GbE": (1.1e9, 30e-6), "IB100": (11e9, 2e-6)}        # bandwidth (bytes/s), latency (s)
MODEL_RANKS = (2, 8, 64)


def engine_for(name: str, split: bool, seed: int = 0, buckets: int = 0):
    """(native engine, parameters, optimizer state, trainable names) of a workload, Adam."""
    from dlc.runtime.engines.backends import make_engine
    from dlc.runtime.training.settings import Call
    from dlc.runtime.training.optim import make_optimizer
    from dlc.runtime.training.trainer import initial_parameters
    prog = load_workload(name)
    train, ev = prog.build(training=True), prog.build(training=False)
    trainable = [p.name for p in train.params if p.trainable]
    opt = make_optimizer(Call("adam", [], {"lr": 1e-3}))
    params = initial_parameters(train, seed)
    opt_state = opt.init({n: params[n] for n in trainable})
    return make_engine("native", train, ev, opt, trainable, split=split, buckets=buckets), params, opt_state, trainable


def least_s(fn, repeats: int = 5, calls: int = 10) -> float:
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        for _ in range(calls):
            fn()
        times.append((time.perf_counter() - start) / calls)
    return min(times)


def scaling_model(names):
    os.environ["DLC_NUM_THREADS"] = "1"
    head = "".join(f" {net} K={k:<3}" for net in NETWORKS for k in MODEL_RANKS)
    print(f"{'workload':<12} {'b':>4} {'C(b) ms':>8} {'U ms':>6} {'P':>8}{head}")
    for name in names:
        engine, params, opt_state, trainable = engine_for(name, split=True)
        b = DEFAULT_BATCH[name]
        data = make_batch(name, 0, b)
        key = np.array([0, 1], np.int32)
        grads = engine.gradients(params, opt_state, data, key)[1]
        compute = least_s(lambda: engine.gradients(params, opt_state, data, key))
        update = least_s(lambda: engine.apply_update(params, opt_state, grads, 1e-3, 1))
        P = sum(int(np.size(params[n])) for n in trainable)
        row = f"{name:<12} {b:>4} {compute * 1e3:>8.2f} {update * 1e3:>6.2f} {P:>8}"
        for bandwidth, latency in NETWORKS.values():
            for k in MODEL_RANKS:
                allreduce = 2 * (k - 1) / k * 4 * P / bandwidth + 2 * np.log2(k) * latency
                row += f" {k * compute / (compute + update + allreduce):>9.1f}x"
        print(row, flush=True)


def worker(name: str, batch: int, steps: int, seed: int = 0):
    """One run: this process alone, or one rank of an mpirun. Rank 0 prints a JSON line."""
    from dlc.runtime.engines import distributed
    from dlc.runtime.engines.cores import machine_busy_s
    world = distributed.world()
    engine, params, opt_state, trainable = engine_for(name, world is not None, seed)
    if world is not None:
        world.broadcast_state(params, opt_state)
        engine = distributed.DataParallel(engine, world, SimpleNamespace(asked=False, agreed=None), [])
    data = make_batch(name, seed, batch)
    t = 0

    def step():
        nonlocal t
        t += 1
        return engine.train_step(params, opt_state, data, 1e-3, t, np.array([seed, t], np.int32))["loss"]

    for _ in range(WARMUP):
        step()
    if world is not None:
        world.barrier("the timing")
    busy, cpu, start = machine_busy_s(), time.process_time(), time.perf_counter()
    for _ in range(steps):
        loss = step()
    wall = time.perf_counter() - start
    own = np.array([time.process_time() - cpu])
    if world is not None:
        world.sum(own, "the timing")
    others = max(0.0, machine_busy_s() - busy - own[0]) / wall
    if world is None or world.rank == 0:
        grads = sum(int(np.size(params[n])) for n in trainable)
        print(json.dumps({"workload": name, "ranks": world.size if world else 1, "batch": batch,
                          "samples_s": steps * batch / wall, "step_ms": wall / steps * 1e3, "others": others,
                          "allreduce_bytes": 4 * grads if world else 0, "loss": float(loss)}), flush=True)


def launch(name: str, ranks: int, batch: int, steps: int, copies: int = 1) -> list:
    """The rows of a run on `ranks` ranks (mpirun when more than one); `copies` independent
    such runs at once."""
    env = {**os.environ, "DLC_NUM_THREADS": "1", "OMPI_ALLOW_RUN_AS_ROOT": "1",
           "OMPI_ALLOW_RUN_AS_ROOT_CONFIRM": "1"}
    launcher = [MPIRUN, "-n", str(ranks)] if ranks > 1 else []
    cmd = launcher + [sys.executable, str(Path(__file__)), "--worker", name, "--batch", str(batch),
                      "--steps", str(steps)]
    runs = [subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
            for _ in range(copies)]
    rows = []
    for run in runs:
        out, err = run.communicate()
        lines = [line for line in out.splitlines() if line.startswith("{")]
        if run.returncode or not lines:
            raise SystemExit(f"{' '.join(cmd)} failed:\n{out}{err}")
        rows.append(json.loads(lines[-1]))
    return rows



def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--only", action="append", choices=WORKLOADS)
    ap.add_argument("--steps", type=int, help="timed steps (default: 100, 30 for the transformer)")
    ap.add_argument("--batch-scale", type=int, default=1, help="multiply the workloads' global batch")
    ap.add_argument("--json", help="also write the rows as JSON")
    ap.add_argument("--model", action="store_true", help="the scaling model at 8 and 64 ranks (no MPI needed)")
    ap.add_argument("--worker", help=argparse.SUPPRESS)
    ap.add_argument("--batch", type=int, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.worker:
        return worker(args.worker, args.batch, args.steps)
    if args.model:
        return scaling_model(args.only or WORKLOADS)
    if MPIRUN is None:
        raise SystemExit("needs mpirun (and mpi4py): pip install \"dlc[mpi]\"")
    rows = []
    # "2 x 1": two independent single processes at once, the most 2 ranks can reach while
    # others share the machine
    print(f"{'workload':<12} {'batch':>5} {'1 rank /s':>10} {'2 ranks /s':>10} {'speed-up':>8} {'2 x 1 /s':>9} "
          f"{'of 2 x 1':>8} {'allreduce/step':>14} {'others 1':>8} {'others 2':>8}")
    for name in args.only or WORKLOADS:
        batch, steps = DEFAULT_BATCH[name] * args.batch_scale, args.steps or DEFAULT_STEPS[name]
        [one], [two] = launch(name, 1, batch, steps), launch(name, 2, batch, steps)
        pair = launch(name, 1, batch, steps, copies=2)
        both = sum(r["samples_s"] for r in pair)
        rows += [one, two] + [r | {"copy": True} for r in pair]
        print(f"{name:<12} {batch:>5} {one['samples_s']:>10.0f} {two['samples_s']:>10.0f} "
              f"{two['samples_s'] / one['samples_s']:>7.2f}x {both:>9.0f} {two['samples_s'] / both:>7.0%} "
              f"{two['allreduce_bytes'] / 1e6:>11.2f} MB {one['others']:>8.2f} {two['others']:>8.2f}", flush=True)
    if args.json:
        Path(args.json).write_text(json.dumps(rows, indent=1))


if __name__ == "__main__":
    main()
