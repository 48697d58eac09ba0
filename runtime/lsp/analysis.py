"""A document as `dlc check` sees it: loaded with its imports and the standard library, each
model built for training and for evaluation and its train block's settings checked, every
error kept with its place and notes; the built models, for hover and inlay hints; the names
(names.py). Analysis is bounded: a file past MAX_CHARS is not parsed, and the builds of one
analysis together take at most BUILD_SECONDS (the evaluator's time budget), each saying so."""

from __future__ import annotations

import functools
import logging
import time
from dataclasses import dataclass, field, fields
from importlib import resources
from pathlib import Path

from dlc.compiler.errors import STDLIB_PREFIX, DlcError, Span
from dlc.compiler.frontend import syntax
from dlc.compiler.frontend.loader import load_module
from dlc.runtime.lsp.names import NameIndex, index

MAX_CHARS = 1_000_000  # a file longer is not analyzed (a 5 MB line parses for seconds)
BUILD_SECONDS = 2.0  # the builds of one analysis, all models and both modes together

log = logging.getLogger(__name__)


def stdlib_dir() -> Path:
    return Path(str(resources.files("dlc.compiler").joinpath("stdlib")))


def file_of(span: Span) -> Path:
    """The file a span lies in on disk: a standard-library place is in the shipped stdlib folder."""
    return stdlib_dir() / span.file[len(STDLIB_PREFIX) :] if span.in_stdlib() else Path(span.file)


def in_stdlib_dir(path: str) -> bool:
    return Path(path).resolve().parent == stdlib_dir().resolve()


@dataclass
class Build:
    """One model's build in an analysis, reused by the next analysis that gives it the same
    inputs (`key`, build_key; None for one cut off by the time budget): its training build,
    its train block's settings, its errors, and the peak memory of training once computed
    (memory.py)."""

    key: tuple | None = None
    model: object = None  # the Model built for training, or None
    config: object = None  # its TrainConfig, or None
    errors: list = field(default_factory=list)
    memory: object = None  # (training_memory's parts, the sizes) or a DlcError, once known
    job: object = None  # the Future computing memory (memory.py), once started


@dataclass
class Analysis:
    text: str
    path: str
    module: syntax.Module | None = None
    names: NameIndex = field(default_factory=NameIndex)
    program: object = None  # the loaded Program
    builds: dict = field(default_factory=dict)  # name -> its Build
    models: dict = field(default_factory=dict)  # name -> Model built for training
    configs: dict = field(default_factory=dict)  # name -> its TrainConfig
    errors: list = field(default_factory=list)  # DlcError, one per problem
    warnings: list = field(default_factory=list)  # DlcError, the program's warnings (Program.warnings)

    def fail(self, error: DlcError):
        if not any(e.message == error.message and e.span == error.span for e in self.errors):
            self.errors.append(error)

    def model_of(self, container: str):
        return self.models.get(container)


def analyze(text: str, path: str, seconds: float = BUILD_SECONDS, previous: Analysis | None = None) -> Analysis:
    """Never raises: an error of dlc's own (a bug) becomes a diagnostic too, and its
    traceback goes to the server's log. A model whose build the previous analysis of the
    document made from the same inputs (build_key) is not built again."""
    a = Analysis(syntax.universal_newlines(text), path)
    try:
        _analyze(a, seconds, previous.builds if previous is not None else {})
    except RecursionError:
        a.fail(DlcError("the program nests too deeply to analyze", Span(path, 1, 1)))
    except Exception as e:  # a bug in dlc, not in the user's program: shown, never lost
        log.exception("analysis of %s", path)
        a.fail(
            DlcError(
                f"dlc could not analyze this file ({type(e).__name__}: {e}); this is a bug in dlc, "
                "the server's log has its traceback",
                Span(path, 1, 1),
            )
        )
    return a


# looked up by the evaluator without being written: a state's initial value by default
IMPLICIT_NAMES = ("zeros",)


def build_key(a: Analysis, name: str, whole: bool = False) -> tuple:
    """What building model `name` reads, each part where it is written: the text of the
    model's block, of its train block, of each def, const and model of the file any of
    these names (read_items), and of the imports, each with the line and column it starts at
    (so every place inside is the same too), and the text of every file imported. Two
    analyses whose keys are equal build the model alike, with the same errors at the same
    places; comments between items, and items no name it reads names, are not read.
    `whole`: every def, const and import of the file instead, for a build with errors: an
    unknown name's did-you-mean reads every name defined."""
    program = a.program
    starts = [0]
    for line in a.text.split("\n"):
        starts.append(starts[-1] + len(line) + 1)

    def source(span: Span) -> str:
        return a.text[starts[span.line - 1] + span.col - 1 : starts[span.end_line - 1] + span.end_col - 1]

    if whole:
        read = [
            item
            for item in a.module.items
            if not isinstance(item, (syntax.ModelBlock, syntax.Train))
            or item is program.models[name]
            or item is program.trains.get(name)
        ]
    else:
        read = read_items(a.module, program.models[name], program.trains.get(name))
    return (
        a.path,
        tuple((item.span.line, item.span.col, source(item.span)) for item in read),
        tuple(sorted((str(p), text) for p, text in program.imported.items())),
    )


def read_items(module: syntax.Module, model: syntax.ModelBlock, train: syntax.Train | None) -> list:
    """The items of the file a model's build can read, in the file's order: its block, its
    train block, the imports, and each def, const and model named by a word of an item
    read, or looked up implicitly (IMPLICIT_NAMES). Every word counts (keywords, attributes,
    strings too): more items than the build reads, never fewer."""
    named = {
        item.name: item for item in module.items if isinstance(item, (syntax.Def, syntax.ConstDecl, syntax.ModelBlock))
    }
    read = {id(item) for item in module.items if isinstance(item, syntax.Import)}
    todo, seen = [model] + ([train] if train is not None else []), set(IMPLICIT_NAMES)
    for word in IMPLICIT_NAMES:
        if word in named:
            todo.append(named[word])
    while todo:
        item = todo.pop()
        read.add(id(item))
        for word in _words(item):
            if word not in seen:
                seen.add(word)
                if word in named and id(named[word]) not in read:
                    todo.append(named[word])
    return [item for item in module.items if id(item) in read]


def _words(node):
    """Every string in a syntax tree: its names, keywords, attributes, string literals."""
    stack = [node]
    while stack:
        v = stack.pop()
        if isinstance(v, str):
            yield v
        elif isinstance(v, (list, tuple)):
            stack.extend(v)
        elif isinstance(v, syntax.SyntaxNode):
            stack.extend(getattr(v, f) for f in _fields(type(v)))


@functools.cache
def _fields(cls) -> tuple:
    return tuple(f.name for f in fields(cls) if f.name != "span")


def _analyze(a: Analysis, seconds: float, previous: dict):
    from dlc.runtime.training.config import make_config

    if len(a.text) > MAX_CHARS:
        a.fail(
            DlcError(
                f"the file has {len(a.text):,} characters; the language server analyzes files of at most "
                f"{MAX_CHARS:,} (`dlc check` checks it whole)",
                Span(a.path, 1, 1),
            )
        )
        return
    try:
        a.module = syntax.parse(a.text, a.path)
    except DlcError as e:
        a.fail(e)
        return
    a.names = index(a.module)
    if in_stdlib_dir(a.path):  # the standard library's own files: loaded already, as the library
        return
    try:
        a.program = load_module(a.module, a.path)
    except DlcError as e:
        a.fail(e)
        return
    a.warnings = a.program.warnings
    deadline = time.monotonic() + seconds
    for name in a.program.models:
        build = previous.get(name)
        if build is None or build.key != build_key(a, name, whole=bool(build.errors)):
            build = Build()
            try:
                build.model = a.program.check(name, seconds=max(deadline - time.monotonic(), 0.01))
                build.config = make_config(a.program, name, {}, require_data=False, model=build.model)
            except DlcError as e:
                build.errors.append(e)
            if time.monotonic() < deadline:  # else cut off by the time budget: built again after the next edit
                build.key = build_key(a, name, whole=bool(build.errors))
        a.builds[name] = build
        if build.model is not None:
            a.models[name] = build.model
        if build.config is not None:
            a.configs[name] = build.config
        for e in build.errors:
            a.fail(e)
