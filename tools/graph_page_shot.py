"""The screenshots of `dlc graph --format html` in docs/cli.md, taken in headless Chromium.

    python -m dlc.tools.graph_page_shot          # rewrites docs/images/graph_page*.png
    python -m dlc.tools.graph_page_shot examples/lenet5.dl --out /tmp/page.png --open c1 --select 3

It opens the page of a model (by default the ResNet) in a window of a given size, opens
some boxes (or all of them), clicks a node and saves the window; the first pictures are
the page as first opened, in a large and a small window. The system's Chromium (Debian's `chromium` package)
runs it through playwright's Python package, which tests/cli/test_graph_page.py uses too
(`chromium_page`); `playwright install`, which downloads a browser of its own, is not needed.
"""

from __future__ import annotations

import argparse
import os
import tempfile
from contextlib import contextmanager
from pathlib import Path

from dlc.compiler.errors import optional_package

CHROMIUM = "/usr/bin/chromium"
# headless, and none of the background connections a sandboxed machine refuses
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
ROOT = Path(__file__).resolve().parent.parent


@contextmanager
def chromium_page(width: int = 1500, height: int = 900):
    """A playwright page in a fresh Chromium profile; `page.errors` collects the console's
    errors and the page's uncaught exceptions."""
    sync_api = optional_package("playwright.sync_api", "test", "driving Chromium")
    with sync_api.sync_playwright() as playwright, tempfile.TemporaryDirectory() as profile:
        context = playwright.chromium.launch_persistent_context(
            profile,
            executable_path=CHROMIUM,
            headless=True,
            args=CHROMIUM_ARGS,
            viewport={"width": width, "height": height},
        )
        try:
            page = context.new_page()
            page.errors = []
            page.on("console", lambda m: page.errors.append(m.text) if m.type == "error" else None)
            page.on("pageerror", lambda e: page.errors.append(str(e)))
            yield page
        finally:
            context.close()


def open_page(page, path: Path):
    """Load the page of `dlc graph --format html` and wait until it has drawn."""
    page.goto(path.resolve().as_uri())
    page.wait_for_selector("body[data-ready]")


# docs/images/ -> what each picture shows: the window's size, the view, the boxes opened in
# turn, the node clicked (%69: the convolution of stage1.0.conv1; %83: the variance of its
# batchnorm), or every box open; and whether to fit it to the window then
SIZE = (1500, 900)
SHOTS = {
    "graph_page_opened.png": {"size": (1400, 900), "view": "forward"},
    "graph_page_opened_small.png": {"size": (1024, 700), "view": "forward"},
    "graph_page_opened_step.png": {"size": (1400, 900), "view": "train_step", "open": ["∇"], "fit": True},
    "graph_page.png": {"size": SIZE, "view": "forward", "open": ["stage1", "stage1.0", "stage1.0.conv1"], "select": 69},
    "graph_page_kernels.png": {
        "size": SIZE,
        "view": "forward",
        "open": ["stage1", "stage1.0", "stage1.0.bn1"],
        "select": 83,
    },
    "graph_page_expanded.png": {"size": SIZE, "view": "train_step", "expand": True},
}


def shoot(page, html: Path, out: Path, size: tuple, view: str, open=(), select=None, expand=False, fit=False):
    """Load the page in a window of `size`, show `view`, open the boxes, click a node or
    expand all, fit, save it."""
    page.set_viewport_size({"width": size[0], "height": size[1]})
    open_page(page, html)
    page.click(f'[data-view="{view}"]')
    for box in open:
        page.click(f'[data-layer="{box}"] .box')
    if select is not None:
        page.click(f'[data-node="{select}"]')
    if expand:
        page.click("#expand")
    if fit:
        page.click("#fit")
    out.parent.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(out))
    if page.errors:
        raise SystemExit(f"the page reported errors: {page.errors}")
    print(f"wrote {out}")


def main(argv=None):
    from dlc.compiler.graph_page.page import page as graph_page
    from dlc.compiler.frontend.loader import load

    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("file", nargs="?", default=str(ROOT / "examples" / "resnet.dl"))
    p.add_argument("--out", help="one picture here, of the options below (default: the pictures of the docs)")
    p.add_argument("--view", default="train_step", choices=["forward", "train_step"])
    p.add_argument("--open", nargs="*", default=[], help="boxes to open, in order")
    p.add_argument("--select", type=int, help="the node to click")
    p.add_argument("--expand", action="store_true", help="expand all")
    p.add_argument("--size", type=int, nargs=2, default=SIZE, metavar=("WIDTH", "HEIGHT"), help="the window's size")
    args = p.parse_args(argv)
    shots = (
        {
            Path(args.out): {
                "size": tuple(args.size),
                "view": args.view,
                "open": args.open,
                "select": args.select,
                "expand": args.expand,
            }
        }
        if args.out
        else {ROOT / "docs" / "images" / name: shot for name, shot in SHOTS.items()}
    )
    with tempfile.TemporaryDirectory() as tmp, chromium_page() as page:
        html = Path(tmp) / "graph.html"
        html.write_text(graph_page(load(os.path.relpath(args.file)).build(None)))  # the path as typed
        for out, shot in shots.items():
            shoot(page, html, out, **shot)


if __name__ == "__main__":
    main()
