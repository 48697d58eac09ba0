"""Photo loading: dlc's images(...) source read as a training run reads it (decode, random
resized crop to 224, flip, normalize: `augment = photos(...)`, runtime/data/prefetch.py's
threads) against torchvision's ImageFolder and DataLoader(num_workers=N) with the same
transforms, on a generated folder of 500x375 JPEGs saved at quality 90.

A step is one epoch of the folder (a new epoch's random draws each time), timed in rounds
(benchmarks/rounds.py): dlc, torchvision, then torchvision, dlc, ... so that a change of the
machine's load lands on both. The DataLoader's workers persist from epoch to epoch (created
once, as a long run has them), and `others` counts their CPU time as the benchmark's own. For
each count of threads (dlc) and worker processes (torchvision): images/s in all and per thread
or worker, the CPU time a photo took (every thread and worker process: process_time, less
moved by a busy machine than the wall clock), and dlc's time over torchvision's (below 1: dlc
is faster; the target is 0.67, 1.5x the throughput).

    python benchmarks/data.py                     # 512 photos, 1 and 2 threads / workers, 5 rounds
    python benchmarks/data.py --photos 2000 --counts 1 2 4 --json /tmp/data.json
    python benchmarks/data.py --quick             # a smoke run: 16 small photos, 2 rounds
    python benchmarks/data.py --memory            # peak memory of runs over N and 10 N photos, and tables

`--memory` trains a linear classifier one epoch (reference engine, 2 data threads) in a process
of its own over --photos // 5 and 10 times as many photos (`augment = photos()`, at 224), and
over a Parquet table of 20,000 and 200,000 rows streamed (16 float32 features, row groups of
2,500 rows), and reports each process's peak resident memory (VmHWM) and the larger run's
over the smaller's: the bound docs/training.md states is 10 %.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from machine import OtherLoad, own_cpu_s, print_results
from rounds import ROUNDS, interleave, others_cell, ratio_cell, reported

MEAN, STD = [0.485, 0.456, 0.406], [0.229, 0.224, 0.225]
PAUSE_S = 0.3  # before each slot: the other one's threads and workers go to sleep


def make_folder(root: Path, photos: int, width: int, height: int, seed: int = 0) -> Path:
    """`photos` JPEGs (quality 90) of smooth colour gradients and noise, in two class folders."""
    from PIL import Image

    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:height, 0:width].astype(np.float32)
    for i in range(photos):
        folder = root / ("a" if i % 2 else "b")
        folder.mkdir(parents=True, exist_ok=True)
        a, b, c = rng.uniform(0, 1, 3)
        rgb = np.stack([x / width * 255 * a, y / height * 255 * b, (x + y) / (width + height) * 255 * c], -1)
        rgb += rng.normal(0, 12, rgb.shape)
        Image.fromarray(np.clip(rgb, 0, 255).astype(np.uint8)).save(folder / f"{i}.jpg", quality=90)
    return root


def dlc_epochs(root: Path, size: int, threads: int, batch: int):
    """(a function that reads one epoch of the folder as dlc's training does, the photos' count)."""
    from dlc.compiler.frontend.settings import Call
    from dlc.runtime.data.augment import augment_options
    from dlc.runtime.data.prefetch import Batches
    from dlc.runtime.data.registry import load

    ds = load(Call("images", [str(root)], {"size": size, "mean": MEAN, "std": STD}), root)
    x = ds.columns["x"].augmented(augment_options(Call("photos", [], {})), seed=0)
    n, epoch = len(x), iter(range(1 << 30))

    def read_epoch():
        e = next(epoch)
        for _ in Batches({"x": x}, ((slice(lo, min(lo + batch, n)), e) for lo in range(0, n, batch)), threads):
            pass

    return read_epoch, n


def torchvision_epochs(root: Path, size: int, workers: int, batch: int):
    """(a function that reads one epoch through ImageFolder and a DataLoader of `workers`
    persistent processes, a function giving the workers' process ids)."""
    from dlc.tools.real_models import without_torchvision_ops

    without_torchvision_ops()
    import torch
    import torchvision.datasets as datasets
    import torchvision.transforms as T

    transform = T.Compose([T.RandomResizedCrop(size), T.RandomHorizontalFlip(), T.ToTensor(), T.Normalize(MEAN, STD)])
    folder = datasets.ImageFolder(str(root), transform)
    loader = torch.utils.data.DataLoader(
        folder, batch_size=batch, shuffle=False, num_workers=workers, persistent_workers=True
    )

    def read_epoch():
        for _ in loader:
            pass

    def pids():
        it = loader._iterator  # the persistent workers, once the first epoch made them
        return [w.pid for w in it._workers] if it is not None else []

    return read_epoch, pids


def cpu_slot(read_epoch, pids=lambda: ()):
    """A slot of rounds.interleave: n epochs, their wall seconds and, as outputs, the CPU seconds
    each took in this process and the processes `pids()` (the loader's workers)."""

    def slot(n: int):
        seconds, cpu = [], []
        for _ in range(n):
            c0, t0 = own_cpu_s(pids()), time.perf_counter()
            read_epoch()
            seconds.append(time.perf_counter() - t0)
            cpu.append(own_cpu_s(pids()) - c0)
        return seconds, cpu

    return slot


def run_count(root: Path, size: int, count: int, batch: int, rounds: int) -> dict:
    """One table row: dlc on `count` threads against torchvision on `count` workers, in rounds."""
    dlc_read, photos = dlc_epochs(root, size, count, batch)
    tv_read, tv_pids = torchvision_epochs(root, size, count, batch)
    slots = {"dlc": cpu_slot(dlc_read), "torchvision": cpu_slot(tv_read, tv_pids)}
    measured = interleave(
        slots, rounds, steps=1, warmup=1, pause_s=PAUSE_S, load=lambda: OtherLoad(tv_pids()), sleep=time.sleep
    )
    row = reported(measured, {"count": count, "photos": photos}, f"{count} thread(s)", [("dlc", "torchvision")])
    for name in ("dlc", "torchvision"):
        row[f"{name} img/s"] = photos / (row[name] / 1e3)
        timed_cpu = measured.outputs[name][1:]  # the warm-up epoch left out
        row[f"{name} cpu ms"] = float(np.median(timed_cpu)) / photos * 1e3
    return row


PEAK_RUN = """
import sys
from dlc import load
load(sys.argv[1], backend="reference").train(out=sys.argv[2], progress="none", data_threads=2)
print(next(int(line.split()[1]) for line in open("/proc/self/status") if line.startswith("VmHWM:")))
"""
LINEAR = """
model m {
    input  x: f32[B, SHAPE]
    target y: i32[B]
    logits = dense(flatten(x), 2)
    loss   sparse_cross_entropy(logits, y)
}
train m { data = DATA  batch = 64  epochs = 1 TRAIN }
"""


def peak_mb(folder: Path, shape: str, data: str, train: str = "") -> float:
    """The peak resident memory (MB) of a process that trains a linear classifier one epoch on `data`."""
    path = folder / "m.dl"
    path.write_text(LINEAR.replace("SHAPE", shape).replace("DATA", data).replace("TRAIN", train))
    run = subprocess.run(
        [sys.executable, "-c", PEAK_RUN, str(path), str(folder / "run")], capture_output=True, text=True
    )
    if run.returncode:
        raise SystemExit(f"the run over {data} failed:\n{run.stderr}")
    return int(run.stdout.split()[-1]) / 1024


def memory_rows(tmp: Path, photos: int, width: int, height: int, size: int) -> list:
    """Peak memory of runs over `photos` and 10 times as many photos, and over a streamed table 10 times longer."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    rows = []
    counts = (photos, 10 * photos)
    peaks = []
    for n in counts:
        make_folder(tmp / f"m{n}", n, width, height, seed=n)
        data = f'images("{tmp / f"m{n}"}", size = {size})'
        peaks.append(peak_mb(tmp / f"m{n}", f"3, {size}, {size}", data, "augment = photos()"))
    rows.append({"data": f"photos {width}x{height} at {size}", "small": counts[0], "large": counts[1], "peaks": peaks})
    counts, peaks = (20_000, 200_000), []
    rng = np.random.default_rng(0)
    for n in counts:
        columns = {f"f{i}": rng.normal(0, 1, n).astype(np.float32) for i in range(16)}
        columns["label"] = np.array(["no", "yes"])[rng.integers(0, 2, n)]
        (tmp / f"t{n}").mkdir()
        pq.write_table(pa.table(columns), tmp / f"t{n}" / "t.parquet", row_group_size=2_500)
        data = f'parquet("{tmp / f"t{n}" / "t.parquet"}", label = "label", stream = true)'
        peaks.append(peak_mb(tmp / f"t{n}", "16", data))
    rows.append(
        {"data": "Parquet table, 16 features, streamed", "small": counts[0], "large": counts[1], "peaks": peaks}
    )
    for r in rows:
        r["growth"] = r["peaks"][1] / r["peaks"][0] - 1
    return rows


def memory_table(rows: list) -> str:
    head = "| data | examples | 10x examples | peak MB | 10x peak MB | growth |"
    lines = [head, "|" + "---|" * (head.count("|") - 1)]
    for r in rows:
        lines.append(
            f"| {r['data']} | {r['small']} | {r['large']} | {r['peaks'][0]:.1f} | {r['peaks'][1]:.1f} | "
            f"{r['growth']:+.1%} |"
        )
    return "\n".join(lines)


def table(rows: list) -> str:
    head = (
        "| threads / workers | photos | dlc img/s | per thread | torchvision img/s | per worker | dlc CPU ms/photo | "
        "torchvision CPU ms/photo | dlc/torchvision time (p25-p75) | others of each round |"
    )
    lines = [head, "|" + "---|" * (head.count("|") - 1)]
    for r in rows:
        lines.append(
            f"| {r['count']} | {r['photos']} | {r['dlc img/s']:.1f} | {r['dlc img/s'] / r['count']:.1f} | "
            f"{r['torchvision img/s']:.1f} | {r['torchvision img/s'] / r['count']:.1f} | {r['dlc cpu ms']:.2f} | "
            f"{r['torchvision cpu ms']:.2f} | {ratio_cell(r['dlc/torchvision'])} | {others_cell(r['others'])} |"
        )
    return "\n".join(lines)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--photos", type=int, default=512)
    p.add_argument("--counts", type=int, nargs="+", default=[1, 2], help="threads (dlc) and workers (torchvision)")
    p.add_argument("--batch", type=int, default=64)
    p.add_argument("--rounds", type=int, default=ROUNDS, help=f"rounds of both in turn (default {ROUNDS})")
    p.add_argument("--json", metavar="PATH", help="also write the rows to PATH as JSON")
    p.add_argument("--quick", action="store_true", help="16 photos of 64x48 read at 32, 2 rounds: that it runs")
    p.add_argument("--memory", action="store_true", help="the peak memory of runs over N and 10 N examples instead")
    args = p.parse_args(argv)
    photos, width, height, size = (16, 64, 48, 32) if args.quick else (args.photos, 500, 375, 224)
    rounds = 2 if args.quick else args.rounds
    if args.memory:
        with tempfile.TemporaryDirectory() as tmp:
            rows = memory_rows(Path(tmp), max(photos // 5, 1), width, height, size)
        print("peak resident memory (VmHWM) of a process training one epoch; the bound: growth <= 10 %\n")
        print(memory_table(rows))
        if args.json:
            Path(args.json).write_text(json.dumps(rows, indent=1) + "\n")
        return 0
    with tempfile.TemporaryDirectory() as tmp:
        root = make_folder(Path(tmp) / "photos", photos, width, height)
        print(
            f"{photos} JPEGs of {width}x{height} (quality 90) -> {size}x{size}: random resized crop, flip, normalize; "
            f"an epoch a step, {rounds} rounds of dlc and torchvision in turn; {os.cpu_count()} cores"
        )
        rows = []
        for count in args.counts:
            rows.append(run_count(root, size, count, args.batch, rounds))
            r = rows[-1]
            print(f"  {count}: dlc {r['dlc img/s']:.1f} img/s, torchvision {r['torchvision img/s']:.1f}", flush=True)
    print_results(table(rows), rows, args.json)
    return 0


if __name__ == "__main__":
    sys.exit(main())
