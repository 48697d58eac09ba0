"""The picture of an editor in docs/editors.md: an example colored by the VS Code extension's
TextMate grammar, with the language server's inlay hints and its hover on a layer call.

    python -m dlc.tools.editor_shot      # rewrites docs/images/editor_hover.png
    python -m dlc.tools.editor_shot examples/lenet5.dl --hover "conv2d(" --out /tmp/shot.png

No VS Code runs headless here, so the page is drawn in headless Chromium, in VS Code's Dark+
colors, from what the extension gives an editor: the grammar's scopes, as
`vscode-tmgrammar-snap` computes them (vscode-textmate and oniguruma, the tokenizer VS Code
runs), and the answers of `dlc lsp` over stdio to pygls's client (inlay hints, hover; the
hover's markdown rendered by markdown-it). It needs node with `npm ci --prefix editors/vscode`,
dlc[lsp], and playwright with Debian's chromium, as the graph page's pictures do.
"""

from __future__ import annotations

import argparse
import asyncio
import html
import re
import subprocess
import sys
import tempfile
from pathlib import Path

from dlc.tools.graph_page_shot import ROOT, chromium_page

VSCODE = ROOT / "editors" / "vscode"
BIN = VSCODE / "node_modules" / ".bin"

# Dark+'s colors of the grammar's scopes: the longest matching prefix wins
DARK_PLUS = {
    "comment": "#6a9955",
    "string": "#ce9178",
    "constant.numeric": "#b5cea8",
    "constant.language": "#569cd6",
    "keyword": "#569cd6",
    "keyword.control": "#c586c0",
    "keyword.operator": "#d4d4d4",
    "storage.type": "#569cd6",
    "support.type": "#4ec9b0",
    "entity.name.type": "#4ec9b0",
    "entity.name.function": "#dcdcaa",
    "variable": "#9cdcfe",
    "invalid": "#f44747",
}
TEXT = "#d4d4d4"


def scopes(snap: str) -> dict:
    """(line, col) -> the scopes there, from a vscode-tmgrammar-snap snapshot (1-based)."""
    found, line = {}, 0
    for row in snap.splitlines():
        if row.startswith(">"):
            line += 1
            continue
        m = re.match(r"#( *)(\^+) (.*)$", row)
        if m:
            for col in range(len(m[1]) + 1, len(m[1]) + 1 + len(m[2])):
                found[(line, col)] = m[3].split()
    return found


def grammar_scopes(path: Path) -> dict:
    """The scopes the extension's grammar gives each character of the file."""
    with tempfile.TemporaryDirectory() as tmp:
        copy = Path(tmp) / path.name
        copy.write_text(path.read_text())
        subprocess.run(
            [str(BIN / "vscode-tmgrammar-snap"), "-g", "syntaxes/dl.tmLanguage.json", "--updateSnapshot", str(copy)],
            cwd=VSCODE,
            check=True,
            capture_output=True,
        )
        return scopes((Path(tmp) / (path.name + ".snap")).read_text())


def colour(names: list) -> str:
    best = max((p for p in DARK_PLUS for s in names if s == p or s.startswith(p + ".")), key=len, default=None)
    return DARK_PLUS[best] if best else TEXT


async def server_answers(path: Path, hover: tuple) -> tuple:
    """The inlay hints of the whole file and the hover at (line, col), 0-based, from `dlc lsp`."""
    from lsprotocol import types as lsp_types
    from pygls.lsp.client import LanguageClient

    client = LanguageClient("dlc-editor-shot", "1")
    client.feature(lsp_types.TEXT_DOCUMENT_PUBLISH_DIAGNOSTICS)(lambda params: None)  # not drawn
    await client.start_io(sys.executable, "-m", "dlc", "lsp")
    try:
        await client.initialize_async(
            lsp_types.InitializeParams(
                capabilities=lsp_types.ClientCapabilities(), initialization_options={"inlayHints": True}
            )
        )
        client.initialized(lsp_types.InitializedParams())
        text, uri = path.read_text(), path.resolve().as_uri()
        client.text_document_did_open(
            lsp_types.DidOpenTextDocumentParams(lsp_types.TextDocumentItem(uri, "dl", 1, text))
        )
        document = lsp_types.TextDocumentIdentifier(uri)
        hints = await client.text_document_inlay_hint_async(
            lsp_types.InlayHintParams(
                document, lsp_types.Range(lsp_types.Position(0, 0), lsp_types.Position(text.count("\n") + 1, 0))
            )
        )
        for _ in range(10):  # a layer's peak memory is computed in the server's worker: waited for 2 s a hover
            answer = await client.text_document_hover_async(lsp_types.HoverParams(document, lsp_types.Position(*hover)))
            if answer is None or "being computed" not in answer.contents.value:
                break
        await client.shutdown_async(None)
        client.exit(None)
    finally:
        await client.stop()
    if answer is None:
        raise SystemExit(f"the server has no hover at line {hover[0] + 1}, column {hover[1] + 1}")
    return [(h.position.line, h.position.character, h.label) for h in hints or []], answer.contents.value


def markdown_html(text: str) -> str:
    out = subprocess.run(
        [
            "node",
            "-e",
            "let s='';process.stdin.on('data',d=>s+=d).on('end',()=>"
            "process.stdout.write(require('markdown-it')().render(s)))",
        ],
        input=text,
        cwd=VSCODE,
        check=True,
        capture_output=True,
        text=True,
    )
    return out.stdout


def page(path: Path, at: dict, hints: list, hover: tuple, hover_html: str) -> str:
    """The editor as HTML: a gutter, the colored lines with their inlay hints, the hover box
    under the hovered line."""
    lines = path.read_text().splitlines()
    hint_at = {(line, col): label for line, col, label in hints}
    rows = []
    for i, line in enumerate(lines):
        cells = []
        for j in range(len(line) + 1):
            if (i, j) in hint_at:
                cells.append(f'<span class="hint">{html.escape(hint_at[(i, j)])}</span>')
            if j < len(line):
                cells.append(f'<span style="color:{colour(at.get((i + 1, j + 1), []))}">{html.escape(line[j])}</span>')
        rows.append(f'<div class="row"><span class="no">{i + 1}</span><span class="code">{"".join(cells)}</span></div>')
        if i == hover[0]:
            rows.append(f'<div class="hover" style="margin-left:calc({hover[1]}ch + 64px)">{hover_html}</div>')
    return f"""<!doctype html><meta charset="utf-8"><style>
body {{ margin: 0; background: #1e1e1e; font: 14px/20px "DejaVu Sans Mono", monospace; color: {TEXT}; }}
.title {{ background: #2d2d2d; color: #cccccc; padding: 6px 14px; font: 13px sans-serif; }}
.row {{ white-space: pre; height: 20px; }}
.no {{ display: inline-block; width: 48px; padding-right: 16px; text-align: right; color: #858585; }}
.hint {{ color: #969696; background: rgba(97, 97, 97, .18); border-radius: 3px; padding: 0 3px; margin-left: 2px;
         font-size: 12px; }}
.hover {{ position: absolute; z-index: 1; max-width: 640px; background: #252526; border: 1px solid #454545;
          padding: 2px 10px; font: 13px/18px sans-serif; color: #cccccc; white-space: normal; }}
.hover code, .hover pre {{ font: 12px/17px "DejaVu Sans Mono", monospace; color: #d7ba7d; white-space: pre-wrap; }}
.hover p {{ margin: 7px 0; }}
.hover hr {{ border: 0; border-top: 1px solid #454545; }}
</style><div class="title">{html.escape(path.name)} — colored by editors/vscode's grammar; hints and
hover from dlc lsp</div>{"".join(rows)}"""


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("file", nargs="?", default=str(ROOT / "examples" / "digits_cnn.dl"))
    p.add_argument("--hover", default="conv2d(", help="hover on the first occurrence of this text")
    p.add_argument("--out", default=str(ROOT / "docs" / "images" / "editor_hover.png"))
    p.add_argument("--size", type=int, nargs=2, default=(1100, 640), metavar=("WIDTH", "HEIGHT"))
    args = p.parse_args(argv)
    path = Path(args.file)
    lines = path.read_text().splitlines()
    found = next(((i, line.index(args.hover)) for i, line in enumerate(lines) if args.hover in line), None)
    if found is None:
        raise SystemExit(f"{path}: no {args.hover!r} to hover on")
    hints, hover = asyncio.run(server_answers(path, (found[0], found[1] + 1)))
    with tempfile.TemporaryDirectory() as tmp, chromium_page(*args.size) as browser:
        doc = Path(tmp) / "editor.html"
        doc.write_text(page(path, grammar_scopes(path), hints, found, markdown_html(hover)))
        browser.goto(doc.as_uri())
        Path(args.out).parent.mkdir(parents=True, exist_ok=True)
        browser.screenshot(path=args.out)
        if browser.errors:
            raise SystemExit(f"the page reported errors: {browser.errors}")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
