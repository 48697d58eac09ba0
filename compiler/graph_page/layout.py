"""The layout of the graph page: inside every layer, its nodes and the layers in it
("children") in rows, top to bottom, so that values flow downwards.

Each layer is laid out on its own, its sub-layers as single boxes, so the page can draw
any mix of collapsed and expanded layers by sizing the rows (page.js): a layered
(Sugiyama) layout in three steps — ranks by longest path, every child then moved down
next to its first reader, then a few barycenter sweeps to order each row.
"""
from __future__ import annotations

from dlc.compiler.ir.graph import Graph, layer_of, layer_parent, layer_tree

SWEEPS = 2      # down-and-up passes of the barycenter ordering


def rows(graph: Graph) -> dict:
    """layer -> its children in rows: a node is its id (int), a layer its name (str)."""
    tree = layer_tree(graph)
    place = {n: i for i, n in enumerate(graph.order())}
    chains = {layer: _chain(layer) for layer in tree}
    first = {}      # child -> the place of its first node in graph order, which breaks cycles

    def visit(layer: str):
        layers, nodes = tree[layer]
        for c in layers:
            visit(c)
        first.update((n, place[n]) for n in nodes)
        first[layer] = min([place[n] for n in nodes] + [first[c] for c in layers], default=0)
    visit("")
    edges = {layer: set() for layer in tree}       # edges between the children of each layer
    for u, v in graph.g.edges():
        lu, lv = layer_of(graph, u), layer_of(graph, v)
        common = next(c for c in chains[lu] if c in chains[lv])
        a, b = _child(common, u, chains[lu]), _child(common, v, chains[lv])
        if a != b:
            edges[common].add((a, b))
    return {layer: _layered(layers + nodes, edges[layer], first) for layer, (layers, nodes) in tree.items()}


def _chain(layer: str) -> list:
    """The layer and the layers above it, up to the whole graph ("")."""
    chain = [layer]
    while chain[-1]:
        chain.append(layer_parent(chain[-1]))
    return chain


def _child(common: str, n: int, chain: list):
    """The child of layer `common` that holds node n (n itself, or a layer under common)."""
    k = chain.index(common)
    return n if k == 0 else chain[k - 1]


def _layered(children: list, edges: set, first: dict) -> list:
    """Rows of children: an edge that goes back in graph order (a cycle among collapsed
    layers: the gradient flowing back into a layer) does not rank."""
    children = sorted(children, key=lambda c: first[c])
    preds = {c: [] for c in children}
    succs = {c: [] for c in children}
    for a, b in edges:
        preds[b].append(a)
        succs[a].append(b)
    rank = {}
    for c in children:
        rank[c] = max((rank[a] + 1 for a in preds[c] if first[a] < first[c]), default=0)
    for c in reversed(children):      # then each as low as its first reader allows: a parameter just above it
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
