"""Imported models: torchvision's mobilenet_v2 and efficientnet_b0 (random weights, no
download; tools/real_models.py) exported by torch.onnx.export (TorchScript exporter, opset
17, a dynamic batch) at 3 x 224 x 224, imported by `dlc import`, and predicted natively
against onnxruntime running the same ONNX file.

onnxruntime runs at 2 threads (intra_op_num_threads), dlc at its default: every core
other processes leave free, at most the machine's 2 (runtime/engines/cores.py); with
`--threads N`, both at N (DLC_NUM_THREADS). Their
outputs must agree within 1e-5 (relative to the largest) before anything is timed; the
calls are timed in rounds (benchmarks/rounds.py), dlc and onnxruntime in turn, so that both
see the same load from other processes, which `others` reports for each round. Also the import's time and the native compile's, cold
(an empty compile cache) and cached (the time to the first prediction of a new model
object once the cache holds the code).

    python benchmarks/imported.py
    python benchmarks/imported.py --only mobilenet_v2 --batch 8 --json /tmp/imported.json
    python benchmarks/imported.py --threads 1
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
import warnings
from pathlib import Path

import numpy as np

from machine import print_results
from rounds import ROUNDS, others_cell, ratio_cell, timed_row, time_o3_code

MODELS = ("mobilenet_v2", "efficientnet_b0")
BATCHES = (8, 1)
THREADS = 2
IMAGE = (3, 224, 224)
OUTPUT_RTOL = 1e-5
SECONDS = 0.5  # timed seconds of each in a round, at a point


def exported(name: str, path: Path):
    """The torchvision model with random weights (seed 0) exported at IMAGE with a dynamic batch;
    tools/real_models.py exports its classifiers at 64 x 64, these are timed at ImageNet's size."""
    import torch
    from dlc.tools.real_models import MODELS as REAL

    torch.manual_seed(0)
    model = REAL[name].build().eval()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(
            model,
            (torch.zeros(1, *IMAGE),),
            str(path),
            input_names=["x"],
            output_names=["y"],
            opset_version=17,
            dynamic_axes={"x": {0: "batch"}, "y": {0: "batch"}},
            dynamo=False,
        )


def imported(onnx_path: Path, folder: Path) -> tuple:
    """`dlc import` of the file: the .dl program, its weights, and the seconds it took."""
    from dlc.runtime.cli import main

    t0 = time.perf_counter()
    out = folder / (onnx_path.stem + ".dl")
    if main(["import", str(onnx_path), "-o", str(out)]) != 0:
        raise SystemExit(f"dlc import {onnx_path} failed")
    return out, out.with_suffix(".npz"), time.perf_counter() - t0


def first_prediction_s(program: Path, weights: Path, feeds: dict):
    """A new native model object and its first prediction: (the model, seconds)."""
    from dlc.runtime.api import DlcModel

    t0 = time.perf_counter()
    model = DlcModel(str(program), backend="native").load_weights(str(weights))
    model.predict(feeds, batch=len(feeds["x"]))
    return model, time.perf_counter() - t0


def onnxruntime_session(path: Path, threads: int, fused: bool = True):
    """onnxruntime on `threads` threads, its pool not spinning after a call: its spinning
    threads take the cores from dlc, timed in turn with it in this process (mobilenet_v2 at
    batch 1: dlc 6.3 ms alone, 11.4 interleaved with a spinning pool, 6.9 with one that
    sleeps), while onnxruntime runs these models no slower for it (5.2 ms alone, 7.2
    spinning). benchmarks/predict.py keeps the default: on its small models the spinning
    pool is onnxruntime's speed (the MLP at batch 1: 0.03 ms spinning, 0.11 not). `fused`
    False: its graph optimizations off, every node run as the file has it."""
    import onnxruntime as ort

    options = ort.SessionOptions()
    if not fused:
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    options.intra_op_num_threads, options.inter_op_num_threads = threads, 1
    options.add_session_config_entry("session.intra_op.allow_spinning", "0")
    return ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])


def run_model(name: str, batches, folder: Path, threads: int, rounds: int) -> list:
    onnx_path = folder / f"{name}.onnx"
    exported(name, onnx_path)
    program, weights, import_s = imported(onnx_path, folder)
    session = onnxruntime_session(onnx_path, threads)
    rows = []
    for k, batch in enumerate(batches):
        feeds = {"x": np.random.default_rng(batch).standard_normal((batch, *IMAGE)).astype(np.float32)}
        if k == 0:
            _, cold_s = first_prediction_s(program, weights, feeds)  # an empty cache: compiles
        model, cached_s = first_prediction_s(program, weights, feeds)
        got, want = model.predict(feeds, batch=batch)["y"], session.run(["y"], feeds)[0]
        err = float(np.abs(got - want).max() / np.abs(want).max())
        if got.shape != want.shape or err > OUTPUT_RTOL:
            raise SystemExit(f"{name}, batch {batch}: dlc's outputs differ from onnxruntime's ({got.shape}, {err:.2e})")
        row = timed_row(
            {"dlc": lambda: model.predict(feeds, batch=batch), "onnxruntime": lambda: session.run(["y"], feeds)},
            {
                "model": name,
                "batch": batch,
                "error": err,
                "import_s": import_s,
                "compile_cold_s": cold_s,
                "compile_cached_s": cached_s,
            },
            f"{name} batch {batch}",
            rounds,
            SECONDS,
        )
        rows.append(row)
        print(
            f"  {name} batch {batch}: dlc {row['dlc']:.1f} ms, onnxruntime {row['onnxruntime']:.1f} ms, "
            f"dlc/onnxruntime {ratio_cell(row['dlc/onnxruntime'])} (others {others_cell(row['others'])})",
            flush=True,
        )
    return rows


def table(rows: list) -> str:
    head = (
        "| model | batch | dlc ms | onnxruntime ms | dlc/onnxruntime (p25-p75) | max rel. error | import s | "
        "compile s cold / cached | others of each round |"
    )
    lines = [head, "|" + "---|" * (head.count("|") - 1)]
    for r in rows:
        lines.append(
            f"| {r['model']} | {r['batch']} | {r['dlc']:.1f} | {r['onnxruntime']:.1f} | "
            f"{ratio_cell(r['dlc/onnxruntime'])} | {r['error']:.1e} | {r['import_s']:.1f} | "
            f"{r['compile_cold_s']:.1f} / {r['compile_cached_s']:.1f} | {others_cell(r['others'])} |"
        )
    return "\n".join(lines)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--only", choices=MODELS, action="append", help="this model only (repeatable)")
    ap.add_argument("--batch", type=int, action="append", help=f"batch sizes (default {BATCHES})")
    ap.add_argument(
        "--threads",
        type=int,
        metavar="N",
        help=f"onnxruntime's and dlc's threads (default: onnxruntime {THREADS}, dlc its default)",
    )
    ap.add_argument("--rounds", type=int, default=ROUNDS, help=f"rounds of both in turn (default {ROUNDS})")
    ap.add_argument("--json", metavar="PATH", help="also write the rows to PATH as JSON")
    args = ap.parse_args(argv)
    time_o3_code()
    threads = args.threads or THREADS
    import onnxruntime
    import torch
    from dlc.tools.real_models import torchvision_models

    try:
        torchvision_models()
    except ImportError as e:
        raise SystemExit(
            f"imported.py needs torchvision's model definitions ({e}): "
            "pip install --no-deps torchvision==0.28.0, as .ci/run does"
        ) from None
    dlc_threads = args.threads or "dlc's default"
    print(
        f"dlc native prediction of imported models ({dlc_threads} threads) against onnxruntime "
        f"{onnxruntime.__version__} ({threads} threads); median ms per call over {args.rounds} rounds of about "
        f"{SECONDS} s of each, the two in turn; dlc/onnxruntime: the median over rounds of each round's ratio"
    )
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        # a compile cache of its own, empty: the first compile of each model is cold
        os.environ["DLC_CACHE_DIR"] = str(Path(tmp) / "cache")
        if args.threads:
            os.environ["DLC_NUM_THREADS"] = str(args.threads)
        torch.set_num_threads(threads)
        for name in args.only or MODELS:
            rows += run_model(name, args.batch or BATCHES, Path(tmp), threads, args.rounds)
    print_results(table(rows), rows, args.json)
    return 0


if __name__ == "__main__":
    sys.exit(main())
