"""The names of a parsed document: where each is bound (a `Binding`) and where each is used,
resolved by the scoping rules of the evaluator (a model's and a def's statements in order,
a scan's own scope, the file's defs and consts, then the standard library). Definition,
references, rename, document symbols and completion read it; it never evaluates anything."""

from __future__ import annotations

from dataclasses import dataclass, field, fields

from dlc.compiler.errors import Span, name_span
from dlc.compiler.frontend import syntax


@dataclass(eq=False)
class Binding:
    """A name bound in the document: `kind` is model, def, const, input, target, binding,
    param, state, output, metric, argument, repeat, scan or dim; `container` the model or
    def it is bound in ("" at the top level); `node` the AST node that binds it."""

    name: str
    span: Span
    kind: str
    container: str
    node: object


@dataclass
class Scope:
    """The names visible at the end of a model, def or scan body (`span`)."""

    span: Span
    names: dict


@dataclass
class NameIndex:
    bindings: list = field(default_factory=list)
    uses: list = field(default_factory=list)  # (span of a Name, Binding or the name of a library function)
    calls: list = field(default_factory=list)  # (span of the function's name, span of the call)
    keywords: list = field(default_factory=list)  # (span of a keyword argument's name, function's name, keyword)
    scopes: list = field(default_factory=list)
    top: dict = field(default_factory=dict)  # the file's defs and consts

    def at(self, line: int, col: int):
        """What is at a place (1-based): a Binding (where it is bound or used) or a library name."""
        for span, target in self.uses:
            if contains(span, line, col):
                return target
        for b in self.bindings:
            if contains(b.span, line, col):
                return b
        return None

    def call_at(self, line: int, col: int) -> Span | None:
        """The call whose function's name is at a place."""
        return next((call for name, call in self.calls if contains(name, line, col)), None)

    def keyword_at(self, line: int, col: int) -> tuple | None:
        """(the function's name, the keyword) of the keyword argument named at a place."""
        return next(((func, word) for span, func, word in self.keywords if contains(span, line, col)), None)

    def references(self, b: Binding) -> list:
        return [b.span] + [span for span, target in self.uses if target is b]

    def visible(self, line: int, col: int) -> dict:
        """The names bound before a place in the innermost model, def or scan around it."""
        around = [s for s in self.scopes if contains(s.span, line, col)]
        names = dict(self.top)
        if around:
            inner = min(around, key=lambda s: (s.span.end_line - s.span.line, s.span.end_col - s.span.col))
            names.update({n: b for n, b in inner.names.items() if (b.span.line, b.span.col) < (line, col)})
        return names


def contains(span: Span, line: int, col: int) -> bool:
    end_line = span.end_line or span.line
    return (
        (span.line, span.col) <= (line, col)
        and (line, col) < (end_line, span.end_col or span.col + 1)
        or (line, col) == (end_line, span.end_col)
    )


def index(module: syntax.Module) -> NameIndex:
    out = NameIndex()
    _Walker(out).module(module)
    return out


class _Walker:
    def __init__(self, out: NameIndex):
        self.out = out

    def bind(self, scope: dict, name: str, node, kind: str, container: str, span: Span | None = None) -> Binding:
        b = Binding(name, span or name_span(node.span, name), kind, container, node)
        self.out.bindings.append(b)
        scope[name] = b
        return b

    def use(self, scope: dict, name: str, span: Span):
        self.out.uses.append((span, scope.get(name, name)))

    def module(self, m: syntax.Module):
        top, models = self.out.top, {}
        for item in m.items:
            if isinstance(item, syntax.Def):
                self.bind(top, item.name, item, "def", "")
            elif isinstance(item, syntax.ConstDecl):
                self.bind(top, item.name, item, "const", "")
            elif isinstance(item, syntax.ModelBlock):
                self.bind(models, item.name, item, "model", "")
        for item in m.items:
            if isinstance(item, syntax.Def):
                self.define(item, top)
            elif isinstance(item, syntax.ConstDecl):
                self.expr(item.value, top)
            elif isinstance(item, syntax.ModelBlock):
                scope = dict(top)
                self.block(item.body, scope, item.name)
                self.out.scopes.append(Scope(item.span, scope))
            elif isinstance(item, syntax.Train):
                self.use(
                    models, item.model, name_span(Span(item.span.file, item.span.line, item.span.col + 5), item.model)
                )
                for k in item.settings:
                    self.expr(k.value, top)

    def define(self, d: syntax.Def, outer: dict):
        scope = dict(outer)
        for a in d.args:
            if a.default is not None:
                self.expr(a.default, outer)
            if isinstance(a.type, syntax.TensorTypeExpr):
                self.type(a.type, scope, d.name)
            self.bind(scope, a.name, a, "argument", d.name)
        self.block(d.body, scope, d.name)
        self.out.scopes.append(Scope(d.span, scope))

    def type(self, t: syntax.TensorTypeExpr, scope: dict, container: str):
        """A dim name not yet bound is bound by the type (an input's, an argument's)."""
        for d in t.dims:
            if isinstance(d, syntax.Name) and d.id not in scope:
                self.bind(scope, d.id, d, "dim", container, d.span)
            elif not isinstance(d, syntax.AnyDims):
                self.expr(d, scope)

    def block(self, stmts: list, scope: dict, container: str):
        for s in stmts:
            self.statement(s, scope, container)

    def statement(self, s, scope: dict, container: str):
        if isinstance(s, syntax.Assign):
            self.expr(s.value, scope)
            for t in s.targets:
                self.bind(scope, t, s, "binding", container)
        elif isinstance(s, syntax.ParamDecl):
            self.type(s.type, scope, container)
            if s.init is not None:
                self.expr(s.init, scope)
            self.bind(scope, s.name, s, "param" if s.trainable else "state", container)
        elif isinstance(s, syntax.StateUpdate):
            self.use(scope, s.name, name_span(Span(s.span.file, s.span.line, s.span.col + 6), s.name))
            self.expr(s.value, scope)
        elif isinstance(s, (syntax.Return, syntax.Yield)):
            for v in s.values:
                self.expr(v, scope)
        elif isinstance(s, syntax.Repeat):
            self.expr(s.start, scope)
            self.expr(s.stop, scope)
            self.bind(
                scope, s.var, s, "repeat", container, name_span(Span(s.span.file, s.span.line, s.span.col + 6), s.var)
            )
            self.block(s.body, scope, container)
        elif isinstance(s, syntax.If):
            self.expr(s.cond, scope)
            self.block(s.then, scope, container)
            self.block(s.other, scope, container)
        elif isinstance(s, syntax.Def):
            self.bind(scope, s.name, s, "def", container)
            self.define(s, scope)
        elif isinstance(s, syntax.Input):
            self.type(s.type, scope, container)
            self.bind(scope, s.name, s, "target" if s.is_target else "input", container)
        elif isinstance(s, syntax.Output):
            if s.value is None:
                self.use(scope, s.name, name_span(s.span, s.name))
            else:
                self.expr(s.value, scope)
                self.bind(scope, s.name, s, "output", container)
        elif isinstance(s, syntax.Loss):
            self.expr(s.value, scope)
        elif isinstance(s, syntax.Metric):
            self.expr(s.value, scope)
            self.bind(scope, s.name, s, "metric", container)

    def expr(self, e, scope: dict):
        if isinstance(e, syntax.Name):
            self.use(scope, e.id, e.span)
        elif isinstance(e, syntax.Scan):
            inner = dict(scope)
            self.expr(e.length, scope)
            for k in e.options:
                self.expr(k.value, scope)
            for k in e.carries:
                self.expr(k.value, scope)
                self.bind(inner, k.name, k, "scan", "")
            self.bind(inner, e.var, e, "scan", "", name_span(Span(e.span.file, e.span.line, e.span.col + 4), e.var))
            self.block(e.body, inner, "")
            self.out.scopes.append(Scope(e.span, inner))
        elif isinstance(e, (syntax.CallExpr, syntax.Pipe)):
            call = e.func if isinstance(e, syntax.Pipe) else e
            func = call.func if isinstance(call, syntax.CallExpr) else call
            if isinstance(func, syntax.Name):
                self.out.calls.append((func.span, call.span))
                for k in call.args if isinstance(call, syntax.CallExpr) else ():
                    if isinstance(k, syntax.Keyword):
                        at = Span(k.span.file, k.span.line, k.span.col, k.span.line, k.span.col + len(k.name))
                        self.out.keywords.append((at, func.id, k.name))
            self._children(e, scope)
        elif isinstance(e, syntax.SyntaxNode):
            self._children(e, scope)

    def _children(self, e, scope: dict):
        for f in fields(e):
            v = getattr(e, f.name)
            for item in v if isinstance(v, list) else [v]:
                if isinstance(item, syntax.SyntaxNode):
                    self.expr(item, scope)


# ---- renaming ------------------------------------------------------------------------------------------
def renamed(text: str, spans: list, new: str) -> str:
    """The text with each span (of one line) replaced by `new`."""
    lines = text.split("\n")
    for s in sorted(spans, key=lambda s: (s.line, s.col), reverse=True):
        line = lines[s.line - 1]
        lines[s.line - 1] = line[: s.col - 1] + new + line[s.end_col - 1 :]
    return "\n".join(lines)


def rename_conflict(text: str, path: str, names: NameIndex, b: Binding, new: str) -> str | None:
    """Why renaming `b` to `new` would change what a name of the file refers to (a use of
    `new` that a renamed binding would capture, a use of `b` that another `new` would, a dim
    a type would no longer bind), or None when every name refers to what it did. The renamed
    text is indexed again and each name compared, at its place after the rename."""
    twice = next((other for other in names.bindings if other.name == new and _defined_twice(b, other)), None)
    if twice is not None:
        return f"`{new}` is defined already: the {twice.kind} `{new}` of line {twice.span.line}"
    spans = names.references(b)
    shift = len(new) - len(b.name)

    def moved(span: Span) -> tuple:
        before = sum(1 for s in spans if s.line == span.line and s.col < span.col)
        return span.line, span.col + before * shift

    try:
        after = index(syntax.parse(renamed(text, spans, new), f"{path} (renamed)"))
    except Exception:  # noqa: BLE001 - a rename that makes the file not parse changes everything
        return f"the file would not parse with '{new}' here"
    bound_after = {(s.span.line, s.span.col): s for s in after.bindings}
    named_after = {}  # what a name written at a place refers to after the rename, as NameIndex.at says
    for span, target in after.uses + [(s.span, s) for s in after.bindings]:
        named_after.setdefault((span.line, span.col), target)

    def meaning(target, renamed_at: tuple | None = None) -> str:
        if not isinstance(target, Binding):
            return f"`{target}` of the standard library" if target in _library_names() else f"`{target}`, not defined"
        at = (target.span.line, target.span.col)
        if target is b or at == renamed_at:
            return f"the {target.kind} `{b.name}` renamed, of line {at[0]}"
        return f"the {target.kind} `{target.name}` of line {at[0]}"

    for span, target in [(s.span, s) for s in names.bindings] + names.uses:
        now = named_after.get(moved(span))
        expected = bound_after.get(moved(target.span)) if isinstance(target, Binding) else target
        if now is not expected and now != expected:
            written = new if target is b else target if isinstance(target, str) else target.name
            was = (
                f"binds a new {target.kind}"
                if isinstance(target, Binding) and target.span == span
                else f"refers to {meaning(target)}"
            )
            return (
                f"renaming `{b.name}` to `{new}` would change what `{written}` at line {span.line}, column "
                f"{span.col} means: it {was}, and would refer to {meaning(now, moved(b.span))}"
            )
    return None


# the kinds of names bound in one scope that the evaluator says are defined twice, by kind
_ONCE = {
    "def": {"def", "const"},
    "const": {"def", "const"},
    "model": {"model"},
    "output": {"output", "metric"},
    "metric": {"output", "metric"},
}
_DECLARED = {"input", "target", "param", "state", "def"}


def _defined_twice(b: Binding, other: Binding) -> bool:
    """Whether `b` under the name of `other`, bound in the same model, def or file, would be
    defined twice (a file's defs and consts, its models, a model's inputs, params and defs
    against all its names, its outputs and metrics)."""
    if b.container != other.container:
        return False
    if not b.container:
        return other.kind in _ONCE.get(b.kind, ())
    return b.kind in _DECLARED or other.kind in _DECLARED or other.kind in _ONCE.get(b.kind, ())


def _library_names() -> set:
    from dlc.compiler.frontend.loader import stdlib_env

    return set(stdlib_env().visible_names())
