"""Built libraries (`dlc build`, docs/deploy.md) on benchmarks/predict.py's four workloads:
the library's size without and with its weights, dlopen and create time, the first predict
(which packs the weights too) and predict latency from C (deploy_timer.c, through the array
API) at batch 1 and 256, against
onnxruntime on dlc's ONNX export of the same model: from C too (onnxruntime_timer.c, on
the C library pip's wheel ships in onnxruntime/capi/) when `--onnxruntime-include` gives
the folder of an onnxruntime release's `onnxruntime_c_api.h` (pip's wheel has no header),
else through its Python API; the table says which. The C outputs must agree with
onnxruntime's within 1e-4 before anything is timed. The two are timed in rounds
(benchmarks/rounds.py), in turn: in each, the C timer runs for a share of `--seconds` and gives
its median call (the C library's `load`, `create` and first predict are those of the first
run, before the rounds). Both run on THREADS threads; the library's thread pool keeps its
workers awake between the timer's back-to-back calls (DLC_SPIN, docs/native.md).

    python benchmarks/deploy.py
    python benchmarks/deploy.py --only mlp --batch 1 --seconds 0.2 --json /tmp/deploy.json
    python benchmarks/deploy.py --onnxruntime-include onnxruntime-linux-x64-1.32.0/include
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np

from machine import print_results, wait_idle
from predict import BATCHES, OUTPUT_RTOL, dlc_model, inputs_of, onnx_session
from rounds import ROUNDS, interleave, others_cell, ratio_cell, timed, wide_note, time_o3_code
from train_step import DEFAULT_STEPS, THREADS

HERE = Path(__file__).resolve().parent


def build(model, folder: Path, embed: bool) -> Path:
    """The workload's library, without or with its weights; returns its folder."""
    from dlc.runtime.interop import checkpoint

    ckpt = folder / "weights.npz"
    checkpoint.save(ckpt, model.params, {}, {})
    out = folder / ("embedded" if embed else "library")
    args = [sys.executable, "-m", "dlc.runtime.cli", "build", str(model.path), "-o", str(out)]
    r = subprocess.run(
        args + (["--weights", str(ckpt), "--embed-weights"] if embed else []), capture_output=True, text=True
    )
    if r.returncode:
        raise SystemExit(f"dlc build {model.name} failed: {r.stderr}")
    return out


def timer(folder: Path) -> Path:
    exe = folder / "deploy_timer"
    if not exe.exists():
        subprocess.run(["cc", "-O2", str(HERE / "deploy_timer.c"), "-ldl", "-o", str(exe)], check=True)
    return exe


def c_point(
    exe: Path, lib: Path, name: str, ckpt, feeds: dict, seconds: float, folder: Path, threads: int = THREADS
) -> dict:
    (x,) = feeds.values()
    x.tofile(folder / "x.bin")
    r = subprocess.run(
        [
            str(exe),
            str(lib / f"lib{name}.so"),
            name,
            str(ckpt),
            str(folder / "x.bin"),
            str(seconds),
            str(threads),
            str(folder / "y.bin"),
            *map(str, x.shape),
        ],
        capture_output=True,
        text=True,
    )
    if r.returncode:
        raise SystemExit(f"{name}: {r.stderr}")
    load_ms, create_ms, first_ms, predict_ms, calls = r.stdout.split()
    return {
        "load_ms": float(load_ms),
        "create_ms": float(create_ms),
        "first_ms": float(first_ms),
        "c_ms": float(predict_ms),
        "output": np.fromfile(folder / "y.bin", np.float32),
    }


def onnxruntime_timer(folder: Path, include: Path) -> Path:
    """onnxruntime_timer.c linked with the onnxruntime library of pip's wheel."""
    import onnxruntime

    capi = Path(onnxruntime.__file__).parent / "capi"
    libs = sorted(capi.glob("libonnxruntime.so*"))
    if not libs:
        raise SystemExit(f"no libonnxruntime.so in {capi}")
    if not (include / "onnxruntime_c_api.h").exists():
        raise SystemExit(f"no onnxruntime_c_api.h in {include}: give the include folder of an onnxruntime release")
    exe = folder / "onnxruntime_timer"
    if not exe.exists():
        # the wheel's file is libonnxruntime.so.1.32.0, its soname libonnxruntime.so.1: a link of that name here
        soname = folder / ("libonnxruntime.so." + libs[-1].name.split(".so.")[1].split(".")[0])
        soname.symlink_to(libs[-1])
        subprocess.run(
            [
                "cc",
                "-O2",
                str(HERE / "onnxruntime_timer.c"),
                f"-I{include}",
                str(soname),
                f"-Wl,-rpath,{folder}",
                "-o",
                str(exe),
            ],
            check=True,
        )
    return exe


def onnxruntime_c_point(exe: Path, onnx: Path, input_name: str, feeds: dict, seconds: float, folder: Path) -> tuple:
    """(median ms of a Run from C, the output)."""
    (x,) = feeds.values()
    x.tofile(folder / "x_ort.bin")
    dtype = {"float32": "f32", "int32": "i32", "int64": "i64"}[x.dtype.name]
    r = subprocess.run(
        [
            str(exe),
            str(onnx),
            str(folder / "x_ort.bin"),
            str(seconds),
            str(THREADS),
            str(folder / "y_ort.bin"),
            input_name,
            "scores",
            dtype,
            *map(str, x.shape),
        ],
        capture_output=True,
        text=True,
    )
    if r.returncode:
        raise SystemExit(f"onnxruntime from C: {r.stderr}")
    _, ms, _ = r.stdout.split()
    return float(ms), np.fromfile(folder / "y_ort.bin", np.float32)


def process_slot(run):
    """A rounds slot from a C timer's run (a function of no arguments giving its median ms):
    one run a round, whatever the steps, its median as the round's step."""
    return lambda n: ([run() / 1e3], [None])


def run_workload(
    name: str, batches, seconds: float, folder: Path, seed: int, include: Path | None, rounds: int
) -> list:
    import onnxruntime  # noqa: F401  (fails early when missing)

    work = folder / name
    work.mkdir()
    model = dlc_model(name, work, seed)
    plain, embedded = build(model, work, False), build(model, work, True)
    session = onnx_session(model, work)
    exe = timer(folder)
    ort_exe = onnxruntime_timer(folder, include) if include else None
    rows = []
    for batch in batches:
        feeds = inputs_of(name, batch, seed)
        share = seconds / rounds
        c = c_point(exe, plain, model.name, work / "weights.npz", feeds, share, work)
        if ort_exe is not None:

            def ort_run(feeds=feeds):
                return onnxruntime_c_point(
                    ort_exe, work / f"{model.name}.onnx", session.get_inputs()[0].name, feeds, share, work
                )

            ort_out = ort_run()[1]
            ort_slot = process_slot(lambda: ort_run()[0])
        else:
            ort_out = session.run(["scores"], feeds)[0]
            ort_slot = timed(lambda: session.run(["scores"], feeds))
        err = np.abs(c["output"] - ort_out.ravel()).max() / max(np.abs(ort_out).max(), 1e-30)
        if err > OUTPUT_RTOL:
            raise SystemExit(f"{name}, batch {batch}: the library's outputs differ from onnxruntime's ({err:.2e})")
        c_slot = process_slot(lambda: c_point(exe, plain, model.name, work / "weights.npz", feeds, share, work)["c_ms"])
        # the Python API's calls fill about the C timer's share of a round
        measured = interleave({"c": c_slot, "onnxruntime": ort_slot}, rounds, warmup=1, seconds_each=share)
        ratio = measured.ratio("c", "onnxruntime")
        if note := wide_note(f"{name} batch {batch}", {"C/onnxruntime": ratio}):
            print(note, flush=True)
        rows.append(
            {
                "workload": name,
                "batch": batch,
                "so_kb": (plain / f"lib{model.name}.so").stat().st_size / 1024,
                "so_weights_kb": (embedded / f"lib{model.name}.so").stat().st_size / 1024,
                "load_ms": c["load_ms"],
                "create_ms": c["create_ms"],
                "first_ms": c["first_ms"],
                "c_ms": measured.median_s("c") * 1e3,
                "onnxruntime_ms": measured.median_s("onnxruntime") * 1e3,
                "C/onnxruntime": vars(ratio),
                "onnxruntime_api": "C" if ort_exe is not None else "Python",
                "others": measured.others,
            }
        )
    return rows


def table(rows: list) -> str:
    api = rows[0]["onnxruntime_api"] if rows else "C"
    head = (
        "| workload | batch | .so KB | .so with weights KB | dlopen ms | create ms | first predict ms | C predict ms | "
        f"onnxruntime ms ({api} API) | C/onnxruntime (p25-p75) | others of each round |"
    )
    lines = [head, "|" + "---|" * (head.count("|") - 1)]
    for r in rows:
        lines.append(
            f"| {r['workload']} | {r['batch']} | {r['so_kb']:.0f} | {r['so_weights_kb']:.0f} | "
            f"{r['load_ms']:.2f} | {r['create_ms']:.2f} | {r['first_ms']:.3f} | {r['c_ms']:.3f} | "
            f"{r['onnxruntime_ms']:.3f} | {ratio_cell(r['C/onnxruntime'])} | {others_cell(r['others'])} |"
        )
    return "\n".join(lines)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--only", choices=tuple(DEFAULT_STEPS), action="append", help="this workload only (repeatable)")
    ap.add_argument("--batch", type=int, action="append", help=f"batch sizes (default {BATCHES})")
    ap.add_argument(
        "--seconds", type=float, default=1.0, help="timed seconds of each at a point, over its rounds (default 1)"
    )
    ap.add_argument("--rounds", type=int, default=ROUNDS, help=f"rounds of both in turn (default {ROUNDS})")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument(
        "--wait-idle",
        type=float,
        default=0,
        metavar="S",
        help="before each workload, wait up to S seconds until other processes use < 0.25 cores",
    )
    ap.add_argument("--json", metavar="PATH", help="also write the rows to PATH as JSON")
    ap.add_argument(
        "--onnxruntime-include",
        dest="include",
        type=Path,
        metavar="DIR",
        help="the include folder of an onnxruntime release (onnxruntime_c_api.h): onnxruntime is timed "
        "from C too (default: through its Python API)",
    )
    args = ap.parse_args(argv)
    time_o3_code()
    import onnxruntime

    print(
        f"dlc-built libraries from C against onnxruntime {onnxruntime.__version__} "
        f"({'C' if args.include else 'Python'} API), {THREADS} threads; median ms per call over {args.rounds} rounds, "
        "the two in turn; C/onnxruntime: the median over rounds of each round's ratio"
    )
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for name in args.only or list(DEFAULT_STEPS):
            if args.wait_idle:
                wait_idle(args.wait_idle)
            rows += run_workload(
                name, args.batch or BATCHES, args.seconds, Path(tmp), args.seed, args.include, args.rounds
            )
            print(
                f"  {name}: "
                + ", ".join(f"batch {r['batch']} C {r['c_ms']:.3f} ms" for r in rows if r["workload"] == name),
                flush=True,
            )
    print_results(table(rows), rows, args.json)
    return 0


if __name__ == "__main__":
    sys.exit(main())
