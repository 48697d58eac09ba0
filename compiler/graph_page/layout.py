"""The layout of the graph page: inside every box (boxes.py), its nodes and the boxes in
it ("children") in rows, top to bottom, so that values flow downwards.

Each box is laid out on its own, the boxes in it as single boxes, so the page can draw
any mix of collapsed and expanded boxes by sizing the rows (page.js): a layered
(Sugiyama) layout in three steps — ranks by longest path, every child then moved down
next to its first reader, then a few barycenter sweeps to order each row.
"""

from __future__ import annotations

from dlc.compiler.graph_page.boxes import chain
from dlc.compiler.ir.graph import Graph

SWEEPS = 2  # down-and-up passes of the barycenter ordering


def rows(graph: Graph, tree: dict, box_of: dict, boxes: dict) -> dict:
    """box -> its children in rows: a node is its id (int), a box its id (str). `tree`:
    boxes.box_tree; `box_of`: node -> its box; `boxes`: box -> its record (its parent)."""
    place = {n: i for i, n in enumerate(graph.order())}
    chains = {box: chain(box, boxes) for box in tree}
    first = {}  # child -> the place of its first node in graph order, which breaks cycles

    def visit(box: str):
        inner, nodes = tree[box]
        for c in inner:
            visit(c)
        first.update((n, place[n]) for n in nodes)
        first[box] = min([place[n] for n in nodes] + [first[c] for c in inner], default=0)

    visit("")
    edges = {box: set() for box in tree}  # edges between the children of each box
    for u, v in graph.nx.edges():
        lu, lv = box_of[u], box_of[v]
        common = next(c for c in chains[lu] if c in chains[lv])
        a, b = _child(common, u, chains[lu]), _child(common, v, chains[lv])
        if a != b:
            edges[common].add((a, b))
    return {box: _layered(inner + nodes, edges[box], first) for box, (inner, nodes) in tree.items()}


def _child(common: str, n: int, chain: list):
    """The child of box `common` that holds node n (n itself, or a box under common)."""
    k = chain.index(common)
    return n if k == 0 else chain[k - 1]


def _layered(children: list, edges: set, first: dict) -> list:
    """Rows of children: an edge that goes back in graph order (a cycle among collapsed
    boxes: the gradient flowing back into a box) does not rank."""
    children = sorted(children, key=lambda c: first[c])
    preds = {c: [] for c in children}
    succs = {c: [] for c in children}
    for a, b in edges:
        preds[b].append(a)
        succs[a].append(b)
    rank = {}
    for c in children:
        rank[c] = max((rank[a] + 1 for a in preds[c] if first[a] < first[c]), default=0)
    for c in reversed(children):  # then each as low as its first reader allows: a parameter just above it
        later = [rank[b] for b in succs[c] if first[b] > first[c]]
        if later:
            rank[c] = min(later) - 1
    table = [[] for _ in range(max(rank.values(), default=-1) + 1)]
    for c in children:
        table[rank[c]].append(c)
    for _ in range(SWEEPS):
        _sweep(table, preds)
        _sweep(table[::-1], succs)
    return table


def _sweep(table: list, neighbours: dict):
    """Order each row by the mean position of its children's neighbours in the rows
    before it (a row is centred, so position 0 is its middle)."""
    x = {}
    for row in table:

        def mean(c, here):
            seen = [x[m] for m in neighbours[c] if m in x]
            return sum(seen) / len(seen) if seen else here

        keys = {c: mean(c, i - (len(row) - 1) / 2) for i, c in enumerate(row)}
        row.sort(key=keys.__getitem__)
        x.update((c, i - (len(row) - 1) / 2) for i, c in enumerate(row))
