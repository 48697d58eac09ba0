"""`dlc bench`: time the native train step (a model without a loss: its prediction) and every kernel in it."""

from __future__ import annotations

from dlc.compiler.errors import DlcError
from dlc.compiler.frontend.loader import load
from dlc.runtime.training.bench import bench
from dlc.runtime.cli.arguments import model_arguments, thread_arguments, positive
from dlc.runtime.cli.shared import dim_sizes

HELP = 'time the native train step (a model without a loss: its prediction) and every kernel in it'


def arguments(p):
    model_arguments(p)
    p.add_argument(
        "--batch",
        type=positive,
        default=32,
        metavar="N",
        help="batch size: B and every input's leading dim (default 32)",
    )
    p.add_argument("--dim", action="append", metavar="NAME=SIZE", help="size of another symbolic dim (default 32)")
    p.add_argument("--steps", type=positive, default=20, metavar="N", help="timed steps (default 20)")
    p.add_argument("--top", type=positive, default=25, metavar="N", help="kernels shown, slowest first (default 25)")
    p.add_argument(
        "--precision",
        choices=("f32", "bf16"),
        default="f32",
        help="of the operands of matmuls and convolutions, as in dlc train (default f32)",
    )
    p.add_argument(
        "--int8",
        action="store_true",
        help="the prediction with its products in int8, as dlc quantize makes them, calibrated on the timed batch",
    )
    thread_arguments(p)


def run(args):
    if args.int8 and args.precision == "bf16":
        raise DlcError("dlc bench times int8 products or bf16 ones, not both: give --int8 or --precision bf16")
    print(
        bench(
            load(args.file),
            args.model,
            args.batch,
            dim_sizes(args.dim),
            args.steps,
            args.top,
            args.precision,
            args.int8,
        )
    )
