"""Start-up of a CLI call, phase by phase: what `dlc check FILE` pays before and after it
reads the user's file (dlc issues 36 and 37).

    python benchmarks/startup.py [FILE] [--runs N]

Each run is a fresh process. Cold: an empty dlc cache directory (DLC_CACHE_DIR), so the
grammar's tables and the parsed standard library are built and written; warm: the same
directory again, so both are read. The phases, in the child process:

  import     `import dlc.runtime.cli`, its argument parser, and the modules `check` uses
  grammar    the Lark parser (its tables built, or read from the cache)
  stdlib     the standard library parsed (or read) and defined
  user file  the user's file parsed and loaded
  check      what `dlc check` does then: both modes built, the train block checked
  process    the whole `dlc check FILE` command in a new interpreter, as a shell runs it

The median of --runs runs is shown, in milliseconds: the wall time, and the CPU time of
the phases (on a busy machine the wall time waits for a core; the CPU time does not).
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PHASES = ("import", "grammar", "stdlib", "user file", "check")


def phases(path: str) -> dict:
    """The phases of one `dlc check`, in this (fresh) process, in seconds."""
    times, t = {}, (time.perf_counter(), time.process_time())

    def lap(name):
        nonlocal t
        now = (time.perf_counter(), time.process_time())
        times[name], times[name + " cpu"], t = now[0] - t[0], now[1] - t[1], now

    from dlc.runtime import cli
    cli.parser()
    from dlc.compiler.frontend import loader, syntax
    from dlc.runtime.training.config import make_config
    lap("import")
    syntax._parser()
    lap("grammar")
    loader.stdlib_env()
    lap("stdlib")
    program = loader.load(path)
    lap("user file")
    train = program.build(None, training=True)
    program.build(None, training=False)
    make_config(program, train.name, {}, require_data=False, model=train)
    lap("check")
    return times


def run(path: str, cache: str, command: bool) -> dict:
    env = dict(os.environ, DLC_CACHE_DIR=cache)
    if command:
        t = time.perf_counter()
        subprocess.run([sys.executable, "-m", "dlc.runtime.cli", "check", path], env=env, check=True,
                       stdout=subprocess.DEVNULL)
        return {"process": time.perf_counter() - t}
    out = subprocess.run([sys.executable, __file__, "--child", path], env=env, check=True,
                         capture_output=True, text=True).stdout
    return json.loads(out)


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("file", nargs="?", default=str(ROOT / "examples" / "digits_cnn.dl"))
    p.add_argument("--runs", type=int, default=5)
    p.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.child:
        print(json.dumps(phases(args.file)))
        return
    results = {"cold": [], "warm": []}
    for _ in range(args.runs):
        for command in (False, True):
            with tempfile.TemporaryDirectory() as cache:
                cold = run(args.file, cache, command)
                warm = run(args.file, cache, command)
            results["cold"].append(cold)
            results["warm"].append(warm)
    print(f"dlc check {args.file}: median of {args.runs} fresh processes, ms")
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
