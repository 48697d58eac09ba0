"""Data-parallel scaling: samples/s of a train step on 1 process and on 2 MPI ranks, one
native thread each (docs/distributed.md).

Three workloads of train_step.py (benchmarks/workloads/*.dl): the MLP, LeNet-5 and the
transformer, Adam, at their global batch (128, 64, 16; `--batch-scale 4` multiplies them).
The single process runs the one-call step; the 2 ranks run the data-parallel step of
`dlc train` under mpirun (runtime/engines/distributed.py: each rank's half of the batch, the
allreduce of the gradients, the update) two ways, step by step in turn in the same ranks, so
that both see the same load: `buckets` (one call; each bucket of `--bucket` bytes, default
the train setting's 1 MB, allreduced as soon as the backward pass has finished it) and
`after` (allreduce_bucket = 0: two calls, the whole allreduce between them). Each run is a
fresh process (or mpirun), warms up, then times `--steps` steps; `--repeat N` runs the
sequence N times and keeps each figure's best. `others` is the cores other processes used
meanwhile (the machine's busy time minus the ranks' own CPU time, benchmarks/machine.py's
measure); a figure taken while others used a core is not comparable. `2 x 1` is two
independent single processes run at once (their samples/s added): what 2 ranks could reach
at most on the machine as busy as it is, and `of 2 x 1` how much of it `buckets` does.

    python benchmarks/distributed.py                    # needs mpi4py and mpirun: pip install "dlc[mpi]"
    python benchmarks/distributed.py --only mlp --steps 200 --bucket 256KB --json /tmp/dist.json
    python benchmarks/distributed.py --model            # the scaling model at 8 and 64 ranks
    python benchmarks/distributed.py --hosts            # 2 ranks on 2 hosts over TCP, links capped (root)

`--hosts` runs the 2 ranks on two hosts made on this machine (dlc/tools/hosts.py: network
namespaces, MPICH over TCP, never shared memory) under each link of LINKS: uncapped (the
veth's own speed), 10 and 1 Gbit/s, and 100 Mbit/s (tbf at both ends of each link). The
ranks still share this machine's cores; what changes is only the path of the gradients.

`--model` needs no MPI: it times one rank's step (1 thread, the least of several timings):
the compute C(b) of the batch per rank, the optimizer update U, and, in the step built with
buckets, when each bucket is ready. It prints the speed-up that docs/distributed.md's model
predicts for K ranks at that batch per rank on 10 Gb Ethernet and 100 Gb InfiniBand: after
the backward pass (T(K) = C(b) + U + A(K), A(K) = 2 (K - 1) / K x 4P / W + 2 log2(K) x L),
and overlapped with it (each bucket's allreduce starts when the bucket is ready and the
previous one is done; only what is left when the backward pass ends adds to the step).
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

from dlc.compiler.frontend.syntax import size_bytes
from dlc.runtime.training.config import ALLREDUCE_BUCKET
from train_step import DEFAULT_BATCH, load_workload, make_batch

HERE = Path(__file__).resolve().parent
WORKLOADS = ("mlp", "lenet", "transformer")
DEFAULT_STEPS = {"mlp": 100, "lenet": 100, "transformer": 30}
WARMUP = 5
MPIRUN = shutil.which("mpirun") or shutil.which("mpiexec")
LINKS = (None, "10gbit", "1gbit", "100mbit")  # --hosts: each host's link, capped by tbf (None: uncapped)
NETWORKS = {"10GbE": (1.1e9, 30e-6), "IB100": (11e9, 2e-6)}  # bandwidth (bytes/s), latency (s)
MODEL_RANKS = (2, 8, 64)


def engine_for(name: str, split: bool, seed: int = 0, buckets: int = 0):
    """(native engine, parameters, optimizer state, trainable names) of a workload, Adam."""
    from dlc.runtime.engines.backends import make_engine
    from dlc.compiler.frontend.settings import Call
    from dlc.runtime.optim.optimizers import make_optimizer
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


class ReadyTimes:
    """A gradient allreduce (distributed.BucketAllreduce's interface) that reduces nothing and
    notes when each bucket is handed over (its bytes) and when the backward pass ends."""

    def __init__(self):
        self.begun, self.ready, self.end = 0.0, [], 0.0

    def start(self, bucket: np.ndarray):
        self.ready.append((time.perf_counter() - self.begun, bucket.nbytes))

    def finish(self, values: dict):
        self.end = time.perf_counter() - self.begun


def allreduce_s(nbytes: float, k: int, bandwidth: float, latency: float) -> float:
    return 2 * (k - 1) / k * nbytes / bandwidth + 2 * np.log2(k) * latency


def exposed_s(ready: list, end: float, k: int, bandwidth: float, latency: float) -> float:
    """What the buckets' allreduce adds to a step: each starts when its bucket is ready and the
    one before is done, and what is left when the backward pass ends (at `end`) is waited for."""
    done = 0.0
    for at, nbytes in ready:
        done = max(done, at) + allreduce_s(nbytes, k, bandwidth, latency)
    return max(0.0, done - end)


def scaling_model(names, bucket: int):
    os.environ["DLC_NUM_THREADS"] = "1"
    head = "".join(f" {net} K={k:<3}" for net in NETWORKS for k in MODEL_RANKS)
    print(f"{'workload':<12} {'b':>4} {'C(b) ms':>8} {'U ms':>6} {'P':>8} {'buckets':>7}  overlap {head}")
    for name in names:
        engine, params, opt_state, trainable = engine_for(name, split=True)
        b = DEFAULT_BATCH[name]
        data = make_batch(name, 0, b)
        key = np.array([0, 1], np.int32)
        grads = engine.gradients(params, opt_state, data, key)[1]
        compute = least_s(lambda: engine.gradients(params, opt_state, data, key))
        update = least_s(lambda: engine.apply_update(params, opt_state, grads, 1e-3, 1))
        # when each bucket is ready in the step that hands them over: the fastest of several steps
        bucketed, params, opt_state, _ = engine_for(name, split=True, buckets=bucket)
        bucketed.allreduce = times = ReadyTimes()
        best = None
        for step in range(1, 31):
            times.begun, times.ready = time.perf_counter(), []
            bucketed.train_step(params, opt_state, data, 1e-3, step, key)
            if best is None or times.end < best[1]:
                best = (times.ready, times.end)
        ready, end = best
        ready = [(at * compute / end, nbytes) for at, nbytes in ready]  # in the compute's time scale
        P = sum(int(np.size(params[n])) for n in trainable)
        for overlap in (False, True):
            row = (
                f"{name:<12} {b:>4} {compute * 1e3:>8.2f} {update * 1e3:>6.2f} {P:>8} {len(ready):>7}  "
                f"{'yes' if overlap else 'no':<7} "
            )
            for bandwidth, latency in NETWORKS.values():
                for k in MODEL_RANKS:
                    added = (
                        exposed_s(ready, compute, k, bandwidth, latency)
                        if overlap
                        else allreduce_s(4 * P, k, bandwidth, latency)
                    )
                    row += f" {k * compute / (compute + update + added):>9.1f}x"
            print(row, flush=True)


def worker(name: str, batch: int, steps: int, bucket: int, seed: int = 0):
    """One run: this process alone (one engine), or one rank of an mpirun (one engine with
    buckets of `bucket` bytes and one without, a step of each in turn). Rank 0 prints a JSON
    line per engine."""
    from dlc.runtime.engines import distributed
    from dlc.runtime.engines.cores import machine_busy_s

    world = distributed.world()
    runs = []  # (label, engine, parameters, optimizer state)
    for label, buckets in (("buckets", bucket), ("after", 0)) if world is not None else (("one", 0),):
        engine, params, opt_state, trainable = engine_for(name, world is not None, seed, buckets)
        if world is not None:
            world.broadcast_state(params, opt_state)
            engine = distributed.DataParallel(engine, world, SimpleNamespace(asked=False, agreed=None), [])
        runs.append((label, engine, params, opt_state))
    data = make_batch(name, seed, batch)
    wall = {label: 0.0 for label, *_ in runs}
    losses = {}

    def step(t: int, timed: bool):
        for label, engine, params, opt_state in runs:
            start = time.perf_counter()
            losses[label] = engine.train_step(params, opt_state, data, 1e-3, t, np.array([seed, t], np.int32))["loss"]
            wall[label] += (time.perf_counter() - start) * timed

    for t in range(1, WARMUP + 1):
        step(t, False)
    if world is not None:
        world.barrier("the timing")
    busy, cpu, start = machine_busy_s(), time.process_time(), time.perf_counter()
    for t in range(WARMUP + 1, WARMUP + steps + 1):
        step(t, True)
    elapsed = time.perf_counter() - start
    own = np.array([time.process_time() - cpu])
    if world is not None:
        world.sum(own, "the timing")
    others = max(0.0, machine_busy_s() - busy - own[0]) / elapsed
    if world is None or world.rank == 0:
        grads = sum(int(np.size(params[n])) for n in trainable)
        for label, *_ in runs:
            print(
                json.dumps(
                    {
                        "workload": name,
                        "ranks": world.size if world else 1,
                        "batch": batch,
                        "run": label,
                        "bucket": bucket if label == "buckets" else 0,
                        "samples_s": steps * batch / wall[label],
                        "step_ms": wall[label] / steps * 1e3,
                        "others": others,
                        "allreduce_bytes": 4 * grads if world else 0,
                        "loss": float(losses[label]),
                    }
                ),
                flush=True,
            )


def launch(
    name: str, ranks: int, batch: int, steps: int, bucket: int, copies: int = 1, launcher: list | None = None
) -> list:
    """The rows of a run on `ranks` ranks (mpirun when more than one, or `launcher`: ranks on
    hosts); `copies` independent such runs at once."""
    env = {**os.environ, "DLC_NUM_THREADS": "1", "OMPI_ALLOW_RUN_AS_ROOT": "1", "OMPI_ALLOW_RUN_AS_ROOT_CONFIRM": "1"}
    if launcher is None:
        launcher = [MPIRUN, "-n", str(ranks)] if ranks > 1 else []
    cmd = launcher + [
        sys.executable,
        str(Path(__file__)),
        "--worker",
        name,
        "--batch",
        str(batch),
        "--steps",
        str(steps),
        "--bucket",
        str(bucket),
    ]
    runs = [
        subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env) for _ in range(copies)
    ]
    rows = []
    for run in runs:
        out, err = run.communicate()
        lines = [line for line in out.splitlines() if line.startswith("{")]
        if run.returncode or not lines:
            raise SystemExit(f"{' '.join(cmd)} failed:\n{out}{err}")
        rows += [json.loads(line) for line in lines]
    return rows


def over_hosts(names, args, bucket: int) -> list:
    """--hosts: 1 rank, then 2 ranks on two hosts under each of LINKS, buckets against after."""
    from dlc.tools import hosts

    reason = hosts.available()
    if reason is not None:
        raise SystemExit(f"--hosts: {reason}")
    rows = []
    print(
        f"{'workload':<12} {'link':>8} {'1 rank /s':>10} {'buckets /s':>10} {'speed-up':>8} {'after /s':>9} "
        f"{'speed-up':>8} {'buckets/after':>13} {'MB sent/step':>12} {'others':>7}"
    )
    for name in names:
        batch, steps = DEFAULT_BATCH[name] * args.batch_scale, args.steps or DEFAULT_STEPS[name]
        [one] = launch(name, 1, batch, steps, bucket)
        rows.append(one)
        for link in LINKS:
            with hosts.Hosts(2, rate=link) as network:
                sent = network.sent_bytes()
                two, after = launch(name, 2, batch, steps, bucket, launcher=network.mpiexec([]))
                sent = network.sent_bytes() - sent
            rows += [r | {"link": link or "uncapped"} for r in (two, after)]
            per_step = sent / (2 * (WARMUP + steps)) / 1e6  # both runs, warm-up included
            print(
                f"{name:<12} {link or 'uncapped':>8} {one['samples_s']:>10.0f} {two['samples_s']:>10.0f} "
                f"{two['samples_s'] / one['samples_s']:>7.2f}x {after['samples_s']:>9.0f} "
                f"{after['samples_s'] / one['samples_s']:>7.2f}x {two['samples_s'] / after['samples_s']:>12.2f}x "
                f"{per_step:>12.2f} {two['others']:>7.2f}",
                flush=True,
            )
    return rows


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--only", action="append", choices=WORKLOADS)
    ap.add_argument("--steps", type=int, help="timed steps (default: 100, 30 for the transformer)")
    ap.add_argument("--batch-scale", type=int, default=1, help="multiply the workloads' global batch")
    ap.add_argument("--json", help="also write the rows as JSON")
    ap.add_argument("--model", action="store_true", help="the scaling model at 8 and 64 ranks (no MPI needed)")
    ap.add_argument("--bucket", default=str(ALLREDUCE_BUCKET), help="bytes of a bucket of gradients, e.g. 256KB")
    ap.add_argument("--repeat", type=int, default=1, help="run the sequence N times; keep each figure's best")
    ap.add_argument("--hosts", action="store_true", help="2 ranks on 2 hosts over TCP under each link of LINKS (root)")
    ap.add_argument("--worker", help=argparse.SUPPRESS)
    ap.add_argument("--batch", type=int, help=argparse.SUPPRESS)
    args = ap.parse_args()
    bucket = size_bytes(args.bucket)
    if not bucket:
        raise SystemExit(f"--bucket takes a size above 0 such as 1MB or 256KB, got {args.bucket!r}")
    if args.worker:
        return worker(args.worker, args.batch, args.steps, bucket)
    if args.model:
        return scaling_model(args.only or WORKLOADS, bucket)
    if MPIRUN is None:
        raise SystemExit("needs mpirun (and mpi4py): pip install \"dlc[mpi]\"")
    rows = over_hosts(args.only or WORKLOADS, args, bucket) if args.hosts else on_this_machine(args, bucket)
    if args.json:
        Path(args.json).write_text(json.dumps(rows, indent=1))


def on_this_machine(args, bucket: int) -> list:
    """1 rank, 2 ranks (buckets and after) and two single processes at once, on this machine."""
    rows = []
    # "2 x 1": two independent single processes at once, the most 2 ranks can reach while
    # others share the machine
    print(
        f"{'workload':<12} {'batch':>5} {'1 rank /s':>10} {'buckets /s':>10} {'speed-up':>8} {'after /s':>9} "
        f"{'speed-up':>8} {'2 x 1 /s':>9} {'of 2 x 1':>8} {'allreduce/step':>14} {'others 1':>8} {'others 2':>8}"
    )
    for name in args.only or WORKLOADS:
        batch, steps = DEFAULT_BATCH[name] * args.batch_scale, args.steps or DEFAULT_STEPS[name]
        best: dict = {}
        for _ in range(args.repeat):
            [one], (two, after) = launch(name, 1, batch, steps, bucket), launch(name, 2, batch, steps, bucket)
            pair = launch(name, 1, batch, steps, bucket, copies=2)
            rows += [one, two, after] + [r | {"copy": True} for r in pair]
            for key, row in (
                ("one", one),
                ("two", two),
                ("after", after),
                ("pair", {"samples_s": sum(r["samples_s"] for r in pair)}),
            ):
                if key not in best or row["samples_s"] > best[key]["samples_s"]:
                    best[key] = row
        one, two, after, both = best["one"], best["two"], best["after"], best["pair"]["samples_s"]
        print(
            f"{name:<12} {batch:>5} {one['samples_s']:>10.0f} {two['samples_s']:>10.0f} "
            f"{two['samples_s'] / one['samples_s']:>7.2f}x {after['samples_s']:>9.0f} "
            f"{after['samples_s'] / one['samples_s']:>7.2f}x {both:>9.0f} {two['samples_s'] / both:>7.0%} "
            f"{two['allreduce_bytes'] / 1e6:>11.2f} MB {one['others']:>8.2f} {two['others']:>8.2f}",
            flush=True,
        )
    return rows


if __name__ == "__main__":
    main()
