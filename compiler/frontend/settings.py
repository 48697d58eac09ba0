"""The settings of a `train` block, evaluated statically, and the checks of their values.

A setting's value is a number, string, bool, none, list, a `Symbol` (a bare name such
as `val_loss` or `conv1`) or a `Call` (`adam(lr = 1e-3)`, `split(0.1)`). The trainer
gives them meaning; this module evaluates them, keeps their source spans so a bad
setting is reported where it was written, and binds a call's arguments to its
parameters (`Call.bind`, the one binding of every spec: optimizers, schedules, clipping,
early stopping, augmentation, splits and data sources; each then checks its values
with `Args.check`, so an error points at the argument).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np

from dlc.compiler.frontend import syntax
from dlc.compiler.errors import DlcError, Span, did_you_mean
from dlc.compiler.frontend.values import LITERALS, literal, static_binary

REQUIRED = object()  # the default of a parameter that must be given


@dataclass
class Symbol:
    name: str
    span: Span | None = None


@dataclass
class Call:
    name: str
    args: list = field(default_factory=list)
    kwargs: dict = field(default_factory=dict)
    span: Span | None = None
    arg_spans: dict = field(default_factory=dict, repr=False, compare=False)  # position or keyword -> span

    def bind(self, params: dict) -> "Args":
        """The arguments by parameter name (`params`: name -> default, REQUIRED if it must be
        given, in order): positional ones in parameter order, then keywords. Extra, unknown,
        repeated and missing ones are errors at the argument (or at the call)."""
        src, args, kwargs, spans = self.name, self.args, self.kwargs, self.arg_spans
        names = list(params)
        if len(args) > len(names):
            raise DlcError(
                f"{src} takes at most {len(names)} argument{'s' * (len(names) != 1)}"
                f" ({', '.join(names) or 'none'}), got {len(args)}",
                spans.get(len(names), self.span),
            )
        for k in kwargs:
            if k not in params:
                raise DlcError(
                    f"{src} has no option '{k}'{did_you_mean(k, names)} (it takes: {', '.join(names) or 'nothing'})",
                    spans.get(k, self.span),
                )
            if names.index(k) < len(args):
                raise DlcError(f"{src}: '{k}' is given twice", spans.get(k, self.span))
        values = dict(zip(names, args)) | kwargs
        for k, default in params.items():
            if k not in values:
                if default is REQUIRED:
                    raise DlcError(f"{src} needs '{k}' (it takes: {', '.join(names)})", self.span)
                values[k] = default
        where = {names[i]: spans[i] for i in range(len(args)) if i in spans}
        where.update({k: spans[k] for k in kwargs if k in spans})
        return Args(src, values, where, self.span)


class Args(dict):
    """A call's arguments bound to its parameters; `span(name)` is where one was written."""

    def __init__(self, src: str, values: dict, spans: dict, span: Span | None):
        super().__init__(values)
        self.src, self.spans, self.call_span = src, spans, span

    def span(self, name: str) -> Span | None:
        return self.spans.get(name, self.call_span)

    def check(self, name: str, kind, **rules):
        """The argument checked by `kind` (integer, number, flag, choice), an error pointing at it."""
        return kind(self.src, name, self[name], **rules, span=self.span(name))


# ---- checks of argument values; each raises "src: 'name' must ..." at `span` --------------------------
def integer(src: str, name: str, v, low: int | None = None, span: Span | None = None) -> int:
    if isinstance(v, (float, np.floating)) and float(v).is_integer():
        v = int(v)
    if isinstance(v, bool) or not isinstance(v, (int, np.integer)):
        raise DlcError(f"{src}: '{name}' must be an integer, got {show(v)}", span)
    v = int(v)
    if low is not None and v < low:
        raise DlcError(f"{src}: '{name}' must be at least {low}, got {v}", span)
    return v


def number(
    src: str,
    name: str,
    v,
    low: float | None = None,
    positive: bool = False,
    below: float | None = None,
    span: Span | None = None,
) -> float:
    """A finite number; `low` <= it, 0 < it when `positive`, it < `below`."""
    if isinstance(v, bool) or not isinstance(v, (int, float, np.integer, np.floating)) or not math.isfinite(v):
        raise DlcError(f"{src}: '{name}' must be a number, got {show(v)}", span)
    v = float(v)
    if positive and v < 0:
        raise DlcError(f"{src}: '{name}' must not be negative, got {v:g}", span)
    if positive and v == 0:
        raise DlcError(f"{src}: '{name}' must be positive, got 0", span)
    if low is not None and v < low:
        raise DlcError(f"{src}: '{name}' must be at least {low:g}, got {v:g}", span)
    if below is not None and v >= below:
        raise DlcError(f"{src}: '{name}' must be less than {below:g}, got {v:g}", span)
    return v


def flag(src: str, name: str, v, span: Span | None = None) -> bool:
    if not isinstance(v, (bool, np.bool_)):
        raise DlcError(f"{src}: '{name}' must be true or false, got {show(v)}", span)
    return bool(v)


def choice(src: str, name: str, v, options: tuple, span: Span | None = None) -> str:
    """One of `options`, written as a name (min) or a string ("min")."""
    if isinstance(v, bool):
        v = "true" if v else "false"
    elif isinstance(v, Symbol):
        v = v.name
    if not isinstance(v, str) or v not in options:
        raise DlcError(f"{src}: '{name}' must be one of {', '.join(options)}, got {show(v)}", span)
    return v


def as_call(value, setting: str, example: str, span: Span | None = None) -> Call:
    """A spec written as a call, a bare name (`cosine`) or a string ("cosine")."""
    if isinstance(value, Call):
        return value
    if isinstance(value, Symbol):
        return Call(value.name, span=value.span or span)
    if isinstance(value, str):
        return Call(value, span=span)
    raise DlcError(f"{setting} must be a call such as {example}, got {show(value)}", span)


# ---- writing values back -------------------------------------------------------------------------
def to_text(v) -> str:
    """A value as a .dl file writes it: digits(image = false), split(0.2), "a.npz"."""
    if isinstance(v, Call):
        args = [to_text(a) for a in v.args] + [f"{k} = {to_text(a)}" for k, a in v.kwargs.items()]
        return f"{v.name}({', '.join(args)})"
    if isinstance(v, Symbol):
        return v.name
    if v is None:
        return "none"
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, str):
        return f'"{v}"'
    if isinstance(v, list):
        return f"[{', '.join(to_text(x) for x in v)}]"
    return f"{v:g}" if isinstance(v, float) else str(v)


def parameter_texts(params: dict) -> list:
    """Each parameter of a spec (`params` as Call.bind takes them) as a .dl call writes it:
    `beta1 = 0.9`, or `lr` alone when it must be given."""
    return [k if v is REQUIRED else f"{k} = {to_text(v)}" for k, v in params.items()]


def show(v) -> str:
    """A value in an error message: strings quoted as Python does, the rest as written."""
    return repr(v) if isinstance(v, str) else to_text(v)


def to_json(v):
    """A setting's value as JSON (checkpoints store the data settings this way); see from_json."""
    if isinstance(v, Call):
        return {
            "call": v.name,
            "args": [to_json(a) for a in v.args],
            "kwargs": {k: to_json(a) for k, a in v.kwargs.items()},
        }
    if isinstance(v, Symbol):
        return {"name": v.name}
    if isinstance(v, list):
        return [to_json(x) for x in v]
    return v


def from_json(v):
    if isinstance(v, dict) and "call" in v:
        return Call(v["call"], [from_json(a) for a in v["args"]], {k: from_json(a) for k, a in v["kwargs"].items()})
    if isinstance(v, dict):
        return Symbol(v["name"])
    if isinstance(v, list):
        return [from_json(x) for x in v]
    return v


# ---- evaluation of a train block -------------------------------------------------------------------
def setting_value(node) -> object:
    """The static value of a setting's expression."""
    if isinstance(node, LITERALS):
        return literal(node)
    if isinstance(node, syntax.Name):
        return Symbol(node.id, node.span)
    if isinstance(node, syntax.Tuple):
        return [setting_value(x) for x in node.items]
    if isinstance(node, syntax.Unary) and node.op == "-":
        v = setting_value(node.operand)
        if isinstance(v, (int, float)) and not isinstance(v, bool):
            return -v
    if isinstance(node, syntax.Binary) and node.op in ("+", "-", "*", "/", "^"):
        a, b = setting_value(node.left), setting_value(node.right)
        if all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in (a, b)):
            return static_binary(node.op, a, b, node.span)
    if isinstance(node, syntax.CallExpr) and isinstance(node.func, syntax.Name):
        call = Call(node.func.id, span=node.span)
        for a in node.args:
            if isinstance(a, syntax.Keyword):
                call.kwargs[a.name] = setting_value(a.value)
                call.arg_spans[a.name] = a.value.span
            else:
                call.arg_spans[len(call.args)] = a.span
                call.args.append(setting_value(a))
        return call
    raise DlcError(
        "a train setting must be a number, a string, a name, a list or a call such as adam(lr = 1e-3)", node.span
    )


def settings(train: syntax.Train | None) -> dict:
    """name -> (value, span) for every setting of a train block."""
    if train is None:
        return {}
    return {k.name: (setting_value(k.value), k.span) for k in train.settings}
