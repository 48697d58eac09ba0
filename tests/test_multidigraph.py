"""The IR's multigraph (compiler/ir/multidigraph.py) answers as networkx's MultiDiGraph does,
in the same orders, after any sequence of the changes the compiler makes."""
import networkx as nx
from hypothesis import given, settings, strategies as st

from dlc.compiler.ir.multidigraph import MultiDiGraph

NODES = st.integers(0, 6)
CHANGES = st.lists(st.one_of(
    st.tuples(st.just("add_node"), NODES, st.integers(0, 3)),
    st.tuples(st.just("add_edge"), NODES, NODES, st.integers(0, 2), st.integers(0, 3)),
    st.tuples(st.just("remove_node"), NODES),
    st.tuples(st.just("remove_nodes_from"), st.lists(NODES, max_size=3)),
    st.tuples(st.just("remove_edge"), NODES, NODES, st.integers(0, 2)),
    st.tuples(st.just("remove_edges_from"), st.lists(st.tuples(NODES, NODES, st.integers(0, 2)), max_size=3)),
), max_size=40)


def apply(g, change):
    name, *args = change
    if name == "add_node":
        g.add_node(args[0], op=args[1])
    elif name == "add_edge":
        g.add_edge(args[0], args[1], key=args[2], out=args[3])
    elif name == "remove_node":
        if args[0] in g:
            g.remove_node(args[0])
    elif name == "remove_edge":
        u, v, k = args
        if u in g and k in g.succ[u].get(v, {}):
            g.remove_edge(u, v, key=k)
    else:
        getattr(g, name)(args[0])


def state(g) -> dict:
    nodes = list(g.nodes)
    return {
        "nodes": nodes, "len": (len(g), len(g.nodes), g.number_of_nodes(), g.number_of_edges()),
        "data": list(g.nodes(data=True)), "op": list(g.nodes(data="op")),
        "edges": [list(g.edges()), list(g.edges(keys=True, data="out")), list(g.edges(data=True)),
                  list(g.edges(data="out"))],
        "per node": [(list(g.out_edges(n)), list(g.out_edges(n, keys=True, data="out")),
                      list(g.out_edges(n, data=True)), list(g.in_edges(n, keys=True)),
                      list(g.in_edges(n, keys=True, data="out")), list(g.successors(n)),
                      list(g.predecessors(n)), g.out_degree(n), g.nodes[n], n in g)
                     for n in nodes],
        "adjacency": ([(u, list(vs.items())) for u, vs in g.succ.items()],
                      [(v, list(us.items())) for v, us in g.pred.items()]),
        "absent": 7 in g,
    }


@settings(max_examples=300, deadline=None)
@given(CHANGES)
def test_it_changes_and_answers_as_networkx(changes):
    ours, theirs = MultiDiGraph(), nx.MultiDiGraph()
    for change in changes:
        apply(ours, change)
        apply(theirs, change)
        assert state(ours) == state(theirs), change


def test_to_networkx_keeps_nodes_edges_and_data():
    g = MultiDiGraph()
    g.add_node(0, op="input")
    g.add_edge(0, 1, key=0, out=0)
    g.add_edge(0, 1, key=1, out=0)
    h = g.to_networkx()
    assert state(h) == state(g) and nx.descendants(h, 0) == {1}
