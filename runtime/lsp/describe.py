"""What the server says of a name, a call or a function: a binding's type with its named
dims (`h: f32[B, 128]`), a layer call's parameters, FLOPs per example and activation memory
(the numbers of `dlc summary` and `dlc summary --memory`), a function's signature and doc."""

from __future__ import annotations

import inspect

from dlc.compiler.errors import DlcError, Span, plural, source_lines
from dlc.compiler.frontend import syntax
from dlc.compiler.frontend.evaluator import ann_str
from dlc.compiler.frontend.loader import stdlib_env
from dlc.compiler.frontend.settings import to_text
from dlc.compiler.frontend.summary import count_text, in_layer, size_text
from dlc.compiler.frontend.values import Builtin, Func, spelled
from dlc.compiler.ir.dims import numel, subs
from dlc.runtime.lsp.analysis import Analysis
from dlc.runtime.lsp.names import Binding


# ---- functions -------------------------------------------------------------------------------------
def library_function(name: str):
    """A function of the standard library or a builtin, or None."""
    try:
        value = stdlib_env().lookup(name)
    except KeyError:
        return None
    return value if isinstance(value, (Func, Builtin)) else None


def function_of(name: str, a: Analysis):
    """The function a name calls in the document: the file's def, else the library's."""
    if a.program is not None:
        try:
            value = a.program.globals.lookup(name)
        except KeyError:
            return None
        return value if isinstance(value, (Func, Builtin)) else None
    return library_function(name)


def parameters(func) -> list:
    """(name, text) of each argument of a function: `units: int`, `act = identity`."""
    if isinstance(func, Func):
        return [
            (arg.name, arg.name + _annotation(arg) + (f" = {_source(arg.default)}" if arg.default else ""))
            for arg in func.decl.args
        ]
    params = list(inspect.signature(func.fn).parameters.values())[1:]  # after the evaluator
    return [(p.name, _builtin_parameter(p)) for p in params]


def _builtin_parameter(p: inspect.Parameter) -> str:
    """A builtin's parameter as a .dl file (and language.md) writes it: `*xs`, `axis = -1`,
    `dtype = "f32"`, not as Python does (`axis=-1`, `dtype='f32'`)."""
    if p.kind is p.VAR_POSITIONAL:
        return f"*{p.name}"
    return p.name if p.default is p.empty else f"{p.name} = {to_text(p.default)}"


def signature(func) -> str:
    return f"{func.name}({', '.join(text for _, text in parameters(func))})"


def doc(func) -> str:
    """A def's doc: the comment lines right above it; a builtin's: its docstring."""
    if isinstance(func, Builtin):
        return inspect.getdoc(func.fn) or ""
    lines, line, out = source_lines(func.decl.span.file) or [], func.decl.span.line - 1, []
    while 0 < line <= len(lines) and lines[line - 1].strip().startswith("#"):
        out.insert(0, lines[line - 1].strip().lstrip("#").strip())
        line -= 1
    return " ".join(out)


def where(func) -> str:
    if isinstance(func, Builtin):
        return "builtin"
    span = func.decl.span
    return f"standard library, {span.place()}" if span.in_stdlib() else f"defined at line {span.line}"


def function_text(func) -> str:
    text = f"```dl\n{signature(func)}\n```\n{where(func)}"
    return text + (f"\n\n{doc(func)}" if doc(func) else "")


def _annotation(arg: syntax.ArgDecl) -> str:
    if isinstance(arg.type, syntax.TensorTypeExpr):
        return f": {ann_str(arg.type)}"
    return f": {arg.type.kind}" if arg.type is not None else ""


def _source(e) -> str:
    return e.span.text() or "..."


# ---- names -----------------------------------------------------------------------------------------
def binding_type(b: Binding, a: Analysis):
    """The type (or static value) of a model's binding as its training build made it, or None."""
    model = a.model_of(b.container)
    if model is None:
        return None
    if b.kind in ("input", "target"):
        return next((i.type for i in model.inputs if i.name == b.name), None)
    if b.kind in ("output", "metric"):
        t = model.graph.outputs.get(f"{b.kind}:{b.name}")
        return t.type if t is not None else None
    if b.kind == "binding":
        return next(
            (typ for name, typ, span in reversed(model.bindings) if name == b.name and span == b.node.span), None
        )
    if b.kind in ("param", "state"):
        return next((p.type for p in model.params if p.name == b.name), None)
    if b.kind == "dim":
        return "a dim of the inputs" + _batch_note(b.name, a, model)
    return None


def def_values(b: Binding, a: Analysis) -> list:
    """`h: f32[B, 64]  # the call at line 12` for each call of a def of the file that made
    the binding or argument b (each value once), from the models' training builds."""
    seen = {}
    for model in a.models.values():
        for name, value, span, call in model.def_values:
            if name == b.name and span == b.node.span:
                seen.setdefault(f"{name}: {value}", []).append(call.line)
    return [
        f"{text}  # line{'s' if len(lines) > 1 else ''} {', '.join(map(str, sorted(set(lines))))}"
        for text, lines in seen.items()
    ]


def _batch_note(dim: str, a: Analysis, model) -> str:
    from dlc.runtime.engines.budget import batch_symbol

    cfg = a.configs.get(model.name)
    if cfg is not None and batch_symbol(model.graph) == dim:
        return (
            f", the batch: {cfg.batch} in the train block"
            if "batch" in cfg.spans
            else f", the batch: {cfg.batch} by default"
        )
    return ""


def binding_text(b: Binding, a: Analysis) -> str:
    if b.kind == "def" and a.program is not None:
        func = function_of(b.name, a) if not b.container else None
        if func is not None:
            return function_text(func)
        return f"```dl\n{b.name}({', '.join(arg.name + _annotation(arg) for arg in b.node.args)})\n```"
    if b.kind == "const" and a.program is not None:
        try:
            return f"```dl\nconst {b.name} = {spelled(a.program.globals.lookup(b.name))}\n```"
        except KeyError:
            return f"const {b.name}"
    if b.kind == "model":
        model = a.models.get(b.name)
        return f"model {b.name}" + (
            f": {plural(len(model.params), 'parameter tensor')}, "
            f"{sum(numel(p.type.shape) for p in model.params):,} parameters"
            if model
            else ""
        )
    typ = binding_type(b, a)
    if typ is not None:
        return f"```dl\n{b.name}: {typ}\n```\n{b.kind}" + (f" of model {b.container}" if b.container else "")
    per_call = def_values(b, a)
    if per_call:
        return f"{b.kind} of {b.container}, by call:\n```dl\n" + "\n".join(per_call) + "\n```"
    if b.kind == "argument":
        return f"```dl\n{b.name}{_annotation(b.node)}\n```\nargument of {b.container} (its type is each call's)"
    if a.program is not None and b.container in a.program.models:
        return f"{b.kind} `{b.name}` of model {b.container} (its type is not known: model {b.container} does not build)"
    return f"{b.kind} `{b.name}`" + (f" in {b.container} (its type is each call's)" if b.container else "")


# ---- layer calls -----------------------------------------------------------------------------------
def call_text(call: Span, container: str, a: Analysis) -> str | None:
    """A def call's layer in a model: its parameters (count and shapes), forward FLOPs per
    example and activation memory at the train block's batch; None for no such call."""
    from dlc.runtime.engines.budget import batch_symbol

    model = a.model_of(container)
    made = [c for c in model.calls if c.span == call and c.defn] if model is not None else []
    if not made:
        return None
    c = made[-1]
    params = [p for p in model.params if c.layer and in_layer(p.name, c.layer)]
    lines = [f"**{c.layer or '(no parameters)'}**: a call of `{c.defn}`"]
    if params:
        lines.append(
            f"parameters: {sum(numel(p.type.shape) for p in params):,} in {plural(len(params), 'tensor')}: "
            + ", ".join(f"`{p.name}: {p.type}`" for p in params)
        )
    else:
        lines.append("parameters: none")
    graph = model.graph
    flops = sum((graph.node_flops(n) for n in range(c.first, c.end) if n in graph.nx), 0)
    batch = batch_symbol(graph)
    lines.append(f"forward FLOPs per example: {count_text(subs(flops, {batch: 1}) if batch else flops)}")
    if c.layer:
        lines.append(_activation_line(c.layer, model.name, a))
    return "\n\n".join(lines)


def _activation_line(layer: str, name: str, a: Analysis) -> str:
    build = a.builds.get(name)
    memory = build.memory if build is not None else None
    if memory is None:
        return "activation memory of training: being computed (hover again)"
    if isinstance(memory, DlcError):
        return f"activation memory: not known ({memory.message})"
    parts, sizes = memory
    held = sum((p["activations"] for k, p in parts.items() if in_layer(k, layer)), 0)
    at = ", ".join(f"{k} = {v}" for k, v in sizes.items())
    return f"activation memory of training: {size_text(subs(held, sizes))} at {at} (as `dlc summary --memory`)"
