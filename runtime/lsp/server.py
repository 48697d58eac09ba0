"""`dlc lsp`: the language server over stdio (pygls, lsprotocol). Each edit is analyzed at once
in one worker thread, so requests keep being answered from the last analysis meanwhile; the
edits that come while an analysis runs are analyzed after it, the latest alone (schedule).
A handler's unexpected error is answered as an error response and logged, never raised out
of the server (docs/editors.md)."""

from __future__ import annotations

import asyncio
import functools
import gc
import inspect
import logging
import re
from concurrent.futures import ThreadPoolExecutor

from lsprotocol import types as lsp_types
from pygls.exceptions import JsonRpcException
from pygls.lsp.server import LanguageServer
from pygls.uris import from_fs_path, to_fs_path

import dlc
from dlc.compiler.errors import DlcError, Span, name_span
from dlc.compiler.frontend import syntax
from dlc.compiler.frontend.format import format_source
from dlc.compiler.frontend.loader import stdlib_env
from dlc.compiler.frontend.settings import parameter_texts
from dlc.compiler.frontend.values import Builtin, Func
from dlc.runtime.lsp import describe
from dlc.runtime.lsp.analysis import BUILD_SECONDS, Analysis, analyze, file_of
from dlc.runtime.lsp.memory import PeakWorker, peak_blocker
from dlc.runtime.lsp.names import Binding, contains, rename_conflict

DID_YOU_MEAN = re.compile(r"did you mean '([^']+)'\?")
SECTION = "dlc"  # the client's settings section of the server's settings
PIPED = re.compile(r"\|>\s*\w*$")  # a pipe's function being written: `x |> ` or `x |> den`

log = logging.getLogger(__name__)


class Refused(JsonRpcException):
    """A request the server declines, with the reason (a rename that would change what a name
    refers to, a document that does not parse): an error response to the client, and no
    error of the server's, so not in its log."""

    def __init__(self, message: str, code=lsp_types.LSPErrorCodes.RequestFailed):
        super().__init__(message, code=code)


class DlcLanguageServer(LanguageServer):
    def __init__(self):
        super().__init__("dlc", dlc.__version__, text_document_sync_kind=lsp_types.TextDocumentSyncKind.Incremental)
        self.analyses: dict = {}  # uri -> its latest Analysis
        self.parsed: dict = {}  # uri -> its latest Analysis that parsed: the names while one is typed
        self.pending: dict = {}  # uri -> the task analyzing its latest text
        self.analyzed: dict = {}  # uri -> the event set when that task's analysis is published
        self.worker = ThreadPoolExecutor(1, thread_name_prefix="dlc-analysis")
        self.inlay_hints = True

    def apply_settings(self, settings) -> bool:
        """Take the settings of the section `dlc` a client gave (those it does not give keep
        their value); whether one changed."""
        if (
            not isinstance(settings, dict)
            or not isinstance(settings.get("inlayHints"), bool)
            or settings["inlayHints"] == self.inlay_hints
        ):
            return False
        self.inlay_hints = settings["inlayHints"]
        return True

    def changed_settings(self, settings):
        """Settings given after the start: a client that can is asked to show its inlay hints
        again when they changed."""
        workspace = self.client_capabilities.workspace
        if (
            self.apply_settings(settings)
            and workspace
            and workspace.inlay_hint
            and workspace.inlay_hint.refresh_support
        ):
            self.workspace_inlay_hint_refresh(None)

    async def pull_settings(self):
        """Ask a client that can be asked (workspace/configuration) for the section `dlc`."""
        workspace = self.client_capabilities.workspace
        if not (workspace and workspace.configuration):
            return
        try:
            answer = await self.workspace_configuration_async(
                lsp_types.ConfigurationParams(items=[lsp_types.ConfigurationItem(section=SECTION)])
            )
        except JsonRpcException as e:  # a client that says it answers and does not: its settings stay
            log.warning("the client did not give its settings (workspace/configuration): %s", e)
            return
        self.changed_settings(answer[0] if answer else None)

    @functools.cached_property
    def peak_worker(self) -> PeakWorker:
        """The process computing the peaks of training (serve() starts it before the first request)."""
        return PeakWorker()

    def schedule(self, uri: str):
        """Analyze the document's text now, or once the analysis under way is done, unless
        another edit comes first. No debounce: a delay before every analysis would add itself
        to every edit's diagnostics, and would save none of a typist's analyses, whose
        keystrokes come further apart than it. A burst of edits (a key held down, a macro)
        costs the analysis under way and one of its latest text: an analysis waiting for the
        worker thread is dropped when the next edit comes (its task cancelled, the thread's
        job not started with it)."""
        if uri in self.pending:
            self.pending[uri].cancel()
        self.analyzed[uri] = asyncio.Event()
        self.pending[uri] = asyncio.get_running_loop().create_task(self._analyze(uri, self.analyzed[uri]))

    async def _analyze(self, uri: str, analyzed: asyncio.Event):
        try:
            await asyncio.sleep(0)  # the edits read with this one replace it before it starts
            doc = self.workspace.get_text_document(uri)
            text, version, path = doc.source, doc.version, to_fs_path(uri) or uri
            a = await asyncio.get_running_loop().run_in_executor(
                self.worker, analyze, text, path, BUILD_SECONDS, self.analyses.get(uri)
            )
            if uri not in self.workspace.text_documents or self.workspace.get_text_document(uri).version != version:
                return  # an edit or a close came meanwhile: its own analysis is published
            replaced, self.analyses[uri] = self.analyses.get(uri), a
            if a.module is not None:
                self.parsed[uri] = a
            self.text_document_publish_diagnostics(
                lsp_types.PublishDiagnosticsParams(
                    uri=uri,
                    version=version,
                    diagnostics=[diagnostic(e, a.path) for e in a.errors]
                    + [diagnostic(w, a.path, lsp_types.DiagnosticSeverity.Warning) for w in a.warnings],
                )
            )
            self.compute_peaks(a, replaced)
        finally:
            analyzed.set()
        gc.collect()  # the replaced analysis, after the new one is out (serve: the collector is ours)

    def compute_peaks(self, a: Analysis, replaced: Analysis | None):
        """Start computing the peak memory of training each model `a` built anew (memory.py),
        and drop the jobs not started of the builds of the analysis it replaces that it does
        not reuse."""
        kept = {id(build) for build in a.builds.values()}
        drop_peaks([build for build in replaced.builds.values() if id(build) not in kept] if replaced else [])
        for name, build in a.builds.items():
            if build.model is None or build.memory is not None or (build.job is not None and not build.job.cancelled()):
                continue
            build.memory = peak_blocker(build.model, build.config)
            if build.memory is None:
                build.job = self.peak_worker.submit(a.text, a.path, name)
                build.job.add_done_callback(functools.partial(_keep_peak, build))

    def hurry_peak(self, a: Analysis, model: str):
        """Compute the peak memory of training `model` next, if it is not known yet: a hover
        shows it once known, and never waits for it."""
        build = a.builds.get(model)
        if build is not None and build.memory is None and build.job is not None and not build.job.cancelled():
            self.peak_worker.hurry(build.job)

    async def current(self, uri: str) -> Analysis | None:
        """The latest analysis, after the one under way (if any) finishes."""
        task = self.pending.get(uri)
        if task is not None and not task.done():
            try:
                await asyncio.wait_for(self.analyzed[uri].wait(), timeout=4 * BUILD_SECONDS)
            except asyncio.TimeoutError:
                pass
        return self.analyses.get(uri)


def drop_peaks(builds: list):
    """Cancel the peaks of builds no analysis shows any more, those not started."""
    for build in builds:
        if build.job is not None:
            build.job.cancel()


def _keep_peak(build, job):
    """The peak a job computed, kept on its build (on the worker's thread, before a hover's wait ends)."""
    if job.cancelled():
        return
    try:
        build.memory = job.result()
    except Exception as e:  # the worker process died or dlc failed: the hover says so
        log.error("computing the peak memory of training: %s: %s", type(e).__name__, e)
        build.memory = DlcError(f"the process computing it failed ({type(e).__name__}: {e}); the server's log has more")


server = DlcLanguageServer()


def guarded(handler):
    """A handler whose unexpected error is answered as a failed request, and logged."""

    @functools.wraps(handler)
    async def run(ls, params):
        try:
            result = handler(ls, params)
            return await result if inspect.isawaitable(result) else result
        except (JsonRpcException, asyncio.CancelledError):
            raise
        except Exception as e:
            log.exception("%s", handler.__name__)
            raise JsonRpcException(
                f"dlc: {type(e).__name__}: {e} (a bug in dlc; the server's log has the traceback)",
                code=lsp_types.LSPErrorCodes.RequestFailed,
            ) from None

    return run


# ---- places --------------------------------------------------------------------------------------
def uri_of(span: Span) -> str:
    return from_fs_path(str(file_of(span)))


def to_range(span: Span) -> lsp_types.Range:
    line, col = max(span.line - 1, 0), max(span.col - 1, 0)
    if (span.end_line, span.end_col) > (span.line, span.col):
        return lsp_types.Range(lsp_types.Position(line, col), lsp_types.Position(span.end_line - 1, span.end_col - 1))
    return lsp_types.Range(lsp_types.Position(line, col), lsp_types.Position(line, col + 1))


def place(params) -> tuple:
    """The 1-based line and column of a request's position."""
    return params.position.line + 1, params.position.character + 1


def location(span: Span) -> lsp_types.Location:
    return lsp_types.Location(uri=uri_of(span), range=to_range(span))


# ---- diagnostics and quick fixes ----------------------------------------------------------------------
def diagnostic(
    e: DlcError, path: str, severity: lsp_types.DiagnosticSeverity = lsp_types.DiagnosticSeverity.Error
) -> lsp_types.Diagnostic:
    """An error (or a warning) as `dlc check` shows it: at its place, its notes as related
    information (an error in another file, an import's, at the top with that file's place in
    the message)."""
    span = e.span
    if span is not None and span.file != path and span.caller is not None and span.caller.file == path:
        span = span.caller  # in the standard library: at the user's call that led there
    here = span is not None and span.file == path
    message = e.message if here or span is None else f"{span}: {e.message}"
    related = [
        lsp_types.DiagnosticRelatedInformation(location=location(note_span), message=note)
        for note, note_span in e.notes
        if note_span is not None and note_span.line > 0
    ]
    if span is not e.span:
        related.append(
            lsp_types.DiagnosticRelatedInformation(location=location(e.span), message="in the standard library here")
        )
    message += "".join(f"\nnote: {note}" for note, note_span in e.notes if note_span is None)
    return lsp_types.Diagnostic(
        range=to_range(span) if here else lsp_types.Range(lsp_types.Position(0, 0), lsp_types.Position(0, 1)),
        message=message,
        severity=severity,
        source="dlc",
        related_information=related or None,
    )


def quick_fix(uri: str, lines: list, d: lsp_types.Diagnostic) -> lsp_types.CodeAction | None:
    """The fix of a did-you-mean: the mistyped name (quoted before it) replaced by the
    suggestion where it is written last up to the range's end on its line (a keyword
    argument's error is at its value), or, with no quoted name there, the range (`-1` ->
    `axis = -1`)."""
    m = DID_YOU_MEAN.search(d.message)
    if m is None:
        return None
    r = d.range
    if r.start.line != r.end.line or r.start.line >= len(lines):
        return None
    before = lines[r.start.line][: r.end.character]
    edit = r
    for wrong in re.findall(r"'([^']+)'", d.message[: m.start()]):
        found = list(re.finditer(rf"(?<!\w){re.escape(wrong)}(?!\w)", before))
        if found:
            edit = lsp_types.Range(
                lsp_types.Position(r.start.line, found[-1].start()), lsp_types.Position(r.start.line, found[-1].end())
            )
            break
    return lsp_types.CodeAction(
        title=f"Change to '{m[1]}'",
        kind=lsp_types.CodeActionKind.QuickFix,
        diagnostics=[d],
        is_preferred=True,
        edit=lsp_types.WorkspaceEdit(changes={uri: [lsp_types.TextEdit(range=edit, new_text=m[1])]}),
    )


# ---- settings (docs/editors.md "Settings"): given at the start, pushed by the client, pulled from it ----
@server.feature(lsp_types.INITIALIZE)
def initialize(ls: DlcLanguageServer, params: lsp_types.InitializeParams):
    ls.apply_settings(params.initialization_options)  # no request to the client before the answer


@server.feature(lsp_types.INITIALIZED)
async def initialized(ls: DlcLanguageServer, params: lsp_types.InitializedParams):
    await ls.pull_settings()


@server.feature(lsp_types.WORKSPACE_DID_CHANGE_CONFIGURATION)
async def did_change_configuration(ls: DlcLanguageServer, params: lsp_types.DidChangeConfigurationParams):
    """The settings the client sends (`{"dlc": {...}}`, or `{...}` alone), then, from a client
    that answers workspace/configuration (VS Code sends `null` or all its sections here), its
    section `dlc`."""
    settings = params.settings
    ls.changed_settings(settings.get(SECTION, settings) if isinstance(settings, dict) else None)
    await ls.pull_settings()


# ---- documents -----------------------------------------------------------------------------------
@server.feature(lsp_types.TEXT_DOCUMENT_DID_OPEN)
def did_open(ls: DlcLanguageServer, params: lsp_types.DidOpenTextDocumentParams):
    ls.schedule(params.text_document.uri)


@server.feature(lsp_types.TEXT_DOCUMENT_DID_CHANGE)
def did_change(ls: DlcLanguageServer, params: lsp_types.DidChangeTextDocumentParams):
    ls.schedule(params.text_document.uri)


@server.feature(lsp_types.TEXT_DOCUMENT_DID_CLOSE)
def did_close(ls: DlcLanguageServer, params: lsp_types.DidCloseTextDocumentParams):
    uri = params.text_document.uri
    if uri in ls.pending:
        ls.pending.pop(uri).cancel()
    ls.analyzed.pop(uri, None)
    closed = ls.analyses.pop(uri, None)
    drop_peaks(list(closed.builds.values()) if closed is not None else [])
    ls.parsed.pop(uri, None)
    ls.text_document_publish_diagnostics(lsp_types.PublishDiagnosticsParams(uri=uri, diagnostics=[]))


@server.feature(
    lsp_types.TEXT_DOCUMENT_CODE_ACTION,
    lsp_types.CodeActionOptions(code_action_kinds=[lsp_types.CodeActionKind.QuickFix]),
)
@guarded
def code_action(ls: DlcLanguageServer, params: lsp_types.CodeActionParams):
    lines = ls.workspace.get_text_document(params.text_document.uri).lines
    lines = [line.rstrip("\r\n") for line in lines]
    fixes = [quick_fix(params.text_document.uri, lines, d) for d in params.context.diagnostics if d.source == "dlc"]
    return [f for f in fixes if f is not None]


# ---- what a name is -----------------------------------------------------------------------------------
def model_at(a: Analysis, line: int) -> str:
    for item in a.module.items if a.module else ():
        if isinstance(item, syntax.ModelBlock) and item.span.line <= line <= item.span.end_line:
            return item.name
    return ""


@server.feature(lsp_types.TEXT_DOCUMENT_HOVER)
@guarded
async def hover(ls: DlcLanguageServer, params: lsp_types.HoverParams):
    a = await ls.current(params.text_document.uri)
    if a is None:
        return None
    line, col = place(params)
    target, call = a.names.at(line, col), a.names.call_at(line, col)
    parts = []
    if call is not None:
        ls.hurry_peak(a, model_at(a, line))
        layer = describe.call_text(call, model_at(a, line), a)
        if layer:
            parts.append(layer)
    if isinstance(target, Binding):
        parts.append(describe.binding_text(target, a))
    elif isinstance(target, str):
        func = describe.function_of(target, a)
        if func is not None:
            parts.append(describe.function_text(func))
    keyword = a.names.keyword_at(line, col)
    func = describe.function_of(keyword[0], a) if keyword else None
    if func is not None and keyword[1] in dict(describe.parameters(func)):
        parts.append(
            f"```dl\n{dict(describe.parameters(func))[keyword[1]]}\n```\nargument of `{describe.signature(func)}`"
        )
    if not parts:
        return None
    return lsp_types.Hover(
        contents=lsp_types.MarkupContent(kind=lsp_types.MarkupKind.Markdown, value="\n\n---\n\n".join(parts))
    )


@server.feature(lsp_types.TEXT_DOCUMENT_INLAY_HINT)
@guarded
async def inlay_hint(ls: DlcLanguageServer, params: lsp_types.InlayHintParams):
    a = await ls.current(params.text_document.uri)
    if a is None or not ls.inlay_hints or a.module is None:
        return []
    first, last = params.range.start.line + 1, params.range.end.line + 1
    hints = []
    for item in a.module.items:
        model = a.models.get(item.name) if isinstance(item, syntax.ModelBlock) else None
        if model is None and not isinstance(item, syntax.Def):
            continue
        for s in _statements(item.body):
            typ = _statement_type(s, model) if model is not None else _def_statement_type(s, a)
            end = s.span.end_line or s.span.line
            if typ and first <= end <= last:
                hints.append(
                    lsp_types.InlayHint(
                        position=lsp_types.Position(end - 1, s.span.end_col - 1),
                        label=f": {typ}",
                        kind=lsp_types.InlayHintKind.Type,
                        padding_left=True,
                    )
                )
    return hints


def _def_statement_type(s, a: Analysis) -> str | None:
    """The type a def's binding has in every call of it (None when the calls differ)."""
    if not isinstance(s, syntax.Assign) or len(s.targets) != 1:
        return None
    made = {value for model in a.models.values() for name, value, span, _ in model.def_values if span == s.span}
    return made.pop() if len(made) == 1 else None


def _statements(body: list):
    for s in body:
        if isinstance(s, syntax.Repeat):
            yield from _statements(s.body)
        elif isinstance(s, syntax.If):
            yield from _statements(s.then + s.other)
        else:
            yield s


def _statement_type(s, model) -> str | None:
    """The type of what a model statement makes, as its training build made it."""
    outputs = model.graph.outputs
    if isinstance(s, syntax.Assign):
        types = {}
        for name, typ, span in model.bindings:
            if span == s.span:
                types[name] = typ
        if not types:
            return None
        shown = [str(t) for t in types.values()]
        return shown[0] if len(s.targets) == 1 else "(" + ", ".join(shown) + ")"
    key = {syntax.Output: "output:", syntax.Metric: "metric:", syntax.Loss: "loss"}.get(type(s))
    if key is None or (isinstance(s, syntax.Output) and s.value is None):
        return None
    t = outputs.get(key if key == "loss" else key + s.name)
    return str(t.type) if t is not None else None


# ---- where a name is -----------------------------------------------------------------------------------
async def name_at(ls: DlcLanguageServer, params) -> tuple:
    """The document's latest analysis and what is at the request's position (None, a
    Binding or a library function's name)."""
    a = await ls.current(params.text_document.uri)
    return a, (a.names.at(*place(params)) if a is not None else None)


@server.feature(lsp_types.TEXT_DOCUMENT_DEFINITION)
@guarded
async def definition(ls: DlcLanguageServer, params: lsp_types.DefinitionParams):
    a, target = await name_at(ls, params)
    if isinstance(target, Binding):
        return location(target.span)
    func = describe.function_of(target, a) if isinstance(target, str) else None
    if isinstance(func, Func):
        return location(name_span(func.decl.span, func.name))
    keyword = a.names.keyword_at(*place(params)) if a is not None else None
    func = describe.function_of(keyword[0], a) if keyword else None
    if isinstance(func, Func):
        return next((location(name_span(arg.span, arg.name)) for arg in func.decl.args if arg.name == keyword[1]), None)
    return None


@server.feature(lsp_types.TEXT_DOCUMENT_REFERENCES)
@guarded
async def references(ls: DlcLanguageServer, params: lsp_types.ReferenceParams):
    a, target = await name_at(ls, params)
    if not isinstance(target, Binding):
        return None
    spans = a.names.references(target)
    if not params.context.include_declaration:
        spans = spans[1:]
    return [location(s) for s in spans]


@server.feature(lsp_types.TEXT_DOCUMENT_PREPARE_RENAME)
@guarded
async def prepare_rename(ls: DlcLanguageServer, params: lsp_types.PrepareRenameParams):
    a, target = await name_at(ls, params)
    return to_range(_occurrence(a, target, *place(params))) if isinstance(target, Binding) else None


def _occurrence(a: Analysis, b: Binding, line: int, col: int) -> Span:
    return next(s for s in a.names.references(b) if contains(s, line, col))


@server.feature(lsp_types.TEXT_DOCUMENT_RENAME)
@guarded
async def rename(ls: DlcLanguageServer, params: lsp_types.RenameParams):
    a, target = await name_at(ls, params)
    if not isinstance(target, Binding):
        raise Refused("only a name bound in this file can be renamed")
    new = params.new_name
    if not syntax.IDENTIFIER.fullmatch(new) or new in syntax.reserved_words():
        raise Refused(f"'{new}' is not a name the language allows", code=lsp_types.ErrorCodes.InvalidParams)
    conflict = rename_conflict(a.text, a.path, a.names, target, new)
    if conflict is not None:
        raise Refused(conflict)
    renamed, under = renamed_parameters(a, target, new)
    if renamed:  # said as the edit is made: the checkpoints saved before no longer load
        shown = ", ".join(f"{old} to {new}" for old, new in list(renamed.items())[:4])
        more = f" and {len(renamed) - 4} more" if len(renamed) > 4 else ""
        renames = " ".join(f"{old}={new}" for old, new in under.items())
        ls.window_show_message(
            lsp_types.ShowMessageParams(
                lsp_types.MessageType.Warning,
                f"Renaming '{target.name}' renames its parameters ({shown}{more}): a checkpoint saved before "
                f"no longer loads. Carry one across with: dlc checkpoint rename CKPT {renames} -o RENAMED.npz",
            )
        )
    return lsp_types.WorkspaceEdit(
        changes={
            params.text_document.uri: [
                lsp_types.TextEdit(range=to_range(s), new_text=new) for s in a.names.references(target)
            ]
        }
    )


def renamed_parameters(a: Analysis, target: Binding, new: str) -> tuple[dict, dict]:
    """What renaming `target` to `new` renames among the parameters of the models built:
    ({old parameter name: new}, {old name they lie under: new}, the renames `dlc checkpoint
    rename` takes). In a model, those under its name (h.W for `h = dense(...)`); in a def,
    those under it in each call of the def (enc.h.W). The models are as last built: a model
    whose build failed counts none of its parameters."""
    params, bindings = {}, {}
    for model in a.models.values():
        for p in model.params:
            under = [""] if model.name == target.container else [c.path for c in p.calls if c.name == target.container]
            for prefix in under:
                old = f"{prefix}.{target.name}" if prefix else target.name
                if p.name == old or p.name.startswith(old + "."):
                    bindings[old] = old.removesuffix(target.name) + new
                    params[p.name] = bindings[old] + p.name[len(old) :]
    return params, bindings


@server.feature(lsp_types.TEXT_DOCUMENT_DOCUMENT_SYMBOL)
@guarded
async def document_symbol(ls: DlcLanguageServer, params: lsp_types.DocumentSymbolParams):
    a = await ls.current(params.text_document.uri)
    if a is None or a.module is None:
        return []
    symbols = []
    kinds = {
        "input": lsp_types.SymbolKind.Variable,
        "target": lsp_types.SymbolKind.Variable,
        "binding": lsp_types.SymbolKind.Variable,
        "output": lsp_types.SymbolKind.Property,
        "metric": lsp_types.SymbolKind.Property,
        "param": lsp_types.SymbolKind.Field,
        "state": lsp_types.SymbolKind.Field,
    }
    for item in a.module.items:
        if isinstance(item, syntax.ModelBlock):
            children = [
                lsp_types.DocumentSymbol(
                    name=b.name,
                    kind=kinds[b.kind],
                    range=to_range(b.node.span),
                    selection_range=to_range(b.span),
                    detail=b.kind,
                )
                for b in a.names.bindings
                if b.container == item.name and b.kind in kinds
            ]
            symbols.append(_symbol(item, item.name, lsp_types.SymbolKind.Class, "model", children))
        elif isinstance(item, syntax.Def):
            symbols.append(_symbol(item, item.name, lsp_types.SymbolKind.Function, "def"))
        elif isinstance(item, syntax.ConstDecl):
            symbols.append(_symbol(item, item.name, lsp_types.SymbolKind.Constant, "const"))
        elif isinstance(item, syntax.Train):
            settings = [
                lsp_types.DocumentSymbol(
                    name=k.name,
                    kind=lsp_types.SymbolKind.Property,
                    range=to_range(k.span),
                    selection_range=to_range(name_span(k.span, k.name)),
                )
                for k in item.settings
            ]
            symbols.append(
                _symbol(item, f"train {item.model}", lsp_types.SymbolKind.Namespace, "train", settings, item.model)
            )
    return symbols


def _symbol(item, name: str, kind, detail: str, children=None, word: str | None = None) -> lsp_types.DocumentSymbol:
    return lsp_types.DocumentSymbol(
        name=name,
        kind=kind,
        detail=detail,
        range=to_range(item.span),
        selection_range=to_range(name_span(item.span, word or name)),
        children=children,
    )


# ---- while a call or a setting is written ---------------------------------------------------------------
def _offset(lines: list, line: int, col: int) -> int:
    return sum(len(s) for s in lines[:line]) + col


def call_before(text: str, offset: int):
    """The call being written at `offset`: (the function's name, the argument's index, the
    keyword it names or None), or None outside the parentheses of a call. In a pipe's call
    (`x |> dense(`) the piped value is the first argument."""
    opened = [p for p in syntax.open_brackets(text, offset) if text[p] == "("]
    if not opened:
        return None
    start = opened[-1]
    name = re.search(r"(\|>)?\s*([A-Za-z_]\w*)\s*$", text[:start])
    if name is None:
        return None
    depth, index, current, i = 0, 1 if name[1] else 0, start + 1, start + 1
    while i < offset:
        ch = text[i]
        if ch in "([{":
            depth += 1
        elif ch in ")]}":
            depth -= 1
        elif ch == '"':
            close = text.find('"', i + 1)
            i = offset if close < 0 else close
        elif ch == "," and depth == 0:
            index, current = index + 1, i + 1
        i += 1
    keyword = re.match(r"\s*([A-Za-z_]\w*)\s*=(?!=)", text[current:offset])
    return name[2], index, keyword[1] if keyword else None


def called_at(ls: DlcLanguageServer, uri: str, text: str, offset: int) -> tuple:
    """(the call being written at `offset`, as call_before gives it; what it calls: its
    parameters as describe.parameters gives them, its signature and its doc), the callee a
    function of the document or the library, or in a train block an optimizer, schedule or
    data source; None for what is not a call, or calls none of these."""
    call = call_before(text, offset)
    if call is None:
        return None, None
    if train_block_at(text, offset):
        spec = train_functions().get(call[0])
        if spec is None:
            return call, None
        params, doc = spec
        args = list(zip(params, parameter_texts(params)))
        return call, (args, f"{call[0]}({', '.join(t for _, t in args)})", doc)
    a = ls.parsed.get(uri)
    func = describe.function_of(call[0], a) if a is not None else describe.library_function(call[0])
    if func is None:
        return call, None
    return call, (describe.parameters(func), describe.signature(func), describe.doc(func))


@server.feature(lsp_types.TEXT_DOCUMENT_SIGNATURE_HELP, lsp_types.SignatureHelpOptions(trigger_characters=["(", ","]))
@guarded
async def signature_help(ls: DlcLanguageServer, params: lsp_types.SignatureHelpParams):
    doc = ls.workspace.get_text_document(params.text_document.uri)
    offset = _offset(doc.lines, params.position.line, params.position.character)
    call, called = called_at(ls, params.text_document.uri, doc.source, offset)
    if called is None:
        return None
    _, index, keyword = call
    args, label, documentation = called
    names = [n for n, _ in args]
    active = names.index(keyword) if keyword in names else min(index, max(len(args) - 1, 0))
    return lsp_types.SignatureHelp(
        signatures=[
            lsp_types.SignatureInformation(
                label=label,
                documentation=documentation or None,
                parameters=[lsp_types.ParameterInformation(label=text) for _, text in args],
            )
        ],
        active_signature=0,
        active_parameter=active,
    )


@functools.cache
def library_items() -> tuple:
    """A completion item for every function of the standard library and every builtin."""
    env, items = stdlib_env(), []
    for name in sorted(env.visible_names()):
        func = env.lookup(name)
        if isinstance(func, (Func, Builtin)):
            items.append(
                lsp_types.CompletionItem(
                    label=name,
                    kind=lsp_types.CompletionItemKind.Function,
                    detail=describe.signature(func),
                    documentation=describe.doc(func) or None,
                )
            )
    return tuple(items)


@functools.cache
def train_choices() -> dict:
    """The calls a train setting takes, by setting: name -> (its parameters as Call.bind
    takes them, its doc): the optimizers, the schedules (each with the warmup options all
    take), the data sources, and for validation and test split too."""
    from dlc.runtime.data.registry import SOURCES
    from dlc.runtime.optim.optimizers import OPTIMIZERS
    from dlc.runtime.optim.schedules import SCHEDULES, WARMUP
    from dlc.runtime.training.config import SPLIT

    data = {name: (fn.params, inspect.getdoc(fn)) for name, fn in SOURCES.items()}
    held_out = {
        "split": (SPLIT, "a fraction of the examples of `data` held out (with `tail`, its last ones, in order)")
    }
    return {
        "optimizer": {name: (cls.options, "optimizer") for name, cls in OPTIMIZERS.items()},
        "schedule": {name: (opts | WARMUP, "schedule") for name, opts in SCHEDULES.items()},
        "data": data,
        "validation": held_out | data,
        "test": held_out | data,
    }


@functools.cache
def train_functions() -> dict:
    """Every call of train_choices by its name."""
    return {name: spec for choices in train_choices().values() for name, spec in choices.items()}


def train_items(setting: str | None) -> list:
    """What a train block takes: its settings, or the values of one (optimizers, schedules,
    data sources), each with its options."""
    from dlc.runtime.training.config import TrainConfig

    choices = train_choices()
    if setting in choices:
        return [
            lsp_types.CompletionItem(
                label=name,
                kind=lsp_types.CompletionItemKind.Value,
                detail=f"{name}({', '.join(parameter_texts(params))})",
                documentation=doc,
            )
            for name, (params, doc) in choices[setting].items()
        ]
    return [
        lsp_types.CompletionItem(label=k, kind=lsp_types.CompletionItemKind.Property, insert_text=f"{k} = ")
        for k in TrainConfig.__dataclass_fields__
        if k != "spans"
    ]


def train_block_at(text: str, offset: int) -> bool:
    return any(
        re.match(r"\s*train\b", text[:p].rsplit("\n", 1)[-1].rsplit("}", 1)[-1])
        for p in syntax.open_brackets(text, offset)
        if text[p] == "{"
    )


@server.feature(lsp_types.TEXT_DOCUMENT_COMPLETION, lsp_types.CompletionOptions(trigger_characters=["(", ",", "="]))
@guarded
def completion(ls: DlcLanguageServer, params: lsp_types.CompletionParams):
    doc = ls.workspace.get_text_document(params.text_document.uri)
    text, offset = doc.source, _offset(doc.lines, params.position.line, params.position.character)
    _, called = called_at(ls, params.text_document.uri, text, offset)
    items = (
        [
            lsp_types.CompletionItem(
                label=f"{name} =",
                kind=lsp_types.CompletionItemKind.Field,
                detail=arg,
                insert_text=f"{name} = ",
                sort_text=f"0{name}",
            )
            for name, arg in called[0]
        ]
        if called
        else []
    )
    if train_block_at(text, offset):
        if called:  # an optimizer's, schedule's or data source's options, not the settings
            return items
        setting = re.search(r"(\w+)\s*=\s*\w*$", text[:offset].rsplit("\n", 1)[-1])
        return train_items(setting[1] if setting else None)
    a = ls.parsed.get(params.text_document.uri)
    visible = a.names.visible(*place(params)) if a is not None else {}
    piped = PIPED.search(text[max(offset - 200, 0) : offset]) is not None  # only a function fits
    for name, b in visible.items():
        if not piped or b.kind == "def":
            items.append(
                lsp_types.CompletionItem(
                    label=name,
                    kind=lsp_types.CompletionItemKind.Function
                    if b.kind == "def"
                    else lsp_types.CompletionItemKind.Variable,
                    detail=b.kind,
                )
            )
    return items + [item for item in library_items() if item.label not in visible]  # a name of the file hides it


# ---- formatting ------------------------------------------------------------------------------------
@server.feature(lsp_types.TEXT_DOCUMENT_FORMATTING)
@guarded
def formatting(ls: DlcLanguageServer, params: lsp_types.DocumentFormattingParams):
    doc = ls.workspace.get_text_document(params.text_document.uri)
    try:
        formatted = format_source(doc.source, to_fs_path(doc.uri) or doc.uri)
    except DlcError as e:
        raise Refused(e.render()) from None
    if formatted == doc.source:
        return []
    end = lsp_types.Position(len(doc.lines), 0)
    return [lsp_types.TextEdit(range=lsp_types.Range(lsp_types.Position(0, 0), end), new_text=formatted)]


def _without_traceback(record: logging.LogRecord) -> bool:
    """A message the client sent that is not UTF-8 or not JSON is logged by pygls as its
    error's message (pygls tells the client too), not as a traceback of its reader's. A
    request refused (Refused) is answered, and not logged."""
    if record.exc_info and isinstance(record.exc_info[1], Refused):
        return False
    if record.name.startswith("pygls") and record.exc_info and record.exc_info[1] is not None:
        record.msg = f"{record.msg}: {record.exc_info[1]}"
        record.exc_info = None
    return True


def serve():
    """Answer over stdin and stdout until the client says exit."""
    logging.basicConfig(level=logging.WARNING, format="dlc lsp: %(levelname)s: %(message)s")
    for handler in logging.getLogger().handlers:
        handler.addFilter(_without_traceback)
    stdlib_env()  # parsed once, before the first request
    syntax._parser()
    from dlc.runtime.engines import budget  # noqa: F401  (a layer call's hover reads it: 0.1 s to import)

    server.peak_worker  # noqa: B018  (started now, not at the first hover)
    # Garbage is collected when an analysis has been published (DlcLanguageServer._analyze),
    # not by the interpreter in the middle of the next: the collections it started while a
    # model was analyzed added some 15% to the mean analysis and doubled the slowest (busy
    # machine, 30 edits of char_transformer, transformer_seq2seq and resnet: mean CPU 83, 135,
    # 123 ms -> 71, 114, 99; max 179, 220, 207 -> 106, 134, 127). The modules and the library
    # loaded by now are frozen out of every collection: a full one took 65 ms, 6 ms after.
    gc.collect()
    gc.freeze()
    gc.disable()
    try:
        server.start_io()
    finally:
        server.peak_worker.stop()  # else the interpreter's exit waits for its job
