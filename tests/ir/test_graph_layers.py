"""Graph nodes grouped by layer (graph.layer_of), and the dot output's clusters."""

import re
from pathlib import Path

import pytest

from dlc.compiler.passes import autodiff
from dlc.compiler.ir import graph as G
from dlc.compiler.frontend.loader import load, load_text
from dlc.runtime.cli import main

EXAMPLES = Path(__file__).parents[2] / "examples"


def built(name: str):
    return load(str(EXAMPLES / name)).build(None)


@pytest.mark.parametrize("example", ["resnet.dl", "char_transformer.dl", "seq2seq.dl", "mnist_mlp.dl"])
def test_a_parameter_belongs_to_the_layer_its_name_says(example):
    model = built(example)
    for n in model.graph.params():
        name = model.graph.attrs(n)["name"]
        assert G.layer_of(model.graph, n) == name.rpartition(".")[0], name


def test_layers_of_a_model_are_its_calls_and_statements():
    model = load_text("""
model m {
    input x: f32[B, 4]
    target y: f32[B, 2]
    h = x |> dense(8, relu) |> dropout(0.5) |> dense(8)
    out = dense(h * 2.0, 2)
    loss mean((out - y) * (out - y))
}
""").build(None)
    g = model.graph
    layers = {n: G.layer_of(g, n) for n in g.nx}
    by_op = lambda op: {layers[n] for n in g.nodes_with(op)}
    assert by_op("matmul") == {"h.0", "h.1", "out"}
    assert by_op("random") == {"h"}  # dropout names no parameters: the binding's layer
    assert by_op("input") == {""}  # x, y and the dropout's key belong to the model
    assert layers[g.outputs["loss"].node] == "loss"
    assert {layers[n] for n in g.nodes_with("mul")} >= {"out", "loss"}  # h * 2.0 is the statement's


def test_gradient_nodes_belong_to_the_gradient_of_their_layer():
    model = built("lenet5.dl")
    step = autodiff.train_step(model.graph)
    for n in model.graph.nx:  # node n of the forward graph is node n of the train step
        assert n not in step.nx or step.op(n) == model.graph.op(n)
    grads = [n for n in step.nx if "grad_of" in step.nx.nodes[n]]
    assert grads and all(G.layer_of(step, n).startswith(G.GRADIENTS) for n in grads)
    weight_grad = step.outputs["grad:c3.W"].node
    assert G.layer_of(step, weight_grad) == "∇.c3"
    assert G.layer_label("∇.c3") == "∇ c3" and G.layer_parent("∇.c3") == "∇"


def parse_dot(text: str) -> tuple:
    """(cluster of each declared node, parent of each cluster, cluster -> label) of dlc's dot."""
    cluster_of, parent, labels, stack = {}, {}, {}, [""]
    for line in text.splitlines()[1:-1]:
        line = line.strip()
        if m := re.fullmatch(r'subgraph "cluster_(.+)" \{', line):
            parent[m.group(1)] = stack[-1]
            stack.append(m.group(1))
        elif line == "}":
            stack.pop()
        elif m := re.fullmatch(r'label="(.*)";', line):
            labels[stack[-1]] = m.group(1)
        elif m := re.fullmatch(r'n(\d+) \[label="(.*)"\];', line):
            assert int(m.group(1)) not in cluster_of, f"n{m.group(1)} declared twice"
            cluster_of[int(m.group(1))] = (stack[-1], m.group(2))
    assert stack == [""], "unbalanced braces"
    return cluster_of, parent, labels


@pytest.mark.parametrize("grad", [False, True])
def test_dot_clusters_every_parameter_in_its_layer(grad, tmp_path, capsys):
    resnet = str(EXAMPLES / "resnet.dl")
    assert main(["graph", resnet, "--format", "dot"] + (["--grad"] if grad else [])) == 0
    cluster_of, parent, labels = parse_dot(capsys.readouterr().out)
    model = built("resnet.dl")
    assert len(cluster_of) == len(autodiff.train_step(model.graph).nx if grad else model.graph.nx)
    for p in model.params:  # every parameter is declared in its layer's cluster, nested as its name
        layer = p.name.rpartition(".")[0]
        (n,) = [n for n, (_, label) in cluster_of.items() if label.startswith(f"%{n} param {p.name}\\n")]
        assert cluster_of[n][0] == layer and labels[layer] == layer
        while layer:
            assert parent[layer] == layer.rpartition(".")[0]
            layer = parent[layer]
    assert "stage2.0.proj" in parent and labels["stage2.0.proj"] == "stage2.0.proj"
    if grad:
        assert labels["∇"] == "∇ (gradients)" and labels["∇.stage1.0.conv1"] == "∇ stage1.0.conv1"
        assert any(
            cluster == "∇.stage1.0.conv1" and "conv2d_weight_grad" in label for cluster, label in cluster_of.values()
        )
