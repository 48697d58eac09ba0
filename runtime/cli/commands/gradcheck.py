"""`dlc gradcheck`: check gradients against finite differences (float64)."""

from __future__ import annotations

import sys

from dlc.runtime.training import gradcheck as gc
from dlc.runtime.cli.arguments import model_arguments, positive, real, seed_number
from dlc.runtime.cli.shared import build, dim_sizes

HELP = 'check gradients against finite differences (float64)'


def arguments(p):
    model_arguments(p)
    p.add_argument("--size", type=positive, default=2, metavar="N", help="size of every symbolic dim (default 2)")
    p.add_argument("--dim", action="append", metavar="NAME=SIZE", help="size of one symbolic dim")
    p.add_argument("--entries", type=positive, default=8, metavar="N", help="entries checked per parameter (default 8)")
    p.add_argument(
        "--tolerance",
        type=real(0, strict=True),
        default=1e-6,
        metavar="T",
        help="largest relative error that passes (default 1e-6)",
    )
    p.add_argument(
        "--seed",
        type=seed_number,
        default=0,
        metavar="S",
        help="seed of the parameters, the inputs and the entries checked (default 0)",
    )
    p.add_argument(
        "--hessian",
        action="store_true",
        help="check Hessian-vector products instead, on the reference engine (float64) and the native one",
    )
    p.add_argument(
        "--native-tolerance",
        dest="native_tolerance",
        type=real(0, strict=True),
        default=1e-4,
        metavar="T",
        help="with --hessian: the largest relative error that passes on the native engine, "
        "which computes in float32 (default 1e-4)",
    )


def run(args):
    model = build(args, training=True)
    model.require_loss("there is no gradient to check")
    sizes = gc.default_sizes(model, args.size)
    sizes.update(dim_sizes(args.dim))
    params = gc.init_params(model, args.seed)
    feeds = gc.sample_inputs(model, sizes, args.seed)
    dims = ", ".join(f"{k}={v}" for k, v in sizes.items()) or "none"
    if args.hessian:
        results = gc.hvp_check(
            model, feeds, params, tolerance=args.tolerance, native_tolerance=args.native_tolerance, seed=args.seed
        )
        print(
            f"Hessian-vector product check of {model.name} against differences of the gradient in float64 "
            f"(symbolic dims: {dims}; tolerance {args.tolerance:g}, native {args.native_tolerance:g})"
        )
        headers = ("Parameter", "Engine", "Entries", "Max abs error", "Max rel error", "Result")
        rows = [
            (
                r.name,
                f"{r.engine} ({gc.HVP_ENGINES[r.engine]})",
                str(r.checked),
                f"{r.max_abs:.2e}",
                f"{r.rel:.2e}",
                "pass" if r.ok else "FAIL",
            )
            for r in results
        ]
        passed = "pass on both engines"
    else:
        results = gc.gradcheck(model, feeds, params, per_param=args.entries, tolerance=args.tolerance, seed=args.seed)
        print(f"gradient check of {model.name} in float64 (symbolic dims: {dims}; tolerance {args.tolerance:g})")
        headers = ("Parameter", "Entries", "Max abs error", "Max rel error", "Result")
        rows = [
            (r.name, str(r.checked), f"{r.max_abs:.2e}", f"{r.rel:.2e}", "pass" if r.ok else "FAIL") for r in results
        ]
        passed = "pass"
    widths = [max(len(x[i]) for x in [headers] + rows) for i in range(len(headers))]
    for r in [headers] + rows:
        print("  ".join(v.ljust(w) for v, w in zip(r, widths)).rstrip())
    failed, total = {r.name for r in results if not r.ok}, len({r.name for r in results})
    if failed:
        print(f"FAILED: {len(failed)} of {total} parameters", file=sys.stderr)
        return 1
    print(f"all {total} parameters {passed}")
    return 0
