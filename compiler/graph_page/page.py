"""The page itself: both graphs with their boxes, layouts, sources and kernels, gzipped into
page.html with page.js and page.css (the package's docstring says what the page holds)."""

from __future__ import annotations

import base64
import gzip
import html
import json
import re
from importlib import resources

from dlc.compiler.passes import autodiff
from dlc.compiler.errors import Span, source_lines
from dlc.compiler.ir.graph import GRADIENTS, PRIMITIVES, Graph, attr_text, attrs_text, node_title
from dlc.compiler.graph_page.boxes import box_outputs, box_tree, forward_boxes, step_boxes
from dlc.compiler.graph_page.kernels import native_kernels
from dlc.compiler.graph_page.layout import rows
from dlc.compiler.frontend.model import Model
from dlc.compiler.frontend.summary import count_text


def page(model: Model, first: str = "forward") -> str:
    """The HTML page of a model: its forward graph and, when it has a loss, the train step
    (of either mode, as `dlc graph --grad [--eval]`); `first`, the view shown on opening."""
    box_of, boxes = forward_boxes(model)
    graphs = {"forward": (model.graph, box_of, boxes)}
    if "loss" in model.graph.outputs:
        step = autodiff.train_step(model.graph)
        graphs["train_step"] = (step, *step_boxes(step, box_of, boxes))
    compiled = graphs.get("train_step", graphs["forward"])[0]  # what the native engine compiles, as `dlc compile`
    files = Files()
    data = {
        "model": model.name,
        "mode": "training" if model.training else "evaluation",
        "first": first,
        "views": [view(name, *g, compiled, files) for name, g in graphs.items()],
        "native": native_kernels(compiled),
        "sources": files.texts(),
    }
    packed = base64.b64encode(gzip.compress(json.dumps(data, separators=(",", ":")).encode(), mtime=0)).decode()
    asset = resources.files(__package__)
    parts = {
        "title": html.escape(f"{model.name}: dlc graph"),
        "data": packed,
        "style": asset.joinpath("page.css").read_text(),
        "script": asset.joinpath("page.js").read_text(),
    }
    return re.sub(r"\{\{(\w+)\}\}", lambda m: parts[m.group(1)], asset.joinpath("page.html").read_text())


class Files:
    """The source files the nodes come from, numbered as the page refers to them."""

    def __init__(self):
        self.names: dict = {}

    def place(self, span: Span | None) -> list | None:
        """[file number, line, column, end line, end column] of a span."""
        if span is None:
            return None
        number = self.names.setdefault(span.file, len(self.names))
        return [number, span.line, span.col, span.end_line or span.line, span.end_col]

    def texts(self) -> list:
        return [{"name": name, "text": "\n".join(source_lines(name) or [])} for name in self.names]


def view(name: str, graph: Graph, box_of: dict, boxes: dict, compiled: Graph, files: Files) -> dict:
    """One graph of the page: its nodes, its edges, its boxes and their rows."""
    outputs: dict = {}
    for out, t in graph.outputs.items():
        outputs.setdefault(t.node, []).append(out)
    nodes = []
    for n in graph.order():
        d = graph.nx.nodes[n]
        span = d["span"]
        nodes.append(
            {
                "id": n,
                "op": d["op"],
                "title": node_title(graph, n),
                "layer": box_of[n],
                "pattern": PRIMITIVES[d["op"]].pattern.value,
                "types": ", ".join(str(t) for t in d["types"]),
                "attrs": attrs_text(d["attrs"]),
                "flops": count_text(graph.node_flops(n)),
                **_places(span, files),
                "outputs": outputs.get(n, []),
                "grad_of": d.get("grad_of"),
                "compiled": n in compiled.nx,
                **_constant(d, box_of[n]),
            }
        )
    tree = box_tree(graph, box_of, boxes)
    leaving = box_outputs(graph, box_of, boxes)
    return {
        "name": name,
        "title": {"forward": "forward graph", "train_step": "train step"}[name],
        "nodes": nodes,
        "edges": sorted(set(graph.nx.edges())),
        "layers": {
            box: {
                **boxes[box],
                **_places(boxes[box]["span"], files),
                "size": _size(tree, box),
                "outputs": leaving.get(box, []),
            }
            for box in tree
        },
        "rows": rows(graph, tree, box_of, boxes),
    }


def _constant(d: dict, box: str) -> dict:
    """A constant's value, which its label shows (`%5 constant 0`: the 0 a relu compares
    with), and for the seed of the gradients, in the box ∇ (boxes.step_boxes), what it is."""
    if d["op"] != "constant":
        return {}
    seed = {"note": "the seed of the gradients: ∂loss/∂loss = 1"} if box == GRADIENTS and "grad_of" not in d else {}
    return {"value": attr_text(d["attrs"]["value"]), **seed}


def _places(span: Span | None, files: Files) -> dict:
    """The place of a span, and for one in the standard library the user's call that led there."""
    return {"span": files.place(span), "call": files.place(span.caller if span is not None else None)}


def _size(tree: dict, box: str) -> int:
    """The nodes in a box and the boxes in it."""
    inner, nodes = tree[box]
    return len(nodes) + sum(_size(tree, c) for c in inner)
