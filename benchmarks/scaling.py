"""Scaling benchmark: how dlc's train step and its memory grow with batch, width and
sequence length, against PyTorch eager.

Three workloads of train_step.py (benchmarks/workloads/*.dl, their torch twins), swept
one size at a time, the other sizes at the workload's own:

    mlp          batch 16..512, width 128..2048 (784-W-W/2-10)
    lstm         batch 16..512, hidden width 128..2048, sequence 16..512
    transformer  batch 16..512, d_model 128..1024 (4 heads, FFN 4d), sequence 16..2048

At each point both frameworks start from dlc's initial parameters (in torch's layout by
runtime/interop/torch_layout.py) and train with Adam on one fixed batch; their first-step losses
must agree within 1e-4 relative before either is timed. Each framework runs in a fresh
process of its own, so that its peak memory is its own: dlc's native engine (its default
threads) or PyTorch eager (default Adam, 2 threads). A process warms up, then times
enough steps to fill about --seconds, and reports the median step time and its peak RSS
growth: the most it held while building the model and training, over what it held
before. For dlc also the training memory the native engine accounts (NativeEngine.
train_memory: parameters, gradients, optimizer state and the step's activations).

    python benchmarks/scaling.py                           # every model and axis (~15 min)
    python benchmarks/scaling.py --quick                   # smoke run: two sizes per axis
    python benchmarks/scaling.py --only lstm --axis seq --json /tmp/lstm.json
"""

from __future__ import annotations

import argparse
import gc
import json
import math
import os
import re
import subprocess
import sys
import tempfile
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from machine import wait_idle  # noqa: E402
from train_step import (  # noqa: E402
    DEFAULT_BATCH,
    LOSS_RTOL,
    PAUSE_S,
    THREADS,
    DlcRunner,
    TorchRunner,
    fmt,
    json_safe,
    load_workload,
    make_batch,
    markdown,
    rel,
    torch_state,
    train_step_flops,
)

HERE = Path(__file__).resolve().parent


def doubling(lo: int, hi: int) -> list:
    return [lo << k for k in range((hi // lo).bit_length())]


SWEEPS = {
    "mlp": {"batch": doubling(16, 512), "width": doubling(128, 2048)},
    "lstm": {"batch": doubling(16, 512), "width": doubling(128, 2048), "seq": doubling(16, 512)},
    # d_model 2048 would take ~2.5 s a step (600 GFLOP) in each framework
    # sequence 2048: attention's [T, T] scores are 1 GiB a layer in a framework that stores them
    "transformer": {"batch": doubling(16, 512), "width": doubling(128, 1024), "seq": doubling(16, 2048)},
}
AXES = ("batch", "width", "seq")
CONSTANT = {"width": "WIDTH", "seq": "SEQ"}  # the workload constant an axis sets
FRAMEWORKS = ("dlc", "torch")
SECONDS = 2.0  # timed seconds per framework and point
QUICK_SECONDS = 0.05
MIN_STEPS, MAX_STEPS = 3, 1000
CLIFF = 1.5  # a cliff: dlc's time grows this much faster than the FLOPs, or than torch's
BUSY = 0.25  # cores used by other processes above which times are not comparable
MARK = "@scaling "  # a child's reports on its stdout start with it
MIB = 1 << 20


# ---- one point, measured in child processes ------------------------------------------------------------------
@dataclass
class Point:
    model: str
    axis: str
    size: int
    flops: int = 0  # forward + backward FLOPs of one step (train_step_flops)
    check: str = ""  # the first-step loss check, or why the point failed
    dlc: dict = field(default_factory=dict)  # each framework's report (Child.report)
    torch: dict = field(default_factory=dict)

    def setting(self) -> tuple:
        """(batch size, the workload's constants) at this point."""
        if self.axis == "batch":
            return self.size, {}
        return DEFAULT_BATCH[self.model], {CONSTANT[self.axis]: self.size}

    def ms(self, framework: str) -> float:
        return getattr(self, framework).get("median_ms", math.nan)

    @property
    def ratio(self) -> float:
        return self.ms("dlc") / self.ms("torch")

    @property
    def others(self) -> float:
        return max((r["others"] for r in (self.dlc, self.torch) if r.get("others") is not None), default=math.nan)


def rss_now() -> int:
    return int(Path("/proc/self/statm").read_text().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def reset_peak_rss():
    """Start the peak RSS afresh from the present RSS (Linux 4.0+), so that a peak before it
    (importing torch) does not hide the model's."""
    try:
        Path("/proc/self/clear_refs").write_text("5")
    except OSError:  # then the peak counts from the start: the imports' is rarely above their end
        pass


def peak_rss() -> int:
    """The process's peak RSS (VmHWM). Not ru_maxrss: that counts the RSS of the parent
    that forked this process too (what the process held before its exec)."""
    status = Path("/proc/self/status").read_text()
    return int(re.search(r"^VmHWM:\s+(\d+) kB", status, re.MULTILINE)[1]) * 1024


def say(report: dict):
    print(MARK + json.dumps(report), flush=True)


def step_count(step, seconds: float) -> int:
    """Warm up (one step at least, about a tenth of `seconds`) and return how many timed
    steps take about `seconds`."""
    n, t0 = 0, time.perf_counter()
    while n == 0 or (time.perf_counter() - t0 < seconds / 10 and n < 20):
        step()
        n += 1
    per_step = (time.perf_counter() - t0) / n
    return max(MIN_STEPS, min(MAX_STEPS, round(seconds / per_step)))


def child(spec: dict):
    """One framework at one point, in a process of its own: build the model and take the
    first step, report its loss, and when the parent says `time`, time the steps and report."""
    batch, start = dict(np.load(spec["batch"])), dict(np.load(spec["start"]))
    sizes = spec["sizes"]
    if spec["framework"] == "torch":
        import torch

        torch.set_num_threads(THREADS)
        make = lambda: TorchRunner(spec["model"], start, batch, spec["lr"], "torch", sizes)
    else:
        import dlc.runtime.engines.backends  # noqa: F401  (imported before the baseline: code, not the model's memory)

        make = lambda: DlcRunner(spec["model"], start, batch, "native", spec["lr"], spec["seed"], sizes)
    gc.collect()
    reset_peak_rss()
    before = rss_now()
    runner = make()
    runner.first()
    say({"loss": runner.run.losses[0]})
    if sys.stdin.readline().strip() != "time":
        return
    runner.timed(0, step_count(runner.step, spec["seconds"]))
    run = runner.run
    report = {
        "median_ms": run.median_ms,
        "steps": len(run.times),
        "first_s": run.first_s,
        "others": run.others,
        "rss_mib": (peak_rss() - before) / MIB,
    }
    if spec["framework"] == "dlc":
        report["memory_mib"] = {part: n / MIB for part, n in runner.engine.train_memory().items()}
        report["compile"] = "cached" if runner.engine.train_exe.compiled.cached else "cold"
    say(report)


class Child:
    """A child process (`child`) of one framework at one point."""

    def __init__(self, spec: dict):
        self.proc = subprocess.Popen(
            [sys.executable, __file__, "--child", json.dumps(spec)],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
        )

    def report(self) -> dict | None:
        """Its next report; None when it ended without one (its error is on stderr)."""
        for line in self.proc.stdout:
            if line.startswith(MARK):
                return json.loads(line[len(MARK) :])
            sys.stdout.write(line)
        return None

    def send(self, word: str):
        try:
            self.proc.stdin.write(word + "\n")
            self.proc.stdin.flush()
        except BrokenPipeError:
            pass

    def close(self):
        self.send("stop")  # unless it timed already: it waits for a word after its first step
        try:
            self.proc.wait(timeout=60)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()


def measure(point: Point, args):
    """Both frameworks at one point: first steps, the loss check, then each one timed alone."""
    batch_size, sizes = point.setting()
    model = load_workload(point.model, sizes).build(training=True)
    from dlc.runtime.training.trainer import initial_parameters

    init = initial_parameters(model, args.seed)
    batch = make_batch(point.model, args.seed, batch_size, sizes)
    point.flops = train_step_flops(model, batch)
    with tempfile.TemporaryDirectory() as tmp:
        paths = {part: str(Path(tmp) / f"{part}.npz") for part in ("batch", "dlc", "torch")}
        np.savez(paths["batch"], **batch)
        np.savez(paths["dlc"], **init)
        np.savez(paths["torch"], **torch_state(point.model, init, sizes))
        children = {}
        try:
            losses = {}
            for fw in FRAMEWORKS:
                children[fw] = Child(
                    {
                        "framework": fw,
                        "model": point.model,
                        "sizes": sizes,
                        "batch": paths["batch"],
                        "start": paths[fw],
                        "lr": args.lr,
                        "seed": args.seed,
                        "seconds": args.seconds,
                    }
                )
                first = children[fw].report()
                if first is None:
                    point.check = f"{fw} failed (exit status {children[fw].proc.wait()})"
                    return
                losses[fw] = first["loss"]
            diff = rel(losses["dlc"], losses["torch"])
            if not diff <= LOSS_RTOL:
                point.check = f"LOSS MISMATCH: dlc {losses['dlc']:.7f}, torch {losses['torch']:.7f}"
                return
            point.check = f"ok ({diff:.1e})"
            for fw, c in children.items():
                time.sleep(PAUSE_S)  # let the other process's spinning worker threads go to sleep
                c.send("time")
                report = c.report()
                if report is None:
                    point.check = f"{fw} failed while timed (exit status {c.proc.wait()})"
                    return
                setattr(point, fw, report)
        finally:
            for c in children.values():
                c.close()


def sweep(models: list, axes: list, quick: bool) -> list:
    return [
        Point(m, a, s) for m in models for a in axes if a in SWEEPS[m] for s in SWEEPS[m][a][: 2 if quick else None]
    ]


# ---- the report --------------------------------------------------------------------------------------------------
def dlc_mib(p: Point) -> float:
    return sum(p.dlc["memory_mib"].values()) if "memory_mib" in p.dlc else math.nan


def dlc_rss(p: Point) -> str:
    """dlc's RSS growth; starred where it holds a native compile (the compile cache was cold)."""
    return fmt(p.dlc.get("rss_mib", math.nan), 1) + ("*" if p.dlc.get("compile") == "cold" else "")


def table(points: list) -> str:
    """One markdown table of one model and axis."""
    cols = [
        points[0].axis,
        "dlc ms",
        "torch ms",
        "dlc/torch",
        "dlc GFLOP/s",
        "dlc MiB",
        "dlc RSS MiB",
        "torch RSS MiB",
        "others",
        "loss check",
    ]
    rows = [
        [
            str(p.size),
            fmt(p.ms("dlc"), 3),
            fmt(p.ms("torch"), 3),
            fmt(p.ratio),
            fmt(p.flops / p.ms("dlc") / 1e6, 1),
            fmt(dlc_mib(p), 1),
            dlc_rss(p),
            fmt(p.torch.get("rss_mib", math.nan), 1),
            fmt(p.others),
            p.check,
        ]
        for p in points
    ]
    return markdown(cols, rows)


def groups(points: list) -> dict:
    """(model, axis) -> its points, in sweep order."""
    out: dict = {}
    for p in points:
        out.setdefault((p.model, p.axis), []).append(p)
    return out


def quiet(p: Point) -> bool:
    return p.others <= BUSY


def flags(points: list) -> tuple:
    """(flags, steps not compared): where dlc is slower than torch, and its cliffs: a step
    along an axis where dlc's time grows CLIFF times faster than the work (the FLOPs) or
    than torch's time. Steps are compared only between points where the machine was quiet:
    on a busy one PyTorch's time moves tenfold, and dlc's with the cores it is left."""
    out = [
        f"{p.model} {p.axis} {p.size}: dlc/torch {p.ratio:.2f}"
        + ("" if quiet(p) else f" (others {p.others:.2f}: not comparable)")
        for p in points
        if p.ratio > 1
    ]
    skipped = 0
    for (model, axis), ps in groups(points).items():
        for a, b in zip(ps, ps[1:]):
            if not (quiet(a) and quiet(b)):
                skipped += 1
                continue
            grow, work, peer = b.ms("dlc") / a.ms("dlc"), b.flops / a.flops, b.ms("torch") / a.ms("torch")
            if grow > CLIFF * min(work, peer):  # faster than the work, or than torch's
                out.append(
                    f"{model} {axis} {a.size} -> {b.size}: dlc's time x{grow:.1f} for x{work:.1f} the FLOPs "
                    f"(torch's x{peer:.1f}): a cliff" + (", torch's too" if peer > CLIFF * work else "")
                )
    return out, skipped


def plot(points: list, path: str) -> str:
    """Step time (log-log) and dlc/torch for each model and axis, into a PNG; what was done."""
    try:
        import matplotlib
    except ImportError:
        return "plot skipped: matplotlib is not installed (pip install matplotlib)"
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.ticker import NullLocator

    by = groups(points)
    models = list(dict.fromkeys(m for m, _ in by))
    axes = [a for a in AXES if any(a == x for _, x in by)]
    fig, grid = plt.subplots(
        2 * len(models), len(axes), figsize=(4.5 * len(axes), 3.2 * 2 * len(models)), squeeze=False
    )
    for i, model in enumerate(models):
        for j, axis in enumerate(axes):
            time_ax, ratio_ax = grid[2 * i][j], grid[2 * i + 1][j]
            ps = by.get((model, axis))
            if not ps:
                time_ax.set_visible(False)
                ratio_ax.set_visible(False)
                continue
            sizes = [p.size for p in ps]
            busy = [not quiet(p) for p in ps]
            for fw, color in zip(FRAMEWORKS, ("tab:blue", "tab:orange")):
                time_ax.loglog(
                    sizes, [p.ms(fw) for p in ps], "o-", color=color, label=fw, markevery=busy, markerfacecolor="white"
                )
                time_ax.loglog(sizes, [p.ms(fw) for p in ps], "o", color=color, markevery=[not b for b in busy])
            time_ax.set_title(f"{model}: {axis}" + (" (hollow: a busy machine)" if any(busy) else ""))
            time_ax.set_ylabel("ms / step")
            time_ax.legend()
            ratio_ax.semilogx(
                sizes, [p.ratio for p in ps], "o-", color="tab:green", markevery=busy, markerfacecolor="white"
            )
            ratio_ax.semilogx(sizes, [p.ratio for p in ps], "o", color="tab:green", markevery=[not b for b in busy])
            ratio_ax.axhline(1.0, color="grey", linestyle="--")
            ratio_ax.set_ylim(bottom=0)
            ratio_ax.set_ylabel("dlc / torch")
            ratio_ax.set_xlabel(axis)
            for ax in (time_ax, ratio_ax):  # the sizes themselves on the x axis, not powers of 10
                ax.xaxis.set_minor_locator(NullLocator())
                ax.set_xticks(sizes, [str(n) for n in sizes])
    fig.tight_layout()
    fig.savefig(path, dpi=80)
    plt.close(fig)
    return f"wrote {path}"


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--only", choices=tuple(SWEEPS), action="append", help="one model (repeatable)")
    ap.add_argument("--axis", choices=AXES, action="append", help="one axis (repeatable)")
    ap.add_argument(
        "--quick",
        action="store_true",
        help=f"a smoke run: the two smallest sizes of each axis, ~{QUICK_SECONDS} s timed",
    )
    ap.add_argument("--seconds", type=float, help=f"timed seconds per framework and point (default {SECONDS})")
    ap.add_argument(
        "--wait-idle",
        type=float,
        default=0,
        metavar="S",
        help=f"before each point, wait up to S seconds until other processes use < {BUSY} cores",
    )
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--lr", type=float, default=1e-3)
    ap.add_argument("--json", metavar="PATH", help="also write every point's numbers to PATH as JSON")
    ap.add_argument(
        "--plot",
        metavar="PATH",
        default=str(HERE / "scaling.png"),
        help="the PNG of step times and ratios (default benchmarks/scaling.png)",
    )
    ap.add_argument("--child", help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.child:
        child(json.loads(args.child))
        return 0
    if args.seconds is None:
        args.seconds = QUICK_SECONDS if args.quick else SECONDS
    if args.seconds <= 0:
        ap.error("--seconds must be positive")
    points = sweep(args.only or list(SWEEPS), args.axis or list(AXES), args.quick)
    if not points:
        ap.error(f"{', '.join(args.only)} has no {' or '.join(args.axis)} axis")
    print(
        f"dlc scaling benchmark: {len(points)} points; dlc native (default threads) against torch eager "
        f"({THREADS} threads), Adam lr {args.lr}, ~{args.seconds:g} s timed per framework and point",
        flush=True,
    )
    for p in points:
        if args.wait_idle:
            wait_idle(args.wait_idle)
        measure(p, args)
        print(
            f"  {p.model} {p.axis} {p.size}: dlc {fmt(p.ms('dlc'), 3)} ms, torch {fmt(p.ms('torch'), 3)} ms, "
            f"dlc/torch {fmt(p.ratio)}, others {fmt(p.others)}; {p.check}",
            flush=True,
        )

    print(
        "\nmedian step time (ms); dlc/torch below 1: dlc is faster; dlc GFLOP/s: forward + backward FLOPs "
        "over dlc's median; dlc MiB: the training memory the native engine accounts (parameters, gradients, "
        "Adam's state, activations); RSS MiB: each framework's peak RSS growth in a process of its own (* with "
        "a native compile in it: the compile cache was cold); "
        "others: cores other processes used while timing (0 = quiet machine)"
    )
    for (model, axis), ps in groups(points).items():
        print(f"\n### {model}, {axis}\n\n{table(ps)}")
    timed = [p for p in points if p.check.startswith("ok")]
    found, skipped = flags(timed)
    print(
        "\n"
        + ("\n".join(f"FLAG {f}" for f in found) if found else "dlc is faster than torch at every point, with no cliff")
    )
    if skipped:
        print(f"note: {skipped} steps between sizes were not checked for cliffs: the machine was busy at one end")
    busy = [p for p in timed if not quiet(p)]
    if busy:
        print(
            f"note: other processes used more than a quarter of a core at {len(busy)} of {len(timed)} points "
            "(the others column): their times are not comparable"
        )
    print(plot(timed, args.plot) if timed else "plot skipped: no point was timed")
    if args.json:
        Path(args.json).write_text(
            json.dumps(
                json_safe(
                    {
                        "threads": THREADS,
                        "seconds": args.seconds,
                        "flags": found,
                        "points": [asdict(p) | {"ratio": p.ratio} for p in points],
                    }
                ),
                indent=1,
            )
            + "\n"
        )
        print(f"wrote {args.json}")
    failed = [p for p in points if not p.check.startswith("ok")]
    for p in failed:
        print(f"FAILED {p.model} {p.axis} {p.size}: {p.check}", file=sys.stderr)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
