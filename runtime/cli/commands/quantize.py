"""`dlc quantize`: trained weights to a quantized checkpoint, calibrated on the model's data (docs/quantization.md)."""

from __future__ import annotations

from dlc.runtime.cli.arguments import model_arguments, positive, real, WEIGHTS_HELP
from dlc.runtime.cli.trained import weighted_model

HELP = "quantize trained weights' products to int8, calibrated on the model's data"


def arguments(p):
    model_arguments(p)
    p.add_argument("--weights", required=True, metavar="CKPT", help=WEIGHTS_HELP)
    p.add_argument("-o", "--output", required=True, metavar="Q.npz", help="the quantized checkpoint to write")
    p.add_argument(
        "--calibrate",
        type=positive,
        default=32,
        metavar="N",
        help="calibrate on the first N batches of the data, in order (default 32)",
    )
    p.add_argument(
        "--observer",
        choices=["minmax", "percentile"],
        default="minmax",
        help="the range of each product's input: minmax (default), or the --percentile-th percentiles",
    )
    p.add_argument(
        "--percentile",
        type=real(50, strict=True, most=100),
        default=99.99,
        metavar="P",
        help="with --observer percentile: the range from the (100-P)th to the Pth percentile (default 99.99)",
    )
    p.add_argument("--data", metavar="SPEC", help="the calibration data (default: the train block's training data)")
    p.add_argument("--batch", type=positive, metavar="N", help="calibration batch size (default: the train block's)")


def run(args):
    args.backend = "reference"  # calibration runs the float32 model on the reference engine
    model = weighted_model(args).quantize(args.calibrate, args.observer, args.percentile, args.data, args.batch)
    q = model.quantized
    print(
        f"calibrated {len(model.quantization)} products on {q['calibrate']} batches of {q['batch']} of {q['data']} "
        f"(observer {args.observer})"
    )
    path = model.save(args.output)
    print(f"wrote {path}: {len(model.quantization)} integer products (dlc summary --int8 says which and why)")
