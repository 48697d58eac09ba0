"""`dlc graph --format html`: the page's data, and the page itself in headless Chromium."""

import base64
import gzip
import json
import re
import sys
from pathlib import Path

import pytest

from dlc.compiler.passes import autodiff
from dlc.compiler.frontend.loader import load, load_text
from dlc.compiler.graph_page.boxes import box_tree, forward_boxes
from dlc.compiler.native.fusion import Fusion
from dlc.compiler.native.lower import lower
from dlc.compiler.passes.optimize import optimize
from dlc.runtime.cli import main
from dlc.tools.graph_page_shot import open_page
from helpers.browser import browser
from helpers.session_once import session_folder

# on one pytest-xdist worker: the tests that open the ResNet's page never wait for another
# worker's compile of it (session_folder makes it once either way)
pytestmark = pytest.mark.xdist_group("test_graph_page")

LENET = str(Path(__file__).parents[2] / "examples" / "lenet5.dl")
RESNET = str(Path(__file__).parents[2] / "examples" / "resnet.dl")


def page_data(html: str) -> dict:
    packed = re.search(r'<script id="data" type="application/octet-stream">(.*?)</script>', html, re.S).group(1)
    return json.loads(gzip.decompress(base64.b64decode(packed)))


@pytest.fixture(scope="module")
def lenet_page(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("page") / "lenet5.html"
    assert main(["graph", LENET, "--format", "html", "-o", str(path)]) == 0
    return path


def test_the_page_holds_both_graphs_laid_out_by_layer(lenet_page):
    html = lenet_page.read_text()
    assert "<script src" not in html and "<link" not in html  # nothing to fetch
    data = page_data(html)
    model = load(LENET).build(None)
    assert data["first"] == "forward" and [v["name"] for v in data["views"]] == ["forward", "train_step"]
    forward, step = data["views"]
    assert len(forward["nodes"]) == len(model.graph.nx)
    assert len(step["nodes"]) == len(autodiff.train_step(model.graph).nx)
    for view in data["views"]:  # every node and layer is in the rows of the layer holding it, once
        placed = [c for layer in view["rows"].values() for row in layer for c in row]
        assert sorted(placed, key=str) == sorted(
            [n["id"] for n in view["nodes"]] + [layer for layer in view["layers"] if layer], key=str
        )
        for n in view["nodes"]:
            assert any(n["id"] in row for row in view["rows"][n["layer"]])
    conv = next(n for n in forward["nodes"] if n["op"] == "conv2d")
    assert conv["layer"] == "c1" and conv["types"] == "f32[B, 6, 28, 28]" and conv["flops"] == "235,200·B"
    source = data["sources"][conv["call"][0]]
    assert source["name"] == LENET and source["text"] == Path(LENET).read_text().rstrip("\n")
    assert data["sources"][conv["span"][0]]["name"] == "<stdlib>/layers.dl"


def test_the_page_maps_nodes_to_the_kernels_of_the_native_step(lenet_page):
    data = page_data(lenet_page.read_text())
    program = lower(optimize(autodiff.train_step(load(LENET).build(None).graph)))
    kernels = data["native"]["kernels"]
    top = [k for k in kernels if k["depth"] == 0]
    assert [k["nodes"] for k in top] == [list(k.nodes) for k in program.kernels]
    conv = next(n["id"] for n in data["views"][0]["nodes"] if n["op"] == "conv2d")
    assert {k["class"] for k in top if conv in k["nodes"]} == {"Conv"}  # a direct convolution (few taps)
    for k in kernels:
        assert re.match(rf'define internal void @{k["function"]}\(', data["native"]["ir"][k["function"]])


def test_every_call_of_a_def_is_one_box_labelled_with_its_options():
    model = load(RESNET).build(None)
    box_of, boxes = forward_boxes(model)
    tree = box_tree(model.graph, box_of, boxes)
    assert boxes["stage1.0"]["label"] == "residual_block 16 s1" and boxes["stage1.0"]["parent"] == "stage1"
    assert (
        boxes["stage2.0.conv1"]["label"] == "conv2d 32 3x3 s2" and boxes["stage2.0.proj"]["label"] == "conv2d 32 1x1 s2"
    )
    assert boxes["stage1.0.bn1"]["label"] == "batchnorm" and "eps = 1e-05" in boxes["stage1.0.bn1"]["options"]
    assert boxes["logits>dense"]["label"] == "dense 10" and boxes["logits>dense"]["name"] == "logits"
    assert boxes["logits>dense"]["parent"] == "logits"  # the statement, which also holds global_avg_pool
    inner, nodes = tree["stage1.0"]  # conv2d, batchnorm, relu, conv2d, batchnorm, the add, relu
    assert [boxes[b]["label"] for b in inner] == [
        "conv2d 16 3x3 s1",
        "batchnorm",
        "relu",
        "conv2d 16 3x3 s1",
        "batchnorm",
        "relu",
    ]
    assert [model.graph.op(n) for n in nodes] == ["add"]
    relus = [b for b in tree if boxes[b]["def"] == "relu"]
    assert len(relus) == 13  # the stem's and two in each of six blocks: each one box of primitives
    for b in relus:
        assert not tree[b][0] and {model.graph.op(n) for n in tree[b][1]} >= {"gt", "select"}
    convolutions = model.graph.nodes_with("conv2d")
    assert len(convolutions) == 15 and all(boxes[box_of[n]]["def"] == "conv2d" for n in convolutions)


def test_a_user_def_is_a_box_with_its_options_spelled_as_in_the_program():
    model = load_text("""
def block(x, units: int, mode = "fast", sizes = (1, 2), act = relu) {
    return dense(x, units, act)
}
model m {
    input x: f32[B, 4]
    target y: f32[B, 2]
    h = block(x, 8, sizes = (1, 2, 3, 4, 5, 6, 7, 8, 9))
    out = dense(h, 2)
    loss mean((out - y) * (out - y))
}
""").build(None)
    box_of, boxes = forward_boxes(model)
    assert boxes["h"]["label"] == "block 8 relu" and boxes["h"]["def"] == "block"  # the statement is the call
    assert boxes["h"]["options"] == [
        "units = 8",
        'mode = "fast"',
        "sizes = (1, 2, 3, 4, 5, 6, 7, 8, ... 9 items)",
        "act = relu",
    ]
    assert "h>dense" not in boxes  # block's body is one dense call over the same nodes: one box
    assert boxes["h>relu"]["parent"] == "h" and boxes["out"]["label"] == "dense 2"
    assert {model.graph.op(n) for n, b in box_of.items() if b == "h"} == {"param", "matmul", "add", "broadcast"}


def test_the_page_draws_the_fusion_pass_boundaries(lenet_page):
    data = page_data(lenet_page.read_text())
    step = optimize(autodiff.train_step(load(LENET).build(None).graph))
    expected = [[b.producer, b.consumer, b.why()] for b in Fusion(step).boundaries]
    assert data["native"]["boundaries"] == expected and expected
    assert {why for *_, why in expected} >= {"a GEMM operand must be in memory", "the result of a reduction"}


def test_the_page_says_when_the_native_backend_cannot_compile(tmp_path):
    ortho = tmp_path / "ortho.dl"
    ortho.write_text(
        "model m {\n    input x: f32[B, 4]\n    target y: f32[B, 4]\n"
        "    out = dense(x @ random_orthogonal(4, 4), 4)\n    loss mean((out - y) * (out - y))\n}\n"
    )
    assert main(["graph", str(ortho), "--format", "html", "--grad", "-o", str(tmp_path / "o.html")]) == 0
    data = page_data((tmp_path / "o.html").read_text())
    assert data["first"] == "train_step" and "kernels" not in data["native"]
    assert "does not compile random orthogonal" in data["native"]["error"]


def test_a_model_without_a_loss_has_no_train_step(tmp_path, capsys):
    plain = tmp_path / "plain.dl"
    plain.write_text("model m {\n    input x: f32[B, 4]\n    output y = dense(x, 3, relu)\n}\n")
    out = tmp_path / "plain.html"
    assert main(["graph", str(plain), "--format", "html", "-o", str(out)]) == 0
    data = page_data(out.read_text())
    assert [v["name"] for v in data["views"]] == ["forward"] and data["native"]["kernels"]
    assert main(["graph", str(plain), "--format", "html", "--grad", "-o", str(out)]) == 1
    assert "has no loss" in capsys.readouterr().err


def test_the_page_in_a_browser(lenet_page):
    model = load(LENET).build(None)
    conv = model.graph.nodes_with("conv2d")[0]
    call = model.graph.nx.nodes[conv]["span"].caller
    f5_w = next(n for n in model.graph.params() if model.graph.attrs(n)["name"] == "f5.W")
    with browser() as page:
        open_page(page, lenet_page)
        text = lambda selector: page.inner_text(selector)
        assert page.locator(f'[data-node="{conv}"]').count() == 0  # layers start closed
        page.click('[data-layer="c1"] .box')
        page.click(f'[data-node="{conv}"]')
        assert text("#detail-title") == f"%{conv} conv2d"
        assert text("#detail-op").startswith("conv2d") and text("#detail-dtype") == "f32[B, 6, 28, 28]"
        assert text("#detail-FLOPs") == "235,200·B" and text("#detail-layer") == "conv2d 6 5x5 s1 relu (c1)"
        assert text("#detail-place") == f"{LENET}:{call.line}:{call.col}"
        line = Path(LENET).read_text().splitlines()[call.line - 1]
        assert text("pre.source div.hit").split(None, 1) == [str(call.line), line.strip()]
        kernel = text("#detail-kernel")
        assert "Conv" in kernel and "direct conv" in kernel and "define internal void @kernel" in kernel

        page.fill("#search", "f5.W")  # search opens the layer of the match and selects it
        page.press("#search", "Enter")
        assert text("#detail-title") == f"%{f5_w} param f5.W" and text("#matches") == "1 of 1"
        assert "selected" in page.get_attribute(f'[data-node="{f5_w}"]', "class")
        assert "An argument of the native step" in text("#detail-kernel")

        page.click('[data-view="train_step"]')
        page.click('[data-layer="∇"] .box')
        assert page.locator('[data-layer="∇.c1"]').count() == 1
        assert text("#detail-def") == "the gradients of the loss"
        page.click('[data-layer="∇.c1"] .box')
        assert text("#detail-title") == "∇ conv2d 6 5x5 s1 relu" and text("#detail-def") == "the gradients of conv2d"
        assert page.errors == []


def make_resnet_page(folder: Path):
    assert main(["graph", RESNET, "--format", "html", "-o", str(folder / "resnet.html")]) == 0


@pytest.fixture(scope="session")
def resnet_page() -> Path:
    """The ResNet's page (half a minute of native compile), made once for the test session."""
    return session_folder("graph-page-resnet", make_resnet_page) / "resnet.html"


def inside(page, outer: str) -> list:
    """The texts of the boxes and nodes drawn inside the box `outer` (a selector)."""
    return page.evaluate(
        """(outer) => {
      const o = document.querySelector(outer).getBBox();
      return [...document.querySelectorAll("g.node rect, g.layer rect.box")].filter((r) => {
        const b = r.getBBox();
        return r !== document.querySelector(outer) && b.x >= o.x && b.y >= o.y &&
               b.x + b.width <= o.x + o.width && b.y + b.height <= o.y + o.height;
      }).map((r) => r.parentElement.querySelector("text").textContent);
    }""",
        outer,
    )


def overflowing(page) -> list:
    """The labels drawn wider than their boxes."""
    return page.evaluate("""() => [...document.querySelectorAll("g.node, g.layer")].flatMap((g) => {
      const box = g.querySelector("rect").getBBox();
      return [...g.querySelectorAll("text")].filter((t) => {
        const b = t.getBBox();
        return b.x < box.x || b.x + b.width > box.x + box.width;
      }).map((t) => t.textContent);
    })""")


def test_the_layer_view_of_a_resnet_in_a_browser(resnet_page):
    data = page_data(resnet_page.read_text())
    forward = data["views"][0]
    # the variance of stage1.0.bn1: a reduction with the sub and mul fused into its kernel
    reduction = [n["id"] for n in forward["nodes"] if n["layer"] == "stage1.0.bn1" and n["op"] == "reduce_sum"][1]
    whys = [why for u, v, why in data["native"]["boundaries"] if reduction in (u, v)]
    assert "the result of a reduction" in whys
    with browser() as page:
        open_page(page, resnet_page)
        page.click('[data-layer="stage1"] .box')
        page.click('[data-layer="stage1.0"] .box')
        block = inside(page, '[data-layer="stage1.0"] rect.box')  # Netron shows about 7 boxes
        assert len(block) <= 10 and block.count("▸ relu") == 2 and block.count("▸ batchnorm") == 2
        assert block.count("▸ conv2d 16 3x3 s1") == 2
        assert page.inner_text("#detail-title") == "residual_block 16 s1"  # the box's details
        assert overflowing(page) == []

        for query, count in (("relu", 13), ("batchnorm", 15)):
            page.fill("#search", query)
            assert page.inner_text("#matches") == f"{count} matches"
        page.press("#search", "Enter")
        assert page.inner_text("#detail-title") == "batchnorm" and page.inner_text("#matches") == "1 of 15"
        assert "match" in page.get_attribute('[data-layer="stem.1"]', "class")
        page.fill("#search", "conv2d")  # the conv2d calls and the convolution nodes they made
        assert page.inner_text("#matches") == "30 matches"

        page.fill("#search", f"%{reduction}")  # a node at a kernel boundary: the fusion pass's reason
        page.press("#search", "Enter")
        assert all(why in page.inner_text("#detail-boundaries") for why in whys)
        assert "the result of a reduction" in page.locator("#scene .why text").all_text_contents()
        fused = {n for k in data["native"]["kernels"] if reduction in k["nodes"] for n in k["nodes"]} - {reduction}
        assert (
            fused
            and {int(n) for n in page.eval_on_selector_all("g.node.kin", "gs => gs.map(g => g.dataset.node)")} == fused
        )  # its kernel's other nodes, outlined

        page.click('[data-view="train_step"]')  # the details follow the view
        assert "The train step: 2,000 nodes" in page.inner_text("#details")
        page.click('[data-view="forward"]')
        assert page.inner_text("#detail-title") == f"%{reduction} reduce_sum"

        page.click('[data-view="train_step"]')
        page.click("#expand")  # every box open: the top of the graph at a zoom that can be read
        assert page.locator("g.layer.open").count() == len(data["views"][1]["layers"]) - 1  # but the whole graph
        assert page.inner_text("#zoom").startswith("the top of the graph at 80%")
        assert overflowing(page) == []
        assert page.errors == []


def test_a_box_shows_the_shapes_of_the_values_leaving_it(resnet_page):
    data = page_data(resnet_page.read_text())
    forward, step = data["views"]
    types = lambda view, box: [
        next(n["types"] for n in view["nodes"] if n["id"] == i) for i in view["layers"][box]["outputs"]
    ]
    assert types(forward, "stage1") == ["f32[B, 16, 32, 32]"] and types(forward, "stage2") == ["f32[B, 32, 16, 16]"]
    assert types(forward, "stage1.0.bn1") == ["f32[B, 16, 32, 32]"]  # not its running statistics' updates
    assert types(forward, "loss") == ["f32[]"] and types(forward, "logits") == ["f32[B, 10]"]
    # in the train step the activations the gradients read again do not leave a forward box;
    # the gradient of a conv2d leaves its box towards the box before it and as grad:W
    assert types(step, "stage1") == ["f32[B, 16, 32, 32]"]
    assert types(step, "∇.stage1.0.conv1") == ["f32[B, 16, 32, 32]", "f32[16, 16, 3, 3]"]
    grads = [o for n in step["nodes"] for o in n["outputs"] if o.startswith("grad:")]
    assert sorted(o for i in step["layers"]["∇"]["outputs"] for o in step_node(step, i)["outputs"]) == sorted(grads)


def step_node(view: dict, node: int) -> dict:
    return next(n for n in view["nodes"] if n["id"] == node)


def test_the_seed_of_the_gradients_is_a_constant_in_the_gradients_box(resnet_page):
    forward, step = page_data(resnet_page.read_text())["views"]
    new = [n for n in step["nodes"] if n["id"] not in {m["id"] for m in forward["nodes"]} and n["grad_of"] is None]
    assert len(new) == 1
    seed = new[0]
    assert seed["op"] == "constant" and seed["layer"] == "∇" and seed["value"] == "1" and "∂loss/∂loss" in seed["note"]
    zeros = [n for n in forward["nodes"] if n["op"] == "constant" and n["layer"] == "stage1.0>relu"]
    assert zeros and all(n["value"] == "0" and "note" not in n for n in zeros)  # the 0 a relu compares with and selects


def rect_inside(inner: dict, outer: dict, slack: float = 0.5) -> bool:
    return (
        inner["x"] >= outer["x"] - slack
        and inner["y"] >= outer["y"] - slack
        and inner["x"] + inner["width"] <= outer["x"] + outer["width"] + slack
        and inner["y"] + inner["height"] <= outer["y"] + outer["height"] + slack
    )


def filled(page) -> float:
    """How much of the drawing area the drawing fills, along its tighter side; the drawing
    must lie inside it. The page fits the drawing again whenever the drawing area changes
    size, also while the page is still laid out on a loaded machine: up to 5 s for that."""
    try:
        page.wait_for_function(
            """() => { const s = document.getElementById("scene").getBoundingClientRect(),
                                                c = document.getElementById("canvas").getBoundingClientRect();
                                          return s.bottom <= c.bottom + 0.5 && s.right <= c.right + 0.5; }""",
            timeout=5000,
        )
    except sys.modules["playwright.sync_api"].TimeoutError:  # measured below: the assertion says what it found
        pass
    scene, canvas = page.evaluate("""() => [document.getElementById("scene").getBoundingClientRect().toJSON(),
                                            document.getElementById("canvas").getBoundingClientRect().toJSON()]""")
    assert rect_inside(scene, canvas), (scene, canvas)
    return max(scene["width"] / canvas["width"], scene["height"] / canvas["height"])


@pytest.mark.parametrize("width,height", [(1400, 900), (1024, 700)])
def test_the_page_as_first_opened(resnet_page, width, height):
    """What a reader sees on opening the page (the screenshots of docs/cli.md): the graph
    fitted to the window, a legend whose keys do not overlap, the whole search placeholder,
    closed boxes with shapes, the regularizer's edges going into one labelled chip,
    wrapped source lines, and the seed constant explained in the gradients' box."""
    data = page_data(resnet_page.read_text())
    seed = next(n["id"] for n in data["views"][1]["nodes"] if n.get("note"))
    with browser(width, height) as page:
        open_page(page, resnet_page)
        assert filled(page) > 0.85

        keys = page.evaluate("""() => [...document.querySelectorAll("#legend li")].map((li) => ({
          item: li.getBoundingClientRect().toJSON(),
          parts: [...li.children].map((c) => c.getBoundingClientRect().toJSON())}))""")
        assert len(keys) == 4
        for i, key in enumerate(keys):
            assert all(rect_inside(part, key["item"]) for part in key["parts"])
            for other in keys[i + 1 :]:
                assert key["item"]["y"] + key["item"]["height"] <= other["item"]["y"]  # one below the other

        fits = page.evaluate("""() => {
          const input = document.getElementById("search"), style = getComputedStyle(input);
          const ruler = document.createElement("canvas").getContext("2d");
          ruler.font = `${style.fontSize} ${style.fontFamily}`;
          const room = input.clientWidth - parseFloat(style.paddingLeft) - parseFloat(style.paddingRight);
          const header = document.querySelector("header");
          return {text: ruler.measureText(input.placeholder).width, room,
                  right: input.getBoundingClientRect().right, header: header.scrollWidth - header.clientWidth};
        }""")
        assert fits["text"] <= fits["room"] and fits["right"] <= width and fits["header"] <= 0

        notes = page.locator("g.layer:not(.open) text.count").all_text_contents()
        assert len(notes) == 8 and all(re.search(r"\b[fi]32\[[^\]]*\]", t) for t in notes), notes

        params = page.eval_on_selector_all(
            'path.edge[data-edge$=">lloss"]', "ps => ps.map(p => [p.dataset.edge, p.classList.contains('params')])"
        )
        from_stages = [bundled for edge, bundled in params if re.match(r"l(stem|stage\d)>", edge)]
        assert len(from_stages) == 4 and all(from_stages)  # l2(params) reads the parameters of all four
        assert not any(bundled for edge, bundled in params if edge.startswith(("n1>", "llogits>")))
        assert page.locator('g.bundle[data-into="lloss"] text').all_text_contents() == ["l2(params)"]
        assert overflowing(page) == []

        scale = lambda: float(re.search(r"scale\(([\d.]+)\)", page.get_attribute("#scene", "transform")).group(1))
        assert scale() > 1  # a few boxes: drawn larger than 100 %
        page.click('[data-layer="stage2"] .box')  # opened at 100 %; its line in the source, wrapped rather than cut
        assert scale() == 1
        assert page.locator("pre.source div.hit").count() == 1
        assert page.eval_on_selector("pre.source", "p => p.scrollWidth <= p.clientWidth")

        page.click('[data-view="train_step"]')
        assert filled(page) > 0.85
        assert page.locator(f'[data-node="{seed}"]').count() == 0  # no stray constant at the top
        page.click('[data-layer="∇"] .box')
        label = page.locator(f'[data-node="{seed}"] text').all_text_contents()
        assert label == [f"%{seed} constant 1", "f32[] · the seed of the gradients: ∂loss/∂loss = 1"]
        page.click("#collapse")
        assert filled(page) > 0.85

        page.set_viewport_size({"width": width - 200, "height": height - 150})  # the window resized: fitted again
        page.wait_for_function("() => true")
        assert filled(page) > 0.85
        page.mouse.move(200, 300)  # unless the reader moved the drawing
        page.mouse.wheel(0, -600)
        before = page.get_attribute("#scene", "transform")
        page.set_viewport_size({"width": width, "height": height})
        assert page.get_attribute("#scene", "transform") == before
        assert page.errors == []


def hidden_edges(page) -> list:
    """The edges that pass a box they do not join drawn over them, as [edge, box label]:
    99 points along each edge, tested against every node and closed box it runs through
    (the points taken once per edge, and only the boxes its bounding box meets: a ResNet's
    page, all open, has thousands of each)."""
    return page.evaluate("""() => {
      const boxes = [...document.querySelectorAll("#scene g.node, #scene g.layer:not(.open)")].map((g) => ({
        g, key: g.dataset.node !== undefined ? "n" + g.dataset.node : "l" + g.dataset.layer,
        r: g.querySelector("rect").getBBox(), label: g.querySelector("text").textContent}));
      const out = [];
      for (const p of document.querySelectorAll("#scene path.edge")) {
        const ends = p.dataset.edge.split(">"), len = p.getTotalLength(), b = p.getBBox();
        let points = null;
        for (const {g, key, r, label} of boxes) {
          if (b.x > r.x + r.width || b.x + b.width < r.x || b.y > r.y + r.height || b.y + b.height < r.y) continue;
          if (ends.includes(key) || !(g.compareDocumentPosition(p) & Node.DOCUMENT_POSITION_PRECEDING)) continue;
          points ??= Array.from({length: 99}, (_, i) => p.getPointAtLength(len * (i + 1) / 100));
          if (points.some(({x, y}) => x > r.x + 1 && x < r.x + r.width - 1 && y > r.y + 1 && y < r.y + r.height - 1)) {
            out.push([p.dataset.edge, label]);
          }
        }
      }
      return out;
    }""")


@pytest.mark.parametrize("example", ["mnist_mlp", "resnet"])
def test_no_edge_is_hidden_behind_a_box_it_passes(tmp_path, example, request):
    """mnist_mlp's and the ResNet's parameter edges into the l2(params) chip pass the `input y` box
    (and the ResNet's the stages between), as every edge into the gradients' box passes the boxes
    above it: each is drawn over what it passes, in both views, closed and all open."""
    if example == "resnet":
        path = request.getfixturevalue("resnet_page")
    else:
        path = tmp_path / f"{example}.html"
        assert main(["graph", str(Path(LENET).parent / f"{example}.dl"), "--format", "html", "-o", str(path)]) == 0
    with browser() as page:
        open_page(page, path)
        passing = page.evaluate("""() => [...document.querySelectorAll("#scene path.edge.params")].map((p) =>
          p.dataset.edge)""")
        assert passing, "the parameter edges this test is about"
        for view in ("forward", "train_step"):
            page.click(f'[data-view="{view}"]')
            assert hidden_edges(page) == []
            page.click("#expand")
            assert hidden_edges(page) == []
            page.click("#collapse")
        assert page.errors == []
