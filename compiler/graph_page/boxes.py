"""The boxes of the graph page: every call of a library or user def, and every named model
statement, is one box holding the nodes made during it (model.CallNodes), nested as the calls
were made. A `relu` is one box over its constant, compare and select; a `batchnorm` one box
over its fifty nodes. A box is labelled with the def called and its key options
(`conv2d 16 3x3 s1`) and named after its layer (graph.layer_of: `stage1.0.conv1`).

In the train step the gradient of a node lies in the box `∇.B`, B being the node's box,
under one box `∇` of all the gradients, as graph.layer_of groups them; the seed the
gradients start from (the constant ∂loss/∂loss = 1) lies in `∇` itself.
"""

from __future__ import annotations

from dlc.compiler.ir.graph import GRADIENTS, PRIMITIVES, Graph, Pattern
from dlc.compiler.frontend.model import CallNodes, Model

# the options a box's label shows, after the def's name: the sizes bare, the others short
SIZES = ("filters", "units", "vocab", "dim")
SHORT = {"kernel": "", "stride": "s", "act": ""}
NAMED = ("heads", "ffn", "hidden", "layers", "rate", "scale")
PLAIN = ("identity", "0", "0.0")  # an `act` or a rate that changes nothing: not shown


def forward_boxes(model: Model) -> tuple:
    """(node -> its innermost box, box -> {label, name, def, options, parent, span}) of the
    forward graph; the box "" is the whole graph, which holds the model's inputs."""
    g = model.graph
    spans = _merged(model.calls)
    boxes = {"": {"label": g.name, "name": "", "def": "", "options": [], "parent": None, "span": None}}
    box_of, stack = {}, []  # stack: (end, box id) of the boxes open at a node
    taken = set(boxes)
    order = sorted(spans, key=lambda r: (r[0], -r[1]))
    nodes = sorted(n for n in g.nx if g.op(n) != "input")
    i = 0
    for n in nodes:
        while stack and stack[-1][0] <= n:
            stack.pop()
        while i < len(order) and order[i][0] <= n:
            first, end = order[i]
            i += 1
            while stack and stack[-1][0] <= first:
                stack.pop()
            if end <= n:
                continue  # no node of the forward graph in it (its nodes went to a scan's body)
            parent = stack[-1][1] if stack else ""
            box = _box(spans[first, end], parent)
            named = box["name"] and box["name"] not in taken  # else as a call in its parent: stage1.0>relu
            box_id = _unique(box["name"] if named else (f"{parent}>" if parent else "") + box["def"], taken)
            boxes[box_id] = box
            stack.append((end, box_id))
        box_of[n] = stack[-1][1] if stack else ""
    box_of.update((n, "") for n in g.nx if g.op(n) == "input")
    return box_of, boxes


def step_boxes(step: Graph, box_of: dict, boxes: dict) -> tuple:
    """The boxes of the train step: the forward graph's, and for the gradients ∇ and ∇.B
    for each box B a gradient lies in; a node of the step that is neither in the forward
    graph nor a gradient, the seed, lies in ∇."""
    step_of, out = {}, dict(boxes)
    for n in step.nx:
        d = step.nx.nodes[n]
        if "grad_of" in d:
            step_of[n] = _gradient(box_of.get(d["grad_of"], ""), boxes, out)
        else:
            step_of[n] = box_of[n] if n in box_of else _gradient("", boxes, out)
    return step_of, out


def _gradient(box: str, boxes: dict, out: dict) -> str:
    """The id of the box of the gradients of box `box`, made with those above it."""
    grad = f"{GRADIENTS}.{box}" if box else GRADIENTS
    if grad not in out:
        if box:
            b = boxes[box]
            out[grad] = {
                **b,
                "label": f"{GRADIENTS} {b['label']}",
                "name": f"{GRADIENTS} {b['name']}".rstrip(),
                "parent": _gradient(b["parent"], boxes, out),
            }
        else:
            out[grad] = {
                "label": f"{GRADIENTS} (gradients)",
                "name": "",
                "def": "",
                "options": [],
                "parent": "",
                "span": None,
            }
    return grad


def _merged(calls: list) -> dict:
    """(first, end) -> the calls that made exactly those nodes, innermost first: a statement
    that is one call (`c1 = conv2d(...)`), a def whose body is one call of another, are one box."""
    spans: dict = {}
    for c in calls:
        if c.first < c.end:
            spans.setdefault((c.first, c.end), []).append(c)
    return spans


def _box(calls: list, parent: str) -> dict:
    """The box of the calls that made the same nodes: labelled after the outermost def
    called, named after the outermost layer."""
    defs = [c for c in calls if c.defn]
    call = defs[-1] if defs else calls[-1]
    name = next((c.layer for c in reversed(calls) if c.layer), "")
    return {
        "label": label(call) if defs else name,
        "name": name,
        "def": call.defn,
        "options": [f"{k} = {v}" for k, v in call.options],
        "parent": parent,
        "span": calls[-1].span,
    }


def label(call: CallNodes) -> str:
    """`conv2d 16 3x3 s1`, `dense 64 relu`, `dropout rate=0.5`, `batchnorm`."""
    parts = [call.defn]
    for k, v in call.options:
        if k in SIZES:
            parts.append(v)
        elif k in SHORT and v not in PLAIN:
            parts.append(SHORT[k] + (_kernel(v, call.defn) if k == "kernel" else v))
        elif k in NAMED and v not in PLAIN:
            parts.append(f"{k}={v}")
    return " ".join(parts)


def _kernel(v: str, defn: str) -> str:
    """3 -> 3x3 for a 2-d layer, (3, 5) -> 3x5."""
    if v.startswith("("):
        return "x".join(x.strip() for x in v.strip("(,)").split(","))
    return f"{v}x{v}" if defn.endswith("2d") else v


def _unique(name: str, taken: set) -> str:
    """name, or name:2, name:3, ... when taken (the second relu of a block)."""
    k, out = 1, name
    while out in taken:
        k += 1
        out = f"{name}:{k}"
    taken.add(out)
    return out


def box_tree(graph: Graph, box_of: dict, boxes: dict) -> dict:
    """Every box that holds nodes -> (the boxes in it, its own nodes), with the boxes
    above them, as graph.layer_tree; "" is the whole graph. In graph order."""
    tree: dict = {"": ([], [])}

    def add(box: str):
        if box not in tree:
            tree[box] = ([], [])
            parent = boxes[box]["parent"]
            add(parent)
            tree[parent][0].append(box)

    for n in graph.order():
        add(box_of[n])
        tree[box_of[n]][1].append(n)
    return tree


def chain(box: str, boxes: dict) -> list:
    """The box and the boxes above it, up to the whole graph ("")."""
    out = [box]
    while out[-1]:
        out.append(boxes[out[-1]]["parent"])
    return out


def box_outputs(graph: Graph, box_of: dict, boxes: dict) -> dict:
    """Box -> the nodes whose values leave it: what a closed box shows the shapes of. First
    the values a node outside the box reads in the same part of the step (a forward value
    read by the forward graph, a gradient by the gradients: not the activations the
    gradients read again), then the graph outputs in it; an `update:` of a running
    statistic counts only in a box that has no other output. Inputs, parameters and
    constants are not outputs of the box they are drawn in. In graph order."""
    chains = {box: chain(box, boxes) for box in set(box_of.values())}
    read, named, updates = {}, {}, {}  # box -> its nodes of each kind
    names: dict = {}
    for out, t in graph.outputs.items():
        names.setdefault(t.node, []).append(out)
    for n in graph.order():
        if PRIMITIVES[graph.op(n)].pattern is Pattern.SOURCE:
            continue
        inside = chains[box_of[n]]
        gradient = "grad_of" in graph.nx.nodes[n]
        left = {
            b
            for v in graph.nx.successors(n)
            if ("grad_of" in graph.nx.nodes[v]) == gradient
            for b in inside
            if b not in chains[box_of[v]]
        }
        for b in left:
            read.setdefault(b, []).append(n)
        if n in names:
            kind = updates if all(o.startswith("update:") for o in names[n]) else named
            for b in set(inside) - left:
                kind.setdefault(b, []).append(n)
    return {b: read.get(b, []) + named.get(b, []) or updates[b] for b in set(read) | set(named) | set(updates) if b}
