"""Inference latency: dlc's native prediction against onnxruntime running dlc's own ONNX
export of the same model, and PyTorch eager (inference mode) on the torch.nn twin.

The four train_step.py workloads (benchmarks/workloads/), each with an `output scores =
logits` added, at batch 1 (latency) and batch 256 (throughput). Every framework starts
from the same parameters (dlc's initializers; torch through runtime/interop/torch_layout.py), and
their outputs must agree within 1e-4 before anything is timed. Each framework runs at 2
threads (torch.set_num_threads; onnxruntime's intra_op_num_threads; dlc's default).
dlc is timed through the public API, `DlcModel.predict`, as a user calls it. The three are
timed in rounds (benchmarks/rounds.py), in turn, the order rotated every round; a ratio is
the median over rounds of each round's, with its p25-p75.

    python benchmarks/predict.py
    python benchmarks/predict.py --only lstm --batch 1 --json /tmp/predict.json
"""

from __future__ import annotations

import argparse
import re
import sys
import tempfile
from pathlib import Path

import numpy as np

from machine import print_results, wait_idle
from rounds import ROUNDS, others_cell, ratio_cell, timed_row, time_o3_code
from train_step import DEFAULT_STEPS, THREADS, WORKLOAD_DIR, make_batch, torch_model, torch_state

BATCHES = (1, 256)
OUTPUT_RTOL = 1e-4
SECONDS = 0.25  # timed seconds of each framework in a round, at a point


def inputs_of(name: str, batch: int, seed: int) -> dict:
    """The workload's model inputs (its targets left out) for `batch` examples: train_step's
    batch, its examples repeated or cut to that many."""
    full = make_batch(name, seed)
    return {k: np.resize(v, (batch,) + v.shape[1:]) for k, v in full.items() if k != "y"}


def dlc_model(name: str, folder: Path, seed: int):
    """The workload as a DlcModel with an output, and its initial parameters."""
    from dlc.runtime.api import DlcModel
    from dlc.runtime.training.trainer import initial_parameters

    text = (WORKLOAD_DIR / f"{name}.dl").read_text()
    text = re.sub(r"\}\s*$", "    output scores = logits\n}\n", text)
    path = folder / f"{name}.dl"
    path.write_text(text)
    model = DlcModel(str(path), backend="native")
    model.params = initial_parameters(model.train_model, seed)
    return model


def onnx_session(model, folder: Path):
    import onnxruntime as ort
    from dlc.compiler.onnx.export import save_onnx

    path = folder / f"{model.name}.onnx"
    save_onnx(model.eval_model, model.params, path)
    options = ort.SessionOptions()
    options.intra_op_num_threads, options.inter_op_num_threads = THREADS, 1
    return ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])


def run_point(name: str, batch: int, frameworks: dict, seed: int, rounds: int = ROUNDS) -> dict:
    feeds = inputs_of(name, batch, seed)
    outputs = {k: np.asarray(fn(feeds)) for k, fn in frameworks.items()}
    ref = outputs["dlc"]
    for k, out in outputs.items():
        err = np.abs(out - ref).max() / max(np.abs(ref).max(), 1e-30)
        if out.shape != ref.shape or err > OUTPUT_RTOL:
            raise SystemExit(f"{name}, batch {batch}: {k}'s outputs differ from dlc's ({out.shape}, {err:.2e})")
    return timed_row(
        {k: (lambda fn=fn: fn(feeds)) for k, fn in frameworks.items()},
        {"workload": name, "batch": batch},
        f"{name} batch {batch}",
        rounds,
        SECONDS,
    )


def frameworks_for(name: str, folder: Path, seed: int) -> dict:
    import torch

    model = dlc_model(name, folder, seed)
    session = onnx_session(model, folder)
    twin = torch_model(name, torch)
    twin.load_state_dict(
        {k: torch.from_numpy(np.ascontiguousarray(v, np.float32)) for k, v in torch_state(name, model.params).items()},
        strict=True,
    )
    twin.eval()
    # torch's inference fast path for encoder layers gives outputs 4e-4 apart from the
    # layers as written (the workload's tanh-approximated GELU, pre-LN): time the layers as written
    torch.backends.mha.set_fastpath_enabled(False)

    def torch_run(feeds):
        with torch.inference_mode():
            return twin(
                {
                    k: torch.from_numpy(v) if v.dtype != np.int32 else torch.from_numpy(v.astype(np.int64))
                    for k, v in feeds.items()
                }
            ).numpy()

    return {
        "dlc": lambda feeds: model.predict(feeds, batch=len(next(iter(feeds.values()))))["scores"],
        "onnxruntime": lambda feeds: session.run(["scores"], feeds)[0],
        "torch": torch_run,
    }


def table(rows: list) -> str:
    head = (
        "| workload | batch | dlc ms | onnxruntime ms | torch ms | dlc/onnxruntime (p25-p75) | dlc/torch (p25-p75) "
        "| others of each round |"
    )
    lines = [head, "|" + "---|" * (head.count("|") - 1)]
    for r in rows:
        lines.append(
            f"| {r['workload']} | {r['batch']} | {r['dlc']:.3f} | {r['onnxruntime']:.3f} | {r['torch']:.3f} | "
            f"{ratio_cell(r['dlc/onnxruntime'])} | {ratio_cell(r['dlc/torch'])} | {others_cell(r['others'])} |"
        )
    return "\n".join(lines)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--only", choices=tuple(DEFAULT_STEPS), action="append", help="this workload only (repeatable)")
    ap.add_argument("--batch", type=int, action="append", help=f"batch sizes (default {BATCHES})")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--rounds", type=int, default=ROUNDS, help=f"rounds of every framework in turn (default {ROUNDS})")
    ap.add_argument(
        "--wait-idle",
        type=float,
        default=0,
        metavar="S",
        help="before each workload, wait up to S seconds until other processes use < 0.25 cores",
    )
    ap.add_argument("--json", metavar="PATH", help="also write the rows to PATH as JSON")
    args = ap.parse_args(argv)
    time_o3_code()
    import onnxruntime
    import torch

    torch.set_num_threads(THREADS)
    print(
        f"dlc prediction against onnxruntime {onnxruntime.__version__} and torch {torch.__version__} eager, "
        f"{THREADS} threads; median ms per call over {args.rounds} rounds of about {SECONDS} s of each, the frameworks "
        "in turn; ratios: the median over rounds of each round's ratio"
    )
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for name in args.only or list(DEFAULT_STEPS):
            if args.wait_idle:
                wait_idle(args.wait_idle)
            frameworks = frameworks_for(name, Path(tmp), args.seed)
            for batch in args.batch or BATCHES:
                rows.append(run_point(name, batch, frameworks, args.seed, args.rounds))
                print(
                    f"  {name} batch {batch}: " + ", ".join(f"{k} {rows[-1][k]:.3f} ms" for k in frameworks), flush=True
                )
    print_results(table(rows), rows, args.json)
    return 0


if __name__ == "__main__":
    sys.exit(main())
