"""Headless Chromium for the tests that look at a page (the graph page, the editor picture):
playwright's Python package and Debian's `chromium`. Without either, the test is skipped,
naming what to install."""

from __future__ import annotations

from pathlib import Path

import pytest

from dlc.tools.graph_page_shot import CHROMIUM, chromium_page


def require_chromium(what: str = "the browser test"):
    pytest.importorskip("playwright.sync_api", reason=f"{what} needs playwright (pip install playwright)")
    if not Path(CHROMIUM).exists():
        pytest.skip(f"{what} needs Chromium at {CHROMIUM} (apt-get install chromium)")


def browser(width: int = 1500, height: int = 900):
    """A page in headless Chromium (graph_page_shot.chromium_page), or the test skipped."""
    require_chromium()
    return chromium_page(width, height)
