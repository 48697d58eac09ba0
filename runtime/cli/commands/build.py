"""`dlc build`: compile a model's prediction into a native library with a C API (.so, .a, .h)."""

from __future__ import annotations

import sys
from pathlib import Path

from dlc.compiler.native.codegen import jit
from dlc.runtime.cli.arguments import model_arguments, seed_number, whole
from dlc.runtime.deploy.build import TARGETS, build
from dlc.runtime.training.config import flags

HELP = "compile a model's prediction (and with --train its train step) into a native library with a C API (.so, .a, .h)"


def arguments(p):
    model_arguments(p)
    p.add_argument("-o", "--output", required=True, metavar="DIR", help="the folder to write the library into")
    p.add_argument(
        "--weights",
        metavar="CKPT",
        help="the checkpoint (or .safetensors file) to embed with "
        "--embed-weights; without it, only checked against the model (a mismatch is refused now, not at "
        "create)",
    )
    p.add_argument(
        "--embed-weights",
        dest="embed_weights",
        action="store_true",
        help="put the weights inside the library (default: NAME_create reads a checkpoint)",
    )
    p.add_argument(
        "--target",
        choices=list(TARGETS),
        default="host",
        help="the CPU to compile for (default: this machine's): an x86-64 level, aarch64 (Linux, ARMv8.2-A, "
        "NEON), aarch64-dotprod (int8 by sdot), aarch64-i8mm (int8 by usdot), aarch64-bf16 (also bf16 "
        "products by BFDOT) or macos-arm64 (a .dylib, never run); the other machines' linked by zig "
        "cc; the library refuses to run on a CPU without those features",
    )
    p.add_argument(
        "--train",
        action="store_true",
        help="the library trains too: train_step (the train block's optimizer and schedule), "
        "get/set parameters, save a checkpoint",
    )
    p.add_argument(
        "--seed",
        type=seed_number,
        metavar="N",
        help="with --train: the run's seed, as dlc train --seed (the "
        "random key of each step, the data split the checkpoints record)",
    )
    p.add_argument(
        "--epochs",
        type=whole(0),
        metavar="N",
        help="with --train: the run's epochs, as dlc train --epochs "
        "(the schedule's length until set_schedule says otherwise)",
    )
    p.add_argument(
        "--transform",
        action="store_true",
        help="predict takes the data as its source reads it and multiplies each input by the training "
        "data's scale itself (digits(): the pixels 0-16; NAME_INPUT_X_SCALE in the header)",
    )
    p.add_argument(
        "--int8",
        action="store_true",
        help="its products in int8, as the quantized checkpoint --weights gives them (dlc quantize; "
        "docs/quantization.md), compiled in with every weight (--embed-weights implied): its outputs "
        "are dlc predict --int8's bit for bit",
    )
    p.add_argument(
        "--toolchain",
        choices=["auto", "cc", "zig"],
        default="auto",
        help='auto (default): the system cc, else zig cc (pip install "dlc[build]")',
    )


def run(args):
    built = build(
        args.file,
        Path(args.output),
        args.model,
        args.weights,
        args.target,
        args.embed_weights,
        toolchain=args.toolchain,
        train=args.train,
        overrides=flags(args, ("seed", "epochs")),
        transform=args.transform,
        int8=args.int8,
    )
    for note in built.notes:
        print(f"note: {note}", file=sys.stderr)
    print(f"wrote {', '.join(str(f) for f in built.files)}")
    print(
        f"target {built.target}, weights {'embedded' if built.embedded else 'read from a checkpoint at create'}, "
        f"{'predicts and trains' if built.train else 'predicts'}"
        f"{f' with {built.int8} integer products' if built.int8 else ''}"
        f"{', scales its inputs itself' if built.transform else ''}, linked with {built.toolchain}"
    )
    if built.level != jit.OPT_LEVEL:
        mode = jit.quick_code()
        print(
            f"its code is {'quick' if mode == 'only' else mode} code, not O3 (DLC_QUICK_CODE={mode}): "
            f"it computes the same bits, more slowly"
        )
