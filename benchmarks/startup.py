"""Start-up of a CLI call, phase by phase: what `dlc check FILE` pays before and after it
reads the user's file, and with --train what `dlc train FILE` pays up to the end of its
first step (dlc issues 36 and 37).

    python benchmarks/startup.py [FILE] [--runs N]
    python benchmarks/startup.py --train [FILE ...] [--runs N]

Each run is a fresh process. Cold: an empty dlc cache directory (DLC_CACHE_DIR), so the
grammar's tables and the parsed standard library are built and written; warm: the same
directory again, so both are read. The phases, in the child process:

  import     `import dlc.runtime.cli` and its arguments parsed as `dlc check`'s: the modules
             `check` uses, imported as it imports them (numpy's BLAS on one thread, the
             garbage collector paused, then what was imported frozen: runtime/cli)
  grammar    the Lark parser (its tables built, or read from the cache)
  stdlib     the standard library parsed (or read) and defined
  user file  the user's file parsed and loaded
  check      what `dlc check` does then: the model checked (Program.check), the train block too
  process    the whole `dlc check FILE` command in a new interpreter, as a shell runs it

The median of --runs runs is shown, in milliseconds: the wall time, and the CPU time of
the phases (on a busy machine the wall time waits for a core; the CPU time does not), and
`others`: the cores other processes used meanwhile (0 = a quiet machine).

With --train, each file is trained through the Python API (`dlc.load(FILE).train()`, what
`dlc train` runs) in a fresh process, stopped after its first step. Cold: an empty compile
cache but dlc's GEMM kernels built (they are compiled once per machine and dlc version,
first, and copied into each cold run's cache: docs/native.md, Cache); warm: the same cache
again. The phases:

  import      `import dlc` and the trainer's modules
  load        the file loaded: grammar, standard library, the user's file, both modes built
  compile     the data read and the native train step built and compiled (or read)
  first step  the first step's batch and its call
  process     the interpreter's start to the end of the first step, as the parent saw it
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from machine import OtherLoad

ROOT = Path(__file__).resolve().parent.parent
PHASES = ("import", "grammar", "stdlib", "user file", "check")
TRAIN_PHASES = ("import", "load", "compile", "first step")


def phases(path: str) -> dict:
    """The phases of one `dlc check`, in this (fresh) process, in seconds."""
    times, t = {}, (time.perf_counter(), time.process_time())

    def lap(name):
        nonlocal t
        now = (time.perf_counter(), time.process_time())
        times[name], times[name + " cpu"], t = now[0] - t[0], now[1] - t[1], now

    from dlc.runtime import cli

    cli._imported(["check", path])  # as `dlc check` parses its arguments: its command's module imported
    from dlc.compiler.frontend import loader, syntax
    from dlc.runtime.training.config import make_config

    lap("import")
    syntax._parser()
    lap("grammar")
    loader.stdlib_env()
    lap("stdlib")
    program = loader.load(path)
    lap("user file")
    train = program.check(None)
    make_config(program, train.name, {}, require_data=False, model=train)
    lap("check")
    times["from source"] = len(compiled_from_source())
    return times


def compiled_from_source() -> list:
    """dlc's modules imported in this process without their bytecode (none in __pycache__, or
    older than the source): compiled from source in each process, as where
    PYTHONDONTWRITEBYTECODE is set and nothing compiled them (an install compiles them once)."""
    names = []
    for name, module in list(sys.modules.items()):
        source = getattr(module, "__file__", None)
        if name.split(".")[0] == "dlc" and source and source.endswith(".py"):
            cached = Path(importlib.util.cache_from_source(source))
            if not cached.exists() or cached.stat().st_mtime < Path(source).stat().st_mtime:
                names.append(name)
    return names


def train_phases(path: str, out: str) -> dict:
    """The phases of `dlc train` up to the end of its first step, in this (fresh) process."""
    times, t = {}, (time.perf_counter(), time.process_time())

    def lap(name):
        nonlocal t
        now = (time.perf_counter(), time.process_time())
        times[name], times[name + " cpu"], t = now[0] - t[0], now[1] - t[1], now

    import dlc
    from dlc.runtime.training import trainer  # noqa: F401  (the modules `dlc train` imports)
    from dlc.runtime.engines import native  # noqa: F401

    lap("import")
    model = dlc.load(path, backend="native")  # both modes built
    lap("load")

    class FirstStep(dlc.Callback):
        def on_train_begin(self, logs):
            lap("compile")

        def on_batch_end(self, step, logs):
            if step == 1:
                lap("first step")
                times["at"] = time.time()
                self.model.stop_training = True

    model.train(out=out, progress="none", overwrite=True, callbacks=[FirstStep()])
    return times


def run(path: str, cache: str, command: bool) -> dict:
    env = dict(os.environ, DLC_CACHE_DIR=cache)
    if command:
        t = time.perf_counter()
        subprocess.run(
            [sys.executable, "-m", "dlc.runtime.cli", "check", path], env=env, check=True, stdout=subprocess.DEVNULL
        )
        return {"process": time.perf_counter() - t}
    out = subprocess.run(
        [sys.executable, __file__, "--child", path], env=env, check=True, capture_output=True, text=True
    ).stdout
    return json.loads(out)


def run_train(path: str, cache: str, out: str) -> dict:
    env = dict(os.environ, DLC_CACHE_DIR=cache)
    t = time.time()
    result = subprocess.run(
        [sys.executable, __file__, "--train-child", path, out], env=env, check=True, capture_output=True, text=True
    ).stdout
    times = json.loads(result.splitlines()[-1])
    times["process"] = times.pop("at") - t  # to the end of the first step (the run goes on after it)
    return times


def main_train(files: list, runs: int):
    with tempfile.TemporaryDirectory() as root:
        kernels = Path(root) / "kernels"
        t = time.perf_counter()
        subprocess.run(
            [sys.executable, "-c", "from dlc.runtime.engines.cache import gemm_symbols; gemm_symbols()"],
            env=dict(os.environ, DLC_CACHE_DIR=str(kernels)),
            check=True,
            stderr=subprocess.DEVNULL,
        )
        print(
            f"dlc's GEMM kernels compiled in {time.perf_counter() - t:.2f} s (once per machine; in every cold "
            f"run's cache below)\n"
        )
        print(f"dlc train FILE, to the end of its first step: median of {runs} fresh processes, ms")
        print(
            f"{'file':<28} {'':<5} " + " ".join(f"{p:>10}" for p in TRAIN_PHASES + ("process",)) + f" {'CPU':>7}"
            f" {'others':>7}"
        )
        for path in files:
            results = {"cold": [], "warm": []}
            with OtherLoad() as other:
                for i in range(runs):
                    cache = Path(root) / f"cache-{Path(path).stem}-{i}"
                    shutil.copytree(kernels, cache)
                    results["cold"].append(run_train(path, str(cache), str(Path(root) / "run")))
                    results["warm"].append(run_train(path, str(cache), str(Path(root) / "run")))
            for kind, rs in results.items():
                cells = [f"{1000 * statistics.median(r[p] for r in rs):>10.0f}" for p in TRAIN_PHASES + ("process",)]
                cpu = statistics.median(sum(r[p + " cpu"] for p in TRAIN_PHASES) for r in rs)
                print(
                    f"{Path(path).name:<28} {kind:<5} " + " ".join(cells) + f" {1000 * cpu:>7.0f} {other.cores:>7.2f}"
                )


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("file", nargs="*", default=[str(ROOT / "examples" / "digits_cnn.dl")])
    p.add_argument("--runs", type=int, default=5)
    p.add_argument("--train", action="store_true", help="the phases of dlc train FILE ... to its first step")
    p.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    p.add_argument("--train-child", action="store_true", help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.train_child:
        print(json.dumps(train_phases(*args.file)))
        return
    if args.train:
        main_train(args.file, args.runs)
        return
    if len(args.file) != 1:
        p.error("dlc check's start-up takes one file")
    args.file = args.file[0]
    if args.child:
        print(json.dumps(phases(args.file)))
        return
    results = {"cold": [], "warm": []}
    with OtherLoad() as other:
        for _ in range(args.runs):
            for command in (False, True):
                with tempfile.TemporaryDirectory() as cache:
                    cold = run(args.file, cache, command)
                    warm = run(args.file, cache, command)
                results["cold"].append(cold)
                results["warm"].append(warm)
    print(f"dlc check {args.file}: median of {args.runs} fresh processes, ms (others {other.cores:.2f} cores)")
    from_source = max(r.get("from source", 0) for r in results["warm"])
    if from_source:
        print(
            f"note: {from_source} of dlc's modules have no bytecode here (PYTHONDONTWRITEBYTECODE?) and were compiled "
            f"from source in every process: the import phase is longer than an install's "
            f"(`python -m compileall` on dlc's folder writes it)"
        )
    print(f"{'phase':<10} {'cold':>8} {'warm':>8} {'cold cpu':>9} {'warm cpu':>9}")
    for phase in PHASES + ("total", "process"):
        cells = []
        for suffix in ("", " cpu"):
            for kind in ("cold", "warm"):
                runs = [r for r in results[kind] if ("process" in r) == (phase == "process")]
                if phase == "process" and suffix:
                    cells.append(f"{'':>9}")
                    continue
                values = [sum(r[k + suffix] for k in PHASES) if phase == "total" else r[phase + suffix] for r in runs]
                cells.append(f"{1000 * statistics.median(values):{8 + len(suffix) // 4}.0f}")
        print(f"{phase:<10} {' '.join(cells)}")


if __name__ == "__main__":
    main()
