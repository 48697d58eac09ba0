"""A document as `dlc check` sees it: loaded with its imports and the standard library, each
model built for training and for evaluation and its train block's settings checked, every
error kept with its place and notes; the built models, for hover and inlay hints; the names
(names.py). Analysis is bounded: a file past MAX_CHARS is not parsed, and the builds of one
analysis together take at most BUILD_SECONDS (the evaluator's time budget), each saying so."""
from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path

from dlc.compiler.errors import STDLIB_PREFIX, DlcError, Span
from dlc.compiler.frontend import syntax
from dlc.compiler.frontend.loader import load_module
from dlc.runtime.lsp.names import NameIndex, index

MAX_CHARS = 1_000_000       # a file longer is not analyzed (a 5 MB line parses for seconds)
BUILD_SECONDS = 2.0         # the builds of one analysis, all models and both modes together

log = logging.getLogger(__name__)


def stdlib_dir() -> Path:
    return Path(str(resources.files("dlc.compiler").joinpath("stdlib")))


def file_of(span: Span) -> Path:
    """The file a span lies in on disk: a standard-library place is in the shipped stdlib folder."""
    return stdlib_dir() / span.file[len(STDLIB_PREFIX):] if span.in_stdlib() else Path(span.file)


def in_stdlib_dir(path: str) -> bool:
    return Path(path).resolve().parent == stdlib_dir().resolve()


@dataclass
class Analysis:
    text: str
    path: str
    module: syntax.Module | None = None
    names: NameIndex = field(default_factory=NameIndex)
    program: object = None                          # the loaded Program
    models: dict = field(default_factory=dict)      # name -> Model built for training
    configs: dict = field(default_factory=dict)     # name -> its TrainConfig
    errors: list = field(default_factory=list)      # DlcError, one per problem
    memory: dict = field(default_factory=dict)      # name -> (training_memory's parts, the sizes) or a DlcError

    def fail(self, error: DlcError):
        if not any(e.message == error.message and e.span == error.span for e in self.errors):
            self.errors.append(error)

    def model_of(self, container: str):
        return self.models.get(container)

    def activations(self, name: str):
        """The peak of training by layer (`dlc summary --memory`'s numbers) at the train block's
        batch, computed once into `memory`; a DlcError when it cannot be (no loss, a layer the
        native backend does not lower)."""
        if name not in self.memory:
            self.memory[name] = self._activations(name)
        return self.memory[name]

    def _activations(self, name: str):
        from dlc.runtime.engines import budget
        from dlc.runtime.engines.optim import make_optimizer
        model, cfg = self.models[name], self.configs.get(name)
        try:
            model.require_loss("it does not train")
            if cfg is None:
                raise DlcError("its train block has an error")
            sizes = budget.memory_sizes(model, cfg.batch, {})
            slots = len(make_optimizer(cfg.optimizer).slots())
            trainable = [p.name for p in model.params if p.trainable]
            return budget.training_memory(model, trainable, slots, sizes), sizes
        except DlcError as e:
            return e


def analyze(text: str, path: str, seconds: float = BUILD_SECONDS) -> Analysis:
    """Never raises: an error of dlc's own (a bug) becomes a diagnostic too, and its
    traceback goes to the server's log."""
    a = Analysis(text, path)
    try:
        _analyze(a, seconds)
    except RecursionError:
        a.fail(DlcError("the program nests too deeply to analyze", Span(path, 1, 1)))
    except Exception as e:  # a bug in dlc, not in the user's program: shown, never lost
        log.exception("analysis of %s", path)
        a.fail(DlcError(f"dlc could not analyze this file ({type(e).__name__}: {e}); this is a bug in dlc, "
                        "the server's log has its traceback", Span(path, 1, 1)))
    return a


def _analyze(a: Analysis, seconds: float):
    from dlc.runtime.training.config import make_config
    if len(a.text) > MAX_CHARS:
        a.fail(DlcError(f"the file has {len(a.text):,} characters; the language server analyzes files of at most "
                        f"{MAX_CHARS:,} (`dlc check` checks it whole)", Span(a.path, 1, 1)))
        return
    try:
        a.module = syntax.parse(a.text, a.path)
    except DlcError as e:
        a.fail(e)
        return
    a.names = index(a.module)
    if in_stdlib_dir(a.path):       # the standard library's own files: loaded already, as the library
        return
    try:
        a.program = load_module(a.module, a.path)
    except DlcError as e:
        a.fail(e)
        return
    deadline = time.monotonic() + seconds
    for name in a.program.models:
        try:
            model = a.models[name] = a.program.check(name, seconds=max(deadline - time.monotonic(), 0.01))
            a.configs[name] = make_config(a.program, name, {}, require_data=False, model=model)
        except DlcError as e:
            a.fail(e)
