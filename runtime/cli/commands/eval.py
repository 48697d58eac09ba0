"""`dlc eval`: loss and metrics of trained weights on data."""

from __future__ import annotations

from dlc.runtime.cli.arguments import model_arguments, positive, WEIGHTS_HELP
from dlc.runtime.cli.trained import weighted_model

HELP = 'loss and metrics of trained weights on data'


def arguments(p):
    model_arguments(p, backend=True)
    p.add_argument("--weights", required=True, metavar="CKPT", help=WEIGHTS_HELP)
    p.add_argument(
        "--data",
        metavar="SPEC",
        help="the data to score (default: the test data of the checkpoint's "
        "run, else its validation data, else its training data)",
    )
    p.add_argument("--batch", type=positive, default=256, metavar="N", help="batch size (default 256)")
    p.add_argument(
        "--int8",
        action="store_true",
        help="with the integer products of a quantized checkpoint (dlc quantize; docs/quantization.md)",
    )


def run(args):
    values = weighted_model(args).evaluate(args.data, args.batch, int8=args.int8)  # which data: on stderr
    print("  ".join(f"{k} {v:.4f}" for k, v in values.items()))
