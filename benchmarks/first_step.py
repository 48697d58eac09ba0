"""The first training step of a standard model, as a person who changed the model waits for
it: each framework's first step in a process of its own, in rounds. dlc's is engine
construction and the first step (the quick code a run starts with, docs/native.md "Quick
code first"), in an empty compile cache (`empty`) and again in the cache that run left
(`warm`); its GEMM routines, compiled once per machine, are compiled first in the empty cache
and timed apart (`gemm`). PyTorch eager's is the optimizer and the first step, the model
made before the clock; `--compile` adds torch.compile's (minutes at 224 pixels). Every first-step loss is
checked against eager PyTorch's, from the same initial parameters.

    python benchmarks/first_step.py        # ResNet-18 and MobileNetV2 at 224 x 224, batch 32;
                                           # the small BERT-shaped encoder, batch 8
    python benchmarks/first_step.py --only resnet18 --image 64 --rounds 1
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

from machine import OtherLoad, print_results
from models import BERT, image_batch, torchvision_model, twin_of
from rounds import others_cell
from train_step import DEFAULT_BATCH, LOSS_RTOL, DlcRunner, TorchRunner, load_workload, make_batch, markdown, rel
from train_step import torch_state as workload_torch_state

MODELS = ("resnet18", "mobilenet_v2", "bert_encoder")
FRAMEWORKS = ("dlc_empty", "dlc_warm", "torch", "torch_compile")


def child(framework: str, name: str, args) -> dict:
    """One framework's first step of `name` in this process: {"first_s", "loss"} (dlc's also
    "gemm_s", its GEMM routines' compile or read)."""
    import numpy as np

    from dlc.runtime.training.gradcheck import init_params

    if name == "bert_encoder":
        sizes = BERT["small"]
        batch = make_batch(name, args.seed, args.batch or DEFAULT_BATCH[name], sizes)
        train = load_workload(name, sizes).build(training=True)
        init = {k: np.ascontiguousarray(v, np.float32) for k, v in init_params(train, args.seed).items()}
    else:
        sizes = {"IMAGE": args.image}
        batch = image_batch(args, args.batch or 32)
    if framework.startswith("torch"):
        import torch

        torch.set_num_threads(args.threads)
        if name == "bert_encoder":
            runner = TorchRunner(name, workload_torch_state(name, init, sizes), batch, args.lr, framework, sizes=sizes)
        else:
            _, _, state = twin_of(name, args, torch, batch)
            runner = TorchRunner(name, state, batch, args.lr, framework, model=torchvision_model(name, torch))
        runner.first()
        return {"first_s": runner.run.first_s, "loss": runner.run.losses[0]}
    from dlc.runtime.engines import cache

    if name != "bert_encoder":
        import torch

        _, init, _ = twin_of(name, args, torch, batch)  # the parameters torch starts from
    t0 = time.perf_counter()
    cache.gemm_symbols()
    gemm_s = time.perf_counter() - t0
    runner = DlcRunner(name, init, batch, "native", args.lr, args.seed, sizes=sizes)
    runner.first()
    return {"first_s": runner.run.first_s, "loss": runner.run.losses[0], "gemm_s": gemm_s}


def in_process(framework: str, name: str, args, cache_dir: str) -> dict:
    """`child` in a fresh Python process (the compile cache `cache_dir`), with the cores
    others used meanwhile."""
    env = {**os.environ, "DLC_CACHE_DIR": cache_dir, "DLC_NUM_THREADS": str(args.threads)}
    env.pop("DLC_QUICK_CODE", None)  # as a run starts: quick code first
    command = [sys.executable, __file__, "--child", framework, name, "--image", str(args.image)]
    command += ["--threads", str(args.threads), "--seed", str(args.seed), "--lr", str(args.lr)]
    command += ["--batch", str(args.batch)] if args.batch else []
    with OtherLoad() as load:
        r = subprocess.run(command, capture_output=True, text=True, env=env, cwd=Path(__file__).parent)
    if r.returncode != 0:
        raise SystemExit(f"{framework}'s first step of {name} failed:\n{r.stderr}")
    return json.loads(r.stdout.splitlines()[-1]) | {"others": load.cores}


def measured(name: str, args) -> dict:
    """A row: each framework's median first step over the rounds, dlc's GEMM routines' compile,
    dlc's first step over torch's, the loss check, and the others of every run."""
    frameworks = [f for f in FRAMEWORKS if f != "torch_compile" or args.compile]
    runs: dict = {f: [] for f in frameworks}
    gemm = []
    for _ in range(args.rounds):
        with tempfile.TemporaryDirectory(prefix="dlc-first-step-") as cache_dir:
            for framework in frameworks:  # dlc_empty before dlc_warm: the warm cache is the one it left
                runs[framework].append(in_process(framework, name, args, cache_dir))
        gemm.append(runs["dlc_empty"][-1]["gemm_s"])
        said = ", ".join(f"{f} {runs[f][-1]['first_s']:.2f} s" for f in frameworks)
        print(f"  {name}: {said} (dlc's GEMM routines {gemm[-1]:.2f} s before)", flush=True)
    row = {"model": name, "image": None if name == "bert_encoder" else args.image}
    row.update({f: statistics.median(r["first_s"] for r in runs[f]) for f in frameworks})
    row["gemm"] = statistics.median(gemm)
    row["dlc_empty/torch"], row["dlc_warm/torch"] = row["dlc_empty"] / row["torch"], row["dlc_warm"] / row["torch"]
    row["loss check"] = max(rel(r["loss"], t["loss"]) for f in frameworks for r, t in zip(runs[f], runs["torch"]))
    row["others"] = [r["others"] for f in frameworks for r in runs[f]]
    return row


def table(rows: list, compile_: bool) -> str:
    head = ["model", "image", "gemm (s)", "dlc empty (s)", "dlc warm (s)", "torch (s)"]
    head += ["torch_compile (s)"] * compile_ + ["dlc empty/torch", "dlc warm/torch", "loss check", "others"]
    body = []
    for r in rows:
        cells = [
            r["model"],
            str(r["image"] or "-"),
            f"{r['gemm']:.2f}",
            f"{r['dlc_empty']:.2f}",
            f"{r['dlc_warm']:.2f}",
        ]
        cells += [f"{r['torch']:.2f}"] + ([f"{r['torch_compile']:.1f}"] if compile_ else [])
        check = "ok" if r["loss check"] <= LOSS_RTOL else "DIFFERS"
        cells += [f"{r['dlc_empty/torch']:.2f}", f"{r['dlc_warm/torch']:.2f}", f"{check} ({r['loss check']:.1e})"]
        body.append(cells + [others_cell(r["others"])])
    return markdown(head, body)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--only", choices=MODELS, action="append", help="this model only (repeatable)")
    ap.add_argument("--image", type=int, default=224, metavar="PIXELS", help="the CNNs' images' side (default 224)")
    ap.add_argument("--batch", type=int, help="examples per step (default 32; the encoder 8)")
    ap.add_argument("--rounds", type=int, default=3, help="rounds of the frameworks in turn (default 3)")
    ap.add_argument("--threads", type=int, default=2, help="threads of every framework (default 2)")
    ap.add_argument("--compile", action="store_true", help="also torch.compile's first step")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--lr", type=float, default=1e-3)
    ap.add_argument("--json", metavar="PATH", help="also write the rows to PATH as JSON")
    ap.add_argument("--child", nargs=2, metavar=("FRAMEWORK", "MODEL"), help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.image < 32 or args.rounds < 1 or args.threads < 1:
        ap.error("--image takes at least 32 pixels, --rounds and --threads at least 1")
    if args.child:
        print(json.dumps(child(*args.child, args)))
        return 0
    print(
        f"first training steps, each in a process of its own, {args.threads} threads, Adam lr {args.lr}; "
        f"the median of {args.rounds} rounds (seconds)",
        flush=True,
    )
    rows = [measured(name, args) for name in args.only or MODELS]
    print_results(table(rows, args.compile), rows, args.json)
    return 0


if __name__ == "__main__":
    sys.exit(main())
