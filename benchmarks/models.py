"""Standard models trained against PyTorch eager: torchvision's resnet18 and mobilenet_v2
(10 classes, 64 x 64 images, batch 32), one Adam step at a time, in two forms on dlc's side.

    dlc          the model written in .dl with the standard library
                 (benchmarks/workloads/resnet18.dl, mobilenet_v2.dl)
    torch        torchvision's model, eager, in training mode (mobilenet_v2's classifier
                 dropout set to 0, as the .dl model has none)
    dlc_import   torchvision's model exported by torch.onnx.export (TorchScript exporter,
                 opset 17, evaluation mode: its batch norms' running statistics, which the
                 exporter may fold into the convolutions) and imported by `dlc import --def`,
                 called by a model that adds the loss
    torch_eval   torchvision's model, eager, its batch norms in evaluation mode: the function
                 the export holds

Every one starts from dlc's initial parameters of the .dl model, copied into torchvision's
model in order (the same layers in the same order; a dense weight transposed), its batch
norms' running statistics those of one forward pass over the batch (else, in evaluation
mode, a deep network's activations lose their scale). The first-step losses must agree
within 1e-4 relative — dlc against torch, dlc_import against torch_eval — before anything
is timed. The four are timed in rounds (benchmarks/rounds.py); reported: each one's median
step, dlc/torch and dlc_import/torch_eval (the median over rounds of each round's ratio,
with its p25-p75) and the others of each round.

    python benchmarks/models.py
    python benchmarks/models.py --only resnet18 --rounds 3 --steps 1 --json /tmp/models.json
"""
from __future__ import annotations

import argparse
import os
import sys
import tempfile
import warnings
from pathlib import Path

import numpy as np

from machine import print_results
from rounds import ROUNDS, interleave, others_cell, ratio_cell, reported, timed
from train_step import (LOSS_RTOL, PAUSE_S, THREADS, DlcRunner, TorchRunner, json_safe, load_workload,
                        markdown, rel)

MODELS = ("resnet18", "mobilenet_v2")
BATCH, IMAGE, CLASSES = 32, 64, 10          # the .dl files' IMAGE and CLASSES
FRAMEWORKS = ("dlc", "torch", "dlc_import", "torch_eval")
PAIRS = (("dlc", "torch"), ("dlc_import", "torch_eval"))


def torchvision_model(name: str, torch):
    """torchvision's model at CLASSES classes, without dropout, as a module taking the batch dict."""
    from dlc.tools.real_models import torchvision_models
    net = getattr(torchvision_models(), name)(weights=None, num_classes=CLASSES)
    for m in net.modules():
        if isinstance(m, torch.nn.Dropout):
            m.p = 0.0

    class OnBatch(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.net = net

        def forward(self, b):
            return self.net(b["x"])
    return OnBatch()


def frozen(model, torch):
    """`model` whose batch norms stay in evaluation mode whatever train() asks."""
    train = model.train

    def train_frozen(mode: bool = True):
        train(mode)
        for m in model.modules():
            if isinstance(m, torch.nn.modules.batchnorm._BatchNorm):
                m.eval()
        return model
    model.train = train_frozen
    return model


def torch_state(model, trainable: list, init: dict) -> dict:
    """dlc's parameters `trainable` (in the .dl model's order) as the torch model's state:
    its parameters in module order, shape for shape (a dense weight transposed); its buffers
    as they are."""
    state = {k: v.detach().numpy().copy() for k, v in model.state_dict().items()}
    names = [k for k, _ in model.named_parameters()]
    if len(names) != len(trainable):
        raise SystemExit(f"{len(trainable)} dlc parameters against torch's {len(names)}: not the same layers")
    for tn, dn in zip(names, trainable):
        v = init[dn]
        if v.ndim == 2 and v.T.shape == state[tn].shape and v.shape != state[tn].shape:
            v = v.T
        if v.shape != state[tn].shape:
            raise SystemExit(f"dlc's {dn} {list(v.shape)} does not fit torch's {tn} {list(state[tn].shape)}")
        state[tn] = np.ascontiguousarray(v)
    return state


def calibrate(model, torch, batch: dict):
    """The batch norms' running statistics from one forward pass over `batch`."""
    norms = [m for m in model.modules() if isinstance(m, torch.nn.modules.batchnorm._BatchNorm)]
    for m in norms:
        m.reset_running_stats()
        m.momentum = None           # a cumulative average: after one batch, its statistics
    model.train()
    with torch.no_grad():
        model(batch)
    for m in norms:
        m.momentum = 0.1


def imported_program(model, torch, folder: Path, name: str):
    """The torch model in evaluation mode exported to ONNX, imported by `dlc import --def`,
    and a program that calls it and adds the loss: (the loader Program, its weights)."""
    from dlc.compiler.frontend.loader import load
    from dlc.runtime.cli import main
    from dlc.runtime.interop import checkpoint
    onnx_path = folder / f"{name}.onnx"
    model.eval()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(model.net, (torch.zeros(1, 3, IMAGE, IMAGE),), str(onnx_path), input_names=["x"],
                          output_names=["y"], opset_version=17, dynamic_axes={"x": {0: "batch"}, "y": {0: "batch"}},
                          dynamo=False)
    imported = folder / f"{name}_imported.dl"
    if main(["import", str(onnx_path), "-o", str(imported), "--def"]) != 0:
        raise SystemExit(f"dlc import of {name} failed")
    program = folder / f"{name}_trained.dl"
    program.write_text(f'import "{imported.name}"\n\nmodel {name}_trained {{\n'
                       f"    input  x: f32[B, 3, {IMAGE}, {IMAGE}]\n    target y: i32[B]\n"
                       f'    logits = {imported.stem}(x, name = "")\n    loss   sparse_cross_entropy(logits, y)\n}}\n')
    weights, _, _ = checkpoint.load(imported.with_suffix(".npz"))
    return load(str(program)), {k: np.ascontiguousarray(v, np.float32) for k, v in weights.items()}


def run_model(name: str, args, folder: Path) -> dict:
    import torch
    from dlc.runtime.training.gradcheck import init_params
    print(f"\n== {name} ==  (load average {os.getloadavg()[0]:.2f} on {os.cpu_count()} cpus)", flush=True)
    train = load_workload(name).build(training=True)
    init = {k: np.ascontiguousarray(v, np.float32) for k, v in init_params(train, args.seed).items()}
    trainable = [p.name for p in train.params if p.trainable]
    rng = np.random.default_rng([args.seed, 1])
    batch = {"x": rng.standard_normal((args.batch, 3, IMAGE, IMAGE), dtype=np.float32),
             "y": rng.integers(0, CLASSES, args.batch).astype(np.int32)}
    tbatch = {"x": torch.from_numpy(batch["x"])}

    twin = torchvision_model(name, torch)
    twin.load_state_dict({k: torch.from_numpy(v) for k, v in torch_state(twin, trainable, init).items()})
    calibrate(twin, torch, tbatch)
    state = {k: v.detach().numpy().copy() for k, v in twin.state_dict().items()}
    program, weights = imported_program(twin, torch, folder, name)

    runners = {
        "dlc": DlcRunner(name, init, batch, "native", args.lr, args.seed),
        "torch": TorchRunner(name, state, batch, args.lr, "torch", model=torchvision_model(name, torch)),
        "dlc_import": DlcRunner(name, weights, batch, "native", args.lr, args.seed, label="dlc_import",
                                program=program),
        "torch_eval": TorchRunner(name, state, batch, args.lr, "torch_eval",
                                  model=frozen(torchvision_model(name, torch), torch)),
    }
    for key, r in runners.items():
        r.first()
        print(f"  {r.run.framework:<20} first step {r.run.first_s * 1e3:10.1f} ms   loss {r.run.losses[0]:.7f}",
              flush=True)
    row = {"model": name, "batch": args.batch}
    for a, b in PAIRS:
        d = rel(runners[a].run.losses[0], runners[b].run.losses[0])
        row[f"{a} check"] = d
        if not d <= LOSS_RTOL:
            raise SystemExit(f"{name}: {a}'s first-step loss differs from {b}'s by {d:.1e} relative")
    measured = interleave({k: timed(r.step) for k, r in runners.items()}, args.rounds, args.steps, args.warmup,
                          pause_s=PAUSE_S)
    return reported(measured, row, name, PAIRS)


def table(rows: list) -> str:
    cols = ["model", "batch"] + [f"{k} ms" for k in FRAMEWORKS] + [f"{a}/{b}" for a, b in PAIRS] + ["others"]
    body = [[r["model"], str(r["batch"])] + [f"{r[k]:.1f}" for k in FRAMEWORKS]
            + [ratio_cell(r[f"{a}/{b}"]) for a, b in PAIRS] + [others_cell(r["others"])] for r in rows]
    return markdown(cols, body)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--only", choices=MODELS, action="append", help="this model only (repeatable)")
    ap.add_argument("--batch", type=int, default=BATCH, help=f"examples per step (default {BATCH})")
    ap.add_argument("--rounds", type=int, default=ROUNDS, help=f"rounds of the four in turn (default {ROUNDS})")
    ap.add_argument("--steps", type=int, default=2, help="timed steps of each per round (default 2)")
    ap.add_argument("--warmup", type=int, default=1, help="untimed steps of each before the rounds (default 1)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--lr", type=float, default=1e-3)
    ap.add_argument("--json", metavar="PATH", help="also write the rows to PATH as JSON")
    args = ap.parse_args(argv)
    import torch
    torch.set_num_threads(THREADS)
    print(f"standard models trained against torch {torch.__version__} eager, {THREADS} threads, Adam lr {args.lr}, "
          f"batch {args.batch} of 3 x {IMAGE} x {IMAGE}; median ms per step over {args.rounds} rounds of {args.steps} "
          "steps, the four in turn")
    rows = []
    with tempfile.TemporaryDirectory(prefix="dlc-models-") as tmp:
        for name in args.only or MODELS:
            rows.append(run_model(name, args, Path(tmp)))
    print_results(table(rows), json_safe(rows), args.json)
    return 0


if __name__ == "__main__":
    sys.exit(main())
