"""The language server's speed on every example, through a real client over stdio: the time
from an edit to its diagnostics (the 50 ms debounce included; target 100 ms) and of a hover
on each name bound or called in the file (target 50 ms); the first hover on a layer call,
which computes the peak memory of training, apart.

An edit is the example with a comment line added at its end, its text changed each time;
the server analyzes the whole file again. A hover is timed on a settled document.

    python benchmarks/lsp.py                         # every example, 5 edits each
    python benchmarks/lsp.py --edits 2 --examples xor_mlp mnist_mlp    # a smoke run
"""
from __future__ import annotations

import argparse
import asyncio
import statistics
import sys
import time
from pathlib import Path

from lsprotocol import types as T
from pygls.lsp.client import LanguageClient

from machine import OtherLoad

EXAMPLES = Path(__file__).resolve().parent.parent / "examples"
SERVER = [sys.executable, "-c", "from dlc.runtime.cli import main; main(['lsp'])"]


class Client(LanguageClient):
    def __init__(self):
        super().__init__("dlc-lsp-benchmark", "1")
        self.published: dict = {}       # uri -> asyncio.Event of the next publishDiagnostics

        @self.feature(T.TEXT_DOCUMENT_PUBLISH_DIAGNOSTICS)
        def _(params: T.PublishDiagnosticsParams):
            if params.uri in self.published:
                self.published[params.uri].set()

    async def diagnostics(self, uri: str, send) -> float:
        """Seconds from send() to the document's diagnostics."""
        self.published[uri] = asyncio.Event()
        start = time.perf_counter()
        send()
        await asyncio.wait_for(self.published[uri].wait(), 60)
        return time.perf_counter() - start


async def measure(path: Path, client: Client, edits: int) -> dict:
    from dlc.runtime.lsp.names import index
    from dlc.compiler.frontend.syntax import parse
    text, uri = path.read_text(), path.as_uri()
    await client.diagnostics(uri, lambda: client.text_document_did_open(T.DidOpenTextDocumentParams(
        T.TextDocumentItem(uri=uri, language_id="dl", version=1, text=text))))
    after_edit = []
    for k in range(edits):
        changed = text + f"# edit {k}\n"
        after_edit.append(await client.diagnostics(uri, lambda: client.text_document_did_change(
            T.DidChangeTextDocumentParams(T.VersionedTextDocumentIdentifier(uri=uri, version=k + 2),
                                          [T.TextDocumentContentChangeWholeDocument(text=changed)]))))
    names = index(parse(text, str(path)))

    async def hover(span) -> float:
        start = time.perf_counter()
        await client.text_document_hover_async(T.HoverParams(
            T.TextDocumentIdentifier(uri), T.Position(span.line - 1, span.col - 1)))
        return time.perf_counter() - start

    # the first hovers on the layer calls compute the peak memory of training (a hover waits
    # up to 2 s for it): their slowest is reported apart; then every hover finds it computed
    first = [await hover(name) for name, _ in names.calls]
    hovers = [await hover(span) for span in [b.span for b in names.bindings] + [name for name, _ in names.calls]]
    client.text_document_did_close(T.DidCloseTextDocumentParams(T.TextDocumentIdentifier(uri)))
    return {"edit": after_edit, "hover": hovers, "memory": [max(first)] if first else []}


def ms(values: list) -> str:
    return f"{statistics.median(values) * 1000:.0f} / {max(values) * 1000:.0f}" if values else "-"


async def run(names: list, edits: int):
    client = Client()
    await client.start_io(*SERVER)
    await client.initialize_async(T.InitializeParams(capabilities=T.ClientCapabilities()))
    client.initialized(T.InitializedParams())
    print(f"{'example':<24} {'diagnostics ms (median / max)':>30} {'hover ms (median / max)':>25} "
          f"{'first layer hover ms':>21} {'others':>7}")
    for name in names:
        with OtherLoad(pids=[client._server.pid]) as other:    # the server's CPU is the benchmark's own
            result = await measure(EXAMPLES / f"{name}.dl", client, edits)
        print(f"{name:<24} {ms(result['edit']):>30} {ms(result['hover']):>25} {ms(result['memory']):>21} "
              f"{other.cores:>7.2f}", flush=True)
    print("\nothers: cores used by other processes while timing (0 = quiet machine)")
    await client.shutdown_async(None)
    client.exit(None)
    await client.stop()


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--edits", type=int, default=5, help="edits timed per example")
    p.add_argument("--examples", nargs="*", help="example names (default: all of examples/)")
    args = p.parse_args()
    names = args.examples or sorted(f.stem for f in EXAMPLES.glob("*.dl"))
    asyncio.run(run(names, args.edits))


if __name__ == "__main__":
    main()
