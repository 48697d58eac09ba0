"""`dlc graph`: print the graph IR (or its gradient graph)."""

from __future__ import annotations

from dlc.compiler.graph_page.page import page
from dlc.runtime.cli.arguments import model_arguments
from dlc.runtime.cli.shared import build, write, graph_for, render_graph

HELP = 'print the graph IR (or its gradient graph)'


def arguments(p):
    model_arguments(p)
    p.add_argument("--grad", action="store_true", help="the train-step graph with gradients")
    p.add_argument("--eval", action="store_true", help="the evaluation-mode graph")
    p.add_argument(
        "--format",
        choices=["text", "dot", "json", "html"],
        default="text",
        help="text (default): a node a line; dot: Graphviz; json: nodes, types and source places; "
        "html: one page to explore the forward and train-step graphs by layer, with the source "
        "and the native kernels",
    )
    p.add_argument("-o", "--output", metavar="PATH", help="write to PATH instead of stdout")


def run(args):
    if args.format == "html":  # both graphs of the model, its source and its native kernels
        model = build(args, training=not args.eval)
        if args.grad:
            model.require_loss("it has no gradient graph")
        write(page(model, "train_step" if args.grad else "forward"), args.output)
        return
    write(render_graph(graph_for(args, args.grad), args.format), args.output)
