"""Standard models against PyTorch and onnxruntime: torchvision's resnet18 and mobilenet_v2
(10 classes, 64 x 64 images, or ImageNet's 224 x 224 with `--image 224`) trained (batch 32)
and predicted (batch 1 and 8), a transformer encoder of BERT-base's shape trained, and a BERT
sequence classifier of that shape imported from a Hugging Face folder and fine-tuned, on 2
threads each (`--threads N`: every framework on N).

Training, one Adam step at a time, the CNNs in two forms on dlc's side:

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
    torch_compile  torchvision's model in training mode, its loss compiled by torch.compile
                 (default mode, Inductor; the compile is its first step, untimed)

Every one starts from dlc's initial parameters of the .dl model, copied into torchvision's
model in order (the same layers in the same order; a dense weight transposed), its batch
norms' running statistics those of one forward pass over the batch (else, in evaluation
mode, a deep network's activations lose their scale). The first-step losses must agree
within 1e-4 relative — dlc against torch and torch_compile, dlc_import against torch_eval —
before anything is timed. The five are timed in rounds (benchmarks/rounds.py); reported:
each one's median step, dlc/torch, dlc/torch_compile and dlc_import/torch_eval (the median
over rounds of each round's ratio, with its p25-p75) and the others of each round.

    bert_encoder benchmarks/workloads/bert_encoder.dl (12 layers, 768 wide, 12 heads,
                 sequence 128 with `--bert base`; by default `--bert small`: 4 layers, 256
                 wide, 4 heads, sequence 64, so that a run takes minutes), batch 8, against
                 torch's nn.TransformerEncoder (pre-norm, GELU tanh) with dlc's initial
                 parameters (runtime/interop/torch_layout.py); `dlc`, `torch` and
                 `torch_compile` only

    bert_finetune  BERT-base's shape as transformers' BertForSequenceClassification (12
                 layers, 768 wide, 12 heads, BERT's 30,522 token ids, 2 labels, sequences of
                 128 with `--bert base`; `--bert small` as above), random weights saved by
                 save_pretrained and imported by `dlc import` (the program and checkpoint a
                 user fine-tunes), trained on pairs of texts padded to the sequence (each row
                 1/2 to all of it real, its attention mask 0 on the rest), against the same
                 folder loaded by transformers, eager (`torch`) and compiled (`torch_compile`).
                 Its dropout rates are set to 0 in the config, so that the first-step losses
                 can agree (dlc's dropout at rate 0 is its input). Batch 8 (`--batch`):
                 a fine-tuning batch of 8 x 128 = 1024 tokens already makes every dense
                 layer's product 1024 rows tall (the shapes of bert_encoder's goal) while a
                 step of BERT-base stays seconds on 2 cores, not tens; `dlc`, `torch` and
                 `torch_compile` only

After the timed rounds, dlc's step once more in a profiling build: each kernel kind's share
of the step's kernel time, its ms, GFLOP/s and % of one thread team's FMA peak
(benchmarks/peak.py) where it multiplies (the kinds of `dlc bench`; a GEMM with its
epilogue counts as a gemm).

Prediction (the CNNs, `--side predict`), the imported model of the training's dlc_import
(`dlc import` without `--def`: a model with its output), at each `--predict-batch`:

    dlc_jit            the native engine's prediction in this process (DlcModel.predict)
    dlc_library        its library (`dlc build`) called from C (deploy_timer.c, as
                       benchmarks/deploy.py: each round one run of the timer, its median call)
    ort_spin           onnxruntime on the same ONNX file, its thread pool spinning between
                       calls (its default)
    ort_sleep          the same with session.intra_op.allow_spinning 0
    ort_nchw           ort_sleep with its graph optimizations at ORT_ENABLE_EXTENDED: the
                       layout stays NCHW (its convolutions im2col and its SGEMM), where its
                       default (ORT_ENABLE_ALL) rewrites the convolutions, poolings and
                       activations into its blocked NCHWc layout; ort_nchw/ort_sleep is what
                       that layout is worth to onnxruntime, dlc's layout being NCHW
    torch_eval         torchvision's model, eager, evaluation mode, under torch.no_grad

Their outputs must agree with onnxruntime's within 1e-4 of the largest before anything is
timed; all six are timed in rounds, each after a pause (spinning pools sleep). Both keep
their weights packed between calls while the weights are unchanged (the library until a
setter, the JIT until its Parameters change), so neither should trail: where the library
is the slower of the two in more than three rounds of four (dlc_library/dlc_jit's
p25 above 1), its row's `library <= jit` cell says FAIL and the run exits with status 1.

With `--precision bf16`, dlc's products multiply bfloat16 operands (`precision = "bf16"`,
docs/native.md) and PyTorch's forward runs under torch.autocast("cpu", dtype=torch.bfloat16),
in training torch_compile's too; dlc_import and torch_eval are not run. dlc's float32 step is
timed in the same rounds (`dlc_f32`, not a peer: dlc_f32/dlc is what bf16 buys), and the
first-step losses agree to BF16_LOSS_RTOL (dlc's two) and AUTOCAST_LOSS_RTOL (dlc's and
torch's). Prediction is the imported model's by dlc's JIT in bf16 (`dlc_jit`; `dlc build`
has no bf16 prediction) against torch_eval under autocast, with dlc's float32 JIT
(`dlc_f32`) and ort_sleep (float32) beside; the outputs agree with onnxruntime's within
BF16_OUTPUT_RTOL (dlc's bf16) and AUTOCAST_OUTPUT_RTOL (torch's) of the largest.

    python benchmarks/models.py
    python benchmarks/models.py --only resnet18 --rounds 3 --steps 1 --json /tmp/models.json
    python benchmarks/models.py --only mobilenet_v2 --side predict --predict-batch 1
    python benchmarks/models.py --only bert_encoder --bert base --batch 8
    python benchmarks/models.py --only bert_finetune --bert base --batch 8
    python benchmarks/models.py --image 224 --batch 8 --threads 1
    python benchmarks/models.py --precision bf16 --image 224 --batch 8
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import warnings
from pathlib import Path

import numpy as np

from deploy import c_point, process_slot, timer
from imported import first_prediction_s, imported
from machine import print_results
from rounds import ROUNDS, interleave, others_cell, ratio_cell, reported, timed, time_o3_code
from train_step import (
    BF16_LOSS_RTOL,
    DEFAULT_BATCH,
    LOSS_RTOL,
    PAUSE_S,
    THREADS,
    DlcRunner,
    TorchRunner,
    json_safe,
    load_workload,
    make_batch,
    markdown,
    rel,
    torch_state as workload_torch_state,
    workload_sizes,
)

CNNS = ("resnet18", "mobilenet_v2")
BERTS = ("bert_encoder", "bert_finetune")
MODELS = CNNS + BERTS
BATCH, IMAGE, CLASSES = 32, 64, 10  # the .dl files' IMAGE (the default side) and CLASSES
FRAMEWORKS = ("dlc", "torch", "torch_compile", "dlc_import", "torch_eval")
PAIRS = (("dlc", "torch"), ("dlc", "torch_compile"), ("dlc_import", "torch_eval"))
# with --precision bf16: dlc and the peers in bf16, dlc_f32 dlc's float32 step (not a peer)
BF16_FRAMEWORKS = ("dlc", "dlc_f32", "torch", "torch_compile")
BF16_PAIRS = (("dlc", "torch"), ("dlc", "torch_compile"), ("dlc_f32", "dlc"))
# the first-step losses of dlc's bf16 step and torch's under autocast, relative: autocast stores
# activations in bfloat16 too (MobileNetV2 at 64 x 64 pixels, batch 8: torch's 2.2 % from
# dlc's float32 loss, dlc's bf16 0.4 %)
AUTOCAST_LOSS_RTOL = 5e-2
BERT = {"base": {}, "small": {"LAYERS": 4, "WIDTH": 256, "HEADS": 4, "SEQ": 64}}  # over bert_encoder.dl's constants
BERT_VOCAB, BERT_LABELS = 30522, 2  # bert-base-uncased's WordPiece vocabulary; a binary classifier
PREDICT_BATCHES = (1, 8)
PREDICTORS = ("dlc_jit", "dlc_library", "ort_spin", "ort_sleep", "ort_nchw", "torch_eval")
PREDICT_PAIRS = (
    ("dlc_jit", "ort_sleep"),
    ("dlc_jit", "ort_spin"),
    ("dlc_library", "ort_sleep"),
    ("dlc_library", "ort_nchw"),
    ("ort_nchw", "ort_sleep"),
    ("dlc_jit", "torch_eval"),
    ("dlc_library", "dlc_jit"),
)
OUTPUT_RTOL = 1e-4
# bf16 predictors: dlc's bf16 JIT, its float32 one, torch under autocast, onnxruntime (float32)
BF16_PREDICTORS = ("dlc_jit", "dlc_f32", "torch_eval", "ort_sleep")
BF16_PREDICT_PAIRS = (("dlc_jit", "torch_eval"), ("dlc_jit", "ort_sleep"), ("dlc_f32", "dlc_jit"))
# a bf16 prediction's outputs against onnxruntime's float32, of the largest: dlc's, whose
# products' operands have 8 bits of mantissa, and torch's under autocast, which stores its
# activations in bfloat16 too. At 64 x 64 pixels, batch 1: ResNet-18's 1.8e-2 and 6.3e-2,
# MobileNetV2's 0.19 and 0.36 (the reference engine's emulation of dlc's rounding 0.18: 52
# products of random weights); a check of the function, not of the rounding
BF16_OUTPUT_RTOL, AUTOCAST_OUTPUT_RTOL = 0.3, 0.6
# each predictor's calls in a round: about half a second of them, the C timer's as the others'
# (with a third of a second for all five, each in-process one made about 15 calls, which
# the slowness of a framework's first calls after the others' ran dominated: onnxruntime's
# spinning call took 3.2 ms at ResNet-18's batch 1, 2.1 ms in rounds of 1.5 s)
PREDICT_SECONDS = 0.5


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
        m.momentum = None  # a cumulative average: after one batch, its statistics
    model.train()
    with torch.no_grad():
        model(batch)
    for m in norms:
        m.momentum = 0.1


def exported(model, torch, folder: Path, name: str, image: int) -> Path:
    """The torch model in evaluation mode exported to ONNX (a dynamic batch, `image` pixels a side)."""
    onnx_path = folder / f"{name}.onnx"
    model.eval()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(
            model.net,
            (torch.zeros(1, 3, image, image),),
            str(onnx_path),
            input_names=["x"],
            output_names=["y"],
            opset_version=17,
            dynamic_axes={"x": {0: "batch"}, "y": {0: "batch"}},
            dynamo=False,
        )
    return onnx_path


def imported_program(model, torch, folder: Path, name: str, image: int):
    """The torch model in evaluation mode exported to ONNX, imported by `dlc import --def`,
    and a program that calls it and adds the loss: (the loader Program, its weights)."""
    from dlc.compiler.frontend.loader import load
    from dlc.runtime.cli import main
    from dlc.runtime.interop import checkpoint

    onnx_path = exported(model, torch, folder, name, image)
    imported = folder / f"{name}_imported.dl"
    if main(["import", str(onnx_path), "-o", str(imported), "--def"]) != 0:
        raise SystemExit(f"dlc import of {name} failed")
    program = folder / f"{name}_trained.dl"
    program.write_text(
        f'import "{imported.name}"\n\nmodel {name}_trained {{\n'
        f"    input  x: f32[B, 3, {image}, {image}]\n    target y: i32[B]\n"
        f'    logits = {imported.stem}(x, name = "")\n    loss   sparse_cross_entropy(logits, y)\n}}\n'
    )
    weights, _, _ = checkpoint.load(imported.with_suffix(".npz"))
    return load(str(program)), {k: np.ascontiguousarray(v, np.float32) for k, v in weights.items()}


def twin_of(name: str, args, torch, batch: dict):
    """torchvision's model with dlc's initial parameters, its batch norms calibrated on the
    batch: (the model, dlc's parameters, the model's state)."""
    from dlc.runtime.training.gradcheck import init_params

    train = load_workload(name, {"IMAGE": args.image}).build(training=True)
    init = {k: np.ascontiguousarray(v, np.float32) for k, v in init_params(train, args.seed).items()}
    trainable = [p.name for p in train.params if p.trainable]
    twin = torchvision_model(name, torch)
    twin.load_state_dict({k: torch.from_numpy(v) for k, v in torch_state(twin, trainable, init).items()})
    calibrate(twin, torch, {"x": torch.from_numpy(batch["x"])})
    return twin, init, {k: v.detach().numpy().copy() for k, v in twin.state_dict().items()}


def image_batch(args, batch: int) -> dict:
    rng = np.random.default_rng([args.seed, 1])
    return {
        "x": rng.standard_normal((batch, 3, args.image, args.image), dtype=np.float32),
        "y": rng.integers(0, CLASSES, batch).astype(np.int32),
    }


def kernel_shares(runner: DlcRunner, steps: int = 3) -> list:
    """Each kernel kind's share of dlc's native train step, in a profiling build of the
    runner's model: (kind, share, ms, GFLOP/s or None), largest share first; ms is the
    share of the profiled steps' median."""
    import time
    from dlc.runtime.engines.interpreter import bind_sizes
    from dlc.runtime.engines.native import NativeEngine

    engine = NativeEngine(
        runner.train, runner.ev, runner.opt, runner.trainable, profile=True, precision=runner.precision
    )
    params = {k: v.copy() for k, v in runner.init.items()}
    state = runner.opt.init({n: params[n] for n in runner.trainable})

    def step(t):
        engine.train_step(params, state, runner.batch, runner.lr, t, np.array([runner.seed, t], np.int32))

    for t in (1, 2):
        step(t)
    exe = engine.train_exe
    exe.cycles()
    took = []
    for t in range(3, steps + 3):
        t0 = time.perf_counter()
        step(t)
        took.append(time.perf_counter() - t0)
    cycles, median = exe.cycles() / steps, float(np.median(took))
    sizes = bind_sizes(runner.train.graph, runner.batch)  # the batch's B, and an imported model's T
    kinds: dict = {}
    for (k, depth), c in zip(exe.profile, cycles):
        if depth == 0:  # a scan's cycles hold its body's (these models have none)
            flops = k.flops(sizes)
            cell = kinds.setdefault(k.family, [0.0, 0])
            cell[0] += c
            cell[1] += flops or 0
    total = sum(c for c, _ in kinds.values()) or 1.0
    rows = [
        (kind, c / total, c / total * median * 1e3, f / (c / total * median) / 1e9 if f and c else None)
        for kind, (c, f) in kinds.items()
    ]
    return sorted(rows, key=lambda r: -r[1])


def shares_text(name: str, shares: list, peak_gflops: float | None) -> str:
    lines = [
        f"  {name}: dlc's train step by kernel kind (a profiling build; % of peak: of {peak_gflops:.0f} GFLOP/s, "
        "float32's FMAs)"
        if peak_gflops
        else f"  {name}: dlc's train step by kernel kind (a profiling build)"
    ]
    for kind, share, ms, gflops in shares:
        rate = (
            ""
            if gflops is None
            else f"{gflops:8.1f} GFLOP/s" + (f" {100 * gflops / peak_gflops:5.1f} % of peak" if peak_gflops else "")
        )
        lines.append(f"    {kind:<14}{100 * share:6.1f} %{ms:10.2f} ms  {rate}")
    return "\n".join(lines)


def run_bert(args) -> dict:
    from dlc.runtime.training.gradcheck import init_params

    sizes = BERT[args.bert]
    name, batch_size = "bert_encoder", args.batch or DEFAULT_BATCH["bert_encoder"]
    print(
        f"\n== {name} ({args.bert}: {sizes or 'as bert_encoder.dl'}) ==  "
        f"(load average {os.getloadavg()[0]:.2f} on {os.cpu_count()} cpus)",
        flush=True,
    )
    train = load_workload(name, sizes).build(training=True)
    init = {k: np.ascontiguousarray(v, np.float32) for k, v in init_params(train, args.seed).items()}
    batch = make_batch(name, args.seed, batch_size, sizes)
    state = workload_torch_state(name, init, sizes)
    runners = {
        "dlc": DlcRunner(name, init, batch, "native", args.lr, args.seed, sizes=sizes, precision=args.precision),
        "torch": TorchRunner(name, state, batch, args.lr, "torch", sizes=sizes, precision=args.precision),
        "torch_compile": TorchRunner(
            name, state, batch, args.lr, "torch_compile", sizes=sizes, precision=args.precision
        ),
    }
    if args.precision == "bf16":
        runners["dlc_f32"] = DlcRunner(name, init, batch, "native", args.lr, args.seed, sizes=sizes, label="dlc_f32")
    return trained(
        name,
        runners,
        args,
        {"model": f"{name} ({args.bert})", "batch": batch_size},
        BF16_PAIRS if args.precision == "bf16" else (("dlc", "torch"), ("dlc", "torch_compile")),
    )


def transformers_package():
    from dlc.tools.real_models import without_torchvision_ops

    without_torchvision_ops()  # transformers imports torchvision, whose build may not load
    import transformers

    return transformers


def bert_folder(folder: Path, sizes: dict, seed: int):
    """A BertForSequenceClassification of `sizes` (bert_encoder.dl's constants) with random
    weights and no dropout, saved by save_pretrained in `folder`."""
    import torch

    transformers = transformers_package()

    config = transformers.BertConfig(
        vocab_size=BERT_VOCAB,
        hidden_size=sizes["WIDTH"],
        num_hidden_layers=sizes["LAYERS"],
        num_attention_heads=sizes["HEADS"],
        intermediate_size=4 * sizes["WIDTH"],
        hidden_dropout_prob=0.0,
        attention_probs_dropout_prob=0.0,
        num_labels=BERT_LABELS,
        architectures=["BertForSequenceClassification"],
    )
    torch.manual_seed(seed)
    transformers.BertForSequenceClassification(config).save_pretrained(str(folder), safe_serialization=True)


def bert_batch(seed: int, batch: int, seq: int) -> dict:
    """Pairs of texts as a tokenizer gives them: ids, the first text's token types 0 and the
    second's 1, each row real for 1/2 to all of `seq` (the rest padding, its mask 0), a label."""
    rng = np.random.default_rng([seed, 1])
    lengths = rng.integers(seq // 2, seq + 1, batch)
    positions = np.arange(seq)
    mask = (positions < lengths[:, None]).astype(np.int32)
    return {
        "input_ids": (rng.integers(0, BERT_VOCAB, (batch, seq)) * mask).astype(np.int32),
        "attention_mask": mask,
        "token_type_ids": ((positions >= lengths[:, None] // 2) * mask).astype(np.int32),
        "label": rng.integers(0, BERT_LABELS, batch).astype(np.int32),
    }


def hf_classifier(folder: Path, torch):
    """transformers' model of the folder, training mode, as a module taking the batch dict."""
    transformers = transformers_package()

    class OnBatch(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.net = transformers.BertForSequenceClassification.from_pretrained(str(folder))

        def forward(self, b):
            return self.net(
                input_ids=b["input_ids"], attention_mask=b["attention_mask"], token_type_ids=b["token_type_ids"]
            ).logits

    return OnBatch()


def run_bert_finetune(args, folder: Path) -> dict:
    """BERT-base's shape imported from a Hugging Face folder and fine-tuned: dlc's import against
    transformers on the same folder, eager and compiled."""
    import torch
    from dlc.compiler.frontend.loader import load
    from dlc.runtime.cli import main
    from dlc.runtime.interop import checkpoint

    name = "bert_finetune"
    sizes = workload_sizes("bert_encoder") | BERT[args.bert]
    batch_size = args.batch or DEFAULT_BATCH["bert_encoder"]
    print(
        f"\n== {name} ({args.bert}: {sizes['LAYERS']} layers, {sizes['WIDTH']} wide, {sizes['HEADS']} heads, "
        f"sequence {sizes['SEQ']}) ==  (load average {os.getloadavg()[0]:.2f} on {os.cpu_count()} cpus)",
        flush=True,
    )
    hf = folder / "bert_hf"
    bert_folder(hf, sizes, args.seed)
    program = folder / "bert_finetune.dl"
    if main(["import", str(hf), "-o", str(program)]) != 0:
        raise SystemExit(f"dlc import of {hf} failed")
    weights, _, _ = checkpoint.load(program.with_suffix(".npz"))
    weights = {k: np.ascontiguousarray(v, np.float32) for k, v in weights.items()}
    batch = bert_batch(args.seed, batch_size, sizes["SEQ"])
    torch_batch = {k: v for k, v in batch.items() if k != "label"} | {"y": batch["label"]}
    runners = {"dlc": DlcRunner(name, weights, batch, "native", args.lr, args.seed, program=load(str(program)))}
    for variant in ("torch", "torch_compile"):
        model = hf_classifier(hf, torch)
        state = {k: v.detach().numpy().copy() for k, v in model.state_dict().items()}
        runners[variant] = TorchRunner(name, state, torch_batch, args.lr, variant, model=model)
    return bert_trained(name, runners, args, batch_size)


def bert_trained(name: str, runners: dict, args, batch_size: int) -> dict:
    """A BERT's row: dlc against torch and torch_compile (`trained`)."""
    row = {"model": f"{name} ({args.bert})", "batch": batch_size}
    return trained(name, runners, args, row, (("dlc", "torch"), ("dlc", "torch_compile")))


def loss_rtol(precision: str, peer: str) -> float:
    """How far a first-step loss may be from `peer`'s: LOSS_RTOL in float32; with bf16
    products BF16_LOSS_RTOL from dlc's own, AUTOCAST_LOSS_RTOL from torch's under autocast."""
    if precision != "bf16":
        return LOSS_RTOL
    return AUTOCAST_LOSS_RTOL if peer.startswith("torch") else BF16_LOSS_RTOL


def trained(name: str, runners: dict, args, row: dict, pairs) -> dict:
    """The runners' first steps (their losses checked pair by pair), then their steps in
    rounds, then dlc's kernel kinds' shares: the row."""
    for r in runners.values():
        r.first()
        print(
            f"  {r.run.framework:<20} first step {r.run.first_s * 1e3:10.1f} ms   loss {r.run.losses[0]:.7f}",
            flush=True,
        )
    for a, b in pairs:
        rtol = loss_rtol(args.precision, b)
        d = rel(runners[a].run.losses[0], runners[b].run.losses[0])
        row[f"{a}/{b} check"] = d
        if not d <= rtol:
            raise SystemExit(f"{name}: {a}'s first-step loss differs from {b}'s by {d:.1e} relative (> {rtol:g})")
    measured = interleave(
        {k: timed(r.step) for k, r in runners.items()}, args.rounds, args.steps, args.warmup, pause_s=PAUSE_S
    )
    row = reported(measured, row, name, pairs)
    row["shares"] = kernel_shares(runners["dlc"])
    print(shares_text(name, row["shares"], args.peak), flush=True)
    return row


def run_model(name: str, args, folder: Path) -> dict:
    import torch

    print(f"\n== {name} ==  (load average {os.getloadavg()[0]:.2f} on {os.cpu_count()} cpus)", flush=True)
    batch = image_batch(args, args.batch or BATCH)
    twin, init, state = twin_of(name, args, torch, batch)
    sizes, precision = {"IMAGE": args.image}, args.precision
    runners = {
        "dlc": DlcRunner(name, init, batch, "native", args.lr, args.seed, sizes=sizes, precision=precision),
        "torch": TorchRunner(
            name, state, batch, args.lr, "torch", model=torchvision_model(name, torch), precision=precision
        ),
        "torch_compile": TorchRunner(
            name, state, batch, args.lr, "torch_compile", model=torchvision_model(name, torch), precision=precision
        ),
    }
    row = {"model": name, "image": args.image, "batch": args.batch or BATCH}
    if precision == "bf16":
        runners["dlc_f32"] = DlcRunner(name, init, batch, "native", args.lr, args.seed, sizes=sizes, label="dlc_f32")
        return trained(name, runners, args, row, BF16_PAIRS)
    program, weights = imported_program(twin, torch, folder, name, args.image)
    runners["dlc_import"] = DlcRunner(
        name, weights, batch, "native", args.lr, args.seed, label="dlc_import", program=program
    )
    runners["torch_eval"] = TorchRunner(
        name, state, batch, args.lr, "torch_eval", model=frozen(torchvision_model(name, torch), torch)
    )
    return trained(name, runners, args, row, PAIRS)


def prediction_model(name: str, args, folder: Path, torch):
    """torchvision's model (evaluation mode) exported to ONNX and imported by `dlc import`
    (without --def), with its first prediction made: (the twin, the ONNX file, the .dl
    program, the DlcModel)."""
    twin, _, _ = twin_of(name, args, torch, image_batch(args, BATCH))
    onnx_path = exported(twin, torch, folder, f"{name}_predict", args.image)
    program, weights, _ = imported(onnx_path, folder)
    model, _ = first_prediction_s(program, weights, {"x": image_batch(args, 1)["x"]})
    twin.eval()
    return twin, onnx_path, program, model


def ort_session(onnx_path: Path, threads: int, spin: bool, blocked: bool = True):
    """onnxruntime on the file, its pool spinning between calls or not; `blocked` False: no
    NchwcTransformer (its layout-changing optimizations are level ALL's)."""
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads, options.inter_op_num_threads = threads, 1
    options.add_session_config_entry("session.intra_op.allow_spinning", "1" if spin else "0")
    if not blocked:
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_EXTENDED
    return ort.InferenceSession(str(onnx_path), options, providers=["CPUExecutionProvider"])


def prediction_row(name: str, args, batch: int, want, outputs: dict, slots: dict, names, pairs) -> dict:
    """The predictors' outputs checked against onnxruntime's `want` (each of `outputs`: its
    array and its tolerance, of the largest), then `slots` timed in rounds: the row."""
    errors = {}
    for k, (got, rtol) in outputs.items():
        errors[k] = err = float(np.abs(got.ravel() - want.ravel()).max() / np.abs(want).max())
        if got.size != want.size or err > rtol:
            raise SystemExit(f"{name}, batch {batch}: {k}'s outputs differ from onnxruntime's ({err:.2e} > {rtol:g})")
    print(
        f"  batch {batch}: outputs against onnxruntime's, of the largest: "
        + ", ".join(f"{k} {e:.1e}" for k, e in errors.items()),
        flush=True,
    )
    measured = interleave(slots, args.rounds, warmup=1, seconds_each=PREDICT_SECONDS, pause_s=PAUSE_S)
    row = reported(
        measured, {"model": name, "image": args.image, "batch": batch}, f"{name} prediction batch {batch}", pairs
    )
    print("  batch {}: {}".format(batch, ", ".join(f"{k} {row[k]:.2f} ms" for k in names)), flush=True)
    return row


def predicted(name: str, args, folder: Path) -> list:
    """The imported model's prediction by dlc's JIT and built library, onnxruntime spinning
    and not, and torch: a row per batch size."""
    import torch
    from dlc.runtime.interop import checkpoint

    print(f"\n== {name}: prediction ==  (load average {os.getloadavg()[0]:.2f} on {os.cpu_count()} cpus)", flush=True)
    twin, onnx_path, program, model = prediction_model(name, args, folder, torch)
    npz = folder / f"{name}_weights.npz"
    checkpoint.save(npz, model.params, {}, {})
    library = folder / f"{name}_library"
    built = subprocess.run(
        [sys.executable, "-m", "dlc.runtime.cli", "build", str(program), "-o", str(library)],
        capture_output=True,
        text=True,
    )
    if built.returncode:
        raise SystemExit(f"dlc build of {name} failed: {built.stderr}")
    exe = timer(folder)
    spinning, sleeping = ort_session(onnx_path, args.threads, True), ort_session(onnx_path, args.threads, False)
    nchw = ort_session(onnx_path, args.threads, False, blocked=False)
    rows = []
    for batch in args.predict_batch:
        x = image_batch(args, batch)["x"]
        feeds, tx = {"x": x}, torch.from_numpy(x)

        def library_ms():
            return c_point(exe, library, model.name, npz, feeds, PREDICT_SECONDS, folder, args.threads)

        outputs = {
            "dlc_jit": model.predict(feeds, batch=batch)["y"],
            "dlc_library": library_ms()["output"],
            "ort_nchw": nchw.run(["y"], feeds)[0],
            "torch_eval": twin.net(tx).detach().numpy(),
        }

        def torch_eval():
            with torch.no_grad():
                return twin.net(tx)

        slots = {
            "dlc_jit": timed(lambda: model.predict(feeds, batch=batch)),
            "dlc_library": process_slot(lambda: library_ms()["c_ms"]),
            "ort_spin": timed(lambda: spinning.run(["y"], feeds)),
            "ort_sleep": timed(lambda: sleeping.run(["y"], feeds)),
            "ort_nchw": timed(lambda: nchw.run(["y"], feeds)),
            "torch_eval": timed(torch_eval),
        }
        want = sleeping.run(["y"], feeds)[0]
        checked = {k: (v, OUTPUT_RTOL) for k, v in outputs.items()}
        rows.append(prediction_row(name, args, batch, want, checked, slots, PREDICTORS, PREDICT_PAIRS))
    return rows


def predicted_bf16(name: str, args, folder: Path) -> list:
    """The imported model's prediction with bfloat16 products by dlc's JIT (the native
    engine at precision bf16), against torch under autocast, with dlc's float32 JIT and
    onnxruntime (float32, its pool sleeping) beside: a row per batch size."""
    import torch
    from dlc.runtime.engines.native import NativeEngine

    print(
        f"\n== {name}: prediction, bf16 ==  (load average {os.getloadavg()[0]:.2f} on {os.cpu_count()} cpus)",
        flush=True,
    )
    twin, onnx_path, _, model = prediction_model(name, args, folder, torch)
    engine = NativeEngine(model.eval_model, model.eval_model, precision="bf16")
    sleeping = ort_session(onnx_path, args.threads, False)
    rows = []
    for batch in args.predict_batch:
        x = image_batch(args, batch)["x"]
        feeds, tx = {"x": x}, torch.from_numpy(x)

        def torch_eval():
            with torch.no_grad(), torch.autocast("cpu", dtype=torch.bfloat16):
                return twin.net(tx)

        outputs = {
            "dlc_jit": (engine.predict(model.params, feeds)["y"], BF16_OUTPUT_RTOL),
            "dlc_f32": (model.predict(feeds, batch=batch)["y"], OUTPUT_RTOL),
            "torch_eval": (torch_eval().float().numpy(), AUTOCAST_OUTPUT_RTOL),
        }
        slots = {
            "dlc_jit": timed(lambda: engine.predict(model.params, feeds)),
            "dlc_f32": timed(lambda: model.predict(feeds, batch=batch)),
            "torch_eval": timed(torch_eval),
            "ort_sleep": timed(lambda: sleeping.run(["y"], feeds)),
        }
        want = sleeping.run(["y"], feeds)[0]
        rows.append(prediction_row(name, args, batch, want, outputs, slots, BF16_PREDICTORS, BF16_PREDICT_PAIRS))
    return rows


def library_slower(row: dict) -> bool:
    """Whether a prediction row's library was slower than the JIT in more than three rounds
    of four (the ratio's p25 above 1): the check that fails the run."""
    return row["dlc_library/dlc_jit"]["p25"] > 1


def table(rows: list, frameworks, pairs, check=None) -> str:
    """The rows as a table; `check` (a row's failure, as library_slower): its FAIL or ok cell."""
    cols = ["model", "image", "batch"] + [f"{k} ms" for k in frameworks] + [f"{a}/{b}" for a, b in pairs] + ["others"]
    body = [
        [r["model"], str(r.get("image", "-")), str(r["batch"])]
        + [f"{r[k]:.1f}" if k in r else "-" for k in frameworks]
        + [ratio_cell(r[f"{a}/{b}"]) if f"{a}/{b}" in r else "-" for a, b in pairs]
        + [others_cell(r["others"])]
        + (["FAIL" if check(r) else "ok"] if check else [])
        for r in rows
    ]
    return markdown(cols + (["library <= jit"] if check else []), body)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--only", choices=MODELS, action="append", help="this model only (repeatable)")
    ap.add_argument(
        "--side",
        choices=("train", "predict"),
        action="append",
        help="training or prediction only (default both; prediction: the CNNs)",
    )
    ap.add_argument(
        "--batch",
        type=int,
        help=f"examples per training step (default {BATCH}; the BERTs {DEFAULT_BATCH['bert_encoder']})",
    )
    ap.add_argument(
        "--predict-batch",
        type=int,
        action="append",
        help=f"examples per prediction (repeatable; default {' and '.join(map(str, PREDICT_BATCHES))})",
    )
    ap.add_argument(
        "--bert",
        choices=tuple(BERT),
        default="small",
        help="the BERTs' size: base (12 x 768, sequence 128) or small (default: 4 x 256, 64)",
    )
    ap.add_argument("--rounds", type=int, default=ROUNDS, help=f"rounds of the frameworks in turn (default {ROUNDS})")
    ap.add_argument("--steps", type=int, default=2, help="timed steps of each per round (default 2)")
    ap.add_argument("--warmup", type=int, default=1, help="untimed steps of each before the rounds (default 1)")
    ap.add_argument(
        "--image",
        type=int,
        default=IMAGE,
        metavar="PIXELS",
        help=f"the CNNs' images' side (default {IMAGE}; ImageNet's is 224)",
    )
    ap.add_argument(
        "--threads",
        type=int,
        help=f"threads of every framework: torch's, onnxruntime's and dlc's "
        f"team (DLC_NUM_THREADS) (default: {THREADS} for the peers, dlc's the cores others leave free)",
    )
    ap.add_argument(
        "--precision",
        choices=("f32", "bf16"),
        default="f32",
        help='of the products: bf16 is dlc\'s precision = "bf16" against torch.autocast (default f32)',
    )
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--lr", type=float, default=1e-3)
    ap.add_argument("--json", metavar="PATH", help="also write the rows to PATH as JSON")
    args = ap.parse_args(argv)
    if args.image < 32 or args.threads is not None and args.threads < 1:
        ap.error("--image takes at least 32 pixels (five halvings leave a 1 x 1 map), --threads at least 1")
    if args.precision == "bf16" and "bert_finetune" in (args.only or ()):
        ap.error("bert_finetune is timed in float32 only (--precision bf16 times bert_encoder)")
    if args.threads is not None:
        os.environ["DLC_NUM_THREADS"] = str(args.threads)  # before any engine picks its team
    args.threads = args.threads or THREADS
    time_o3_code()
    args.predict_batch = args.predict_batch or list(PREDICT_BATCHES)
    sides = args.side or ["train", "predict"]
    import torch
    from peak import cached_or_measure, describe

    torch.set_num_threads(args.threads)
    peak = cached_or_measure()
    args.peak = peak["gflops"].get(args.threads) or peak["gflops"].get(str(args.threads))
    print(
        f"standard models against torch {torch.__version__} eager, {args.precision} products, {args.threads} threads, "
        f"Adam lr {args.lr}, "
        f"3 x {args.image} x {args.image} images; median ms per step over {args.rounds} rounds of {args.steps} "
        f"steps, the frameworks in turn; {describe(peak)}"
    )
    rows, predictions, bf16 = [], [], args.precision == "bf16"
    with tempfile.TemporaryDirectory(prefix="dlc-models-") as tmp:
        # bf16 times bert_encoder's training, not the import's fine-tuning (float32 only)
        for name in args.only or [m for m in MODELS if not (bf16 and m == "bert_finetune")]:
            if "train" in sides:
                run = {
                    "bert_encoder": lambda: run_bert(args),
                    "bert_finetune": lambda: run_bert_finetune(args, Path(tmp)),
                }
                rows.append(run.get(name, lambda: run_model(name, args, Path(tmp)))())
            if "predict" in sides and name in CNNS:
                predictions += (predicted_bf16 if bf16 else predicted)(name, args, Path(tmp))
    text = "\n\n".join(
        t
        for t in (
            table(rows, *((BF16_FRAMEWORKS, BF16_PAIRS) if bf16 else (FRAMEWORKS, PAIRS))) if rows else "",
            (
                table(predictions, BF16_PREDICTORS, BF16_PREDICT_PAIRS)
                if bf16
                else table(predictions, PREDICTORS, PREDICT_PAIRS, library_slower)
            )
            if predictions
            else "",
        )
        if t
    )
    print_results(text, json_safe({"precision": args.precision, "train": rows, "predict": predictions}), args.json)
    slower = [f"{r['model']} batch {r['batch']}" for r in predictions if not bf16 and library_slower(r)]
    if slower:
        print(f"FAIL: the built library is slower than the JIT: {', '.join(slower)}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
