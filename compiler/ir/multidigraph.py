"""The graph IR's storage: a directed multigraph with the layout and the part of the API of
networkx's MultiDiGraph that dlc uses (nodes with attribute dicts, `succ`/`pred` adjacency
of edge-key dicts, the edge views with `keys=` and `data=`), in the same iteration orders.

It stands in for networkx's class because `import networkx` loads all of networkx (its
algorithms, readers and writers, and a scan of the installed packages' entry points for its
backends) and no submodule can be imported without that: some 130 ms of a 640 ms `dlc check`
on a Zen 3, and a fifth of `dlc train`'s imports. The IR used only the container. Building a
graph with it is also quicker (no view objects, no cache to clear on each change). networkx
itself stays a dependency, for the algorithms (gradcheck's descendants); `to_networkx` makes
one of its graphs from this."""
from __future__ import annotations


class MultiDiGraph:
    def __init__(self):
        self._node: dict = {}       # node -> its attribute dict
        self.succ: dict = {}        # u -> {v -> {key -> edge data}}
        self.pred: dict = {}        # v -> {u -> the same key dict}
        self.nodes = NodeView(self._node)

    # nodes --------------------------------------------------------------------------------
    def __contains__(self, n) -> bool:
        return n in self._node

    def __iter__(self):
        return iter(self._node)

    def __len__(self) -> int:
        return len(self._node)

    def number_of_nodes(self) -> int:
        return len(self._node)

    def add_node(self, n, **attrs):
        if n not in self._node:
            self.succ[n], self.pred[n], self._node[n] = {}, {}, {}
        self._node[n].update(attrs)

    def remove_node(self, n):
        if n not in self._node:
            raise KeyError(f"node {n} is not in the graph")
        del self._node[n]
        for v in self.succ.pop(n):
            del self.pred[v][n]
        for u in self.pred.pop(n):
            del self.succ[u][n]

    def remove_nodes_from(self, nodes):
        for n in nodes:
            if n in self._node:
                self.remove_node(n)

    def successors(self, n):
        return iter(self.succ[n])

    def predecessors(self, n):
        return iter(self.pred[n])

    def out_degree(self, n) -> int:
        """The edges out of n (each key of a parallel edge counts)."""
        return sum(map(len, self.succ[n].values()))

    # edges --------------------------------------------------------------------------------
    def add_edge(self, u, v, key, **attrs):
        for n in (u, v):
            self.add_node(n)
        keys = self.succ[u].get(v)
        if keys is None:
            keys = self.succ[u][v] = self.pred[v][u] = {}
        keys.setdefault(key, {}).update(attrs)

    def remove_edge(self, u, v, key):
        keys = self.succ[u][v]
        del keys[key]
        if not keys:
            del self.succ[u][v], self.pred[v][u]

    def remove_edges_from(self, edges):
        """Remove each (u, v, key) that is an edge."""
        for u, v, key in edges:
            if key in self.succ.get(u, {}).get(v, {}):
                self.remove_edge(u, v, key)

    def number_of_edges(self) -> int:
        return sum(self.out_degree(n) for n in self._node)

    def out_edges(self, nbunch=None, keys: bool = False, data=False):
        """(u, v[, key][, data]) of each edge out of nbunch (a node, or nodes; all when None):
        data=True gives the edge's dict, data="name" its attribute `name` (None if unset)."""
        if nbunch is None:
            nbunch = self._node
        elif nbunch in self._node:
            nbunch = (nbunch,)
        return [(u, v, *_extra(k, d, keys, data)) for u in nbunch for v, kd in self.succ[u].items()
                for k, d in kd.items()]

    edges = out_edges

    def in_edges(self, n, keys: bool = False, data=False):
        return [(u, n, *_extra(k, d, keys, data)) for u, kd in self.pred[n].items() for k, d in kd.items()]

    def to_networkx(self):
        """A networkx MultiDiGraph of the same nodes and edges, for its algorithms."""
        import networkx as nx
        g = nx.MultiDiGraph()
        g.add_nodes_from(self.nodes(data=True))
        g.add_edges_from(self.edges(keys=True, data=True))
        return g


def _extra(key, data: dict, keys: bool, which) -> tuple:
    if which is True:
        return (key, data) if keys else (data,)
    if which is False:
        return (key,) if keys else ()
    return (key, data.get(which)) if keys else (data.get(which),)


class NodeView:
    """graph.nodes: `nodes[n]` is n's attribute dict; iterating gives the nodes, in the order
    they were added; `nodes(data=True)` the (node, dict) pairs, `nodes(data="name")` the
    (node, attribute) pairs (None if unset)."""
    __slots__ = ("_node",)

    def __init__(self, node: dict):
        self._node = node

    def __getitem__(self, n) -> dict:
        return self._node[n]

    def __iter__(self):
        return iter(self._node)

    def __len__(self) -> int:
        return len(self._node)

    def __contains__(self, n) -> bool:
        return n in self._node

    def __call__(self, data=False):
        if data is False:
            return list(self._node)
        if data is True:
            return list(self._node.items())
        return [(n, d.get(data)) for n, d in self._node.items()]
