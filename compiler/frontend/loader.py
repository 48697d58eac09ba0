"""Loading .dl files: a file and its imports, the standard library, and the Program they make."""

from __future__ import annotations

import functools
import time
from importlib import resources
from pathlib import Path

from dlc.compiler.frontend import syntax
from dlc.compiler.frontend.builtins import BUILTINS
from dlc.compiler.errors import STDLIB_PREFIX, DlcError, Span, name_span, register_source
from dlc.compiler.frontend.evaluator import Evaluator, check_def
from dlc.compiler.ir.graph import Tensor, collector_paused
from dlc.compiler.frontend.model import Model
from dlc.compiler.frontend.parse_cache import parsed_modules
from dlc.compiler.frontend.values import Env, Func, describe


class Program:
    """A parsed .dl file with its imports, the standard library and builtins in scope."""

    def __init__(self, module: syntax.Module, globals_: Env, path: str, imported: dict, warnings: list):
        self.module, self.globals, self.path = module, globals_, path
        self.imported = imported  # the path of each file imported -> the text read
        self.warnings = warnings  # DlcErrors that do not stop a build (hides_builtin)
        self.models, self.trains = {}, {}
        for item in module.items:
            if isinstance(item, syntax.ModelBlock):
                if item.name in self.models:
                    raise DlcError(
                        f"model '{item.name}' is defined twice",
                        item.span,
                        [("first definition", self.models[item.name].span)],
                    )
                self.models[item.name] = item
        for item in module.items:
            if isinstance(item, syntax.Train):
                if item.model not in self.models:
                    raise DlcError(f"train block for '{item.model}', but there is no model of that name", item.span)
                if item.model in self.trains:
                    raise DlcError(f"a second train block for '{item.model}'", item.span)
                names = [k.name for k in item.settings]
                for k in item.settings:
                    if names.count(k.name) > 1:
                        raise DlcError(f"setting '{k.name}' is given twice", k.span)
                self.trains[item.model] = item

    def model_decl(self, name: str | None = None) -> syntax.ModelBlock:
        if not self.models:
            raise DlcError(f"{self.path} defines no model", Span(self.path, 1, 1))
        if name is None:
            return list(self.models.values())[-1]
        if name not in self.models:
            raise DlcError(
                f"no model named '{name}' in {self.path} (it has: {', '.join(self.models)})", Span.whole(self.path)
            )
        return self.models[name]

    @collector_paused()
    def build(
        self, name: str | None = None, training: bool = True, replicas: int = 1, seconds: float | None = None
    ) -> Model:
        """`replicas`: the ranks of a data-parallel run whose batch statistics are computed
        over the global batch (`sync_batchnorm = true`); 1 leaves replica_mean out. `seconds`:
        a time budget (the language server's), past which the build stops with an error."""
        decl = self.model_decl(name)
        ev = Evaluator(self.globals, training, replicas, seconds)
        return ev.build(decl, self.trains.get(decl.name))

    @collector_paused()
    def check(self, name: str | None = None, seconds: float | None = None) -> Model:
        """Build a model as `dlc check` and the language server do, for its errors and
        types: for training, then for evaluation unless it never looks `training` up (the
        builds would be the same), both without initial values (Evaluator). The training
        build is returned. `seconds`: both builds' time budget, as in build."""
        decl = self.model_decl(name)
        train = self.trains.get(decl.name)
        deadline = None if seconds is None else time.monotonic() + seconds
        ev = Evaluator(self.globals, True, seconds=seconds, initial_values=False)
        model = ev.build(decl, train)
        if ev.reads_training:
            left = None if deadline is None else max(deadline - time.monotonic(), 0.01)
            Evaluator(self.globals, False, seconds=left, initial_values=False).build(decl, train)
        return model


def _load_into(
    env: Env, module: syntax.Module, path: Path | None, loading: list, defined: dict, loaded: dict, warnings: list
):
    """Define a module's defs and consts in env, its imports first. `loading` is the
    chain of files being imported (a cycle is an error); `loaded` the files done, each
    with the text read (a file imported twice, as in a diamond, is read once); `warnings`
    gets those of each file (hides_builtin)."""
    warnings += hides_builtin(module)
    for item in module.items:
        if isinstance(item, syntax.Import):
            if path is None:
                raise DlcError("import is not allowed here", item.span)
            target = (path.parent / item.path).resolve()
            if target in loading:
                raise DlcError(f"{item.path} imports itself (through a cycle)", item.span)
            if target in loaded:
                continue
            if not target.is_file():
                raise DlcError(f"cannot import {item.path}: no such file", item.span)
            loading.append(target)
            text = syntax.read_source(target)
            _load_into(env, syntax.parse(text, str(target)), target, loading, defined, loaded, warnings)
            loading.pop()
            loaded[target] = text
        elif isinstance(item, (syntax.Def, syntax.ConstDecl)):
            if item.name in defined:
                raise DlcError(f"'{item.name}' is defined twice", item.span, [("first definition", defined[item.name])])
            defined[item.name] = item.span
            if isinstance(item, syntax.Def):
                check_def(item)
                env.vars[item.name] = Func(item, env)
            else:
                value = Evaluator(env, training=None).expr(item.value, env)
                if isinstance(value, Tensor) or (
                    isinstance(value, tuple) and any(isinstance(v, Tensor) for v in value)
                ):
                    raise DlcError(
                        f"a const must be a static value (a number, string, bool or tuple), not {describe(value)}",
                        item.value.span,
                    )
                env.vars[item.name] = value


def hides_builtin(module: syntax.Module) -> list[DlcError]:
    """A warning at each def and const named as a builtin: it hides the builtin wherever it
    is seen (library functions keep the builtin), which is rarely meant and easily missed,
    as when a builtin is added under the name of a def already written."""
    return [
        DlcError(
            f"{'def' if isinstance(node, syntax.Def) else 'const'} '{node.name}' hides the builtin "
            f"'{node.name}' wherever it is visible; rename it to keep both",
            name_span(node.span, node.name),
        )
        for node in syntax.walk(module)
        if isinstance(node, (syntax.Def, syntax.ConstDecl)) and node.name in BUILTINS
    ]


def _parse_file(path: Path) -> syntax.Module:
    return syntax.parse(syntax.read_source(path), str(path))


@functools.cache
@collector_paused()  # what it makes lasts as long as the process
def stdlib_env() -> Env:
    """Builtins and the standard library, parsed once per process (and read from the
    cache on disk when parsed before)."""
    env = Env()
    env.vars.update(BUILTINS)
    libenv = env.child()
    defined: dict = {}
    files = [(STDLIB_PREFIX + f.name, f.read_text()) for f in stdlib_files()]
    for (name, text), module in zip(files, parsed_modules(files, syntax)):
        register_source(name, text)
        _load_into(libenv, module, None, [], defined, {}, [])  # none: tests/frontend/test_shadowing.py
    return libenv


def stdlib_files() -> list:
    """The standard library's .dl files, by name."""
    folder = resources.files("dlc.compiler").joinpath("stdlib")
    return sorted((f for f in folder.iterdir() if f.name.endswith(".dl")), key=lambda f: f.name)


def load(path: str) -> Program:
    """Parse a .dl file and everything it imports."""
    p = Path(path)
    if not p.exists():
        raise DlcError(f"no such file: {path}", Span.whole(path))
    return _program(_parse_file(p), p.resolve(), path)


def load_text(text: str, filename: str = "<input>") -> Program:
    return load_module(syntax.parse(text, filename), filename)


def load_module(module: syntax.Module, filename: str) -> Program:
    """A program of a module parsed already (the language server's, which indexes its names)."""
    path = Path(filename).resolve() if not filename.startswith("<") else None
    return _program(module, path, filename)


class GrowingModel:
    """A model whose statements arrive a few at a time, as the ONNX importer writes them:
    `add` parses and builds only the new ones, so typing a model line by line costs one build
    of it, not one per look. `type_of` is the type of a tensor it has named so far (input,
    parameter, state, binding). It is built for evaluation, without initial values."""

    def __init__(self, name: str, filename: str):
        self.name, self.filename = name, filename
        globals_ = _program(syntax.Module(Span(filename, 1, 1), []), None, filename).globals
        self.evaluator = Evaluator(globals_, training=False, initial_values=False)
        self.env = globals_.child()

    def type_of(self, name: str):
        """The type of the tensor `name` names now; None for a name not added or not a tensor."""
        value = self.env.vars.get(name)
        return value.type if isinstance(value, Tensor) else None

    @collector_paused()
    def add(self, lines: list[str]):
        """Build `lines`, statements of the model's body that may read every name added before."""
        block = syntax.parse("\n".join([f"model {self.name} {{", *lines, "}"]), self.filename).items[0]
        with self.evaluator.graph.at(block.span):
            self.evaluator.block(block.body, self.env, in_model=True)


def _program(module: syntax.Module, path: Path | None, name: str) -> Program:
    env, imported, warnings = stdlib_env().child(), {}, []
    _load_into(env, module, path, [path] if path else [], {}, imported, warnings)
    return Program(module, env, name, imported, warnings)
