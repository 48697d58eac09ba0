"""Sharded optimizer state (`shard_optimizer = true`, docs/distributed.md): the resident
memory (VmRSS) of each rank and the time of a step, 1 process against 2 ranks without
sharding (with the default buckets, and without buckets: `after`) and with it.

The model is an MLP 64-4096-4096-10 on the digits (17.1 M parameters: 68 MB of parameters,
68 MB of gradients and 137 MB of Adam state in float32), trained by `dlc train`'s trainer
for `--steps` steps at batch 64, one native thread a rank. Each rank reads its VmRSS from
/proc at the last step (the state a run holds while it trains, after the start's transient
copies are freed) and VmHWM (its peak, which includes them); the step time is the mean over
the steps after the first 5. The runs follow one another, so their step times saw different
loads; the last measure takes a step of each way in turn in the same 2 ranks, unsharded
without buckets and sharded, and splits it into its halves: the gradients with their
reduction (allreduce; reduce-scatter), and the update (of every parameter; of the rank's
share, then the allgather). `others` is the cores other processes used meanwhile (the
machine's busy time minus the ranks' CPU time): figures taken while others use a core are
not comparable.

    python benchmarks/optimizer_shards.py               # needs mpi4py and mpirun: pip install "dlc[mpi]"
    python benchmarks/optimizer_shards.py --steps 40 --json /tmp/shards.json
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from types import SimpleNamespace

from machine import status_kb

WARMUP = 5
MPIRUN = shutil.which("mpirun") or shutil.which("mpiexec")
ENV = {**os.environ, "DLC_NUM_THREADS": "1", "OMPI_ALLOW_RUN_AS_ROOT": "1", "OMPI_ALLOW_RUN_AS_ROOT_CONFIRM": "1"}
MODEL = """model wide {
    input  x: f32[B, 64]
    target y: i32[B]
    logits = x |> dense(4096, relu) |> dense(4096, relu) |> dense(10)
    loss   sparse_cross_entropy(logits, y)
}
train wide {
    data = digits(image = false)
    batch = 64
    optimizer = adam(lr = 1e-4)
    shuffle = false
}
"""
# (label, ranks, shard_optimizer, allreduce_bucket): unsharded with the default buckets, and
# without (the step a sharded run takes too: its reduce-scatter waits for the backward pass)
RUNS = (
    ("1 process", 1, False, None),
    ("2 ranks buckets", 2, False, None),
    ("2 ranks after", 2, False, 0),
    ("2 ranks sharded", 2, True, None),
)


def worker(model: str, out: str, steps: int, shard: bool, bucket: int | None):
    """One rank (or the one process) of a run: trains, then writes its figures to `out`/rankR.json."""
    from dlc.compiler.frontend.loader import load
    from dlc.runtime.engines.cores import machine_busy_s
    from dlc.runtime.training.callbacks import Callback
    from dlc.runtime.training.trainer import Trainer

    class Probe(Callback):
        def __init__(self):
            self.times, self.rss, self.busy, self.cpu = [], 0, 0.0, 0.0

        def on_batch_end(self, step, logs):
            self.times.append(time.perf_counter())
            if step == WARMUP:
                self.busy, self.cpu = machine_busy_s(), time.process_time()
            if step == steps:
                self.rss = status_kb("VmRSS")
                self.busy, self.cpu = machine_busy_s() - self.busy, time.process_time() - self.cpu

    probe = Probe()
    overrides = {"max_steps": steps, "shard_optimizer": shard, "allreduce_bucket": bucket}
    Trainer(load(model), None, overrides, Path(out), progress="none", callbacks=[probe]).run(overwrite=True)
    timed = probe.times[WARMUP - 1 :]
    rank = int(os.environ.get("PMI_RANK", 0))
    # a file a rank: the launcher may join the ranks' output lines
    (Path(out) / f"rank{rank}.json").write_text(
        json.dumps(
            {
                "rank": rank,
                "rss_mb": probe.rss / 1024,
                "peak_mb": status_kb("VmHWM") / 1024,
                "step_ms": (timed[-1] - timed[0]) / (len(timed) - 1) * 1e3,
                "wall_s": timed[-1] - timed[0],
                "busy_s": probe.busy,
                "cpu_s": probe.cpu,
            }
        )
    )


def timing_worker(model: str, steps: int):
    """One of 2 ranks holding an unsharded engine without buckets and a sharded one, which
    take a step each in turn (both see the same load): rank 0 writes the mean time of each
    half of their steps, the gradients with their reduction (allreduce; reduce-scatter) and
    the update (of every parameter; of the rank's share, then the allgather)."""
    import numpy as np
    from dlc.compiler.frontend.loader import load
    from dlc.runtime.engines import distributed
    from dlc.runtime.engines.cores import machine_busy_s
    from dlc.runtime.engines.native import NativeEngine
    from dlc.runtime.training.config import make_config
    from dlc.runtime.optim.optimizers import make_optimizer
    from dlc.runtime.training.trainer import initial_parameters

    world = distributed.world()
    prog = load(model)
    train, ev = prog.build(training=True), prog.build(training=False)
    trainable = [p.name for p in train.params if p.trainable]
    rng = np.random.default_rng(0)
    lo, hi = world.shard(64)
    batch = {
        "x": rng.standard_normal((64, 64), dtype=np.float32)[lo:hi],
        "y": rng.integers(0, 10, 64).astype(np.int32)[lo:hi],
    }
    runs = {}
    for label, shard in (("after", None), ("sharded", (world.rank, world.size))):
        opt = make_optimizer(make_config(prog, None, {}).optimizer)
        params = initial_parameters(train, 0)
        engine = NativeEngine(train, ev, opt, trainable, split=True, shard=shard)
        parallel = distributed.DataParallel(engine, world, SimpleNamespace(asked=False, agreed=None), [])
        runs[label] = (parallel, params, opt.init({n: params[n] for n in trainable}), [0.0, 0.0])
    for step in range(1, steps + 1):
        if step == WARMUP + 1:
            busy, cpu, start = machine_busy_s(), np.array([time.process_time()]), time.perf_counter()
        for parallel, params, state, spent in runs.values():
            t0 = time.perf_counter()
            _, grads = parallel.gradients(params, state, batch, np.array([0, step], np.int32))
            t1 = time.perf_counter()
            parallel.apply_update(params, state, grads, 1e-4, step)
            if step > WARMUP:
                spent[0] += t1 - t0
                spent[1] += time.perf_counter() - t1
    wall, own = time.perf_counter() - start, world.sum(np.array([time.process_time()]) - cpu, "the timing")
    if world.rank == 0:
        timed = steps - WARMUP
        Path(model).with_suffix(".timing.json").write_text(
            json.dumps(
                {
                    label: {"gradients_ms": spent[0] / timed * 1e3, "update_ms": spent[1] / timed * 1e3}
                    for label, (_, _, _, spent) in runs.items()
                }
                | {"others": max(0.0, machine_busy_s() - busy - own[0]) / wall}
            )
        )


def launch(model: Path, out: Path, ranks: int, shard: bool, bucket: int | None, steps: int) -> dict:
    """A run's figures: per rank, and `others` over the timed steps."""
    cmd = (
        ([MPIRUN, "-n", str(ranks)] if ranks > 1 else [])
        + [sys.executable, str(Path(__file__)), "--worker", str(model), "--out", str(out), "--steps", str(steps)]
        + (["--shard"] if shard else [])
        + ([] if bucket is None else ["--bucket", str(bucket)])
    )
    r = subprocess.run(cmd, capture_output=True, text=True, env=ENV)
    rows = [json.loads(f.read_text()) for f in sorted(out.glob("rank*.json"))]
    if r.returncode or len(rows) != ranks:
        raise SystemExit(f"{' '.join(cmd)} failed:\n{r.stdout}{r.stderr}")
    others = max(0.0, rows[0]["busy_s"] - sum(x["cpu_s"] for x in rows)) / rows[0]["wall_s"]
    return {"ranks": rows, "others": others}


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--steps", type=int, default=25, help="steps of each run (the first 5 untimed)")
    ap.add_argument("--json", help="also write the rows as JSON")
    ap.add_argument("--worker", help=argparse.SUPPRESS)
    ap.add_argument("--out", help=argparse.SUPPRESS)
    ap.add_argument("--shard", action="store_true", help=argparse.SUPPRESS)
    ap.add_argument("--bucket", type=int, help=argparse.SUPPRESS)
    ap.add_argument("--timing-worker", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.steps <= WARMUP:
        raise SystemExit(f"--steps must be more than the {WARMUP} untimed ones")
    if args.worker:
        return worker(args.worker, args.out, args.steps, args.shard, args.bucket)
    if args.timing_worker:
        return timing_worker(args.timing_worker, args.steps)
    if MPIRUN is None:
        raise SystemExit('needs mpi4py and mpirun: pip install "dlc[mpi]"')
    rows = []
    print(f"{'run':<16} {'rank':>4} {'VmRSS MB':>9} {'VmHWM MB':>9} {'step ms':>8} {'others':>7}")
    with tempfile.TemporaryDirectory() as tmp:
        model = Path(tmp) / "wide.dl"
        model.write_text(MODEL)
        for label, ranks, shard, bucket in RUNS:
            run = launch(model, Path(tmp) / label.replace(" ", "_"), ranks, shard, bucket, args.steps)
            for x in run["ranks"]:
                print(
                    f"{label:<16} {x['rank']:>4} {x['rss_mb']:>9.1f} {x['peak_mb']:>9.1f} {x['step_ms']:>8.1f} "
                    f"{run['others']:>7.2f}",
                    flush=True,
                )
            rows.append({"run": label, "shard_optimizer": shard, "allreduce_bucket": bucket, **run})
        r = subprocess.run(
            [
                MPIRUN,
                "-n",
                "2",
                sys.executable,
                str(Path(__file__)),
                "--timing-worker",
                str(model),
                "--steps",
                str(args.steps),
            ],
            capture_output=True,
            text=True,
            env=ENV,
        )
        if r.returncode:
            raise SystemExit(f"the timing failed:\n{r.stdout}{r.stderr}")
        timing = json.loads(model.with_suffix(".timing.json").read_text())
        print(f"\n2 ranks, a step of each in turn: {'gradients ms':>12} {'update ms':>9} {'others':>7}")
        for label in ("after", "sharded"):
            print(
                f"{label:<32} {timing[label]['gradients_ms']:>12.1f} {timing[label]['update_ms']:>9.1f} "
                f"{timing['others']:>7.2f}"
            )
        rows.append({"run": "2 ranks in turn", **timing})
    if args.json:
        Path(args.json).write_text(json.dumps(rows, indent=1))


if __name__ == "__main__":
    main()
