"""The language server, `dlc lsp` (docs/editors.md): driven over stdio by a real LSP client
(pytest-lsp) on the examples, a feature a test: diagnostics that are `dlc check`'s errors
(the error-guidance table's programs), quick fixes, hover, inlay hints, definition,
references, rename, symbols, signature help, completion, formatting, the time budget, and
edits replayed from the front-end fuzz corpus after which the server still answers."""

from __future__ import annotations

import ast
import asyncio
import random
import re
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("pygls", reason="dlc lsp needs the lsp extra: pip install \"dlc[lsp]\"")
pytest_lsp = pytest.importorskip("pytest_lsp", reason="the tests drive the server with pytest-lsp")
from lsprotocol import types as T  # noqa: E402
from pygls.exceptions import JsonRpcException  # noqa: E402
from pytest_lsp import ClientServerConfig, LanguageClient  # noqa: E402

from dlc.runtime.cli import main  # noqa: E402

TESTS = Path(__file__).parents[1]
EXAMPLES = TESTS.parent / "examples"
LOCATED = re.compile(r"^(?P<file>[^\s:]+):(?P<line>\d+):(?P<col>\d+): (?P<kind>error|note): (?P<msg>.*)$")
pytestmark = pytest.mark.asyncio(loop_scope="module")


SERVER = [sys.executable, "-c", "from dlc.runtime.cli import main; main(['lsp'])"]


@pytest_lsp.fixture(scope="module", config=ClientServerConfig(server_command=SERVER))
async def client(lsp_client: LanguageClient):
    await lsp_client.initialize_session(
        T.InitializeParams(capabilities=T.ClientCapabilities(), initialization_options={"inlayHints": True})
    )
    yield
    await lsp_client.shutdown_session()


# ---- helpers ---------------------------------------------------------------------------------
VERSIONS: dict = {}


async def publish(client: LanguageClient, uri: str) -> list:
    """The diagnostics of the document's latest version, once the server publishes them (each
    edit below waits for its own, and the server publishes none for a version already
    replaced, so the first to arrive is the latest's)."""
    for _ in range(1500):
        if uri in client.diagnostics:
            return list(client.diagnostics[uri])
        await asyncio.sleep(0.02)
    raise AssertionError(f"no diagnostics for version {VERSIONS[uri]} of {uri}")


async def open_doc(client: LanguageClient, path: Path, text: str | None = None) -> tuple[str, list]:
    uri = path.resolve().as_uri()
    text = path.read_text() if text is None else text
    if uri in VERSIONS:
        return uri, await edit(client, uri, text)
    VERSIONS[uri] = 1
    client.diagnostics.pop(uri, None)
    client.text_document_did_open(
        T.DidOpenTextDocumentParams(T.TextDocumentItem(uri=uri, language_id="dl", version=1, text=text))
    )
    return uri, await publish(client, uri)


async def edit(client: LanguageClient, uri: str, text: str) -> list:
    VERSIONS[uri] += 1
    client.diagnostics.pop(uri, None)
    client.text_document_did_change(
        T.DidChangeTextDocumentParams(
            T.VersionedTextDocumentIdentifier(uri=uri, version=VERSIONS[uri]),
            [T.TextDocumentContentChangeWholeDocument(text=text)],
        )
    )
    return await publish(client, uri)


def position_of(text: str, needle: str, nth: int = 0, offset: int = 0) -> T.Position:
    """The position of the nth occurrence of needle (plus offset characters)."""
    at = -1
    for _ in range(nth + 1):
        at = text.index(needle, at + 1)
    at += offset
    line = text.count("\n", 0, at)
    return T.Position(line, at - (text.rfind("\n", 0, at) + 1))


async def hover_text(client, uri, pos) -> str:
    h = await client.text_document_hover_async(T.HoverParams(T.TextDocumentIdentifier(uri), pos))
    return h.contents.value if h else ""


async def hover_once_known(client, uri, pos) -> str:
    """The hover on a layer call once the peak memory of training is known: a hover never
    waits for it, it says it is being computed until then."""
    for _ in range(600):
        text = await hover_text(client, uri, pos)
        if "being computed" not in text:
            return text
        await asyncio.sleep(0.1)
    raise AssertionError("the peak memory of training was not computed in 60 s")


# ---- diagnostics are dlc check's errors --------------------------------------------------------------
def guidance_programs() -> list:
    """The programs of tests/frontend/test_error_guidance.py's table: each `run(tmp_path, capsys, PROGRAM)`."""
    tree = ast.parse((TESTS / "frontend" / "test_error_guidance.py").read_text())
    return [
        textwrap.dedent(node.args[2].value).lstrip("\n")
        for node in ast.walk(tree)
        if isinstance(node, ast.Call)
        and getattr(node.func, "id", "") == "run"
        and len(node.args) == 3
        and isinstance(node.args[2], ast.Constant)
    ]


def check_output(path: Path, capsys) -> list:
    """`dlc check`'s located lines: (line, col, kind, message), the error first."""
    assert main(["check", str(path)]) == 1
    err = capsys.readouterr().err
    return [
        (int(m["line"]), int(m["col"]), m["kind"], m["msg"])
        for m in map(LOCATED.match, err.splitlines())
        if m and Path(m["file"]).name == path.name
    ]


async def test_the_error_guidance_table_is_all_here():
    assert len(guidance_programs()) >= 12


@pytest.mark.parametrize("k", range(len(guidance_programs())))
async def test_the_error_guidance_messages_arrive_where_dlc_check_puts_them(client, tmp_path, capsys, k):
    path = tmp_path / f"guidance{k}.dl"
    path.write_text(guidance_programs()[k])
    expected = check_output(path, capsys)
    uri, got = await open_doc(client, path)
    assert len(got) == 1, got
    d = got[0]
    line, col, _, message = expected[0]
    assert (d.range.start.line + 1, d.range.start.character + 1, d.message) == (line, col, message)
    notes = {
        (n.location.range.start.line + 1, n.location.range.start.character + 1, n.message)
        for n in d.related_information or ()
        if n.location.uri == uri
    }
    assert notes == {(l, c, m) for l, c, kind, m in expected[1:] if kind == "note"}


async def test_every_example_has_no_diagnostic(client):
    for path in sorted(EXAMPLES.glob("*.dl")):
        _, got = await open_doc(client, path)
        assert got == [], (path.name, got)


async def test_a_def_that_hides_a_builtin_is_a_warning_where_dlc_check_puts_it(client, tmp_path, capsys):
    path = tmp_path / "shadows.dl"
    path.write_text("model m {\n    input x: f32[B, 4]\n    def exp(v) = v\n    output y = exp(x)\n}\n")
    assert main(["check", str(path)]) == 0
    (line,) = [x for x in capsys.readouterr().err.splitlines() if ": warning: " in x]
    _, got = await open_doc(client, path)
    (d,) = got
    assert d.severity == T.DiagnosticSeverity.Warning
    assert (d.range.start.line + 1, d.range.start.character + 1, d.range.end.character + 1) == (3, 9, 12)
    assert line == f"{path}:3:9: warning: {d.message}"


async def test_an_incremental_edit_is_analyzed_as_the_text_it_makes(client, tmp_path):
    program = "model m {\n    input x: f32[B, 4]\n    output y = dense(x, 3)\n}\n"
    uri, got = await open_doc(client, tmp_path / "incremental.dl", program)
    assert got == []
    VERSIONS[uri] += 1
    client.diagnostics.pop(uri, None)
    start = position_of(program, "dense")
    client.text_document_did_change(
        T.DidChangeTextDocumentParams(
            T.VersionedTextDocumentIdentifier(uri=uri, version=VERSIONS[uri]),
            [
                T.TextDocumentContentChangePartial(
                    range=T.Range(start, T.Position(start.line, start.character + 5)), text="dnese"
                )
            ],
        )
    )
    (d,) = await publish(client, uri)
    assert d.message == "unknown name 'dnese'; did you mean 'dense'?" and d.range.start == start


# ---- quick fixes ---------------------------------------------------------------------------------------
FIXES = [
    ("model m {\n    input x: f32[B, 4]\n    output y = dnese(x, 3)\n}\n", "dense(x, 3)"),
    ("model m {\n    input x: f32[B, 4]\n    output y = dense(x, 3, activation = relu)\n}\n", "act = relu"),
    (
        "model m {\n    input a: f32[B, 4]\n    input b: f32[B, 4]\n    output y = concat(a, b, -1)\n}\n",
        "concat(a, b, axis = -1)",
    ),
    (
        "model m {\n    input x: f32[B, 4]\n    target t: f32[B, 3]\n    loss mean((dense(x, 3) - t) ^ 2)\n}\n"
        "train m {\n    epoch = 3\n}\n",
        "epochs = 3",
    ),
    (
        "model m {\n    input x: f32[B, 4]\n    target t: f32[B, 3]\n    loss mean((dense(x, 3) - t) ^ 2)\n}\n"
        "train m {\n    optimizer = adma(lr = 0.1)\n}\n",
        "optimizer = adam(lr = 0.1)",
    ),
    (
        "model m {\n    input x: f32[B, 64]\n    target t: i32[B]\n    loss sparse_cross_entropy(dense(x, 10), t)\n}\n"
        "train m {\n    data = digit(image = false)\n}\n",
        "data = digits(image = false)",
    ),
]


@pytest.mark.parametrize("program, fixed", FIXES)
async def test_a_did_you_mean_has_a_quick_fix_that_makes_the_program_check(client, tmp_path, program, fixed):
    path = tmp_path / f"fix{FIXES.index((program, fixed))}.dl"
    uri, got = await open_doc(client, path, program)
    assert len(got) == 1 and "did you mean" in got[0].message, got
    actions = await client.text_document_code_action_async(
        T.CodeActionParams(T.TextDocumentIdentifier(uri), got[0].range, T.CodeActionContext(diagnostics=got))
    )
    assert len(actions) == 1 and actions[0].kind == T.CodeActionKind.QuickFix
    (change,) = actions[0].edit.changes[uri]
    lines = program.split("\n")
    r = change.range
    line = lines[r.start.line]
    lines[r.start.line] = line[: r.start.character] + change.new_text + line[r.end.character :]
    new = "\n".join(lines)
    assert fixed in new
    assert await edit(client, uri, new) == []


# ---- hover -----------------------------------------------------------------------------------------
async def test_hover_on_a_name_shows_its_type_with_named_dims(client):
    path = EXAMPLES / "mnist_mlp.dl"
    uri, _ = await open_doc(client, path)
    text = path.read_text()
    assert "logits: f32[B, 10]" in await hover_text(client, uri, position_of(text, "logits", 1))
    assert "x: f32[B, 784]" in await hover_text(client, uri, position_of(text, "x |>"))
    assert "the batch: 128" in await hover_text(client, uri, position_of(text, "B,"))


def summary_memory_row(path: Path, layer: str, capsys) -> int:
    """The activations of a layer in `dlc summary --memory`, at the train block's batch."""
    assert main(["summary", "--memory", str(path)]) == 0
    out = capsys.readouterr().out
    at = dict(re.findall(r"(\w+) = (\d+)", out.splitlines()[0].split("located at")[1]))
    row = next(line for line in out.splitlines() if line.split() and line.split()[0] == layer)
    poly = re.split(r"\s{2,}", row.strip())[1]
    total = 0
    for term in poly.split(" + "):
        coef, *syms = term.split("·")
        total += int(coef.replace(",", "")) * eval("*".join([str(int(at[s])) for s in syms]) or "1")
    return total


async def test_hover_on_a_layer_call_shows_its_parameters_flops_and_memory(client, capsys):
    from dlc.compiler.frontend.summary import size_text

    path = EXAMPLES / "mnist_mlp.dl"
    uri, _ = await open_doc(client, path)
    text = await hover_once_known(client, uri, position_of(path.read_text(), "dense(512", offset=2))
    assert "**h.0**: a call of `dense`" in text
    assert "401,920 in 2 tensors" in text and "`h.0.W: f32[784, 512]`" in text and "`h.0.b: f32[512]`" in text
    assert "forward FLOPs per example: 804,352" in text  # 2·784·512 + 512 (bias) + 512 (relu)
    assert f"activation memory of training: {size_text(summary_memory_row(path, 'h.0', capsys))} at B = 128" in text
    assert "dense(x: f32[..., n], units: int" in text  # and the function's signature


REUSED = (
    "model b {\n    input x: f32[B, 4]\n    output y = dense(x, 3)\n}\n"
    "const H = 16\nconst W = 8\n"
    "def block(x) {\n    return dense(x, H, relu)\n}\n"
    "model a {\n    input x: f32[B, 4]\n    target t: f32[B, 8]\n    h = block(x)\n"
    "    loss mean((dense(h, W) - t) ^ 2)\n}\n"
    "train a {\n    batch = 32\n}\n"
)  # model a last: dlc check's and dlc summary's


async def test_a_build_is_reused_only_while_what_it_reads_is_unchanged(tmp_path):
    """A comment, another model or its train block leave a model's build to the next
    analysis; an edit of a def, a const, the model, its train block or an imported file, or
    one that moves it, makes it built again."""
    from dlc.runtime.lsp.analysis import analyze

    path = str(tmp_path / "reuse.dl")
    first = analyze(REUSED, path)
    assert first.errors == [] and set(first.builds) == {"a", "b"}

    def reused(text: str) -> set:
        return {
            name
            for name, build in analyze(text, path, previous=first).builds.items()
            if build is first.builds.get(name)
        }

    assert reused(REUSED + "# a comment\n") == {"a", "b"}
    assert reused(REUSED + "const UNREAD = 1\ndef unread(x) {\n    return x\n}\n") == {"a", "b"}
    assert reused(REUSED.replace("dense(x, 3)", "dense(x, 5)")) == {"a"}
    assert reused(REUSED + "train b {\n    batch = 8\n}\n") == {"a"}
    assert reused(REUSED.replace("batch = 32", "batch = 64")) == {"b"}
    assert reused(REUSED.replace("H = 16", "H = 17")) == {"b"}  # read by block, which a calls
    assert reused(REUSED.replace("relu", "tanh")) == {"b"}
    assert reused(REUSED.replace("const W = 8", "const W = H")) == {"b"}  # a reads W, W now H
    assert reused(REUSED + "def dense(x, n) {\n    return x\n}\n") == set()  # shadows the library's
    assert reused(REUSED + "def zeros(s) {\n    return s\n}\n") == set()  # a state's default initial value
    assert reused("\n" + REUSED) == set()  # every place moved
    broken = analyze(REUSED.replace("dense(x, 3)", "dens(x, 3)"), path)
    assert [build.errors != [] for build in broken.builds.values()] == [True, False]
    again = analyze(REUSED.replace("dense(x, 3)", "dens(x, 3)") + "const UNREAD = 1\n", path, previous=broken)
    assert (
        again.builds["b"] is not broken.builds["b"] and again.builds["a"] is broken.builds["a"]
    )  # a did-you-mean reads every name
    lib = tmp_path / "lib.dl"
    lib.write_text("const K = 2\n")
    imports = analyze('import "lib.dl"\n' + REUSED, path)
    assert analyze('import "lib.dl"\n' + REUSED, path, previous=imports).builds["b"] is imports.builds["b"]
    lib.write_text("const K = 3\n")
    assert analyze('import "lib.dl"\n' + REUSED, path, previous=imports).builds["b"] is not imports.builds["b"]


@pytest.mark.parametrize("name", ["REUSED", "seq2seq_luong", "inception_cnn"])
async def test_an_analysis_that_reuses_builds_says_what_one_that_builds_all_says(tmp_path, name):
    """Random edits of a file (a line deleted or repeated, a number changed, a const or a
    def that shadows a library function inserted), each analyzed given the analysis of the
    text before (the file itself between two edits): each has the errors (messages, places,
    notes) and the types of an analysis from scratch."""
    from dlc.runtime.lsp.analysis import analyze

    rng = random.Random(name)
    original = REUSED if name == "REUSED" else (EXAMPLES / f"{name}.dl").read_text()
    path = str(tmp_path / "edited.dl")

    def edited() -> str:
        lines = original.split("\n")
        at, kind = rng.randrange(len(lines)), rng.randrange(5)
        if kind == 0:
            del lines[at]
        elif kind == 1:
            lines.insert(at, lines[at])
        elif kind == 2:
            lines[at] = re.sub(r"\d+", lambda m: str(int(m[0]) + 1), lines[at], count=1)
        else:
            lines.insert(
                at if kind == 3 else len(lines),
                rng.choice(
                    ["const EDITED = 3", "def relu(x) {\n    return x\n}", "def dense(x, n) {\n    return x\n}"]
                ),
            )
        return "\n".join(lines)

    def said(a) -> tuple:
        return (
            [(e.message, e.span, e.notes) for e in a.errors],
            {n: [(b, str(t), at) for b, t, at in m.bindings] for n, m in a.models.items()},
        )

    before, reused = analyze(original, path), 0
    for k in range(40):
        text = edited() if k % 2 == 0 else original
        now = analyze(text, path, previous=before)
        assert said(now) == said(analyze(text, path)), text
        reused += sum(build is before.builds.get(n) for n, build in now.builds.items())
        before = now
    assert reused > 0  # some edits left a model's inputs alone: its build was reused


async def test_an_edit_upstream_changes_the_types_diagnostics_and_memory_downstream(client, tmp_path, capsys):
    from dlc.compiler.frontend.summary import size_text

    path = tmp_path / "upstream.dl"
    uri, got = await open_doc(client, path, REUSED)
    assert got == []
    at = position_of(REUSED, "h = block")
    assert "h: f32[B, 16]" in await hover_text(client, uri, at)
    for width in (24, 40):  # the const the def reads, above the model; the hover once its peak is known
        text = REUSED.replace("H = 16", f"H = {width}")
        assert await edit(client, uri, text) == []
        assert f"h: f32[B, {width}]" in await hover_text(client, uri, at)
        path.write_text(text)
        hover = await hover_once_known(client, uri, position_of(text, "block(x)\n    loss"))
        assert f"activation memory of training: {size_text(summary_memory_row(path, 'h', capsys))} at B = 32" in hover
    text = REUSED.replace("W = 8", "W = 9")  # the loss's dense no longer fits the target
    path.write_text(text)
    (d,) = await edit(client, uri, text)
    line, col, _, message = check_output(path, capsys)[0]
    assert (d.range.start.line + 1, d.range.start.character + 1, d.message) == (line, col, message)
    assert "do not broadcast" in message
    assert await edit(client, uri, REUSED) == []


async def test_a_layer_hover_right_after_an_edit_does_not_wait_for_the_peak(client, capsys):
    """Right after an edit that builds transformer_seq2seq again, its peak memory of training
    takes the worker some 0.5 s of CPU: the hover answers before, with the layer's parameters
    and FLOPs and the peak said to be being computed; later, the peak `dlc summary --memory` gives."""
    from dlc.compiler.frontend.summary import size_text

    path = EXAMPLES / "transformer_seq2seq.dl"
    uri, _ = await open_doc(client, path)
    text = path.read_text().replace("    output probs", "    edited = 1\n    output probs")  # built again
    assert await edit(client, uri, text) == []
    at = position_of(text, "transformer_encoder(", offset=2)
    first = await hover_text(client, uri, at)
    assert "activation memory of training: being computed (hover again)" in first
    assert "parameters: " in first and "forward FLOPs per example: " in first
    layer = re.search(r"\*\*([\w.]+)\*\*: a call of", first)[1]
    known = await hover_once_known(client, uri, at)
    assert f"activation memory of training: {size_text(summary_memory_row(path, layer, capsys))} at " in known


async def test_a_burst_of_edits_is_analyzed_once_after_the_analysis_under_way(monkeypatch):
    """Each edit is analyzed at once, but one thread analyzes: the edits that come while an
    analysis runs are analyzed after it, the latest alone, and only its diagnostics published."""
    import time
    from pygls.workspace import Workspace
    from dlc.runtime.lsp import server as S

    ls, analyzed, published = S.DlcLanguageServer(), [], []
    ls.protocol._workspace = Workspace(None)

    def analyze(text, path, seconds, previous):
        analyzed.append(text)
        time.sleep(0.3)
        return S.Analysis(text, path)

    monkeypatch.setattr(S, "analyze", analyze)
    ls.text_document_publish_diagnostics = lambda params: published.append(params.version)
    uri = "file:///burst.dl"
    for version in range(1, 6):
        ls.workspace.put_text_document(T.TextDocumentItem(uri, "dl", version, f"# version {version}\n"))
        ls.schedule(uri)
        await asyncio.sleep(0.05)  # the first is being analyzed; the next ones wait
    await ls.analyzed[uri].wait()
    assert analyzed == ["# version 1\n", "# version 5\n"] and published == [5]


async def test_the_peak_worker_runs_the_latest_job_first_and_drops_the_cancelled():
    """The worker process's peaks are the ones computed in the server's own process; the job
    asked last (or hurried by a hover) runs next, a cancelled one never."""
    from concurrent.futures import wait
    from dlc.runtime.lsp.analysis import analyze
    from dlc.runtime.lsp.memory import PeakWorker, training_peak

    worker, done = PeakWorker(), []
    texts = {name: (EXAMPLES / f"{name}.dl").read_text() for name in ("mnist_mlp", "xor_mlp", "digits_mlp", "vae")}

    def submit(name: str):
        job = worker.submit(texts[name], str(EXAMPLES / f"{name}.dl"), name)
        job.add_done_callback(lambda _: done.append(name))
        return job

    jobs = {name: submit(name) for name in texts}  # mnist_mlp starts at once
    jobs["xor_mlp"].cancel()
    worker.hurry(jobs["digits_mlp"])
    wait([jobs[name] for name in ("mnist_mlp", "digits_mlp", "vae")], timeout=120)
    assert done == ["xor_mlp", "mnist_mlp", "digits_mlp", "vae"] and jobs["xor_mlp"].cancelled()
    for name in ("mnist_mlp", "digits_mlp", "vae"):
        a = analyze(texts[name], str(EXAMPLES / f"{name}.dl"))
        assert jobs[name].result() == training_peak(a.models[name], a.configs[name])


async def test_hover_texts_are_docs_editors_md_texts(client, tmp_path):
    """docs/editors.md "What a hover says", word for word."""
    path = EXAMPLES / "digits_cnn.dl"
    text = path.read_text()
    uri, _ = await open_doc(client, path)
    for needle, nth, expected in [
        ("digits_cnn", 1, "model digits_cnn: 8 parameter tensors, 13,706 parameters"),
        ("c1 =", 0, "```dl\nc1: f32[B, 16, 8, 8]\n```\nbinding of model digits_cnn"),
        ("B, 1", 0, "```dl\nB: a dim of the inputs, the batch: 32 in the train block\n```\ndim of model digits_cnn"),
        (
            "act =",
            0,
            "```dl\nact = identity\n```\nargument of `conv2d(x: f32[N, C, height, width], filters: int, "
            'kernel = 3, stride = 1, padding = "valid", act = identity, init = glorot_uniform, bias: bool = true, '
            "dilation = 1, groups: int = 1)`",
        ),
        ("batch ", 0, ""),
        ("32\n", 0, ""),
    ]:
        assert await hover_text(client, uri, position_of(text, needle, nth)) == expected, needle
    conv = await hover_once_known(client, uri, position_of(text, "conv2d"))
    assert conv.startswith(
        "**c1**: a call of `conv2d`\n\nparameters: 160 in 2 tensors: `c1.W: f32[16, 1, 3, 3]`, "
        "`c1.b: f32[16]`\n\nforward FLOPs per example: 21,504\n\nactivation memory of training: "
        "160.0 KiB at B = 32 (as `dlc summary --memory`)\n\n---\n\n```dl\nconv2d("
    )
    assert "```\nstandard library, layers.dl:53\n\n" in conv
    softmax = await hover_text(client, uri, position_of(text, "softmax"))
    assert softmax.startswith(
        "**(no parameters)**: a call of `softmax`\n\nparameters: none\n\n"
        "forward FLOPs per example: 50\n\n---\n\n```dl\nsoftmax(x, axis = -1)\n```\n"
        "standard library, activations.dl:26\n\n"
    )
    path = EXAMPLES / "inception_cnn.dl"
    text = path.read_text()
    uri, _ = await open_doc(client, path)
    assert (
        await hover_text(client, uri, position_of(text, "b1 ="))
        == "binding of inception, by call:\n```dl\nb1: f32[B, 16, 8, 8]  # line 21\nb1: f32[B, 24, 4, 4]  # line 23\n```"
    )
    assert (await hover_text(client, uri, position_of(text, "inception(x"))).startswith(
        "```dl\ninception(x, c1: int, c3_reduce: int, c3: int, c5_reduce: int, c5: int, pool: int)\n```\n"
        "defined at line 9\n\none Inception block"
    )
    assert (await hover_text(client, uri, position_of(text, "concat(b1"))).startswith(
        "```dl\nconcat(*xs, axis = -1)\n```\nbuiltin"
    )
    assert await hover_text(client, uri, position_of((EXAMPLES / "char_gpt.dl").read_text(), "VOCAB")) == ""
    uri, _ = await open_doc(client, EXAMPLES / "char_gpt.dl")
    assert (
        await hover_text(client, uri, position_of((EXAMPLES / "char_gpt.dl").read_text(), "VOCAB", 1))
        == "```dl\nconst VOCAB = 60\n```"
    )
    assert "parameters: 3,840 in 1 tensor: `logits.W: f32[64, 60]`\n\n" in await hover_text(
        client, uri, position_of((EXAMPLES / "char_gpt.dl").read_text(), "dense(h")
    )
    uncalled = (
        "def f(x, k: int) {\n    h = x * k\n    return h\n}\nmodel m {\n    input x: f32[B, 4]\n    output y = x\n}\n"
    )
    uri, _ = await open_doc(client, tmp_path / "uncalled.dl", uncalled)
    assert (
        await hover_text(client, uri, position_of(uncalled, "k:"))
        == "```dl\nk: int\n```\nargument of f (its type is each call's)"
    )
    assert await hover_text(client, uri, position_of(uncalled, "h =")) == "binding `h` in f (its type is each call's)"


async def test_the_size_budget_says_what_docs_editors_md_says(client, tmp_path):
    text = (EXAMPLES / "xor_mlp.dl").read_text() + "# " + "x" * 1_000_000 + "\n"
    uri, (d,) = await open_doc(client, tmp_path / "huge.dl", text)
    assert (d.range.start.line, d.range.start.character) == (0, 0)
    assert d.message == (
        f"the file has {len(text):,} characters; the language server analyzes files of at most "
        "1,000,000 (`dlc check` checks it whole)"
    )
    assert await edit(client, uri, "def f(x) = x\n") == []  # defines no model: no diagnostic


async def test_hover_on_a_library_function_shows_its_signature_and_doc(client):
    path = EXAMPLES / "mnist_mlp.dl"
    uri, _ = await open_doc(client, path)
    text = await hover_text(client, uri, position_of(path.read_text(), "dropout(0.2)", offset=1))
    assert "dropout(x, rate: float = 0.5)" in text and "inverted dropout" in text and "layers.dl" in text
    text = await hover_text(client, uri, position_of(path.read_text(), "softmax"))
    assert "softmax(" in text


async def test_hover_and_definition_of_a_keyword_argument(client):
    path = EXAMPLES / "inception_cnn.dl"
    uri, _ = await open_doc(client, path)
    at = position_of(path.read_text(), "act = relu")
    assert "act = identity" in await hover_text(client, uri, at)
    loc = await client.text_document_definition_async(T.DefinitionParams(T.TextDocumentIdentifier(uri), at))
    assert loc.uri.endswith("/compiler/stdlib/layers.dl")
    lines = Path(loc.uri.removeprefix("file://")).read_text().splitlines()
    assert lines[loc.range.start.line][loc.range.start.character :].startswith("act = identity")
    heading = next(line for line in reversed(lines[: loc.range.start.line + 1]) if line.startswith("def "))
    assert heading.startswith("def conv2d(")


async def test_hover_in_a_def_shows_each_calls_type(client):
    path = EXAMPLES / "inception_cnn.dl"
    uri, _ = await open_doc(client, path)
    text = await hover_text(client, uri, position_of(path.read_text(), "b1 ="))
    assert "b1: f32[B, 16, 8, 8]  # line 21" in text and "b1: f32[B, 24, 4, 4]  # line 23" in text
    text = await hover_text(client, uri, position_of(path.read_text(), "c1: int"))
    assert "c1: 16  # line 21" in text and "c1: 24  # line 23" in text


# ---- inlay hints -------------------------------------------------------------------------------------
async def test_inlay_hints_show_each_statements_shape_and_a_setting_turns_them_off(client, tmp_path):
    path = EXAMPLES / "mnist_mlp.dl"
    uri, _ = await open_doc(client, path)
    text = path.read_text()
    whole = T.Range(T.Position(0, 0), T.Position(len(text.splitlines()), 0))
    hints = await client.text_document_inlay_hint_async(T.InlayHintParams(T.TextDocumentIdentifier(uri), whole))
    by_line = {h.position.line: h.label for h in hints}
    assert by_line[position_of(text, "logits =").line] == ": f32[B, 10]"
    assert by_line[position_of(text, "h = x").line] == ": f32[B, 256]"
    assert by_line[position_of(text, "loss ").line] == ": f32[]"
    hint = next(h for h in hints if h.label == ": f32[B, 10]")
    assert hint.position.character == len(text.splitlines()[hint.position.line].rstrip())
    program = (
        "def block(x) {\n    h = dense(x, 8)\n    return h\n}\nmodel m {\n    input x: f32[B, 4]\n"
        "    output y = block(x)\n}\n"
    )
    uri2, _ = await open_doc(client, tmp_path / "hints.dl", program)
    hints2 = await client.text_document_inlay_hint_async(T.InlayHintParams(T.TextDocumentIdentifier(uri2), whole))
    assert [(h.position.line, h.label) for h in hints2] == [(1, ": f32[B, 8]"), (6, ": f32[B, 8]")]
    client.workspace_did_change_configuration(T.DidChangeConfigurationParams({"dlc": {"inlayHints": False}}))
    assert not await client.text_document_inlay_hint_async(T.InlayHintParams(T.TextDocumentIdentifier(uri), whole))
    client.workspace_did_change_configuration(T.DidChangeConfigurationParams({"dlc": {"inlayHints": True}}))
    assert await client.text_document_inlay_hint_async(T.InlayHintParams(T.TextDocumentIdentifier(uri), whole))


# ---- definition, references, rename, symbols ------------------------------------------------------------
async def test_definition_of_a_local_name_and_of_a_stdlib_layer(client):
    path = EXAMPLES / "mnist_mlp.dl"
    uri, _ = await open_doc(client, path)
    text = path.read_text()
    loc = await client.text_document_definition_async(
        T.DefinitionParams(T.TextDocumentIdentifier(uri), position_of(text, "logits, y"))
    )
    assert loc.uri == uri and loc.range.start == position_of(text, "logits =")
    loc = await client.text_document_definition_async(
        T.DefinitionParams(T.TextDocumentIdentifier(uri), position_of(text, "dense(512"))
    )
    assert loc.uri.endswith("/compiler/stdlib/layers.dl")
    lines = Path(loc.uri.removeprefix("file://")).read_text().splitlines()
    assert lines[loc.range.start.line][loc.range.start.character :].startswith("dense(x")


async def test_references_and_rename_of_a_local_name(client):
    path = EXAMPLES / "mnist_mlp.dl"
    uri, _ = await open_doc(client, path)
    text = path.read_text()
    refs = await client.text_document_references_async(
        T.ReferenceParams(
            text_document=T.TextDocumentIdentifier(uri),
            position=position_of(text, "logits ="),
            context=T.ReferenceContext(include_declaration=True),
        )
    )
    assert len(refs) == len(re.findall(r"\blogits\b", text))
    edit_ = await client.text_document_rename_async(
        T.RenameParams(T.TextDocumentIdentifier(uri), position_of(text, "logits, y"), "scores")
    )
    edits = edit_.changes[uri]
    assert len(edits) == len(refs) and all(e.new_text == "scores" for e in edits)
    with pytest.raises(JsonRpcException, match="not a name"):
        await client.text_document_rename_async(
            T.RenameParams(T.TextDocumentIdentifier(uri), position_of(text, "logits, y"), "scan")
        )
    assert (
        await client.text_document_prepare_rename_async(
            T.PrepareRenameParams(T.TextDocumentIdentifier(uri), position_of(text, "dense(512"))
        )
        is None
    )


@pytest.mark.parametrize(
    "name, new, reason",
    [
        (
            "h = ",
            "VOCAB",
            "would change what `VOCAB` at line 14, column 23 means: it refers to the const `VOCAB` of line 5, "
            "and would refer to the binding `h` renamed, of line 12",
        ),
        (
            "h = ",
            "dense",
            "would change what `dense` at line 14, column 14 means: it refers to `dense` of the standard library",
        ),
        ("tokens = ", "CONTEXT", "would change what `CONTEXT` at line 12"),
        ("B, T", "T", "would change what `T` at line 9, column 22 means: it binds a new dim"),
        ("VOCAB = ", "CONTEXT", "`CONTEXT` is defined already: the const `CONTEXT` of line 6"),
        ("x: ", "y", "`y` is defined already: the target `y` of line 10"),
    ],
)
async def test_a_rename_that_changes_what_a_name_refers_to_is_refused(client, tmp_path, name, new, reason):
    text = (EXAMPLES / "char_gpt.dl").read_text()
    uri, _ = await open_doc(client, tmp_path / "char_gpt.dl", text)
    with pytest.raises(JsonRpcException, match=re.escape(reason)):
        await client.text_document_rename_async(
            T.RenameParams(T.TextDocumentIdentifier(uri), position_of(text, name), new)
        )


@pytest.mark.parametrize("name, new", [("h = ", "hidden"), ("logits = ", "h"), ("VOCAB = ", "V"), ("B, T", "N")])
async def test_a_rename_that_keeps_every_names_meaning_makes_a_program_that_checks(client, tmp_path, name, new, capsys):
    text = (EXAMPLES / "char_gpt.dl").read_text()
    path = tmp_path / "char_gpt.dl"
    uri, _ = await open_doc(client, path, text)
    renamed, _ = await renamed_with_messages(client, uri, text, name, new)
    path.write_text(renamed)
    assert main(["check", str(path)]) == 0, capsys.readouterr().err
    assert renamed != text


async def renamed_with_messages(client, uri, text, where, new) -> tuple:
    """(the text with the edits of renaming the name at `where` to `new` applied, the messages the
    rename showed)."""
    shown = len(client.messages)
    done = await client.text_document_rename_async(
        T.RenameParams(T.TextDocumentIdentifier(uri), position_of(text, where), new)
    )
    lines = text.split("\n")
    for e in sorted(done.changes[uri], key=lambda e: (e.range.start.line, e.range.start.character), reverse=True):
        line = lines[e.range.start.line]
        lines[e.range.start.line] = line[: e.range.start.character] + e.new_text + line[e.range.end.character :]
    await asyncio.sleep(0.2)  # a notification the server sent before its response has been read
    return "\n".join(lines), client.messages[shown:]


RENAMED = """def block(x) {
    h = dense(x, 3, tanh)
    return h
}
model cls {
    input  x: f32[B, 2]
    target y: i32[B]
    h = dense(x, 4, tanh)
    b = block(h)
    loss sparse_cross_entropy(dense(b, 2, name = "out"), y)
}
train cls { data = "d.npz"  epochs = 1  batch = 4 }
"""


@pytest.mark.parametrize(
    "where, new, params, renames",
    [
        ("h = dense(x, 4", "hid", "h.W to hid.W, h.b to hid.b", "h=hid"),
        ("h = dense(x, 3", "inner", "b.h.W to b.inner.W, b.h.b to b.inner.b", "b.h=b.inner"),
    ],
)
async def test_a_rename_of_a_binding_that_names_parameters_warns_and_its_command_carries_checkpoints(
    client, tmp_path, capsys, where, new, params, renames
):
    """The warning says which parameters the rename renames and the command that renames them in a
    checkpoint; a checkpoint trained before the rename loads into the renamed model after it."""
    path = tmp_path / "cls.dl"
    path.write_text(RENAMED)
    rng = np.random.default_rng(0)
    np.savez(tmp_path / "d.npz", x=rng.random((8, 2)).astype(np.float32), y=rng.integers(0, 2, 8).astype(np.int32))
    assert main(["train", str(path), "--out", str(tmp_path / "run"), "--backend", "reference", "-q"]) == 0
    uri, _ = await open_doc(client, path, RENAMED)
    renamed, messages = await renamed_with_messages(client, uri, RENAMED, where, new)
    assert [m.type for m in messages] == [T.MessageType.Warning]
    assert f"renames its parameters ({params})" in messages[0].message, messages[0].message
    command = f"dlc checkpoint rename CKPT {renames} -o RENAMED.npz"
    assert command in messages[0].message
    path.write_text(renamed)
    weights = ["--weights", str(tmp_path / "run" / "last.npz"), "--backend", "reference"]
    capsys.readouterr()
    assert main(["eval", str(path), *weights]) == 1
    assert renames in capsys.readouterr().err  # the error names the rename too
    argv = command.replace("CKPT", str(tmp_path / "run" / "last.npz")).replace("RENAMED", str(tmp_path / "r"))
    assert main(argv.split()[1:]) == 0
    assert main(["eval", str(path), *weights[:1], str(tmp_path / "r.npz"), *weights[2:]]) == 0


async def test_a_rename_that_names_no_parameter_shows_no_message(client, tmp_path):
    uri, _ = await open_doc(client, tmp_path / "cls.dl", RENAMED)
    _, messages = await renamed_with_messages(client, uri, RENAMED, "x: f32", "inputs")
    assert messages == []


async def test_document_symbols_are_the_models_defs_and_train_blocks(client, tmp_path):
    program = (
        "const width = 8\ndef block(x) = dense(x, width, relu)\nmodel m {\n    input x: f32[B, 4]\n"
        "    h = block(x)\n    output y = dense(h, 2)\n}\ntrain m {\n    epochs = 2\n}\n"
    )
    uri, _ = await open_doc(client, tmp_path / "symbols.dl", program)
    symbols = await client.text_document_document_symbol_async(T.DocumentSymbolParams(T.TextDocumentIdentifier(uri)))
    assert [(s.name, s.kind) for s in symbols] == [
        ("width", T.SymbolKind.Constant),
        ("block", T.SymbolKind.Function),
        ("m", T.SymbolKind.Class),
        ("train m", T.SymbolKind.Namespace),
    ]
    assert [c.name for c in symbols[2].children] == ["x", "h", "y"]
    assert [c.name for c in symbols[3].children] == ["epochs"]


# ---- while writing ---------------------------------------------------------------------------------
PARTIAL = "model m {\n    input x: f32[B, 4]\n    h = dense(x, 12, \n}\n"


async def test_signature_help_names_the_argument_being_written(client, tmp_path):
    uri, _ = await open_doc(client, tmp_path / "sig.dl", PARTIAL)
    help_ = await client.text_document_signature_help_async(
        T.SignatureHelpParams(T.TextDocumentIdentifier(uri), position_of(PARTIAL, "12, ", offset=4))
    )
    sig = help_.signatures[0]
    assert sig.label.startswith("dense(x: f32[..., n], units: int, act = identity")
    assert sig.parameters[help_.active_parameter].label == "act = identity"
    piped = "model m {\n    input x: f32[B, 4]\n    h = x |> dense(12, init = \n}\n"
    uri, _ = await open_doc(client, tmp_path / "sig.dl", piped)
    for needle, offset, expected in (("dense(", 6, "units: int"), ("init = ", 7, "init = glorot_uniform")):
        help_ = await client.text_document_signature_help_async(
            T.SignatureHelpParams(T.TextDocumentIdentifier(uri), position_of(piped, needle, offset=offset))
        )
        assert help_.signatures[0].parameters[help_.active_parameter].label == expected


async def test_completion_of_names_functions_keywords_and_train_settings(client, tmp_path):
    good = "model m {\n    input x: f32[B, 4]\n    h = dense(x, 12)\n    output y = h\n}\n"
    uri, _ = await open_doc(client, tmp_path / "complete.dl", good)
    await edit(client, uri, PARTIAL)  # the last good analysis gives the names in scope
    items = await client.text_document_completion_async(
        T.CompletionParams(T.TextDocumentIdentifier(uri), position_of(PARTIAL, "12, ", offset=4))
    )
    labels = {i.label: i for i in items}
    assert "act =" in labels and "init =" in labels
    assert "x" in labels and labels["dense"].detail.startswith("dense(x: f32[..., n]")
    assert labels["softmax"].kind == T.CompletionItemKind.Function
    train = (
        "model m {\n    input x: f32[B, 4]\n    output y = x\n}\ntrain m {\n    optimizer = \n    data = \n    \n}\n"
    )
    await edit(client, uri, train)
    for needle, offset, expected in (
        ("optimizer = ", 12, "adamw"),
        ("data = ", 7, "spirals"),
        ("    \n}", 4, "epochs"),
    ):
        items = await client.text_document_completion_async(
            T.CompletionParams(T.TextDocumentIdentifier(uri), position_of(train, needle, offset=offset))
        )
        assert expected in {i.label for i in items}, needle


async def test_completion_after_a_pipe_lists_only_functions_and_each_name_once(client, tmp_path):
    text = (EXAMPLES / "char_gpt.dl").read_text()
    piped = text.replace("    output next =", "    z = logits |> \n    output next =")
    uri, _ = await open_doc(client, tmp_path / "pipe.dl", text)
    await edit(client, uri, piped)
    items = await client.text_document_completion_async(
        T.CompletionParams(T.TextDocumentIdentifier(uri), position_of(piped, "|> ", offset=3))
    )
    labels = [i.label for i in items]
    assert "dense" in labels and "softmax" in labels and "layernorm" in labels
    assert not {"x", "h", "tokens", "B", "T", "VOCAB", "logits", "accuracy"} & set(labels), labels
    assert all(i.kind == T.CompletionItemKind.Function for i in items)
    items = await client.text_document_completion_async(
        T.CompletionParams(T.TextDocumentIdentifier(uri), position_of(piped, "output next =", offset=13))
    )
    labels = [i.label for i in items]
    assert len(labels) == len(set(labels)) and {"x", "h", "VOCAB", "accuracy", "dense"} <= set(labels)
    assert next(i for i in items if i.label == "accuracy").detail == "metric"


async def test_train_values_complete_with_their_options_as_a_dl_file_writes_them(client, tmp_path):
    train = (
        "model m {\n    input x: f32[B, 4]\n    output y = x\n}\ntrain m {\n    optimizer = \n    schedule = \n"
        "    data = \n    validation = \n    test = \n}\n"
    )
    uri, _ = await open_doc(client, tmp_path / "train_values.dl", train)

    async def details(needle):
        items = await client.text_document_completion_async(
            T.CompletionParams(T.TextDocumentIdentifier(uri), position_of(train, needle, offset=len(needle)))
        )
        return {i.label: i.detail for i in items}

    optimizers = await details("optimizer = ")
    assert optimizers["adam"] == "adam(lr, beta1 = 0.9, beta2 = 0.999, eps = 1e-08, weight_decay = 0)"
    assert optimizers["lbfgs"].startswith('lbfgs(lr = 1, history = 10, max_iter = 20, line_search = "strong_wolfe"')
    assert (await details("schedule = "))[
        "cosine"
    ] == "cosine(min_lr = 0, warmup = 0, warmup_steps = none, decay_steps = none)"
    sources = await details("data = ")
    assert sources["text"] == 'text(path, seq = 100, vocab = none, lines = false, windows = "fixed", tokenizer = none)'
    assert "split" not in sources
    for held_out in ("validation = ", "test = "):
        assert (await details(held_out)) == {"split": "split(fraction, tail = false)"} | sources


async def test_in_a_train_blocks_call_its_options_complete_and_its_signature_helps(client, tmp_path):
    train = "model m {\n    input x: f32[B, 4]\n    output y = x\n}\ntrain m {\n    optimizer = adam(lr = 0.1, \n}\n"
    uri, _ = await open_doc(client, tmp_path / "train_call.dl", train)
    at = position_of(train, "0.1, ", offset=5)
    items = await client.text_document_completion_async(T.CompletionParams(T.TextDocumentIdentifier(uri), at))
    assert [i.label for i in items] == ["lr =", "beta1 =", "beta2 =", "eps =", "weight_decay ="]
    help_ = await client.text_document_signature_help_async(T.SignatureHelpParams(T.TextDocumentIdentifier(uri), at))
    assert help_.signatures[0].label == "adam(lr, beta1 = 0.9, beta2 = 0.999, eps = 1e-08, weight_decay = 0)"
    assert help_.signatures[0].parameters[help_.active_parameter].label == "beta1 = 0.9"


async def test_a_builtins_arguments_are_written_as_in_a_dl_file(client, tmp_path):
    program = "model m {\n    input a: f32[B, 4]\n    output y = concat(a, a, axis = -1)\n}\n"
    uri, _ = await open_doc(client, tmp_path / "builtin.dl", program)
    assert (
        await hover_text(client, uri, position_of(program, "axis"))
        == "```dl\naxis = -1\n```\nargument of `concat(*xs, axis = -1)`"
    )
    help_ = await client.text_document_signature_help_async(
        T.SignatureHelpParams(T.TextDocumentIdentifier(uri), position_of(program, "axis"))
    )
    assert help_.signatures[0].label == "concat(*xs, axis = -1)"


async def test_formatting_is_dlc_fmts_layout(client, tmp_path):
    """A file laid out carelessly gets one edit: dlc fmt's text; a formatted one gets none."""
    from dlc.compiler.frontend.format import format_text

    tidy = (EXAMPLES / "xor_mlp.dl").read_text()
    messy = tidy.replace("    ", "  ").replace(" = ", "=")
    assert messy != tidy
    options = T.FormattingOptions(4, True)
    uri, _ = await open_doc(client, tmp_path / "messy.dl", messy)
    edits = await client.text_document_formatting_async(
        T.DocumentFormattingParams(T.TextDocumentIdentifier(uri), options)
    )
    assert len(edits) == 1 and edits[0].new_text == format_text(messy) == tidy
    uri, _ = await open_doc(client, EXAMPLES / "xor_mlp.dl")
    assert not await client.text_document_formatting_async(
        T.DocumentFormattingParams(T.TextDocumentIdentifier(uri), options)
    )


async def test_formatting_a_document_that_does_not_parse_fails_with_dlc_checks_error(client, tmp_path):
    path = tmp_path / "unparsed.dl"
    uri, (d,) = await open_doc(client, path, "model m {\n    input x: f32[B, 4\n}\n")
    with pytest.raises(JsonRpcException) as failed:
        await client.text_document_formatting_async(
            T.DocumentFormattingParams(T.TextDocumentIdentifier(uri), T.FormattingOptions(4, True))
        )
    assert f"{path}:2:17: error: {d.message}" in str(failed.value)


@pytest.mark.parametrize("end", ["\r\n", "\r"])
async def test_lines_ending_in_cr_lf_or_cr_are_analyzed_as_dlc_check_reads_the_file(client, tmp_path, end):
    # the LSP counts \r\n and \r as line ends, as Python's text mode does (dlc check, dlc fmt)
    text = (EXAMPLES / "xor_mlp.dl").read_text().replace("\n", end)
    uri, got = await open_doc(client, tmp_path / "line_ends.dl", text)
    assert got == []
    lines = text.split(end)
    assert "h: f32[B, 4]" in await hover_text(client, uri, position_of("\n".join(lines), "h = dense"))
    symbols = await client.text_document_document_symbol_async(T.DocumentSymbolParams(T.TextDocumentIdentifier(uri)))
    assert [s.name for s in symbols] == ["xor_mlp", "train xor_mlp"]
    broken = text.replace("dense(x, 4, tanh)", "dense(x, 4, tanh")
    (d,) = await edit(client, uri, broken)
    assert d.range.start.line == 5, d


async def test_a_byte_order_mark_is_accepted_and_columns_stay_the_editors(client, tmp_path):
    text = "\ufeff" + (EXAMPLES / "xor_mlp.dl").read_text()
    uri, got = await open_doc(client, tmp_path / "bom.dl", text)
    assert got == []
    assert "h: f32[B, 4]" in await hover_text(client, uri, position_of(text, "h = dense"))
    (d,) = await edit(client, uri, "\ufeffmodel m ( {\n}\n")
    assert (d.range.start.line, d.range.start.character) == (0, 9), d  # the BOM is the editor's column 0


# ---- a server that never dies ------------------------------------------------------------------
async def test_a_huge_repeat_is_cut_off_by_the_time_budget_and_says_so(client, tmp_path):
    # each step also makes a long static tuple, so that the 2 s pass long before the node limit (which
    # 10,000 steps of a dense layer stay under, so the repeat is not refused at its second step)
    program = (
        "model m {\n    input x: f32[B, 4]\n    h = x\n    repeat i in 0..10000 {\n        h = dense(h, 4)\n"
        "        t = range(100000)\n    }\n    output y = h\n}\n"
    )
    uri, got = await open_doc(client, tmp_path / "huge.dl", program)
    assert len(got) == 1 and "stopped building the model after" in got[0].message, got
    assert "time budget" in got[0].message and got[0].range.start.line == 4  # at the user's dense(...)
    assert "not known: model m does not build" in await hover_text(client, uri, position_of(program, "h = x"))
    symbols = await client.text_document_document_symbol_async(T.DocumentSymbolParams(T.TextDocumentIdentifier(uri)))
    assert symbols[0].name == "m"


def mutated_edits(rng: random.Random, count: int) -> list:
    """Whole texts as an editor would send them while a user types: mutants of the fuzz
    corpus, then random insertions, deletions and truncations of them, text decoded from
    invalid UTF-8, and a 5 MB line."""
    from dlc.tools.fuzz import Corpus

    corpus = Corpus.default()
    texts = []
    for i in range(count):
        text = corpus.mutant(0, i).decode("utf-8", "surrogateescape")
        kind = i % 4
        at = rng.randrange(len(text) + 1)
        if kind == 1:
            text = text[:at] + rng.choice(["(", "}", "{", "dense(", "repeat", "\n", "..", "= =", "@"]) + text[at:]
        elif kind == 2:
            text = text[:at] + text[at + rng.randrange(1, 40) :]
        elif kind == 3:
            text = text[:at]
        texts.append(text)
    texts.append(b"model m {\n    input x: f32[B, \xff\xfe 4]\n}\n".decode("utf-8", "surrogateescape"))
    texts.append("model m {\n    input x: f32[B, 4]\n    output y = x # " + "x" * (5 << 20) + "\n}\n")
    return texts


async def test_edits_from_the_fuzz_corpus_never_kill_the_server(client, tmp_path):
    path = EXAMPLES / "mnist_mlp.dl"
    uri, _ = await open_doc(client, tmp_path / "fuzzed.dl", path.read_text())
    for text in mutated_edits(random.Random(0), 60):
        got = await edit(client, uri, text)
        problems = [(d.message, d.range.start.line, d.range.start.character) for d in got]
        assert len(set(problems)) == len(problems), got  # one diagnostic per problem
        assert not any("bug in dlc" in d.message for d in got), got
    assert "characters; the language server analyzes files of at most" in got[0].message
    await edit(client, uri, path.read_text())
    assert "logits: f32[B, 10]" in await hover_text(client, uri, position_of(path.read_text(), "logits", 1))


async def test_bytes_that_are_not_utf8_or_json_on_the_wire_leave_the_server_answering():
    """A client that sends a message whose body is not UTF-8, or not JSON: the server says so
    (window/showMessage), with no traceback, and answers the next request."""
    import json
    import subprocess

    server = subprocess.Popen(SERVER, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE)

    def send(body: bytes):
        server.stdin.write(b"Content-Length: %d\r\n\r\n" % len(body) + body)
        server.stdin.flush()

    def receive() -> dict:
        header = b""
        while not header.endswith(b"\r\n\r\n"):
            header += server.stdout.read(1)
        return json.loads(server.stdout.read(int(header.split(b"Content-Length: ")[1].split(b"\r\n")[0])))

    send(json.dumps({"jsonrpc": "2.0", "id": 1, "method": "initialize", "params": {"capabilities": {}}}).encode())
    assert receive()["result"]["serverInfo"]["name"] == "dlc"
    send(
        b'{"jsonrpc":"2.0","method":"textDocument/didOpen","params":{"textDocument":{"uri":"file:///x.dl",'
        b'"languageId":"dl","version":1,"text":"model m {\xff\xfe }"}}}'
    )
    send(b'{"jsonrpc":"2.0","id":7,"method":"textDocument/hover","params": not json')
    send(json.dumps({"jsonrpc": "2.0", "id": 2, "method": "shutdown"}).encode())
    said = []
    while (message := receive()).get("id") != 2:
        said.append(message["params"]["message"])
    send(json.dumps({"jsonrpc": "2.0", "method": "exit"}).encode())
    assert server.wait(30) == 0
    assert any("can't decode byte 0xff" in m for m in said) and any("Expecting value" in m for m in said), said
    assert "Traceback" not in server.stderr.read().decode()


async def until(condition, seconds: float = 10):
    """Wait until `condition()` holds, or `seconds` have passed (the assertion after it says what)."""
    for _ in range(int(seconds / 0.02)):
        if condition():
            return
        await asyncio.sleep(0.02)


async def started_client(capabilities: T.ClientCapabilities, features: dict | None = None) -> tuple:
    """A client of a server of its own, initialized (with `features`: method -> handler), and
    the diagnostics the server publishes to it, as they come."""
    from pygls.lsp.client import LanguageClient as Client

    client, published = Client("dlc-test", "1"), []
    client.feature(T.TEXT_DOCUMENT_PUBLISH_DIAGNOSTICS)(lambda params: published.append(params))
    for method, handler in (features or {}).items():
        client.feature(method)(handler)
    await client.start_io(*SERVER)
    await client.initialize_async(T.InitializeParams(capabilities=capabilities))
    client.initialized(T.InitializedParams())
    return client, published


async def test_a_client_that_answers_workspace_configuration_is_asked_for_its_section_dlc(tmp_path):
    """docs/editors.md "Settings": at the start and at each workspace/didChangeConfiguration
    (here with no settings, as VS Code sends it), the server asks for the section `dlc`, and
    asks the client to show its inlay hints again when they change."""
    settings, asked, refreshed = {"inlayHints": False}, [], []

    def configuration(params):
        asked.append([item.section for item in params.items])
        return [dict(settings)]

    client, published = await started_client(
        T.ClientCapabilities(
            workspace=T.WorkspaceClientCapabilities(
                configuration=True, inlay_hint=T.InlayHintWorkspaceClientCapabilities(refresh_support=True)
            )
        ),
        {T.WORKSPACE_CONFIGURATION: configuration, T.WORKSPACE_INLAY_HINT_REFRESH: lambda params: refreshed.append(1)},
    )
    text = (EXAMPLES / "mnist_mlp.dl").read_text()
    uri = (tmp_path / "mnist_mlp.dl").as_uri()
    client.text_document_did_open(T.DidOpenTextDocumentParams(T.TextDocumentItem(uri, "dl", 1, text)))
    whole = T.InlayHintParams(
        T.TextDocumentIdentifier(uri), T.Range(T.Position(0, 0), T.Position(len(text.splitlines()), 0))
    )
    # the settings taken, the client is asked to refresh: a request before the answer came
    # has the defaults' hints
    await until(lambda: len(refreshed) == 1)
    assert not await client.text_document_inlay_hint_async(whole) and asked == [["dlc"]] and refreshed == [1]
    settings["inlayHints"] = True
    client.workspace_did_change_configuration(T.DidChangeConfigurationParams(settings=None))
    await until(lambda: len(refreshed) == 2)
    assert asked == [["dlc"], ["dlc"]] and refreshed == [1, 1]
    assert ": f32[B, 10]" in [h.label for h in await client.text_document_inlay_hint_async(whole)]
    await client.shutdown_async(None)
    client.exit(None)
    await asyncio.wait_for(client._server.wait(), 30)
    await client.stop()


async def test_the_server_exits_at_once_and_its_worker_with_it(tmp_path):
    """exit does not wait for the peak the worker is computing (here some 2-3 s of CPU, the
    model built again and its train step lowered): the worker is ended with the server, and
    its end is no error. A refused rename is an error response, not an error of the server's:
    the server's log (standard error) is empty."""
    import time

    deep = (
        "model deep {\n    input x: f32[B, 32]\n    target t: f32[B, 32]\n    h = x\n"
        "    repeat i in 0..600 {\n        h = dense(h, 32, relu)\n    }\n    loss mean((h - t) ^ 2)\n}\n"
    )
    client, published = await started_client(T.ClientCapabilities())
    uri = (tmp_path / "deep.dl").as_uri()
    client.text_document_did_open(T.DidOpenTextDocumentParams(T.TextDocumentItem(uri, "dl", 1, deep)))
    await client.text_document_document_symbol_async(T.DocumentSymbolParams(T.TextDocumentIdentifier(uri)))
    assert [list(p.diagnostics) for p in published] == [[]]  # built: its peak is under way in the worker
    with pytest.raises(JsonRpcException, match="would change what `relu` at line 6"):
        await client.text_document_rename_async(
            T.RenameParams(T.TextDocumentIdentifier(uri), position_of(deep, "h = x"), "relu")
        )
    server = client._server.pid
    children = [
        int(pid) for task in Path(f"/proc/{server}/task").glob("*/children") for pid in task.read_text().split()
    ]
    (worker,) = [pid for pid in children if "spawn_main" in Path(f"/proc/{pid}/cmdline").read_text()]
    start = time.monotonic()
    await client.shutdown_async(None)
    client.exit(None)
    await asyncio.wait_for(client._server.wait(), 30)
    took = time.monotonic() - start
    await client.stop()
    assert client._server.returncode == 0 and took < 1.5, took
    log = (await client._server.stderr.read()).decode()
    assert log == "", log
    assert not Path(f"/proc/{worker}").exists() or Path(f"/proc/{worker}/stat").read_text().split()[2] == "Z"
