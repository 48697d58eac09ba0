"""`dlc compile`: show a stage of compilation."""

from __future__ import annotations

import sys

from dlc.compiler.errors import DlcError
from dlc.compiler.frontend import syntax
from dlc.compiler.frontend.loader import load
from dlc.compiler.native import PRECISIONS
from dlc.compiler.native.codegen import jit
from dlc.compiler.native.program import render
from dlc.compiler.native.codegen.driver import build_module
from dlc.compiler.native.fusion import Fusion
from dlc.compiler.native.lower import NotLowerable, lower
from dlc.compiler.passes import optimize as graph_passes
from dlc.runtime.cli.arguments import model_arguments, pass_list
from dlc.runtime.cli.shared import build, write, graph_for, native_graph, render_graph
from dlc.runtime.engines.reference import predict_graph

HELP = 'show a stage of compilation'


def arguments(p):
    model_arguments(p)
    stage = p.add_mutually_exclusive_group(required=True)
    stage.add_argument(
        "--emit",
        choices=["ast", "graph", "grad", "fused", "kernels", "llvm", "asm"],
        help="ast: the syntax tree; graph: the forward graph; grad: the train-step graph; fused: "
        "the fusion's groups, the graph operations each kernel computes, with their source lines; "
        "kernels: the fused loop kernels of the train step, each with its source line; llvm: "
        "their optimized LLVM IR; asm: the host assembly",
    )
    stage.add_argument(
        "--explain-fusion",
        action="store_true",
        help="at every kernel boundary of the train step (the forward graph without a loss), why the "
        "producer is not computed in its reader's kernel, with both source lines",
    )
    p.add_argument("--format", choices=["text", "dot", "json"], default="text", help="for graph and grad")
    p.add_argument(
        "--precision",
        choices=PRECISIONS,
        default="f32",
        help="kernels, llvm and asm: of the operands of matmuls and convolutions, as in dlc train (default f32; "
        "bf16 flags the GEMMs that round them)",
    )
    p.add_argument(
        "-O",
        "--optimize",
        action="store_true",
        help="graph and grad: run the graph passes (" + ", ".join(graph_passes.PIPELINE) + ") first; the native "
        "stages always run them",
    )
    p.add_argument(
        "--passes",
        type=pass_list,
        metavar="NAMES",
        help="run these passes, comma-separated, instead of the default pipeline (implies -O)",
    )
    p.add_argument(
        "--dump-after",
        choices=[*graph_passes.PASSES, "all"],
        metavar="PASS",
        help="print the graph to stderr after PASS (" + ", ".join(graph_passes.PASSES) + " or all), in the "
        "first round and whenever it changes the graph (implies -O)",
    )
    p.add_argument(
        "--predict",
        action="store_true",
        help="graph, fused, kernels, llvm, asm and --explain-fusion: of the prediction (the model's outputs), as "
        "dlc predict, the Python API and a built library run it: its weights packed once, its first layers an "
        "example at a time",
    )
    p.add_argument("-o", "--output", metavar="PATH", help="write to PATH instead of stdout")


def optimized(args, graph, native: bool):
    """The graph after the passes asked for: -O, --passes or --dump-after for a graph,
    the default pipeline (what the engine compiles) for the native stages."""
    passes = args.passes or (graph_passes.PIPELINE if native or args.optimize or args.dump_after else ())
    if args.dump_after not in (None, "all", *passes):
        raise DlcError(f"--dump-after {args.dump_after}: that pass does not run (the passes: {', '.join(passes)})")
    return graph_passes.optimize(graph, passes, dump=args.dump_after, dump_to=sys.stderr) if passes else graph


def run(args):
    if args.predict and args.emit in ("ast", "grad"):
        raise DlcError(f"--predict shows the prediction's graph or native stages, not --emit {args.emit}")
    if args.emit == "ast":
        write(syntax.dump(load(args.file).module), args.output)
    elif args.emit == "graph" and args.predict:
        write(render_graph(optimized(args, prediction(build(args, training=False)), False), args.format), args.output)
    elif args.emit in ("graph", "grad"):
        write(render_graph(optimized(args, graph_for(args, args.emit == "grad"), False), args.format), args.output)
    else:  # the native stages, of the train step (the forward graph without a loss) or the prediction
        model = build(args, training=not args.predict)
        graph = optimized(args, prediction(model) if args.predict else native_graph(model), True)
        if args.emit == "fused" or args.explain_fusion:
            fusion = Fusion(graph)
            write(fusion.explanation() if args.explain_fusion else fusion.text(), args.output)
            return
        try:
            program = lower(graph, args.precision, pack_weights="once" if args.predict else None)
        except NotLowerable as e:
            raise DlcError(f"the native backend cannot compile {model.name} yet: {e}") from None
        if args.emit == "kernels":
            write(render.program(program), args.output)
        else:
            module = build_module(program).module
            write(jit.optimized_ir(module) if args.emit == "llvm" else jit.assembly(module), args.output)


def prediction(model):
    """The graph of the prediction of `model` (built for evaluation): its outputs."""
    model.require_outputs("to predict")
    return predict_graph(model)
