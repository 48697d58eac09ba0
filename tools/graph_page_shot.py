"""The screenshot of `dlc graph --format html` in docs/cli.md, taken in headless Chromium.

    python -m dlc.tools.graph_page_shot                  # rewrites docs/images/graph_page.png
    python -m dlc.tools.graph_page_shot examples/lenet5.dl --out /tmp/page.png --open c1 --select 3

It opens the page of a model (by default the ResNet's train step), opens some layers,
clicks a node and saves the window. The system's Chromium (Debian's `chromium` package)
runs it through playwright's Python package, which tests/test_graph_page.py uses too
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
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync"]
ROOT = Path(__file__).resolve().parent.parent


@contextmanager
def chromium_page(width: int = 1500, height: int = 900):
    """A playwright page in a fresh Chromium profile; `page.errors` collects the console's
    errors and the page's uncaught exceptions."""
    sync_api = optional_package("playwright.sync_api", "test", "driving Chromium")
    with sync_api.sync_playwright() as playwright, tempfile.TemporaryDirectory() as profile:
        context = playwright.chromium.launch_persistent_context(
            profile, executable_path=CHROMIUM, headless=True, args=CHROMIUM_ARGS,
            viewport={"width": width, "height": height})
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


def main(argv=None):
    from dlc.compiler.graph_page import page as graph_page
    from dlc.compiler.frontend.loader import load
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("file", nargs="?", default=str(ROOT / "examples" / "resnet.dl"))
    p.add_argument("--out", default=str(ROOT / "docs" / "images" / "graph_page.png"))
    p.add_argument("--view", default="train_step", choices=["forward", "train_step"])
    p.add_argument("--open", nargs="*", default=["stage1", "stage1.0", "stage1.0.conv1"],
                   help="layers to open, in order")
    p.add_argument("--select", type=int, default=69, help="the node to click (%%69: the first conv2d of stage1)")
    args = p.parse_args(argv)
    with tempfile.TemporaryDirectory() as tmp, chromium_page() as page:
        html = Path(tmp) / "graph.html"
        html.write_text(graph_page(load(os.path.relpath(args.file)).build(None), args.view))   # the path as typed
        open_page(page, html)
        for layer in args.open:
            page.click(f'[data-layer="{layer}"] .box')
        page.click(f'[data-node="{args.select}"]')
        Path(args.out).parent.mkdir(parents=True, exist_ok=True)
        page.screenshot(path=args.out)
        if page.errors:
            raise SystemExit(f"the page reported errors: {page.errors}")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
