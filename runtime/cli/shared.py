"""What several commands do with the model a command names: build it, take its graph (or its
train-step graph) and render it, read `--dim NAME=SIZE`, and write their text out."""

from __future__ import annotations

from dlc.compiler.errors import DlcError, Span
from dlc.compiler.frontend.loader import load
from dlc.compiler.ir import graph as ir_graph
from dlc.compiler.passes import autodiff


def build(args, training=True):
    return load(args.file).build(args.model, training=training)


def write(text: str, path: str | None):
    """`text` to the file `path`, or to stdout without one."""
    if path:
        try:
            with open(path, "w") as f:
                f.write(text + "\n")
        except OSError as e:
            raise DlcError(f"cannot write {path}: {e.strerror}", Span.whole(path)) from None
    else:
        print(text)


def dim_sizes(pairs) -> dict:
    """--dim NAME=SIZE, given any number of times, as sizes by name."""
    sizes = {}
    for item in pairs or []:
        name, _, value = item.partition("=")
        if not name or not value.isdigit() or int(value) <= 0:
            raise DlcError(f"--dim takes NAME=SIZE with a positive size, got '{item}'", Span.whole("--dim"))
        sizes[name] = int(value)
    return sizes


def graph_for(args, grad: bool):
    """The model's forward graph (--eval: in evaluation mode), or with `grad` its train step's."""
    model = build(args, training=not getattr(args, "eval", False))
    if grad:
        model.require_loss("it has no gradient graph")
    return autodiff.train_step(model.graph) if grad else model.graph


def native_graph(model):
    """What the native stages of `dlc compile` and `dlc summary --bf16` show: the train step's
    graph, or the forward graph of a model without a loss."""
    return autodiff.train_step(model.graph) if "loss" in model.graph.outputs else model.graph


def render_graph(g, fmt: str) -> str:
    return {"text": ir_graph.to_text, "dot": ir_graph.to_dot, "json": ir_graph.to_json}[fmt](g)
