"""The language server's speed on every example, through a real client over stdio: the time
from an edit to its diagnostics (target 100 ms) and of a hover on each name bound or called
in the file (target 50 ms); the first hover on a layer call right after an edit, while the
peak memory of training is being computed, apart.

Three kinds of edit, each changing the text every time: a comment line added at the end
of the example (the server parses the file again and reuses the models' builds, whose inputs
did not change); a line `const EDIT_k = k` added at its end, a program edit no model reads
(reused too); and a model edit, a statement `edit_k = k` added at the end of every model
block (all are built again, for training and for evaluation). Each edit comes after the
one before has its diagnostics; the server analyzes each at once (it has no debounce). A
hover is timed on a settled document whose peak memory is known; the first hover on a
layer call is timed right after a model edit's diagnostics, while the server computes that
peak in its worker process (the hover does not wait for it).

    python benchmarks/lsp.py                         # every example, 5 edits each
    python benchmarks/lsp.py --edits 2 --examples xor_mlp mnist_mlp    # a smoke run
    python benchmarks/lsp.py --cpu                   # the server's work alone, in this process

`--cpu` times, in this process and without a client, the CPU time (of the thread: a busy
machine's other processes slow it less than the wall time) of the analysis after each kind
of edit, the server's work between an edit and its diagnostics, and of computing the peak
memory of training, the worker's work.
"""

from __future__ import annotations

import argparse
import asyncio
import gc
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
        self.published: dict = {}  # uri -> asyncio.Event of the next publishDiagnostics

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


KINDS = ("comment", "const", "model")


def edits_of(text: str, path: str, edits: int) -> list:
    """(kind, text) of each edit, in order: comment lines added at the end, then consts, then
    a statement at the end of every model block."""
    from dlc.compiler.frontend.syntax import ModelBlock, parse

    ends = sorted(
        (item.span.end_line for item in parse(text, path).items if isinstance(item, ModelBlock)), reverse=True
    )

    def in_models(k: int) -> str:
        lines = text.split("\n")
        for end in ends:  # the last first: the lines above keep their numbers
            lines.insert(end - 1, f"    edit_{k} = {k}")
        return "\n".join(lines)

    return (
        [("comment", text + f"# edit {k}\n") for k in range(edits)]
        + [("const", text + f"const EDIT_{k} = {k}\n") for k in range(edits)]
        + [("model", in_models(k)) for k in range(edits)]
    )


async def measure(path: Path, client: Client, edits: int) -> dict:
    from dlc.runtime.lsp.names import index
    from dlc.compiler.frontend.syntax import ModelBlock, parse

    text, uri = path.read_text(), path.as_uri()
    await client.diagnostics(
        uri,
        lambda: client.text_document_did_open(
            T.DidOpenTextDocumentParams(T.TextDocumentItem(uri=uri, language_id="dl", version=1, text=text))
        ),
    )
    version = 1

    async def edit(changed: str) -> float:
        nonlocal version
        version += 1
        return await client.diagnostics(
            uri,
            lambda: client.text_document_did_change(
                T.DidChangeTextDocumentParams(
                    T.VersionedTextDocumentIdentifier(uri=uri, version=version),
                    [T.TextDocumentContentChangeWholeDocument(text=changed)],
                )
            ),
        )

    timed = {kind: [] for kind in KINDS}
    for kind, changed in edits_of(text, str(path), edits):
        timed[kind].append(await edit(changed))
    module = parse(changed, str(path))  # the last model edit's text
    names, blocks = index(module), [item.span for item in module.items if isinstance(item, ModelBlock)]
    layer_calls = [name for name, _ in names.calls if any(b.line <= name.line <= b.end_line for b in blocks)]

    async def hover(span) -> float:
        start = time.perf_counter()
        await client.text_document_hover_async(
            T.HoverParams(T.TextDocumentIdentifier(uri), T.Position(span.line - 1, span.col - 1))
        )
        return time.perf_counter() - start

    # right after the last model edit's diagnostics, the first hover on a layer call, while
    # the peak memory of training is being computed; then every hover, once it is known
    first = [await hover(name) for name in layer_calls[:1]]
    await settled(client, uri, layer_calls[:1])
    hovers = [await hover(span) for span in [b.span for b in names.bindings] + [name for name, _ in names.calls]]
    client.text_document_did_close(T.DidCloseTextDocumentParams(T.TextDocumentIdentifier(uri)))
    return timed | {"hover": hovers, "memory": first}


async def settled(client: Client, uri: str, layer_calls: list):
    """Once the hover on a layer call no longer says its peak memory is being computed."""
    for span in layer_calls:
        for _ in range(600):
            h = await client.text_document_hover_async(
                T.HoverParams(T.TextDocumentIdentifier(uri), T.Position(span.line - 1, span.col - 1))
            )
            if h is None or "being computed" not in h.contents.value:
                break
            await asyncio.sleep(0.05)


def server_pids(pid: int) -> list:
    """The server and the processes it started (its peak worker), whose CPU is the benchmark's own."""
    pids = [pid]
    for parent in pids:
        for children in Path(f"/proc/{parent}/task").glob("*/children"):
            pids += [int(child) for child in children.read_text().split()]
    return pids


def cpu(names: list, edits: int):
    from dlc.compiler.frontend import syntax
    from dlc.runtime.lsp.analysis import analyze
    from dlc.runtime.lsp.memory import load_compiler, training_peak

    load_compiler(), syntax._parser()  # as the server and its worker before the first edit
    gc.collect(), gc.freeze(), gc.disable()  # and collecting between analyses, as the server does
    print(
        f"{'example':<24} "
        + " ".join(f"{f'analysis CPU ms, {kind} edit':>30}" for kind in KINDS)
        + f" {'peak CPU ms':>12} {'others':>7}"
    )
    for name in names:
        path = str(EXAMPLES / f"{name}.dl")
        text = Path(path).read_text()
        with OtherLoad() as other:
            a, times = analyze(text, path), {kind: [] for kind in KINDS + ("peak",)}
            for kind, changed in edits_of(text, path, edits):  # as the client's, each after the one before
                start = time.thread_time()
                a = analyze(changed, path, previous=a)
                times[kind].append(time.thread_time() - start)
                gc.collect()
            for model in a.models:
                start = time.thread_time()
                training_peak(a.models[model], a.configs.get(model))
                times["peak"].append(time.thread_time() - start)
        print(
            f"{name:<24} "
            + " ".join(f"{ms(times[kind]):>30}" for kind in KINDS)
            + f" {ms(times['peak']):>12} {other.cores:>7.2f}",
            flush=True,
        )
    print("\nms: median / max; others: cores used by other processes while timing (0 = quiet machine)")


def ms(values: list) -> str:
    if len(values) < 2:
        return f"{values[0] * 1000:.0f}" if values else "-"
    return f"{statistics.median(values) * 1000:.0f} / {max(values) * 1000:.0f}"


async def run(names: list, edits: int):
    client = Client()
    await client.start_io(*SERVER)
    await client.initialize_async(T.InitializeParams(capabilities=T.ClientCapabilities()))
    client.initialized(T.InitializedParams())
    print(
        f"{'example':<24} "
        + " ".join(f"{f'diagnostics ms, {kind} edit':>29}" for kind in KINDS)
        + f" {'hover ms':>10} {'first layer hover ms':>21} {'others':>7}"
    )
    for name in names:
        with OtherLoad(pids=server_pids(client._server.pid)) as other:  # the server's CPU is the benchmark's own
            result = await measure(EXAMPLES / f"{name}.dl", client, edits)
        print(
            f"{name:<24} "
            + " ".join(f"{ms(result[kind]):>29}" for kind in KINDS)
            + f" {ms(result['hover']):>10} {ms(result['memory']):>21} {other.cores:>7.2f}",
            flush=True,
        )
    print("\nms: median / max; others: cores used by other processes while timing (0 = quiet machine)")
    await client.shutdown_async(None)
    client.exit(None)
    await client.stop()


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--edits", type=int, default=5, help="edits timed per example")
    p.add_argument("--examples", nargs="*", help="example names (default: all of examples/)")
    p.add_argument(
        "--cpu", action="store_true", help="the CPU time of the server's analyses and peaks, in this process"
    )
    args = p.parse_args()
    names = args.examples or sorted(f.stem for f in EXAMPLES.glob("*.dl"))
    if args.cpu:
        cpu(names, args.edits)
    else:
        asyncio.run(run(names, args.edits))


if __name__ == "__main__":
    main()
