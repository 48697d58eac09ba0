"""The `dlc` command line."""
from __future__ import annotations

import argparse
import os
import sys

import numpy as np

import dlc
from dlc.compiler import autodiff, graph as G, summary as S, syntax
from dlc.compiler.errors import DlcError
from dlc.compiler.frontend import load


def _add_model_args(p: argparse.ArgumentParser):
    p.add_argument("file", help="a .dl file")
    p.add_argument("--model", help="which model of the file (default: the last one)")


def _build(args, training=True):
    return load(args.file).build(args.model, training=training)


def _write(text: str, path: str | None):
    if path:
        try:
            with open(path, "w") as f:
                f.write(text + "\n")
        except OSError as e:
            raise DlcError(f"cannot write {path}: {e.strerror}") from None
    else:
        print(text)


def _dims(pairs) -> dict:
    sizes = {}
    for item in pairs or []:
        name, _, value = item.partition("=")
        if not name or not value.isdigit() or int(value) <= 0:
            raise DlcError(f"--dim takes NAME=SIZE with a positive size, got '{item}'")
        sizes[name] = int(value)
    return sizes


# ---- commands -----------------------------------------------------------------------------------
def cmd_check(args):
    train = _build(args, training=True)
    _build(args, training=False)
    print(f"{args.file}: ok")
    print(S.signature(train))


def cmd_summary(args):
    print(S.summary(_build(args, training=not args.eval)))


def _graph_for(args, grad: bool):
    model = _build(args, training=not getattr(args, "eval", False))
    return autodiff.train_step(model.graph) if grad else model.graph


def _render(g, fmt: str) -> str:
    return {"text": G.to_text, "dot": G.to_dot, "json": G.to_json}[fmt](g)


def cmd_graph(args):
    _write(_render(_graph_for(args, args.grad), args.format), args.output)


def cmd_compile(args):
    if args.emit == "ast":
        _write(syntax.dump(load(args.file).module), args.output)
    else:
        _write(_render(_graph_for(args, args.emit == "grad"), args.format), args.output)


def cmd_gradcheck(args):
    from dlc.runtime import gradcheck as gc
    model = _build(args, training=True)
    if "loss" not in model.graph.outputs:
        raise DlcError(f"model {model.name} has no loss, so there is no gradient to check", model.span)
    sizes = gc.default_sizes(model, args.size)
    sizes.update(_dims(args.dim))
    params = gc.init_params(model, args.seed)
    feeds = gc.sample_inputs(model, sizes, args.seed)
    results = gc.gradcheck(model, feeds, params, per_param=args.entries, tolerance=args.tolerance, seed=args.seed)
    dims = ", ".join(f"{k}={v}" for k, v in sizes.items()) or "none"
    print(f"gradient check of {model.name} in float64 (symbolic dims: {dims}; tolerance {args.tolerance:g})")
    rows = [(r.name, str(r.checked), f"{r.max_abs:.2e}", f"{r.rel:.2e}", "pass" if r.ok else "FAIL") for r in results]
    headers = ("Parameter", "Entries", "Max abs error", "Max rel error", "Result")
    widths = [max(len(x[i]) for x in [headers] + rows) for i in range(5)]
    for r in [headers] + rows:
        print("  ".join(v.ljust(w) for v, w in zip(r, widths)).rstrip())
    failed = [r.name for r in results if not r.ok]
    if failed:
        print(f"FAILED: {len(failed)} of {len(results)} parameters", file=sys.stderr)
        return 1
    print(f"all {len(results)} parameters pass")
    return 0


# ---- parser ------------------------------------------------------------------------------------------
def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="dlc", description="A compiler for neural networks written in .dl files.")
    p.add_argument("--version", action="version", version=f"dlc {dlc.__version__}")
    sub = p.add_subparsers(dest="command", metavar="COMMAND")

    c = sub.add_parser("check", help="parse and shape-check a model; print its signature")
    _add_model_args(c)
    c.set_defaults(run=cmd_check)

    c = sub.add_parser("summary", help="parameters, output shapes, totals and FLOPs")
    _add_model_args(c)
    c.add_argument("--eval", action="store_true", help="summarize the evaluation-mode graph")
    c.set_defaults(run=cmd_summary)

    c = sub.add_parser("graph", help="print the graph IR (or its gradient graph)")
    _add_model_args(c)
    c.add_argument("--grad", action="store_true", help="the train-step graph with gradients")
    c.add_argument("--eval", action="store_true", help="the evaluation-mode graph")
    c.add_argument("--format", choices=["text", "dot", "json"], default="text")
    c.add_argument("-o", "--output", metavar="PATH", help="write to PATH instead of stdout")
    c.set_defaults(run=cmd_graph)

    c = sub.add_parser("compile", help="show a stage of compilation")
    _add_model_args(c)
    c.add_argument("--emit", choices=["ast", "graph", "grad"], required=True,
                   help="ast: the syntax tree; graph: the forward graph; grad: the train-step graph")
    c.add_argument("--format", choices=["text", "dot", "json"], default="text", help="for graph and grad")
    c.add_argument("-o", "--output", metavar="PATH", help="write to PATH instead of stdout")
    c.set_defaults(run=cmd_compile)

    c = sub.add_parser("gradcheck", help="check gradients against finite differences (float64)")
    _add_model_args(c)
    c.add_argument("--size", type=int, default=2, help="size of every symbolic dim (default 2)")
    c.add_argument("--dim", action="append", metavar="NAME=SIZE", help="size of one symbolic dim")
    c.add_argument("--entries", type=int, default=8, help="entries checked per parameter (default 8)")
    c.add_argument("--tolerance", type=float, default=1e-6, help="largest relative error that passes")
    c.add_argument("--seed", type=int, default=0)
    c.set_defaults(run=cmd_gradcheck)
    return p


def main(argv=None) -> int:
    args = parser().parse_args(argv)
    if not getattr(args, "run", None):
        parser().print_help()
        return 2
    try:
        return args.run(args) or 0
    except DlcError as e:
        print(e.render(), file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    except RecursionError:
        print("error: the program nests too deeply to compile", file=sys.stderr)
        return 1
    except Exception as e:  # a bug in dlc, not in the user's program
        if os.environ.get("DLC_DEBUG"):
            raise
        print(f"internal error: {type(e).__name__}: {e}\n(this is a bug in dlc; set DLC_DEBUG=1 for a traceback)",
              file=sys.stderr)
        return 3


if __name__ == "__main__":
    sys.exit(main())
