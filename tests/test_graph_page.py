"""`dlc graph --format html`: the page's data, and the page itself in headless Chromium."""
import base64
import gzip
import json
import re
from pathlib import Path

import pytest

from dlc.compiler.passes import autodiff
from dlc.compiler.frontend.loader import load
from dlc.compiler.native.lower import lower
from dlc.compiler.passes.optimize import optimize
from dlc.runtime.cli import main
from dlc.tools.graph_page_shot import CHROMIUM, chromium_page, open_page

LENET = str(Path(__file__).parent.parent / "examples" / "lenet5.dl")


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
    assert "<script src" not in html and "<link" not in html      # nothing to fetch
    data = page_data(html)
    model = load(LENET).build(None)
    assert data["first"] == "forward" and [v["name"] for v in data["views"]] == ["forward", "train_step"]
    forward, step = data["views"]
    assert len(forward["nodes"]) == len(model.graph.g)
    assert len(step["nodes"]) == len(autodiff.train_step(model.graph).g)
    for view in data["views"]:      # every node and layer is in the rows of the layer holding it, once
        placed = [c for layer in view["rows"].values() for row in layer for c in row]
        assert sorted(placed, key=str) == sorted([n["id"] for n in view["nodes"]] +
                                                 [layer for layer in view["layers"] if layer], key=str)
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
    assert {k["kind"] for k in top if conv in k["nodes"]} == {"Conv"}     # a direct convolution (few taps)
    for k in kernels:
        assert re.match(rf'define internal void @{k["function"]}\(', data["native"]["ir"][k["function"]])


def test_the_page_says_when_the_native_backend_cannot_compile(tmp_path):
    ortho = tmp_path / "ortho.dl"
    ortho.write_text("model m {\n    input x: f32[B, 4]\n    target y: f32[B, 4]\n"
                     "    out = dense(x @ random_orthogonal(4, 4), 4)\n    loss mean((out - y) * (out - y))\n}\n")
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


def browser():
    pytest.importorskip("playwright.sync_api", reason="the browser test needs playwright (pip install playwright)")
    if not Path(CHROMIUM).exists():
        pytest.skip(f"the browser test needs Chromium at {CHROMIUM} (apt-get install chromium)")
    return chromium_page()


def test_the_page_in_a_browser(lenet_page):
    model = load(LENET).build(None)
    conv = model.graph.nodes_with("conv2d")[0]
    call = model.graph.g.nodes[conv]["span"].caller
    f5_w = next(n for n in model.graph.params() if model.graph.attrs(n)["name"] == "f5.W")
    with browser() as page:
        open_page(page, lenet_page)
        text = lambda selector: page.inner_text(selector)
        assert page.locator(f'[data-node="{conv}"]').count() == 0         # layers start closed
        page.click('[data-layer="c1"] .box')
        page.click(f'[data-node="{conv}"]')
        assert text("#detail-title") == f"%{conv} conv2d"
        assert text("#detail-op").startswith("conv2d") and text("#detail-dtype") == "f32[B, 6, 28, 28]"
        assert text("#detail-FLOPs") == "235,200·B" and text("#detail-layer") == "c1"
        assert text("#detail-place") == f"{LENET}:{call.line}:{call.col}"
        line = Path(LENET).read_text().splitlines()[call.line - 1]
        assert text("pre.source div.hit").split(None, 1) == [str(call.line), line.strip()]
        kernel = text("#detail-kernel")
        assert "Conv" in kernel and "direct conv" in kernel and "define internal void @kernel" in kernel

        page.fill("#search", "f5.W")        # search opens the layer of the match and selects it
        page.press("#search", "Enter")
        assert text("#detail-title") == f"%{f5_w} param f5.W" and text("#matches") == "1 of 1"
        assert "selected" in page.get_attribute(f'[data-node="{f5_w}"]', "class")
        assert "An argument of the native step" in text("#detail-kernel")

        page.click('[data-view="train_step"]')
        page.click('[data-layer="∇"] .box')
        assert page.locator('[data-layer="∇.c1"]').count() == 1
        assert page.errors == []
